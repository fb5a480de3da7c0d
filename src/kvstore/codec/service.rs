//! Global service values (`cilium/state/services/v1/<cluster>/<ns>/<name>`): Cilium's
//! `ClusterService` JSON. It carries no endpoint conditions, so only backends that are
//! ready or serving are written (what Cilium exports) and every decoded backend is ready.

use std::collections::BTreeMap;
use std::net::IpAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{CodecError, from_json, null_as_default, parse_ip, to_json_bytes};
use crate::model::{
    Affinity, Backend, BackendConditions, ClusterId, ClusterName, IdMode, L4Addr, PortMap, Service,
    ServiceName,
};

/// The wire shape, in Cilium's field order. Missing fields and `null` maps read as Go's
/// zero values, as `encoding/json` reads them.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct ClusterServiceJson {
    cluster: String,
    namespace: String,
    name: String,
    #[serde(deserialize_with = "null_as_default")]
    frontends: BTreeMap<String, PortConfigJson>,
    #[serde(deserialize_with = "null_as_default")]
    backends: BTreeMap<String, PortConfigJson>,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    hostnames: BTreeMap<String, String>,
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    zones: BTreeMap<String, ZoneJson>,
    #[serde(deserialize_with = "null_as_default")]
    labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_as_default")]
    selector: BTreeMap<String, String>,
    #[serde(rename = "includeExternal")]
    include_external: bool,
    shared: bool,
    #[serde(rename = "clusterID")]
    cluster_id: u32,
}

/// Cilium's `PortConfiguration`: port name → `L4Addr`.
type PortConfigJson = BTreeMap<String, L4AddrJson>;

/// Cilium's `L4Addr` has no JSON tags: capitalised Go field names.
#[derive(Serialize, Deserialize)]
struct L4AddrJson {
    #[serde(rename = "Protocol")]
    protocol: String,
    #[serde(rename = "Port")]
    port: u16,
}

#[derive(Serialize, Deserialize)]
struct ZoneJson {
    #[serde(default)]
    zone: String,
    #[serde(
        rename = "forZones",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    for_zones: Vec<ForZoneJson>,
}

#[derive(Serialize, Deserialize)]
struct ForZoneJson {
    name: String,
}

fn ports_to_wire(ports: &PortMap) -> PortConfigJson {
    ports
        .iter()
        .map(|(name, addr)| {
            let wire = L4AddrJson {
                protocol: addr.protocol.as_str().to_string(),
                port: addr.port,
            };
            (name.clone(), wire)
        })
        .collect()
}

fn ports_from_wire(ports: PortConfigJson) -> Result<PortMap, CodecError> {
    ports
        .into_iter()
        .map(|(name, addr)| {
            let protocol = addr
                .protocol
                .parse()
                .map_err(CodecError::model("service port Protocol"))?;
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

/// A service as Cilium's `ClusterService` JSON, with only its ready or serving backends.
pub fn encode_service(svc: &Service) -> Bytes {
    let exported = svc
        .backends
        .iter()
        .filter(|(_, b)| b.conditions.ready || b.conditions.serving);
    let mut backends = BTreeMap::new();
    let mut hostnames = BTreeMap::new();
    let mut zones = BTreeMap::new();
    for (ip, backend) in exported {
        let ip = ip.to_string();
        if let Some(hostname) = &backend.hostname {
            hostnames.insert(ip.clone(), hostname.clone());
        }
        if backend.zone.is_some() || !backend.for_zones.is_empty() {
            let zone = ZoneJson {
                zone: backend.zone.clone().unwrap_or_default(),
                for_zones: backend
                    .for_zones
                    .iter()
                    .map(|name| ForZoneJson { name: name.clone() })
                    .collect(),
            };
            zones.insert(ip.clone(), zone);
        }
        backends.insert(ip, ports_to_wire(&backend.ports));
    }
    let wire = ClusterServiceJson {
        cluster: svc.cluster.to_string(),
        namespace: svc.name.namespace().to_string(),
        name: svc.name.name().to_string(),
        frontends: svc
            .frontends
            .iter()
            .map(|(ip, ports)| (ip.to_string(), ports_to_wire(ports)))
            .collect(),
        backends,
        hostnames,
        zones,
        labels: svc.labels.clone(),
        selector: svc.selector.clone(),
        include_external: svc.include_external,
        shared: svc.shared,
        cluster_id: svc.cluster_id.get(),
    };
    to_json_bytes(&wire)
}

/// Re-keys a per-backend map by address; a key that is not an address is malformed data.
fn by_address<T>(
    what: &'static str,
    map: BTreeMap<String, T>,
) -> Result<BTreeMap<IpAddr, T>, CodecError> {
    map.into_iter()
        .map(|(ip, v)| Ok((parse_ip(what, &ip)?, v)))
        .collect()
}

/// Decodes Cilium's `ClusterService` JSON; `mode` bounds the cluster id. Backends come out
/// ready (the format only holds ready or serving ones) and the affinity is `None` (the
/// format does not carry it). Hostnames and zones of addresses that are not backends are
/// ignored, as Cilium ignores them.
pub fn decode_service(bytes: &[u8], mode: IdMode) -> Result<Service, CodecError> {
    let wire: ClusterServiceJson = from_json("service", bytes)?;
    let cluster = ClusterName::new(&wire.cluster).map_err(CodecError::model("service cluster"))?;
    let cluster_id =
        ClusterId::new(wire.cluster_id, mode).map_err(CodecError::model("service clusterID"))?;
    let name =
        ServiceName::new(&wire.namespace, &wire.name).map_err(CodecError::model("service name"))?;
    let frontends = by_address("service frontend", wire.frontends)?
        .into_iter()
        .map(|(ip, ports)| Ok((ip, ports_from_wire(ports)?)))
        .collect::<Result<_, CodecError>>()?;
    let mut hostnames = by_address("service hostname", wire.hostnames)?;
    let mut zones = by_address("service zone", wire.zones)?;
    let backends = by_address("service backend", wire.backends)?
        .into_iter()
        .map(|(ip, ports)| {
            let zone = zones.remove(&ip);
            let backend = Backend {
                ports: ports_from_wire(ports)?,
                conditions: BackendConditions::READY,
                hostname: hostnames.remove(&ip),
                zone: zone
                    .as_ref()
                    .map(|z| z.zone.clone())
                    .filter(|z| !z.is_empty()),
                for_zones: zone
                    .map(|z| z.for_zones.into_iter().map(|f| f.name).collect())
                    .unwrap_or_default(),
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
        affinity: Affinity::None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::kvstore::codec::tests::{assert_truncations_fail, mk_backend};
    use crate::model::Protocol;

    /// The example of the reference, §1.3.
    fn mk_reference_json() -> Value {
        json!({
          "cluster": "cluster2", "namespace": "test", "name": "echo",
          "frontends": {"10.96.12.34": {"http": {"Protocol": "TCP", "Port": 8080}}},
          "backends":  {"20.0.0.2":    {"http": {"Protocol": "TCP", "Port": 9090}}},
          "zones": {"20.0.0.2": {"zone": "eu-1a", "forZones": [{"name": "eu-1a"}]}},
          "labels": {}, "selector": {"app": "echo"},
          "includeExternal": true, "shared": true, "clusterID": 2
        })
    }

    fn decode_value(v: &Value) -> Result<Service, CodecError> {
        decode_service(v.to_string().as_bytes(), IdMode::Normal)
    }

    #[test]
    fn reference_service_decodes_and_re_encodes() {
        let reference = mk_reference_json();
        let svc = decode_value(&reference).unwrap();
        assert_eq!(svc.cluster.as_str(), "cluster2");
        assert_eq!(svc.cluster_id.get(), 2);
        assert_eq!(svc.name.to_string(), "test/echo");
        let frontend: IpAddr = "10.96.12.34".parse().unwrap();
        assert_eq!(svc.frontends[&frontend]["http"].port, 8080);
        let backend = &svc.backends[&"20.0.0.2".parse::<IpAddr>().unwrap()];
        assert_eq!(
            backend.ports["http"],
            L4Addr {
                protocol: Protocol::Tcp,
                port: 9090
            }
        );
        assert_eq!(backend.conditions, BackendConditions::READY);
        assert_eq!(backend.zone.as_deref(), Some("eu-1a"));
        assert_eq!(backend.for_zones, ["eu-1a"]);
        assert_eq!(backend.hostname, None);
        assert_eq!(svc.selector["app"], "echo");
        assert!(svc.labels.is_empty());
        assert!(svc.include_external && svc.shared);
        assert_eq!(svc.affinity, Affinity::None);

        let encoded: Value = serde_json::from_slice(&encode_service(&svc)).unwrap();
        assert_eq!(encoded, reference);
    }

    #[test]
    fn only_ready_or_serving_backends_are_exported() {
        let mut svc = decode_value(&mk_reference_json()).unwrap();
        let terminating = BackendConditions {
            ready: false,
            serving: true,
            terminating: true,
        };
        let down = BackendConditions::default();
        svc.backends.clear();
        for (ip, backend) in [
            ("20.0.0.3", mk_backend(9090, BackendConditions::READY, "a")),
            ("20.0.0.4", mk_backend(9090, terminating, "b")),
            ("20.0.0.5", mk_backend(9090, down, "c")),
        ] {
            svc.backends.insert(ip.parse().unwrap(), backend);
        }
        let encoded: Value = serde_json::from_slice(&encode_service(&svc)).unwrap();
        let written = |field: &str| {
            let mut keys: Vec<String> = encoded[field]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            keys.sort();
            keys
        };
        for field in ["backends", "hostnames", "zones"] {
            assert_eq!(written(field), ["20.0.0.3", "20.0.0.4"], "{field}");
        }
        assert_eq!(
            encoded["zones"]["20.0.0.4"],
            json!({"zone": "eu-1b", "forZones": [{"name": "eu-1b"}, {"name": "eu-1c"}]})
        );

        let decoded = decode_service(&encode_service(&svc), IdMode::Normal).unwrap();
        assert_eq!(decoded.backends.len(), 2);
        let b = &decoded.backends[&"20.0.0.4".parse::<IpAddr>().unwrap()];
        assert_eq!(b.conditions, BackendConditions::READY);
        assert_eq!(b.hostname.as_deref(), Some("b"));
        assert_eq!(b.for_zones, ["eu-1b", "eu-1c"]);
    }

    #[test]
    fn go_nil_maps_read_as_empty() {
        let v = json!({
            "cluster": "c1", "namespace": "ns", "name": "web",
            "frontends": null, "backends": null, "hostnames": null, "zones": null,
            "labels": null, "selector": null,
            "includeExternal": true, "shared": true, "clusterID": 1
        });
        let svc = decode_value(&v).unwrap();
        assert!(svc.frontends.is_empty() && svc.backends.is_empty());
        assert!(svc.labels.is_empty() && svc.selector.is_empty());
    }

    #[test]
    fn malformed_services_are_refused() {
        let with = |field: &str, value: Value| {
            let mut v = mk_reference_json();
            v[field] = value;
            decode_value(&v).unwrap_err()
        };
        assert!(matches!(
            decode_service(b"\"echo\"", IdMode::Normal),
            Err(CodecError::Json {
                what: "service",
                ..
            })
        ));
        assert!(matches!(
            with("clusterID", json!(0)),
            CodecError::Model {
                what: "service clusterID",
                ..
            }
        ));
        assert!(matches!(
            with("namespace", json!("")),
            CodecError::Model {
                what: "service name",
                ..
            }
        ));
        assert!(matches!(
            with("cluster", json!("")),
            CodecError::Model {
                what: "service cluster",
                ..
            }
        ));
        assert!(matches!(
            with("backends", json!({"20.0.0": {}})),
            CodecError::Address {
                what: "service backend",
                ..
            }
        ));
        assert!(matches!(
            with(
                "frontends",
                json!({"10.0.0.1": {"x": {"Protocol": "ICMP", "Port": 1}}})
            ),
            CodecError::Model {
                what: "service port Protocol",
                ..
            }
        ));
        assert!(matches!(
            with(
                "backends",
                json!({"20.0.0.2": {"x": {"Protocol": "TCP", "Port": 70000}}})
            ),
            CodecError::Json { .. }
        ));
        assert_truncations_fail(
            &encode_service(&decode_value(&mk_reference_json()).unwrap()),
            |b| decode_service(b, IdMode::Normal),
        );
    }
}
