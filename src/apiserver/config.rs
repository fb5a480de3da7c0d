//! The apiserver's configuration file (YAML). Every field is documented in the README;
//! unknown fields are refused so that a typo is an error, not a silent default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::config::ClusterBlock;
use crate::grpc::AllowedPeers;
use crate::kvstore::etcd::{EtcdConfig, EtcdTls};
use crate::model::{Cluster, ClusterName};
use crate::tls::TlsFiles;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("config {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    cluster: ClusterBlock,
    #[serde(default)]
    store: StoreConfig,
    source: RawSource,
    grpc: Option<RawGrpc>,
    etcd_api: Option<RawEtcdApi>,
    #[serde(default)]
    health: HealthConfig,
    #[serde(default)]
    export: RawExport,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawGrpc {
    listen: SocketAddr,
    tls: RawTls,
    /// Absent: every cluster whose certificate the CA trusts may watch.
    allowed_peers: Option<Vec<String>>,
    /// How often the TLS files are checked for changes (default 10).
    tls_reload_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEtcdApi {
    listen: SocketAddr,
    tls: RawTls,
    /// Absent: the gRPC server's (every trusted cluster if there is no gRPC server).
    allowed_peers: Option<Vec<String>>,
    /// How often the TLS files are checked for changes (default 10).
    tls_reload_seconds: Option<u64>,
    /// Changes the revision log keeps (default 50,000).
    history_events: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// The gRPC server: where it listens, its certificates, and who may watch.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    pub listen: SocketAddr,
    pub tls: TlsFiles,
    pub allowed_peers: AllowedPeers,
    /// How often the TLS files are checked for changes: new handshakes use new files
    /// within this long.
    pub tls_reload: Duration,
}

/// The etcd v3 API for Cilium agents: where it listens, its certificates (the same
/// kind as the gRPC server's, reloaded the same way), and who may read.
#[derive(Debug, Clone)]
pub struct EtcdApiConfig {
    pub listen: SocketAddr,
    pub tls: TlsFiles,
    pub allowed_peers: AllowedPeers,
    pub tls_reload: Duration,
    /// Changes the revision log keeps: how far back a watch may start.
    pub history_events: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSource {
    manifests: Option<PathBuf>,
    /// `Some(None)`: `kube:` given without a value, the same as `kube: {}`.
    #[serde(default, deserialize_with = "present")]
    kube: Option<Option<RawKube>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawKube {
    /// Absent: `$KUBECONFIG`, `~/.kube/config`, then the in-cluster service account.
    kubeconfig: Option<PathBuf>,
}

/// A field that is present, whatever its value (null included); absent fields take the
/// `default`. Tells `kube:` apart from no `kube` at all.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawExport {
    lease_ttl_seconds: Option<u64>,
    heartbeat_seconds: Option<u64>,
}

/// Which store the apiserver writes to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub kind: StoreKind,
    pub etcd: Option<RawEtcd>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded store: state lives in this process.
    #[default]
    Memory,
    Etcd,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawEtcd {
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub namespace: String,
    pub tls: Option<RawEtcdTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawEtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The health and readiness endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthConfig {
    pub listen: SocketAddr,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            // Cilium's clustermesh-apiserver health port.
            listen: SocketAddr::from(([0, 0, 0, 0], 9880)),
        }
    }
}

/// Where the cluster's state comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// A directory of Kubernetes YAML, watched for changes.
    Manifests(PathBuf),
    /// The cluster's API server, list-watched.
    Kube {
        /// `None`: inferred as `kubectl` would, falling back to in-cluster credentials.
        kubeconfig: Option<PathBuf>,
    },
}

/// A validated apiserver configuration.
#[derive(Debug, Clone)]
pub struct ApiserverConfig {
    pub cluster: Cluster,
    pub store: StoreSettings,
    pub source: SourceConfig,
    /// `None`: the state is exported to the store but not served over gRPC.
    pub grpc: Option<GrpcConfig>,
    /// `None`: no etcd API for Cilium agents.
    pub etcd_api: Option<EtcdApiConfig>,
    pub health: HealthConfig,
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
}

/// The store to open.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    Memory,
    Etcd(EtcdConfig),
}

impl ApiserverConfig {
    /// Reads and validates a config file. Relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates a config held in memory; `path` names it in errors and anchors relative
    /// paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |field, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        let base = path.parent().unwrap_or(Path::new("."));

        let cluster = raw
            .cluster
            .to_cluster()
            .map_err(|(field, message)| invalid(field, message))?;

        let store = match raw.store.kind {
            StoreKind::Memory => StoreSettings::Memory,
            StoreKind::Etcd => {
                let etcd = raw.store.etcd.ok_or_else(|| {
                    invalid("store.etcd", "required when store.kind is etcd".to_string())
                })?;
                if etcd.endpoints.is_empty() {
                    return Err(invalid(
                        "store.etcd.endpoints",
                        "must not be empty".to_string(),
                    ));
                }
                StoreSettings::Etcd(EtcdConfig {
                    endpoints: etcd.endpoints,
                    namespace: etcd.namespace,
                    tls: etcd.tls.map(|t| EtcdTls {
                        ca_file: base.join(t.ca),
                        cert_file: base.join(t.cert),
                        key_file: base.join(t.key),
                    }),
                    ..EtcdConfig::default()
                })
            }
        };

        let source = match (raw.source.manifests, raw.source.kube) {
            (Some(dir), None) => SourceConfig::Manifests(base.join(dir)),
            (None, Some(kube)) => SourceConfig::Kube {
                kubeconfig: kube.and_then(|k| k.kubeconfig).map(|file| base.join(file)),
            },
            (manifests, kube) => {
                let which = if manifests.is_some() && kube.is_some() {
                    "set only one of"
                } else {
                    "set one of"
                };
                return Err(invalid(
                    "source",
                    format!(
                        "{which} source.manifests (a directory of Kubernetes YAML) and \
                         source.kube ({{}} or {{kubeconfig: FILE}}, read from the cluster's API server)"
                    ),
                ));
            }
        };

        let peers =
            |field, names: Option<Vec<String>>| -> Result<Option<AllowedPeers>, ConfigError> {
                let Some(names) = names else {
                    return Ok(None);
                };
                let names = names
                    .iter()
                    .map(|n| ClusterName::new(n))
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid(field, e.to_string()))?;
                Ok(Some(AllowedPeers::Only(names)))
            };
        let reload = |field, value: Option<u64>| match value {
            None => Ok(crate::tls::RELOAD_INTERVAL),
            Some(0) => Err(invalid(field, "must be at least 1".to_string())),
            Some(s) => Ok(Duration::from_secs(s)),
        };
        let tls_files = |tls: RawTls| TlsFiles {
            ca: base.join(tls.ca),
            cert: base.join(tls.cert),
            key: base.join(tls.key),
        };
        let grpc = match raw.grpc {
            None => None,
            Some(g) => Some(GrpcConfig {
                listen: g.listen,
                tls: tls_files(g.tls),
                allowed_peers: peers("grpc.allowedPeers", g.allowed_peers)?
                    .unwrap_or(AllowedPeers::Any),
                tls_reload: reload("grpc.tlsReloadSeconds", g.tls_reload_seconds)?,
            }),
        };
        let etcd_api = match raw.etcd_api {
            None => None,
            Some(e) => Some(EtcdApiConfig {
                listen: e.listen,
                tls: tls_files(e.tls),
                allowed_peers: match peers("etcdApi.allowedPeers", e.allowed_peers)? {
                    Some(allowed) => allowed,
                    None => grpc
                        .as_ref()
                        .map_or(AllowedPeers::Any, |g| g.allowed_peers.clone()),
                },
                tls_reload: reload("etcdApi.tlsReloadSeconds", e.tls_reload_seconds)?,
                history_events: match e.history_events {
                    None => crate::etcd_api::KeyCacheSettings::default().log_capacity,
                    Some(0) => {
                        return Err(invalid(
                            "etcdApi.historyEvents",
                            "must be at least 1".to_string(),
                        ));
                    }
                    Some(n) => n,
                },
            }),
        };

        let seconds = |field, value: Option<u64>, default: Duration| match value {
            None => Ok(default),
            Some(0) => Err(invalid(field, "must be at least 1".to_string())),
            Some(s) => Ok(Duration::from_secs(s)),
        };
        let lease_ttl = seconds(
            "export.leaseTtlSeconds",
            raw.export.lease_ttl_seconds,
            crate::export::DEFAULT_LEASE_TTL,
        )?;
        let heartbeat_interval = seconds(
            "export.heartbeatSeconds",
            raw.export.heartbeat_seconds,
            crate::export::HEARTBEAT_INTERVAL,
        )?;
        if heartbeat_interval >= lease_ttl {
            return Err(invalid(
                "export.heartbeatSeconds",
                "must be shorter than export.leaseTtlSeconds".to_string(),
            ));
        }

        Ok(Self {
            cluster,
            store,
            source,
            grpc,
            etcd_api,
            health: raw.health,
            lease_ttl,
            heartbeat_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdMode;

    fn parse(text: &str) -> Result<ApiserverConfig, ConfigError> {
        ApiserverConfig::parse(text, Path::new("/etc/fleetmesh/apiserver.yaml"))
    }

    #[test]
    fn a_minimal_config_gets_defaults() {
        let cfg = parse("cluster: {name: c1, id: 1}\nsource: {manifests: manifests}\n").unwrap();
        assert_eq!(cfg.cluster.name.as_str(), "c1");
        assert_eq!(cfg.cluster.mode, IdMode::Normal);
        assert!(matches!(cfg.store, StoreSettings::Memory));
        assert_eq!(
            cfg.source,
            SourceConfig::Manifests(PathBuf::from("/etc/fleetmesh/manifests"))
        );
        assert_eq!(cfg.lease_ttl, Duration::from_secs(900));
    }

    #[test]
    fn the_tls_reload_period_defaults_to_ten_seconds_and_may_not_be_zero() {
        let grpc = |extra: &str| {
            format!(
                "cluster: {{name: c1, id: 1}}\nsource: {{manifests: m}}\n\
                 grpc: {{listen: \"127.0.0.1:0\", tls: {{ca: a, cert: b, key: c}}{extra}}}\n"
            )
        };
        let cfg = parse(&grpc("")).unwrap();
        assert_eq!(cfg.grpc.unwrap().tls_reload, crate::tls::RELOAD_INTERVAL);
        let cfg = parse(&grpc(", tlsReloadSeconds: 1")).unwrap();
        assert_eq!(cfg.grpc.unwrap().tls_reload, Duration::from_secs(1));
        let err = parse(&grpc(", tlsReloadSeconds: 0")).unwrap_err();
        assert!(err.to_string().contains("grpc.tlsReloadSeconds"), "{err}");
    }

    #[test]
    fn the_etcd_api_reads_the_grpc_servers_peers_unless_told_otherwise() {
        let cfg = |etcd_api: &str| {
            parse(&format!(
                "cluster: {{name: c1, id: 1}}\nsource: {{manifests: m}}\n\
                 grpc: {{listen: \"127.0.0.1:0\", tls: {{ca: a, cert: b, key: c}}, allowedPeers: [c2]}}\n\
                 etcdApi: {{listen: \"127.0.0.1:2379\", tls: {{ca: ea, cert: eb, key: ec}}{etcd_api}}}\n"
            ))
        };
        let api = cfg("").unwrap().etcd_api.unwrap();
        assert_eq!(api.listen, "127.0.0.1:2379".parse().unwrap());
        assert_eq!(api.tls.ca, PathBuf::from("/etc/fleetmesh/ea"));
        assert_eq!(
            api.allowed_peers,
            AllowedPeers::Only([ClusterName::new("c2").unwrap()].into())
        );
        assert_eq!(api.tls_reload, crate::tls::RELOAD_INTERVAL);
        let own = cfg(", allowedPeers: [c3], tlsReloadSeconds: 2")
            .unwrap()
            .etcd_api
            .unwrap();
        assert_eq!(
            own.allowed_peers,
            AllowedPeers::Only([ClusterName::new("c3").unwrap()].into())
        );
        assert_eq!(own.tls_reload, Duration::from_secs(2));
        let err = cfg(", allowedPeers: [Bad]").unwrap_err().to_string();
        assert!(err.contains("etcdApi.allowedPeers"), "{err}");
        let err = cfg(", tlsReloadSeconds: 0").unwrap_err().to_string();
        assert!(err.contains("etcdApi.tlsReloadSeconds"), "{err}");
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let cases = [
            (
                "cluster: {name: Bad_Name, id: 1}\nsource: {manifests: m}\n",
                "cluster.name",
            ),
            (
                "cluster: {name: c1, id: 0}\nsource: {manifests: m}\n",
                "cluster.id",
            ),
            (
                "cluster: {name: c1, id: 300}\nsource: {manifests: m}\n",
                "cluster.id",
            ),
            (
                "cluster: {name: c1, id: 1, maxConnectedClusters: 300}\nsource: {manifests: m}\n",
                "cluster.maxConnectedClusters",
            ),
            (
                "cluster: {name: c1, id: 1}\nstore: {kind: etcd}\nsource: {manifests: m}\n",
                "store.etcd",
            ),
            ("cluster: {name: c1, id: 1}\nsource: {}\n", "source"),
            (
                "cluster: {name: c1, id: 1}\nsource: {manifests: m}\n\
                 grpc: {listen: \"127.0.0.1:0\", tls: {ca: a, cert: b, key: c}, allowedPeers: [Nope]}\n",
                "grpc.allowedPeers",
            ),
            (
                "cluster: {name: c1, id: 1, colour: blue}\nsource: {manifests: m}\n",
                "colour",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("/etc/fleetmesh/apiserver.yaml"), "{err}");
            assert!(err.contains(field), "{field} not in: {err}");
        }
    }

    #[test]
    fn the_source_is_a_manifest_directory_or_the_kube_api() {
        let source = |block: &str| {
            parse(&format!("cluster: {{name: c1, id: 1}}\nsource: {block}\n")).map(|c| c.source)
        };
        assert_eq!(
            source("{kube: {}}").unwrap(),
            SourceConfig::Kube { kubeconfig: None }
        );
        assert_eq!(
            source("{kube: }").unwrap(),
            SourceConfig::Kube { kubeconfig: None }
        );
        assert_eq!(
            source("{kube: {kubeconfig: kube/config}}").unwrap(),
            SourceConfig::Kube {
                kubeconfig: Some(PathBuf::from("/etc/fleetmesh/kube/config"))
            }
        );
        let both = source("{manifests: m, kube: {}}").unwrap_err().to_string();
        assert!(
            both.contains("source: set only one of source.manifests"),
            "{both}"
        );
        let neither = source("{}").unwrap_err().to_string();
        assert!(
            neither.contains("source: set one of source.manifests"),
            "{neither}"
        );
        let typo = source("{kube: {kubconfig: x}}").unwrap_err().to_string();
        assert!(typo.contains("kubconfig"), "{typo}");
    }

    #[test]
    fn extended_mode_allows_ids_up_to_511() {
        let cfg = parse(
            "cluster: {name: c1, id: 400, maxConnectedClusters: 511}\nsource: {manifests: m}\n",
        )
        .unwrap();
        assert_eq!(cfg.cluster.id.get(), 400);
    }
}
