//! Certificates for a bench, minted in-process: one CA, a server certificate for the
//! source cluster's apiserver and a client certificate for the agents, written to a
//! temporary directory because the TLS code reads (and reloads) files.

use std::time::Duration;

use anyhow::Context;

use crate::certs::files::{CERT_MODE, write_atomic, write_pem_files};
use crate::certs::{Ca, IssuedCert};
use crate::model::ClusterName;
use crate::tls::TlsFiles;

/// Certificates outlive any bench run.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// The bench's CA and the directory holding its files; removed when dropped.
pub struct BenchPki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl BenchPki {
    /// A fresh CA in a fresh temporary directory.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("fleetmesh-bench-")
            .tempdir()
            .context("cannot create the bench's directory")?;
        let ca = Ca::generate("fleetmesh bench CA", VALIDITY)?;
        Ok(Self { dir, ca })
    }

    /// The directory for the bench's other files (etcd's data, say).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// An apiserver certificate naming `cluster`, valid for 127.0.0.1 and localhost.
    pub fn server_files(&self, cluster: &ClusterName) -> anyhow::Result<TlsFiles> {
        let ips = [std::net::IpAddr::from([127, 0, 0, 1])];
        let leaf = self
            .ca
            .issue_server(cluster, &["localhost".to_string()], &ips, VALIDITY)?;
        self.files(&format!("server-{cluster}"), &leaf)
    }

    /// A client certificate naming `cluster`: an agent of that cluster.
    pub fn client_files(&self, cluster: &ClusterName) -> anyhow::Result<TlsFiles> {
        let leaf = self.ca.issue_client(cluster, VALIDITY)?;
        self.files(&format!("client-{cluster}"), &leaf)
    }

    fn files(&self, name: &str, leaf: &IssuedCert) -> anyhow::Result<TlsFiles> {
        let dir = self.dir.path().join("certs");
        let pem = write_pem_files(&dir, name, leaf)?;
        let ca = dir.join("ca.crt");
        write_atomic(&ca, self.ca.cert_pem().as_bytes(), CERT_MODE)?;
        Ok(TlsFiles {
            cert: pem.cert,
            key: pem.key,
            ca,
        })
    }
}
