use std::net::IpAddr;

use super::{ConvertProblem, Obj};
use crate::k8s::cilium::CiliumEndpoint;
use crate::model::{Cluster, Endpoint, IdentityId, IpPrefix};

/// The ipcache entries of a CiliumEndpoint, one per IPv4 and IPv6 address, as Cilium's
/// apiserver writes them: the endpoint's identity, node IP, IPsec key, namespace, pod
/// name and service account. Like Cilium's, they carry no named ports.
///
/// An endpoint without networking yields nothing, and so does one still waiting for its
/// identity (Cilium would write id 0, which no consumer accepts). Refused: an identity
/// that is neither reserved nor inside the cluster's range, and any field that does not
/// parse.
pub fn cilium_endpoint_to_model(
    cluster: &Cluster,
    endpoint: &CiliumEndpoint,
) -> Result<Vec<Endpoint>, ConvertProblem> {
    let obj = Obj::namespaced("CiliumEndpoint", &endpoint.metadata);
    obj.require_name()?;
    let Some(status) = endpoint.status.as_ref() else {
        return Ok(Vec::new());
    };
    let Some(networking) = status.networking.as_ref() else {
        return Ok(Vec::new());
    };
    let Some(raw_id) = status.identity.as_ref().and_then(|i| i.id) else {
        return Ok(Vec::new());
    };

    let id = u32::try_from(raw_id)
        .ok()
        .and_then(|id| IdentityId::new(id).ok())
        .ok_or_else(|| {
            obj.problem(
                "status.identity.id",
                format!("{raw_id} is not a numeric identity"),
            )
        })?;
    let range = cluster.identity_range();
    if !id.is_reserved() && !range.contains(id) {
        return Err(obj.problem(
            "status.identity.id",
            format!(
                "identity {id} is outside cluster {}'s range {range}",
                cluster.id.get()
            ),
        ));
    }
    let host_ip = networking
        .node_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
        .map(|ip| parse_ip(&obj, "status.networking.node", ip))
        .transpose()?;
    let raw_key = status.encryption.as_ref().and_then(|e| e.key).unwrap_or(0);
    let encrypt_key = u8::try_from(raw_key).map_err(|_| {
        obj.problem(
            "status.encryption.key",
            format!("{raw_key} is outside 0..=255"),
        )
    })?;
    let service_account = status
        .service_account
        .as_ref()
        .filter(|sa| !sa.is_empty())
        .cloned();

    let mut entries = Vec::new();
    for (i, pair) in networking.addressing.iter().flatten().enumerate() {
        for (family, ip) in [("ipv4", &pair.ipv4), ("ipv6", &pair.ipv6)] {
            let Some(ip) = ip.as_deref().filter(|ip| !ip.is_empty()) else {
                continue;
            };
            let field = format!("status.networking.addressing[{i}].{family}");
            let ip = parse_ip(&obj, &field, ip)?;
            let mut entry = Endpoint::new(IpPrefix::host(ip), id);
            entry.host_ip = host_ip;
            entry.encrypt_key = encrypt_key;
            entry.namespace = Some(obj.namespace.to_string());
            entry.pod = Some(obj.name.to_string());
            entry.service_account = service_account.clone();
            entries.push(entry);
        }
    }
    Ok(entries)
}

fn parse_ip(obj: &Obj<'_>, field: &str, ip: &str) -> Result<IpAddr, ConvertProblem> {
    ip.parse()
        .map_err(|_| obj.problem(field, format!("{ip:?} is not an IP address")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::cilium::EncryptionSpec;
    use crate::k8s::convert::cilium_fixtures::{mk_cilium_endpoint, mk_cluster3};

    fn mk_cep_002() -> CiliumEndpoint {
        let mut cep = mk_cilium_endpoint(
            "bar",
            "cep-002",
            199_475,
            ("10.244.2.74", "fd00:10:244:2::e024"),
            "172.18.0.2",
        );
        if let Some(status) = cep.status.as_mut() {
            status.encryption = Some(EncryptionSpec { key: Some(5) });
        }
        cep
    }

    #[test]
    fn an_endpoint_yields_one_entry_per_address() {
        let entries = cilium_endpoint_to_model(&mk_cluster3(), &mk_cep_002()).unwrap();
        let ips: Vec<String> = entries.iter().map(|e| e.prefix.to_string()).collect();
        assert_eq!(ips, ["10.244.2.74", "fd00:10:244:2::e024"]);
        for entry in &entries {
            assert!(entry.prefix.is_host());
            assert_eq!(entry.identity.get(), 199_475);
            assert_eq!(entry.host_ip, Some("172.18.0.2".parse().unwrap()));
            assert_eq!(entry.encrypt_key, 5);
            assert_eq!(entry.metadata, "");
            assert_eq!(entry.namespace.as_deref(), Some("bar"));
            assert_eq!(entry.pod.as_deref(), Some("cep-002"));
            assert_eq!(entry.service_account.as_deref(), Some("default"));
            assert!(entry.named_ports.is_empty());
        }
    }

    #[test]
    fn endpoints_without_addresses_or_identity_yield_nothing() {
        let cluster = mk_cluster3();
        let mut no_status = mk_cep_002();
        no_status.status = None;
        let mut waiting = mk_cep_002();
        let mut no_networking = mk_cep_002();
        let mut no_addresses = mk_cilium_endpoint("bar", "p", 199_475, ("", ""), "");
        if let Some(status) = waiting.status.as_mut() {
            status.identity = None;
        }
        if let Some(status) = no_networking.status.as_mut() {
            status.networking = None;
        }
        if let Some(n) = no_addresses
            .status
            .as_mut()
            .and_then(|s| s.networking.as_mut())
        {
            n.node_ip = None;
        }
        for cep in [no_status, waiting, no_networking, no_addresses] {
            assert_eq!(cilium_endpoint_to_model(&cluster, &cep), Ok(vec![]));
        }
    }

    #[test]
    fn reserved_identities_are_valid_and_a_missing_node_ip_is_none() {
        let cep = mk_cilium_endpoint("bar", "init", 5, ("10.244.2.9", ""), "");
        let entries = cilium_endpoint_to_model(&mk_cluster3(), &cep).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].identity.get(), 5);
        assert_eq!(entries[0].host_ip, None);
    }

    #[test]
    fn invalid_endpoints_are_refused_naming_the_field() {
        let cluster = mk_cluster3();
        let refuse = |cep: &CiliumEndpoint| {
            cilium_endpoint_to_model(&cluster, cep)
                .unwrap_err()
                .to_string()
        };
        let out_of_range = mk_cilium_endpoint("bar", "p", 65_541, ("10.244.2.9", ""), "");
        assert_eq!(
            refuse(&out_of_range),
            "CiliumEndpoint bar/p: status.identity.id: identity 65541 is outside cluster 3's range 196608..=262143"
        );
        for bad_id in [0, -1, 1 << 24] {
            let cep = mk_cilium_endpoint("bar", "p", bad_id, ("10.244.2.9", ""), "");
            assert_eq!(
                refuse(&cep),
                format!(
                    "CiliumEndpoint bar/p: status.identity.id: {bad_id} is not a numeric identity"
                )
            );
        }
        let bad_ip = mk_cilium_endpoint("bar", "p", 199_475, ("10.244.2.9", "nope"), "");
        assert_eq!(
            refuse(&bad_ip),
            "CiliumEndpoint bar/p: status.networking.addressing[0].ipv6: \"nope\" is not an IP address"
        );
        let bad_node = mk_cilium_endpoint("bar", "p", 199_475, ("10.244.2.9", ""), "node-1");
        assert_eq!(
            refuse(&bad_node),
            "CiliumEndpoint bar/p: status.networking.node: \"node-1\" is not an IP address"
        );
        let mut bad_key = mk_cep_002();
        if let Some(status) = bad_key.status.as_mut() {
            status.encryption = Some(EncryptionSpec { key: Some(256) });
        }
        assert_eq!(
            refuse(&bad_key),
            "CiliumEndpoint bar/cep-002: status.encryption.key: 256 is outside 0..=255"
        );
    }
}
