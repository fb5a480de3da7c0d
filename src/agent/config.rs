//! The agent's configuration file (YAML). Unknown fields are refused so that a typo is
//! an error, not a silent default; every error names the file and the field.
//!
//! ```yaml
//! cluster: {name: c1, id: 1, maxConnectedClusters: 255}
//! remotesDir: remotes          # one <peer>.yaml per peer; relative to this file
//! api: {listen: "127.0.0.1:9890"}
//! staleGraceSeconds: 300
//! tlsReloadSeconds: 10         # how often the links' certificate files are checked
//! keepaliveSeconds: 5          # a silent peer is noticed within keepalive + its timeout
//! keepaliveTimeoutSeconds: 5
//! endpointSlices:              # EndpointSlices for remote backends of global services
//!   enabled: true              # default false
//!   kubeconfig: kube/config    # optional, relative to this file; else kubectl's, in-cluster
//!   resyncSeconds: 60          # how often every slice is checked against the API anyway
//! etcdApi:                     # KVStoreMesh's part: every peer's Cilium cache keys, served to
//!   listen: "0.0.0.0:2379"     # this cluster's own Cilium agents (the local role: a client
//!   tls: {ca: certs/ca.crt, cert: certs/server-c1.crt, key: certs/server-c1.key}  # certificate
//!   drainGraceSeconds: 180     # naming this cluster); a removed peer's keys stay this long
//!   historyEvents: 50000       # changes kept: how far back a watch may start
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::config::ClusterBlock;
use crate::mesh::StalePolicy;
use crate::model::Cluster;
use crate::remote::LinkSettings;
use crate::tls::TlsFiles;
use crate::tls::client::Keepalive;

/// The query API's default listener: loopback, the address `fleetmesh status` tries.
const DEFAULT_API_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9890);

/// How often the EndpointSlice writer re-reads its slices even when nothing changed, to
/// repair edits and deletions by others: a minute of drift at most, one cheap labelled
/// list per minute.
const DEFAULT_SLICE_RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum AgentConfigError {
    #[error("cannot read config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("config {}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    cluster: ClusterBlock,
    remotes_dir: PathBuf,
    #[serde(default)]
    api: ApiConfig,
    stale_grace_seconds: Option<u64>,
    /// How often the links' TLS files are checked for changes (default 10).
    tls_reload_seconds: Option<u64>,
    /// HTTP/2 PING period towards every peer (default 5).
    keepalive_seconds: Option<u64>,
    /// How long a PING may go unanswered before the link is dropped (default 5).
    keepalive_timeout_seconds: Option<u64>,
    #[serde(default)]
    endpoint_slices: RawEndpointSlices,
    etcd_api: Option<RawCacheApi>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCacheApi {
    listen: SocketAddr,
    tls: RawTlsFiles,
    drain_grace_seconds: Option<u64>,
    history_events: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// The etcd API that serves the agent's Cilium cache keys to its own cluster's Cilium
/// agents (present only when configured).
#[derive(Debug, Clone)]
pub struct CacheApiConfig {
    pub listen: SocketAddr,
    /// The server's certificate; its CA also verifies the clients, which must name this
    /// cluster (Cilium's `local-<cluster>` user is the cluster itself).
    pub tls: TlsFiles,
    /// How long a removed peer's keys stay after its cluster config is deleted.
    pub drain_grace: Duration,
    /// Changes the revision log keeps: how far back a watch may start.
    pub history_events: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEndpointSlices {
    #[serde(default)]
    enabled: bool,
    kubeconfig: Option<PathBuf>,
    resync_seconds: Option<u64>,
}

/// The EndpointSlice writer's settings (present only when it is enabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlicesConfig {
    /// The kubeconfig to reach the local cluster's API server with; `None`: the default
    /// kubeconfig, else in-cluster credentials (`kube::Config::infer`).
    pub kubeconfig: Option<PathBuf>,
    /// How often every slice is checked against the API even without a change in the
    /// view, so that slices edited or deleted by others are repaired.
    pub resync: Duration,
}

/// The query API's listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(DEFAULT_API_LISTEN),
        }
    }
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub cluster: Cluster,
    /// Where the peer files are; watched for changes.
    pub remotes_dir: PathBuf,
    pub api: ApiConfig,
    pub stale: StalePolicy,
    /// How links retry; not in the file (the defaults suit production), set by tests
    /// and the demo.
    pub link: LinkSettings,
    /// EndpointSlices for global services' remote backends; `None` when disabled.
    pub endpoint_slices: Option<EndpointSlicesConfig>,
    /// KVStoreMesh's part for this cluster's Cilium agents; `None` when not configured.
    pub etcd_api: Option<CacheApiConfig>,
}

impl AgentConfig {
    /// Reads and validates a config file. Relative paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Self, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates a config held in memory; `path` names it in errors and anchors relative
    /// paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, AgentConfigError> {
        let raw: RawConfig =
            serde_yaml::from_str(text).map_err(|source| AgentConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        let invalid = |field, message: String| AgentConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        // A period given in seconds, where 0 would turn the mechanism into a busy loop.
        let at_least_one = |value: Option<u64>, field| match value {
            Some(0) => Err(invalid(field, "must be at least 1".to_string())),
            other => Ok(other.map(Duration::from_secs)),
        };
        let cluster = raw
            .cluster
            .to_cluster()
            .map_err(|(field, message)| invalid(field, message))?;
        if raw.remotes_dir.as_os_str().is_empty() {
            return Err(invalid("remotesDir", "must not be empty".to_string()));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let endpoint_slices = match raw.endpoint_slices {
            RawEndpointSlices { enabled: false, .. } => None,
            RawEndpointSlices {
                enabled: true,
                kubeconfig,
                resync_seconds,
            } => Some(EndpointSlicesConfig {
                kubeconfig: kubeconfig.map(|k| base.join(k)),
                resync: match resync_seconds {
                    None => DEFAULT_SLICE_RESYNC,
                    Some(0) => {
                        return Err(invalid(
                            "endpointSlices.resyncSeconds",
                            "must be at least 1".to_string(),
                        ));
                    }
                    Some(s) => Duration::from_secs(s),
                },
            }),
        };
        let etcd_api = match raw.etcd_api {
            None => None,
            Some(api) => Some(CacheApiConfig {
                listen: api.listen,
                tls: TlsFiles {
                    ca: base.join(api.tls.ca),
                    cert: base.join(api.tls.cert),
                    key: base.join(api.tls.key),
                },
                drain_grace: api
                    .drain_grace_seconds
                    .map_or(crate::cache_keys::DEFAULT_DRAIN_GRACE, Duration::from_secs),
                history_events: match api.history_events {
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
        let stale = match raw.stale_grace_seconds {
            None => StalePolicy::default(),
            Some(s) => StalePolicy {
                grace: Duration::from_secs(s),
            },
        };
        Ok(Self {
            cluster,
            remotes_dir: base.join(raw.remotes_dir),
            api: raw.api,
            stale,
            link: LinkSettings {
                tls_reload: match raw.tls_reload_seconds {
                    None => crate::tls::RELOAD_INTERVAL,
                    Some(0) => {
                        return Err(invalid(
                            "tlsReloadSeconds",
                            "must be at least 1".to_string(),
                        ));
                    }
                    Some(s) => Duration::from_secs(s),
                },
                keepalive: Keepalive {
                    interval: at_least_one(raw.keepalive_seconds, "keepaliveSeconds")?
                        .unwrap_or(Keepalive::default().interval),
                    timeout: at_least_one(
                        raw.keepalive_timeout_seconds,
                        "keepaliveTimeoutSeconds",
                    )?
                    .unwrap_or(Keepalive::default().timeout),
                },
                ..LinkSettings::default()
            },
            endpoint_slices,
            etcd_api,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdMode;

    const FILE: &str = "/etc/fleetmesh/agent.yaml";

    fn parse(text: &str) -> Result<AgentConfig, AgentConfigError> {
        AgentConfig::parse(text, Path::new(FILE))
    }

    #[test]
    fn the_etcd_api_block_is_read_relative_to_the_file() {
        let cfg = parse(
            "cluster: {name: c1, id: 1}\nremotesDir: remotes\n\
             etcdApi: {listen: \"127.0.0.1:2379\", tls: {ca: c/ca.crt, cert: c/s.crt, key: c/s.key}, drainGraceSeconds: 5}\n",
        )
        .unwrap();
        let api = cfg.etcd_api.unwrap();
        assert_eq!(api.tls.cert, PathBuf::from("/etc/fleetmesh/c/s.crt"));
        assert_eq!(api.drain_grace, Duration::from_secs(5));
        assert!(
            parse("cluster: {name: c1, id: 1}\nremotesDir: r\n")
                .unwrap()
                .etcd_api
                .is_none()
        );
        let err = parse(
            "cluster: {name: c1, id: 1}\nremotesDir: r\n\
             etcdApi: {listen: \"127.0.0.1:2379\", tls: {ca: a, cert: b, key: c}, historyEvents: 0}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("etcdApi.historyEvents"), "{err}");
    }

    #[test]
    fn a_minimal_config_gets_defaults() {
        let cfg = parse("cluster: {name: c1, id: 1}\nremotesDir: remotes\n").unwrap();
        assert_eq!(cfg.cluster.name.as_str(), "c1");
        assert_eq!(cfg.cluster.id.get(), 1);
        assert_eq!(cfg.cluster.mode, IdMode::Normal);
        assert_eq!(cfg.remotes_dir, Path::new("/etc/fleetmesh/remotes"));
        assert_eq!(cfg.api.listen, "127.0.0.1:9890".parse().unwrap());
        assert_eq!(cfg.stale, StalePolicy::default());
        assert_eq!(cfg.link.tls_reload, crate::tls::RELOAD_INTERVAL);
        assert_eq!(cfg.endpoint_slices, None);
    }

    #[test]
    fn endpoint_slices_are_off_unless_enabled() {
        let base = "cluster: {name: c1, id: 1}\nremotesDir: remotes\n";
        let off = parse(&format!("{base}endpointSlices: {{kubeconfig: k}}\n")).unwrap();
        assert_eq!(off.endpoint_slices, None);
        let on = parse(&format!("{base}endpointSlices: {{enabled: true}}\n")).unwrap();
        assert_eq!(
            on.endpoint_slices,
            Some(EndpointSlicesConfig {
                kubeconfig: None,
                resync: DEFAULT_SLICE_RESYNC,
            })
        );
    }

    #[test]
    fn every_field_is_read() {
        let cfg = parse(
            "cluster: {name: c7, id: 400, maxConnectedClusters: 511}\n\
             remotesDir: /var/lib/fleetmesh/remotes\n\
             api: {listen: \"0.0.0.0:9999\"}\n\
             staleGraceSeconds: 30\n\
             tlsReloadSeconds: 2\n\
             keepaliveSeconds: 3\n\
             keepaliveTimeoutSeconds: 4\n\
             endpointSlices: {enabled: true, kubeconfig: kube/config, resyncSeconds: 5}\n",
        )
        .unwrap();
        assert_eq!(
            cfg.endpoint_slices,
            Some(EndpointSlicesConfig {
                kubeconfig: Some(PathBuf::from("/etc/fleetmesh/kube/config")),
                resync: Duration::from_secs(5),
            })
        );
        assert_eq!(cfg.link.tls_reload, Duration::from_secs(2));
        assert_eq!(
            cfg.link.keepalive,
            Keepalive {
                interval: Duration::from_secs(3),
                timeout: Duration::from_secs(4)
            }
        );
        assert_eq!(cfg.cluster.mode, IdMode::Extended);
        assert_eq!(cfg.cluster.id.get(), 400);
        assert_eq!(cfg.remotes_dir, Path::new("/var/lib/fleetmesh/remotes"));
        assert_eq!(cfg.api.listen, "0.0.0.0:9999".parse().unwrap());
        assert_eq!(cfg.stale.grace, Duration::from_secs(30));
    }

    #[test]
    fn a_silent_peer_is_noticed_within_ten_seconds_by_default() {
        let cfg = parse("cluster: {name: c1, id: 1}\nremotesDir: r\n").unwrap();
        let keepalive = cfg.link.keepalive;
        assert!(keepalive.interval + keepalive.timeout <= Duration::from_secs(10));
        let err = parse("cluster: {name: c1, id: 1}\nremotesDir: r\nkeepaliveSeconds: 0\n");
        assert!(err.unwrap_err().to_string().contains("keepaliveSeconds"));
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let cases = [
            (
                "cluster: {name: Bad_Name, id: 1}\nremotesDir: r\n",
                "cluster.name",
            ),
            ("cluster: {name: c1, id: 0}\nremotesDir: r\n", "cluster.id"),
            (
                "cluster: {name: c1, id: 256}\nremotesDir: r\n",
                "cluster.id",
            ),
            (
                "cluster: {name: c1, id: 1, maxConnectedClusters: 300}\nremotesDir: r\n",
                "cluster.maxConnectedClusters",
            ),
            (
                "cluster: {name: c1, id: 1}\nremotesDir: \"\"\n",
                "remotesDir",
            ),
            ("cluster: {name: c1, id: 1}\n", "remotesDir"),
            (
                "cluster: {name: c1, id: 1}\nremotesDir: r\ntlsReloadSeconds: 0\n",
                "tlsReloadSeconds",
            ),
            (
                "cluster: {name: c1, id: 1}\nremotesDir: r\napi: {listen: nowhere}\n",
                "api.listen",
            ),
            (
                "cluster: {name: c1, id: 1}\nremotesDir: r\ncolour: blue\n",
                "colour",
            ),
            (
                "cluster: {name: c1, id: 1}\nremotesDir: r\nendpointSlices: {enabled: true, resyncSeconds: 0}\n",
                "endpointSlices.resyncSeconds",
            ),
            (
                "cluster: {name: c1, id: 1}\nremotesDir: r\nendpointSlices: {enable: true}\n",
                "enable",
            ),
            (
                "cluster: {name: c1, id: 1}\nremotesDir: r\nstaleGraceSeconds: -1\n",
                "staleGraceSeconds",
            ),
        ];
        for (text, field) in cases {
            let err = crate::report::error_chain(&parse(text).unwrap_err());
            assert!(err.contains(FILE), "{err}");
            assert!(err.contains(field), "{field} not in: {err}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = AgentConfig::load(Path::new("/nonexistent/agent.yaml")).unwrap_err();
        assert!(
            crate::report::error_chain(&err)
                .starts_with("cannot read config /nonexistent/agent.yaml: ")
        );
    }
}
