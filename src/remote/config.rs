//! One peer's file: `<remotes dir>/<name>.yaml`, the file name being the peer's cluster
//! name (as in Cilium's clustermesh config directory).
//!
//! ```yaml
//! address: "cluster2.mesh.example:9891"   # host:port or https://host:port
//! serverName: "apiserver.cluster2"        # optional: TLS name if not the address host
//! tls:                                    # relative paths are relative to this file
//!   ca: ca.crt
//!   cert: client.crt
//!   key: client.key
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::model::{ClusterName, ModelError};
use crate::tls::{self, TlsError, TlsFiles};

/// The extensions a peer file may have; the rest of the file name is the cluster name.
const EXTENSIONS: [&str; 2] = ["yaml", "yml"];

/// One peer, as read from `<remotes dir>/<name>.yaml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The file name without `.yaml`/`.yml`: the cluster the peer must be.
    pub name: ClusterName,
    /// `host:port` (or `https://host:port`) of the peer's apiserver gRPC.
    pub address: String,
    /// The TLS server name to verify, if not the address host.
    pub server_name: Option<String>,
    /// CA bundle, client certificate and key; relative paths resolved against the file's
    /// directory.
    pub tls: TlsFiles,
}

/// Why a peer file was refused; every variant names the file, and the field where one
/// is at fault.
#[derive(Debug, Error)]
pub enum PeerConfigError {
    #[error("cannot read peer file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("peer file {}: the name must end in .yaml or .yml", path.display())]
    Extension { path: PathBuf },
    #[error("peer file {}: the file name must be the peer's cluster name", path.display())]
    Name {
        path: PathBuf,
        #[source]
        source: ModelError,
    },
    #[error("peer file {} is not a valid peer config", path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("peer file {}: field `{field}` {reason}", path.display())]
    Field {
        path: PathBuf,
        field: &'static str,
        reason: &'static str,
    },
    #[error("peer file {}: field `address`", path.display())]
    Address {
        path: PathBuf,
        #[source]
        source: TlsError,
    },
}

/// The file as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPeer {
    address: String,
    #[serde(default)]
    server_name: Option<String>,
    tls: RawTls,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl PeerConfig {
    /// Reads and parses the peer file at `path`.
    pub fn load(path: &Path) -> Result<Self, PeerConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| PeerConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text` as the content of the peer file at `path`; the cluster name comes
    /// from the file name, relative TLS paths are resolved against its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PeerConfigError> {
        let name = name_of(path)?;
        let raw: RawPeer = serde_yaml::from_str(text).map_err(|source| PeerConfigError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        let field = |field, reason| PeerConfigError::Field {
            path: path.to_path_buf(),
            field,
            reason,
        };
        tls::client::check_endpoint(&raw.address).map_err(|source| PeerConfigError::Address {
            path: path.to_path_buf(),
            source,
        })?;
        let server_name = match raw.server_name {
            Some(s) if s.trim().is_empty() => return Err(field("serverName", "is empty")),
            other => other,
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        let resolve = |name: &'static str, p: PathBuf| {
            if p.as_os_str().is_empty() {
                Err(field(name, "is empty"))
            } else {
                Ok(dir.join(p))
            }
        };
        Ok(Self {
            name,
            address: raw.address,
            server_name,
            tls: TlsFiles {
                ca: resolve("tls.ca", raw.tls.ca)?,
                cert: resolve("tls.cert", raw.tls.cert)?,
                key: resolve("tls.key", raw.tls.key)?,
            },
        })
    }
}

/// The cluster name a peer file's name declares.
fn name_of(path: &Path) -> Result<ClusterName, PeerConfigError> {
    let extension = path.extension().and_then(|e| e.to_str());
    let stem = path.file_stem().and_then(|s| s.to_str());
    let (Some(stem), Some(true)) = (stem, extension.map(|e| EXTENSIONS.contains(&e))) else {
        return Err(PeerConfigError::Extension {
            path: path.to_path_buf(),
        });
    };
    ClusterName::new(stem).map_err(|source| PeerConfigError::Name {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
address: "cluster2.mesh.example:9891"
serverName: apiserver.cluster2
tls:
  ca: ca.crt
  cert: /etc/fleetmesh/client.crt
  key: keys/client.key
"#;

    #[test]
    fn a_peer_file_names_the_cluster_and_resolves_relative_paths() {
        let cfg = PeerConfig::parse(GOOD, Path::new("/remotes/cluster2.yaml")).unwrap();
        assert_eq!(cfg.name.as_str(), "cluster2");
        assert_eq!(cfg.address, "cluster2.mesh.example:9891");
        assert_eq!(cfg.server_name.as_deref(), Some("apiserver.cluster2"));
        assert_eq!(cfg.tls.ca, Path::new("/remotes/ca.crt"));
        assert_eq!(cfg.tls.cert, Path::new("/etc/fleetmesh/client.crt"));
        assert_eq!(cfg.tls.key, Path::new("/remotes/keys/client.key"));

        let minimal = "address: https://10.0.0.1:9891\ntls: {ca: a, cert: b, key: c}\n";
        let cfg = PeerConfig::parse(minimal, Path::new("/r/c3.yml")).unwrap();
        assert_eq!(cfg.name.as_str(), "c3");
        assert_eq!(cfg.server_name, None);
    }

    #[test]
    fn load_reads_the_file_and_names_it_when_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("east.yaml");
        std::fs::write(&path, GOOD).unwrap();
        let cfg = PeerConfig::load(&path).unwrap();
        assert_eq!(cfg.tls.ca, dir.path().join("ca.crt"));

        let missing = dir.path().join("west.yaml");
        let err = PeerConfig::load(&missing).unwrap_err();
        assert!(matches!(err, PeerConfigError::Read { .. }));
        assert!(err.to_string().contains("west.yaml"), "{err}");
    }

    #[test]
    fn the_file_name_must_be_a_cluster_name_with_a_yaml_extension() {
        for (file, expected) in [
            (
                "/r/Cluster2.yaml",
                "the file name must be the peer's cluster name",
            ),
            (
                "/r/under_score.yaml",
                "the file name must be the peer's cluster name",
            ),
            ("/r/cluster2", "must end in .yaml or .yml"),
            ("/r/cluster2.json", "must end in .yaml or .yml"),
            ("/r/..data", "must end in .yaml or .yml"),
        ] {
            let err = PeerConfig::parse(GOOD, Path::new(file)).unwrap_err();
            let text = crate::report::error_chain(&err);
            assert!(
                text.contains(file) && text.contains(expected),
                "{file}: {text}"
            );
        }
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let path = Path::new("/remotes/c2.yaml");
        for (text, field) in [
            ("tls: {ca: a, cert: b, key: c}\n", "address"),
            ("address: h:1\n", "tls"),
            ("address: h:1\ntls: {ca: a, cert: b}\n", "key"),
            (
                "address: h:1\ntls: {ca: a, cert: b, key: c}\nextra: 1\n",
                "extra",
            ),
            (
                "address: h:1\ntls: {ca: a, cert: b, key: c, crt: d}\n",
                "crt",
            ),
            ("address: h:1\ntls: {ca: '', cert: b, key: c}\n", "tls.ca"),
            ("address: h:1\ntls: {ca: a, cert: '', key: c}\n", "tls.cert"),
            (
                "address: h:1\nserverName: ' '\ntls: {ca: a, cert: b, key: c}\n",
                "serverName",
            ),
            ("address: h\ntls: {ca: a, cert: b, key: c}\n", "address"),
            (
                "address: http://h:1\ntls: {ca: a, cert: b, key: c}\n",
                "address",
            ),
            ("address: [1]\ntls: {ca: a, cert: b, key: c}\n", "address"),
        ] {
            let err = PeerConfig::parse(text, path).unwrap_err();
            let text = crate::report::error_chain(&err);
            assert!(
                text.contains("/remotes/c2.yaml") && text.contains(field),
                "{field}: {text}"
            );
        }
    }
}
