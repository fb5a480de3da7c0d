//! Identity and endpoint (ipcache entry) ⇄ wire.

use super::wire::{
    ip_from_wire, ip_to_wire, l4_from_wire, l4_to_wire, narrow, optional_ip_from_wire,
    optional_ip_to_wire,
};
use super::{ProtoError, v1};
use crate::model::{
    Cluster, Endpoint, Identity, IdentityId, IpPrefix, Labels, ModelError, NamedPort,
};

impl From<&Identity> for v1::Identity {
    fn from(identity: &Identity) -> Self {
        v1::Identity {
            id: identity.id().get(),
            labels: identity.labels().to_kvstore_string(),
        }
    }
}

/// A peer's identity, checked against the peer's cluster: inside its range and
/// labelled with its name (reserved identities excepted).
pub fn identity_from_wire(wire: v1::Identity, peer: &Cluster) -> Result<Identity, ProtoError> {
    let id = IdentityId::new(wire.id).map_err(ProtoError::model("identity.id"))?;
    let labels =
        Labels::parse_kvstore_string(&wire.labels).map_err(ProtoError::model("identity.labels"))?;
    Identity::new(peer, id, labels).map_err(ProtoError::model("identity"))
}

impl From<&Endpoint> for v1::Endpoint {
    fn from(ep: &Endpoint) -> Self {
        v1::Endpoint {
            ip: ip_to_wire(ep.prefix.addr()),
            prefix_len: u32::from(ep.prefix.prefix_len()),
            identity: ep.identity.get(),
            host_ip: optional_ip_to_wire(ep.host_ip),
            encrypt_key: u32::from(ep.encrypt_key),
            namespace: ep.namespace.clone(),
            pod: ep.pod.clone(),
            metadata: ep.metadata.clone(),
            service_account: ep.service_account.clone(),
            named_ports: ep
                .named_ports
                .iter()
                .map(|p| l4_to_wire(&p.name, p.port))
                .collect(),
        }
    }
}

/// A peer's ipcache entry. Its identity must be a reserved one or lie in the peer's
/// range, as Cilium's consumer requires: a cluster cannot claim another's identities.
pub fn endpoint_from_wire(wire: v1::Endpoint, peer: &Cluster) -> Result<Endpoint, ProtoError> {
    let addr = ip_from_wire("endpoint.ip", &wire.ip)?;
    let len = narrow("endpoint.prefix_len", wire.prefix_len)?;
    let prefix = IpPrefix::new(addr, len).map_err(ProtoError::model("endpoint.prefix_len"))?;
    let identity =
        IdentityId::new(wire.identity).map_err(ProtoError::model("endpoint.identity"))?;
    let range = peer.identity_range();
    if !identity.is_reserved() && !range.contains(identity) {
        return Err(ProtoError::Model {
            field: "endpoint.identity",
            source: ModelError::IdentityOutOfRange {
                id: identity.get(),
                cluster: peer.id.get(),
                range: range.to_string(),
            },
        });
    }
    let mut ep = Endpoint::new(prefix, identity);
    ep.host_ip = optional_ip_from_wire("endpoint.host_ip", &wire.host_ip)?;
    ep.encrypt_key = narrow("endpoint.encrypt_key", wire.encrypt_key)?;
    ep.metadata = wire.metadata;
    ep.namespace = wire.namespace;
    ep.pod = wire.pod;
    ep.service_account = wire.service_account;
    ep.named_ports = wire
        .named_ports
        .into_iter()
        .map(|p| {
            let port = l4_from_wire("endpoint.named_ports", &p)?;
            Ok(NamedPort { name: p.name, port })
        })
        .collect::<Result<_, ProtoError>>()?;
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fixtures::{Corruption, mk_cluster, mk_endpoint, mk_identity};

    #[test]
    fn identities_round_trip_and_are_checked_against_the_peer() {
        let c3 = mk_cluster("cluster3", 3);
        let identity = mk_identity(&c3, 307);
        let wire = v1::Identity::from(&identity);
        assert_eq!(wire.id, 196_915);
        assert_eq!(identity_from_wire(wire.clone(), &c3).unwrap(), identity);

        // The same identity claimed by another cluster: out of its range.
        let err = identity_from_wire(wire.clone(), &mk_cluster("cluster3", 4)).unwrap_err();
        assert!(matches!(
            err,
            ProtoError::Model {
                field: "identity",
                source: ModelError::IdentityOutOfRange { .. }
            }
        ));
        // In range, but labelled for another cluster.
        let err = identity_from_wire(wire, &mk_cluster("cluster4", 3)).unwrap_err();
        assert!(matches!(
            err,
            ProtoError::Model {
                source: ModelError::WrongClusterLabel { .. },
                ..
            }
        ));
        let bad_labels = v1::Identity {
            id: 196_915,
            labels: "nosource;".into(),
        };
        let err = identity_from_wire(bad_labels, &c3).unwrap_err();
        assert!(matches!(
            err,
            ProtoError::Model {
                field: "identity.labels",
                ..
            }
        ));
    }

    #[test]
    fn endpoints_round_trip_with_their_prefix_length() {
        let c3 = mk_cluster("cluster3", 3);
        for prefix in [
            "10.244.2.74",
            "10.0.0.0/8",
            "fd00::5",
            "fd00::/64",
            "0.0.0.0/0",
        ] {
            let ep = mk_endpoint(&c3, prefix);
            let wire = v1::Endpoint::from(&ep);
            assert_eq!(endpoint_from_wire(wire, &c3).unwrap(), ep, "{prefix}");
        }
        let bare = Endpoint::new("10.0.0.1".parse().unwrap(), IdentityId::new(2).unwrap());
        let wire = v1::Endpoint::from(&bare);
        assert_eq!(wire.prefix_len, 32);
        assert!(wire.host_ip.is_empty());
        assert_eq!(endpoint_from_wire(wire, &c3).unwrap(), bare);
    }

    #[test]
    fn endpoints_may_only_carry_the_peers_identities() {
        let c3 = mk_cluster("cluster3", 3);
        let wire = v1::Endpoint::from(&mk_endpoint(&c3, "10.0.0.1"));
        let err = endpoint_from_wire(wire, &mk_cluster("cluster4", 4)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid endpoint.identity",
            "the reason is the source"
        );
        assert!(matches!(
            err,
            ProtoError::Model {
                source: ModelError::IdentityOutOfRange { cluster: 4, .. },
                ..
            }
        ));
    }

    #[test]
    fn invalid_endpoint_fields_are_named() {
        let c3 = mk_cluster("cluster3", 3);
        let good = v1::Endpoint::from(&mk_endpoint(&c3, "10.0.0.1"));
        let cases: [Corruption<v1::Endpoint>; 6] = [
            ("endpoint.ip", |e| e.ip = vec![10, 0].into()),
            ("endpoint.prefix_len", |e| e.prefix_len = 33),
            ("endpoint.identity", |e| e.identity = 0),
            ("endpoint.host_ip", |e| e.host_ip = vec![1, 2, 3].into()),
            ("endpoint.encrypt_key", |e| e.encrypt_key = 300),
            ("endpoint.named_ports", |e| {
                e.named_ports[0].protocol = "x".into()
            }),
        ];
        for (field, corrupt) in cases {
            let mut wire = good.clone();
            corrupt(&mut wire);
            let err = endpoint_from_wire(wire, &c3).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
