//! Cluster config values (`cilium/cluster-config/<cluster>`): Cilium's
//! `CiliumClusterConfig` JSON, with Go's `omitempty` on every field.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{CodecError, from_json, to_json_bytes};
use crate::model::{Capabilities, ClusterConfig, ClusterId, IdMode};

/// What an absent (or zero) `maxConnectedClusters` means: Cilium before extended mode.
const DEFAULT_MAX_CONNECTED_CLUSTERS: u32 = 255;

#[derive(Serialize, Deserialize)]
struct ClusterConfigJson {
    /// Zero (absent) is "no cluster mesh": refused on decode.
    #[serde(default)]
    id: u32,
    #[serde(default)]
    capabilities: CapabilitiesJson,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CapabilitiesJson {
    #[serde(default, skip_serializing_if = "is_false")]
    synced_canaries: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    cached: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    max_connected_clusters: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_exports_enabled: Option<bool>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A cluster config as Cilium's `CiliumClusterConfig` JSON.
pub fn encode_cluster_config(cfg: &ClusterConfig) -> Bytes {
    let caps = &cfg.capabilities;
    let wire = ClusterConfigJson {
        id: cfg.id.get(),
        capabilities: CapabilitiesJson {
            synced_canaries: caps.synced_canaries,
            cached: caps.cached,
            max_connected_clusters: caps.mode.max_cluster_id(),
            service_exports_enabled: caps.service_exports_enabled,
        },
    };
    to_json_bytes(&wire)
}

/// Decodes Cilium's `CiliumClusterConfig` JSON. The id must be a valid member id for the
/// announced mode (so 0, "no cluster mesh", is an error).
pub fn decode_cluster_config(bytes: &[u8]) -> Result<ClusterConfig, CodecError> {
    let wire: ClusterConfigJson = from_json("cluster config", bytes)?;
    let caps = wire.capabilities;
    let max = match caps.max_connected_clusters {
        0 => DEFAULT_MAX_CONNECTED_CLUSTERS,
        max => max,
    };
    let mode = IdMode::from_max_connected_clusters(max)
        .map_err(CodecError::model("cluster config maxConnectedClusters"))?;
    let id = ClusterId::new(wire.id, mode).map_err(CodecError::model("cluster config id"))?;
    Ok(ClusterConfig {
        id,
        capabilities: Capabilities {
            synced_canaries: caps.synced_canaries,
            cached: caps.cached,
            mode,
            service_exports_enabled: caps.service_exports_enabled,
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::kvstore::codec::tests::assert_truncations_fail;

    /// The exact fixture of the reference, §1.7 (Cilium's `clusterconfig.txtar`).
    const REFERENCE: &str = r#"{ "id": 3,
      "capabilities": { "syncedCanaries": true, "maxConnectedClusters": 255,
                        "serviceExportsEnabled": false } }"#;

    fn encoded(cfg: &ClusterConfig) -> Value {
        serde_json::from_slice(&encode_cluster_config(cfg)).unwrap()
    }

    #[test]
    fn reference_config_decodes_and_re_encodes() {
        let cfg = decode_cluster_config(REFERENCE.as_bytes()).unwrap();
        assert_eq!(cfg.id.get(), 3);
        assert_eq!(cfg.capabilities, Capabilities::fleetmesh(IdMode::Normal));
        let reference: Value = serde_json::from_str(REFERENCE).unwrap();
        assert_eq!(encoded(&cfg), reference);
    }

    #[test]
    fn empty_capabilities_are_omitted() {
        let cfg = ClusterConfig {
            id: ClusterId::new(300, IdMode::Extended).unwrap(),
            capabilities: Capabilities {
                synced_canaries: false,
                cached: false,
                mode: IdMode::Extended,
                service_exports_enabled: None,
            },
        };
        assert_eq!(
            encoded(&cfg),
            json!({"id": 300, "capabilities": {"maxConnectedClusters": 511}})
        );
        assert_eq!(
            decode_cluster_config(&encode_cluster_config(&cfg)).unwrap(),
            cfg
        );

        let cached = ClusterConfig {
            capabilities: Capabilities {
                cached: true,
                service_exports_enabled: Some(true),
                ..cfg.capabilities.clone()
            },
            ..cfg
        };
        assert_eq!(
            encoded(&cached),
            json!({"id": 300, "capabilities": {"cached": true, "maxConnectedClusters": 511,
                                               "serviceExportsEnabled": true}})
        );
        assert_eq!(
            decode_cluster_config(&encode_cluster_config(&cached)).unwrap(),
            cached
        );
    }

    #[test]
    fn absent_max_connected_clusters_means_255() {
        for json in [
            r#"{"id": 7}"#,
            r#"{"id": 7, "capabilities": {}}"#,
            r#"{"id": 7, "capabilities": {"maxConnectedClusters": 0}}"#,
        ] {
            let cfg = decode_cluster_config(json.as_bytes()).unwrap();
            assert_eq!(cfg.capabilities.mode, IdMode::Normal, "{json}");
            assert_eq!(cfg.capabilities.service_exports_enabled, None);
            assert!(!cfg.capabilities.synced_canaries);
        }
    }

    #[test]
    fn invalid_configs_are_refused() {
        let err = |json: &str| decode_cluster_config(json.as_bytes()).unwrap_err();
        for json in [r#"{"id": 0}"#, r#"{"capabilities": {}}"#, r#"{"id": 256}"#] {
            assert!(
                matches!(
                    err(json),
                    CodecError::Model {
                        what: "cluster config id",
                        ..
                    }
                ),
                "{json}"
            );
        }
        assert!(
            decode_cluster_config(br#"{"id": 256, "capabilities": {"maxConnectedClusters": 511}}"#)
                .is_ok()
        );
        assert!(matches!(
            err(r#"{"id": 3, "capabilities": {"maxConnectedClusters": 300}}"#),
            CodecError::Model {
                what: "cluster config maxConnectedClusters",
                ..
            }
        ));
        assert!(matches!(err(r#"{"id": -1}"#), CodecError::Json { .. }));
        assert!(matches!(err("3"), CodecError::Json { .. }));
        let cfg = decode_cluster_config(REFERENCE.as_bytes()).unwrap();
        assert_truncations_fail(&encode_cluster_config(&cfg), decode_cluster_config);
    }
}
