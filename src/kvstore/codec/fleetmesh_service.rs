//! fleetmesh's own service values (`fleetmesh/state/services/v1/<cluster>/<ns>/<name>`):
//! everything the model holds, including backends that are neither ready nor serving,
//! their conditions and the service's affinity, none of which Cilium's format carries.
//!
//! ```json
//! { "cluster": "c1", "clusterId": 1, "namespace": "shop", "name": "cart",
//!   "frontends": {"10.96.0.10": {"http": {"protocol": "TCP", "port": 80}}},
//!   "backends": {"10.0.0.5": {
//!       "ports": {"http": {"protocol": "TCP", "port": 8080}},
//!       "conditions": {"ready": false, "serving": true, "terminating": true},
//!       "hostname": "cart-0", "zone": "eu-1a", "forZones": ["eu-1a"] }},
//!   "labels": {}, "selector": {"app": "cart"},
//!   "includeExternal": true, "shared": true, "affinity": "local" }
//! ```
//!
//! `hostname` and `zone` are omitted when unknown, `forZones` when empty; every other
//! field is required, since only fleetmesh writes this format.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{CodecError, from_json, parse_ip, to_json_bytes};
use crate::model::{
    Backend, BackendConditions, ClusterId, ClusterName, IdMode, L4Addr, PortMap, Service,
    ServiceName,
};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceJson {
    cluster: String,
    cluster_id: u32,
    namespace: String,
    name: String,
    frontends: BTreeMap<String, PortsJson>,
    backends: BTreeMap<String, BackendJson>,
    labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
    include_external: bool,
    shared: bool,
    affinity: String,
}

type PortsJson = BTreeMap<String, PortJson>;

#[derive(Serialize, Deserialize)]
struct PortJson {
    protocol: String,
    port: u16,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackendJson {
    ports: PortsJson,
    conditions: ConditionsJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    for_zones: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct ConditionsJson {
    ready: bool,
    serving: bool,
    terminating: bool,
}

fn ports_to_wire(ports: &PortMap) -> PortsJson {
    ports
        .iter()
        .map(|(name, addr)| {
            let wire = PortJson {
                protocol: addr.protocol.as_str().to_string(),
                port: addr.port,
            };
            (name.clone(), wire)
        })
        .collect()
}

fn ports_from_wire(ports: PortsJson) -> Result<PortMap, CodecError> {
    ports
        .into_iter()
        .map(|(name, addr)| {
            let protocol = addr
                .protocol
                .parse()
                .map_err(CodecError::model("fleetmesh service port protocol"))?;
            Ok((
                name,
                L4Addr {
                    protocol,
                    port: addr.port,
                },
            ))
        })
        .collect()
}

/// A service as fleetmesh's service JSON, with every backend.
pub fn encode_fleetmesh_service(svc: &Service) -> Bytes {
    let backends = svc
        .backends
        .iter()
        .map(|(ip, b)| {
            let wire = BackendJson {
                ports: ports_to_wire(&b.ports),
                conditions: ConditionsJson {
                    ready: b.conditions.ready,
                    serving: b.conditions.serving,
                    terminating: b.conditions.terminating,
                },
                hostname: b.hostname.clone(),
                zone: b.zone.clone(),
                for_zones: b.for_zones.clone(),
            };
            (ip.to_string(), wire)
        })
        .collect();
    let wire = ServiceJson {
        cluster: svc.cluster.to_string(),
        cluster_id: svc.cluster_id.get(),
        namespace: svc.name.namespace().to_string(),
        name: svc.name.name().to_string(),
        frontends: svc
            .frontends
            .iter()
            .map(|(ip, ports)| (ip.to_string(), ports_to_wire(ports)))
            .collect(),
        backends,
        labels: svc.labels.clone(),
        selector: svc.selector.clone(),
        include_external: svc.include_external,
        shared: svc.shared,
        affinity: svc.affinity.as_str().to_string(),
    };
    to_json_bytes(&wire)
}

/// Decodes fleetmesh's service JSON; `mode` bounds the cluster id.
pub fn decode_fleetmesh_service(bytes: &[u8], mode: IdMode) -> Result<Service, CodecError> {
    let wire: ServiceJson = from_json("fleetmesh service", bytes)?;
    let cluster =
        ClusterName::new(&wire.cluster).map_err(CodecError::model("fleetmesh service cluster"))?;
    let cluster_id = ClusterId::new(wire.cluster_id, mode)
        .map_err(CodecError::model("fleetmesh service clusterId"))?;
    let name = ServiceName::new(&wire.namespace, &wire.name)
        .map_err(CodecError::model("fleetmesh service name"))?;
    let affinity = wire
        .affinity
        .parse()
        .map_err(CodecError::model("fleetmesh service affinity"))?;
    let frontends = wire
        .frontends
        .into_iter()
        .map(|(ip, ports)| {
            let ip = parse_ip("fleetmesh service frontend", &ip)?;
            Ok((ip, ports_from_wire(ports)?))
        })
        .collect::<Result<_, CodecError>>()?;
    let backends = wire
        .backends
        .into_iter()
        .map(|(ip, b)| {
            let ip = parse_ip("fleetmesh service backend", &ip)?;
            let backend = Backend {
                ports: ports_from_wire(b.ports)?,
                conditions: BackendConditions {
                    ready: b.conditions.ready,
                    serving: b.conditions.serving,
                    terminating: b.conditions.terminating,
                },
                hostname: b.hostname,
                zone: b.zone,
                for_zones: b.for_zones,
            };
            Ok((ip, backend))
        })
        .collect::<Result<_, CodecError>>()?;
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
    use std::net::IpAddr;

    use serde_json::{Value, json};

    use super::*;
    use crate::kvstore::codec::encode_service;
    use crate::kvstore::codec::tests::{assert_truncations_fail, mk_backend};
    use crate::model::{Affinity, Protocol};

    fn mk_rich_service() -> Service {
        let mut svc = Service {
            cluster: ClusterName::new("east-1").unwrap(),
            cluster_id: ClusterId::new(300, IdMode::Extended).unwrap(),
            name: ServiceName::new("shop", "cart").unwrap(),
            frontends: BTreeMap::new(),
            backends: BTreeMap::new(),
            labels: [("team".to_string(), "payments".to_string())].into(),
            selector: [("app".to_string(), "cart".to_string())].into(),
            include_external: false,
            shared: false,
            affinity: Affinity::Remote,
        };
        let ports: PortMap = [
            (
                String::new(),
                L4Addr {
                    protocol: Protocol::Udp,
                    port: 53,
                },
            ),
            (
                "grpc".to_string(),
                L4Addr {
                    protocol: Protocol::Sctp,
                    port: 9000,
                },
            ),
        ]
        .into();
        svc.frontends
            .insert("10.96.0.10".parse().unwrap(), ports.clone());
        svc.frontends.insert("fd00:96::10".parse().unwrap(), ports);
        let terminating = BackendConditions {
            ready: false,
            serving: true,
            terminating: true,
        };
        let down = BackendConditions {
            ready: false,
            serving: false,
            terminating: true,
        };
        svc.backends.insert(
            "10.0.0.5".parse().unwrap(),
            mk_backend(8080, BackendConditions::READY, "cart-0"),
        );
        svc.backends.insert(
            "10.0.0.6".parse().unwrap(),
            mk_backend(8080, terminating, ""),
        );
        let mut bare = mk_backend(8081, down, "x");
        bare.hostname = None;
        bare.zone = None;
        bare.for_zones.clear();
        svc.backends.insert("fd00::6".parse().unwrap(), bare);
        svc
    }

    #[test]
    fn a_rich_service_round_trips() {
        let svc = mk_rich_service();
        let bytes = encode_fleetmesh_service(&svc);
        assert_eq!(
            decode_fleetmesh_service(&bytes, IdMode::Extended).unwrap(),
            svc
        );

        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["clusterId"], 300);
        assert_eq!(v["affinity"], "remote");
        assert_eq!(v["includeExternal"], false);
        assert_eq!(
            v["backends"]["10.0.0.6"],
            json!({
                "ports": {"http": {"protocol": "TCP", "port": 8080}},
                "conditions": {"ready": false, "serving": true, "terminating": true},
                "hostname": "", "zone": "eu-1b", "forZones": ["eu-1b", "eu-1c"]
            })
        );
        assert_eq!(
            v["backends"]["fd00::6"],
            json!({
                "ports": {"http": {"protocol": "TCP", "port": 8081}},
                "conditions": {"ready": false, "serving": false, "terminating": true}
            })
        );
    }

    #[test]
    fn unready_backends_are_kept_here_but_not_in_ciliums_format() {
        let svc = mk_rich_service();
        let down: IpAddr = "fd00::6".parse().unwrap();
        let ours =
            decode_fleetmesh_service(&encode_fleetmesh_service(&svc), IdMode::Extended).unwrap();
        assert!(ours.backends.contains_key(&down));
        let cilium: Value = serde_json::from_slice(&encode_service(&svc)).unwrap();
        assert!(cilium["backends"].get("fd00::6").is_none());
        assert!(cilium["backends"].get("10.0.0.6").is_some());
    }

    #[test]
    fn malformed_fleetmesh_services_are_refused() {
        let good: Value =
            serde_json::from_slice(&encode_fleetmesh_service(&mk_rich_service())).unwrap();
        let decode =
            |v: &Value| decode_fleetmesh_service(v.to_string().as_bytes(), IdMode::Extended);
        let with = |field: &str, value: Value| {
            let mut v = good.clone();
            v[field] = value;
            decode(&v).unwrap_err()
        };
        assert!(matches!(
            with("affinity", json!("nearest")),
            CodecError::Model {
                what: "fleetmesh service affinity",
                ..
            }
        ));
        assert!(matches!(
            with("clusterId", json!(0)),
            CodecError::Model {
                what: "fleetmesh service clusterId",
                ..
            }
        ));
        assert!(matches!(
            with("frontends", json!({"10.96.0.x": {}})),
            CodecError::Address { .. }
        ));
        let mut no_conditions = good.clone();
        no_conditions["backends"]["10.0.0.5"]
            .as_object_mut()
            .unwrap()
            .remove("conditions");
        assert!(matches!(
            decode(&no_conditions),
            Err(CodecError::Json { .. })
        ));
        let mut bad_protocol = good.clone();
        bad_protocol["backends"]["10.0.0.5"]["ports"]["http"]["protocol"] = json!("tcp");
        assert!(matches!(
            decode(&bad_protocol),
            Err(CodecError::Model {
                what: "fleetmesh service port protocol",
                ..
            })
        ));
        assert_truncations_fail(&encode_fleetmesh_service(&mk_rich_service()), |b| {
            decode_fleetmesh_service(b, IdMode::Extended)
        });
    }
}
