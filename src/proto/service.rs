//! Service ⇄ wire, with every backend's conditions and the service's affinity.

use std::collections::BTreeMap;

use super::wire::{
    check_cluster, insert_unique, ip_from_wire, ip_to_wire, ports_from_wire, ports_to_wire,
};
use super::{ProtoError, v1};
use crate::model::{Backend, BackendConditions, Cluster, Service, ServiceName};

impl From<&Service> for v1::Service {
    fn from(svc: &Service) -> Self {
        v1::Service {
            namespace: svc.name.namespace().to_string(),
            name: svc.name.name().to_string(),
            shared: svc.shared,
            affinity: svc.affinity.as_str().to_string(),
            backends: svc
                .backends
                .iter()
                .map(|(ip, b)| v1::Backend {
                    ip: ip_to_wire(*ip),
                    ports: ports_to_wire(&b.ports),
                    ready: b.conditions.ready,
                    serving: b.conditions.serving,
                    terminating: b.conditions.terminating,
                    hostname: b.hostname.clone(),
                    zone: b.zone.clone(),
                    for_zones: b.for_zones.clone(),
                })
                .collect(),
            frontends: svc
                .frontends
                .iter()
                .map(|(ip, ports)| v1::Frontend {
                    ip: ip_to_wire(*ip),
                    ports: ports_to_wire(ports),
                })
                .collect(),
            cluster: svc.cluster.to_string(),
            cluster_id: svc.cluster_id.get(),
            labels: svc.labels.clone(),
            selector: svc.selector.clone(),
            include_external: svc.include_external,
        }
    }
}

/// A peer's service: it must name the peer's cluster (name and id); addresses, ports
/// and the affinity are checked, and an address or port name given twice is refused.
pub fn service_from_wire(wire: v1::Service, peer: &Cluster) -> Result<Service, ProtoError> {
    let (cluster, cluster_id) = check_cluster(
        ("service.cluster", &wire.cluster),
        ("service.cluster_id", wire.cluster_id),
        peer,
    )?;
    let name =
        ServiceName::new(&wire.namespace, &wire.name).map_err(ProtoError::model("service.name"))?;
    let affinity = wire
        .affinity
        .parse()
        .map_err(ProtoError::model("service.affinity"))?;
    let mut frontends = BTreeMap::new();
    for f in wire.frontends {
        let ip = ip_from_wire("service.frontends.ip", &f.ip)?;
        let ports = ports_from_wire("service.frontends.ports", f.ports)?;
        insert_unique(&mut frontends, ip, ports, "service.frontends.ip")?;
    }
    let mut backends = BTreeMap::new();
    for b in wire.backends {
        let ip = ip_from_wire("service.backends.ip", &b.ip)?;
        let backend = Backend {
            ports: ports_from_wire("service.backends.ports", b.ports)?,
            conditions: BackendConditions {
                ready: b.ready,
                serving: b.serving,
                terminating: b.terminating,
            },
            hostname: b.hostname,
            zone: b.zone,
            for_zones: b.for_zones,
        };
        insert_unique(&mut backends, ip, backend, "service.backends.ip")?;
    }
    Ok(Service {
        cluster,
        cluster_id,
        name,
        frontends,
        backends,
        labels: wire.labels,
        selector: wire.selector,
        include_external: wire.include_external,
        shared: wire.shared,
        affinity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Affinity;
    use crate::proto::fixtures::{Corruption, mk_cluster, mk_service};

    #[test]
    fn backend_conditions_and_affinity_round_trip() {
        let c1 = mk_cluster("c1", 1);
        let svc = mk_service(&c1, "shop", "cart");
        assert_eq!(svc.affinity, Affinity::Local);
        assert!(svc.backends.values().any(|b| !b.conditions.ready));
        let wire = v1::Service::from(&svc);
        assert_eq!(wire.affinity, "local");
        assert_eq!(service_from_wire(wire, &c1).unwrap(), svc);

        // An absent affinity is `none`.
        let mut wire = v1::Service::from(&svc);
        wire.affinity.clear();
        assert_eq!(
            service_from_wire(wire, &c1).unwrap().affinity,
            Affinity::None
        );
    }

    #[test]
    fn services_must_name_the_peer_cluster() {
        let c1 = mk_cluster("c1", 1);
        let wire = v1::Service::from(&mk_service(&c1, "shop", "cart"));
        let err = service_from_wire(wire, &mk_cluster("c2", 2)).unwrap_err();
        assert!(matches!(
            err,
            ProtoError::WrongCluster {
                field: "service.cluster",
                ..
            }
        ));
    }

    #[test]
    fn invalid_service_fields_are_named() {
        let c1 = mk_cluster("c1", 1);
        let good = v1::Service::from(&mk_service(&c1, "shop", "cart"));
        let cases: [Corruption<v1::Service>; 5] = [
            ("service.name", |s| s.namespace = "Shop".into()),
            ("service.affinity", |s| s.affinity = "nearest".into()),
            ("service.backends.ip", |s| s.backends[0].ip = vec![1].into()),
            ("service.backends.ip", |s| {
                let dup = s.backends[0].clone();
                s.backends.push(dup);
            }),
            ("service.frontends.ports", |s| {
                s.frontends[0].ports[0].port = 1 << 16
            }),
        ];
        for (field, corrupt) in cases {
            let mut wire = good.clone();
            corrupt(&mut wire);
            let err = service_from_wire(wire, &c1).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
