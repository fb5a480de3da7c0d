//! MCS-API service export values (`cilium/state/serviceexports/v1/<cluster>/<ns>/<name>`):
//! Cilium's `MCSAPIServiceSpec` JSON, field for field and in its order, with Go's
//! `omitempty` where Cilium has it.
//!
//! Exported labels and annotations are written twice, as `labels`/`annotations` and as
//! the capitalised `Labels`/`Annotations` older readers look for (reference §1.6);
//! decoding reads the lowercase ones, or the capitalised ones when those are all a value
//! has.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::time::{decode_timestamp, encode_timestamp};
use super::{CodecError, from_json, null_as_default, to_json_bytes};
use crate::model::{ClusterName, ExportPort, ServiceExport, ServiceName};

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecJson {
    cluster: String,
    name: String,
    namespace: String,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    annotations: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    labels: BTreeMap<String, String>,
    #[serde(
        rename = "Annotations",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    legacy_annotations: BTreeMap<String, String>,
    #[serde(
        rename = "Labels",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    legacy_labels: BTreeMap<String, String>,
    /// Go's zero `metav1.Time` is written as `null`: refused on decode, as Cilium does.
    export_creation_timestamp: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    ports: Vec<PortJson>,
    #[serde(rename = "type")]
    export_type: String,
    #[serde(default)]
    session_affinity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session_affinity_config: Option<AffinityConfigJson>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    ip_families: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    internal_traffic_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traffic_distribution: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortJson {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app_protocol: Option<String>,
    port: i32,
}

#[derive(Serialize, Deserialize)]
struct AffinityConfigJson {
    #[serde(rename = "clientIP", default, skip_serializing_if = "Option::is_none")]
    client_ip: Option<ClientIpJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClientIpJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_seconds: Option<i32>,
}

/// A service export as Cilium's `MCSAPIServiceSpec` JSON.
pub fn encode_service_export(export: &ServiceExport) -> Bytes {
    let created = OffsetDateTime::from_unix_timestamp(export.export_created_unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let wire = SpecJson {
        cluster: export.cluster.to_string(),
        name: export.name.name().to_string(),
        namespace: export.name.namespace().to_string(),
        annotations: export.annotations.clone(),
        labels: export.labels.clone(),
        legacy_annotations: export.annotations.clone(),
        legacy_labels: export.labels.clone(),
        export_creation_timestamp: Some(
            String::from_utf8_lossy(&encode_timestamp(created)).into_owned(),
        ),
        ports: export
            .ports
            .iter()
            .map(|p| PortJson {
                name: p.name.clone(),
                protocol: p.protocol.as_str().to_string(),
                app_protocol: p.app_protocol.clone(),
                port: i32::from(p.port),
            })
            .collect(),
        export_type: export.export_type.as_str().to_string(),
        session_affinity: export.session_affinity.as_str().to_string(),
        session_affinity_config: export
            .session_affinity_timeout_seconds
            .map(|timeout_seconds| AffinityConfigJson {
                client_ip: Some(ClientIpJson {
                    timeout_seconds: Some(timeout_seconds),
                }),
            }),
        ip_families: export
            .ip_families
            .iter()
            .map(|f| f.as_str().to_string())
            .collect(),
        internal_traffic_policy: export
            .internal_traffic_policy
            .map(|p| p.as_str().to_string()),
        traffic_distribution: export.traffic_distribution.map(|d| d.as_str().to_string()),
    };
    to_json_bytes(&wire)
}

/// Decodes Cilium's `MCSAPIServiceSpec` JSON, refusing what Cilium's own validation
/// refuses: no cluster, namespace, name or creation time, and unknown enum values.
pub fn decode_service_export(bytes: &[u8]) -> Result<ServiceExport, CodecError> {
    let wire: SpecJson = from_json("service export", bytes)?;
    let model = |what| CodecError::model(what);
    let cluster = ClusterName::new(&wire.cluster).map_err(model("service export cluster"))?;
    let name =
        ServiceName::new(&wire.namespace, &wire.name).map_err(model("service export name"))?;
    let created = wire
        .export_creation_timestamp
        .as_deref()
        .ok_or(CodecError::Missing {
            what: "service export exportCreationTimestamp",
        })?;
    let created = decode_timestamp(created.as_bytes())?.unix_timestamp();
    let mut ports = Vec::with_capacity(wire.ports.len());
    for port in wire.ports {
        let protocol = if port.protocol.is_empty() {
            crate::model::Protocol::Tcp
        } else {
            port.protocol
                .parse()
                .map_err(model("service export port protocol"))?
        };
        let number =
            u16::try_from(port.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or(CodecError::OutOfRange {
                    what: "service export port",
                    value: i64::from(port.port),
                })?;
        ports.push(ExportPort {
            name: port.name,
            protocol,
            app_protocol: port.app_protocol,
            port: number,
        });
    }
    let session_affinity = if wire.session_affinity.is_empty() {
        crate::model::SessionAffinity::None
    } else {
        wire.session_affinity
            .parse()
            .map_err(model("service export sessionAffinity"))?
    };
    let ip_families = wire
        .ip_families
        .iter()
        .map(|f| f.parse())
        .collect::<Result<_, _>>()
        .map_err(model("service export ipFamilies"))?;
    let pick = |lower: BTreeMap<String, String>, legacy: BTreeMap<String, String>| {
        if lower.is_empty() { legacy } else { lower }
    };
    Ok(ServiceExport {
        cluster,
        name,
        export_created_unix: created,
        ports,
        export_type: wire
            .export_type
            .parse()
            .map_err(model("service export type"))?,
        session_affinity,
        session_affinity_timeout_seconds: wire
            .session_affinity_config
            .and_then(|c| c.client_ip)
            .and_then(|c| c.timeout_seconds),
        ip_families,
        labels: pick(wire.labels, wire.legacy_labels),
        annotations: pick(wire.annotations, wire.legacy_annotations),
        internal_traffic_policy: wire
            .internal_traffic_policy
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(model("service export internalTrafficPolicy"))?,
        traffic_distribution: wire
            .traffic_distribution
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(model("service export trafficDistribution"))?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::kvstore::codec::tests::assert_truncations_fail;

    /// The example of the reference, §1.6.
    const REFERENCE: &str = r#"{ "cluster": "cluster1", "name": "rebel-base", "namespace": "default",
      "exportCreationTimestamp": "2026-01-10T12:00:00Z",
      "ports": [{"name": "http", "protocol": "TCP", "port": 80}],
      "type": "ClusterSetIP", "sessionAffinity": "None", "ipFamilies": ["IPv4"] }"#;

    #[test]
    fn the_reference_export_decodes_and_re_encodes() {
        let export = decode_service_export(REFERENCE.as_bytes()).unwrap();
        assert_eq!(export.name.to_string(), "default/rebel-base");
        assert_eq!(export.export_created_unix, 1_768_046_400);
        let encoded: Value = serde_json::from_slice(&encode_service_export(&export)).unwrap();
        let reference: Value = serde_json::from_str(REFERENCE).unwrap();
        assert_eq!(encoded, reference);
    }

    #[test]
    fn every_field_round_trips_and_labels_are_written_twice() {
        let mut export = decode_service_export(REFERENCE.as_bytes()).unwrap();
        export.labels = [("tier".to_string(), "front".to_string())].into();
        export.annotations = [("a".to_string(), "b".to_string())].into();
        export.session_affinity = crate::model::SessionAffinity::ClientIp;
        export.session_affinity_timeout_seconds = Some(300);
        export.internal_traffic_policy = Some(crate::model::InternalTrafficPolicy::Local);
        export.traffic_distribution = Some(crate::model::TrafficDistribution::PreferSameZone);
        export.ports[0].app_protocol = Some("http".into());
        let bytes = encode_service_export(&export);
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["labels"], json!({"tier": "front"}));
        assert_eq!(json["Labels"], json!({"tier": "front"}));
        assert_eq!(json["Annotations"], json!({"a": "b"}));
        assert_eq!(
            json["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 300}})
        );
        assert_eq!(json["ports"][0]["appProtocol"], "http");
        assert_eq!(decode_service_export(&bytes).unwrap(), export);
        assert_truncations_fail(&bytes, decode_service_export);
    }

    #[test]
    fn what_cilium_refuses_is_refused() {
        for bad in [
            r#"{"cluster": "", "name": "a", "namespace": "b", "exportCreationTimestamp": "2026-01-10T12:00:00Z", "ports": [], "type": "Headless", "sessionAffinity": "None"}"#,
            r#"{"cluster": "c", "name": "a", "namespace": "b", "exportCreationTimestamp": null, "ports": [], "type": "Headless", "sessionAffinity": "None"}"#,
            r#"{"cluster": "c", "name": "a", "namespace": "b", "exportCreationTimestamp": "2026-01-10T12:00:00Z", "ports": [], "type": "LoadBalancer", "sessionAffinity": "None"}"#,
            r#"{"cluster": "c", "name": "a", "namespace": "b", "exportCreationTimestamp": "2026-01-10T12:00:00Z", "ports": [], "type": "Headless", "sessionAffinity": "Sticky"}"#,
            r#"{"cluster": "c", "name": "a", "namespace": "b", "exportCreationTimestamp": "2026-01-10T12:00:00Z", "ports": [], "type": "Headless", "sessionAffinity": "None", "trafficDistribution": "Anywhere"}"#,
        ] {
            assert!(decode_service_export(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
