//! Service export ⇄ wire.

use super::wire::narrow;
use super::{ProtoError, v1};
use crate::model::{Cluster, ExportPort, ServiceExport, ServiceName};

impl From<&ServiceExport> for v1::ServiceExport {
    fn from(export: &ServiceExport) -> Self {
        v1::ServiceExport {
            cluster: export.cluster.to_string(),
            namespace: export.name.namespace().to_string(),
            name: export.name.name().to_string(),
            export_created_unix: export.export_created_unix,
            ports: export
                .ports
                .iter()
                .map(|p| v1::ExportPort {
                    name: p.name.clone(),
                    protocol: p.protocol.as_str().to_string(),
                    app_protocol: p.app_protocol.clone(),
                    port: u32::from(p.port),
                })
                .collect(),
            r#type: export.export_type.as_str().to_string(),
            session_affinity: export.session_affinity.as_str().to_string(),
            session_affinity_timeout_seconds: export.session_affinity_timeout_seconds,
            ip_families: export
                .ip_families
                .iter()
                .map(|f| f.as_str().to_string())
                .collect(),
            labels: export.labels.clone().into_iter().collect(),
            annotations: export.annotations.clone().into_iter().collect(),
            internal_traffic_policy: export
                .internal_traffic_policy
                .map(|p| p.as_str().to_string()),
            traffic_distribution: export.traffic_distribution.map(|d| d.as_str().to_string()),
        }
    }
}

/// A peer's service export: it must name the peer's cluster; every enumerated value
/// must be one Kubernetes knows, and ports must be in 1..=65535.
pub fn service_export_from_wire(
    wire: v1::ServiceExport,
    peer: &Cluster,
) -> Result<ServiceExport, ProtoError> {
    if wire.cluster != peer.name.as_str() {
        return Err(ProtoError::WrongCluster {
            field: "service_export.cluster",
            found: wire.cluster,
            expected: peer.name.to_string(),
        });
    }
    let name = ServiceName::new(&wire.namespace, &wire.name)
        .map_err(ProtoError::model("service_export.name"))?;
    let mut ports = Vec::with_capacity(wire.ports.len());
    for port in wire.ports {
        let number: u16 = narrow("service_export.ports.port", port.port)?;
        if number == 0 {
            return Err(ProtoError::value(
                "service_export.ports.port",
                0,
                "must be in 1..=65535",
            ));
        }
        ports.push(ExportPort {
            name: port.name,
            protocol: port
                .protocol
                .parse()
                .map_err(ProtoError::model("service_export.ports.protocol"))?,
            app_protocol: port.app_protocol,
            port: number,
        });
    }
    let ip_families = wire
        .ip_families
        .iter()
        .map(|f| f.parse())
        .collect::<Result<_, _>>()
        .map_err(ProtoError::model("service_export.ip_families"))?;
    Ok(ServiceExport {
        cluster: peer.name.clone(),
        name,
        export_created_unix: wire.export_created_unix,
        ports,
        export_type: wire
            .r#type
            .parse()
            .map_err(ProtoError::model("service_export.type"))?,
        session_affinity: wire
            .session_affinity
            .parse()
            .map_err(ProtoError::model("service_export.session_affinity"))?,
        session_affinity_timeout_seconds: wire.session_affinity_timeout_seconds,
        ip_families,
        labels: wire.labels.into_iter().collect(),
        annotations: wire.annotations.into_iter().collect(),
        internal_traffic_policy: wire
            .internal_traffic_policy
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(ProtoError::model("service_export.internal_traffic_policy"))?,
        traffic_distribution: wire
            .traffic_distribution
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(ProtoError::model("service_export.traffic_distribution"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fixtures::{mk_cluster, mk_service_export};

    #[test]
    fn an_export_round_trips_and_another_clusters_is_refused() {
        let c2 = mk_cluster("c2", 2);
        let export = mk_service_export(&c2, "shop", "web");
        let wire = v1::ServiceExport::from(&export);
        assert_eq!(service_export_from_wire(wire.clone(), &c2).unwrap(), export);

        let c3 = mk_cluster("c3", 3);
        let err = service_export_from_wire(wire.clone(), &c3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service_export.cluster is \"c2\", not the serving cluster's \"c3\""
        );
        let mut odd = wire.clone();
        odd.r#type = "LoadBalancer".into();
        assert!(
            service_export_from_wire(odd, &c2)
                .unwrap_err()
                .to_string()
                .contains("service_export.type")
        );
        let mut zero = wire;
        zero.ports[0].port = 70_000;
        assert!(service_export_from_wire(zero, &c2).is_err());
    }
}
