//! A mesh's certificates minted in-process: one CA, and per cluster an apiserver
//! certificate (for 127.0.0.1 and localhost) and an agent's client certificate, written
//! as `<dir>/certs/{ca.crt, server-<cluster>.{crt,key}, client-<cluster>.{crt,key}}`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::certs::files::{CERT_MODE, write_atomic, write_pem_files};
use crate::certs::{Ca, CertError, IssuedCert};
use crate::model::ClusterName;
use crate::tls::TlsFiles;

/// A CA and the directory its files go to.
pub struct Pki {
    dir: PathBuf,
    /// Holds a temporary directory alive (removed when the `Pki` is dropped).
    _temp: Option<tempfile::TempDir>,
    ca: Ca,
    validity: Duration,
}

impl Pki {
    /// A CA named `ca_name` in a fresh temporary directory (`prefix` names it), whose
    /// certificates are valid for `validity`.
    pub fn temporary(prefix: &str, ca_name: &str, validity: Duration) -> Result<Self, CertError> {
        let temp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(|source| CertError::Write {
                path: std::env::temp_dir(),
                source,
            })?;
        let mut pki = Self::in_dir(temp.path(), ca_name, validity)?;
        pki._temp = Some(temp);
        Ok(pki)
    }

    /// A CA named `ca_name` writing under `dir` (kept after the `Pki` is dropped), with
    /// `ca.crt` written at once.
    pub fn in_dir(dir: &Path, ca_name: &str, validity: Duration) -> Result<Self, CertError> {
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).map_err(|source| CertError::Write {
            path: certs,
            source,
        })?;
        let pki = Self {
            dir: dir.to_path_buf(),
            _temp: None,
            ca: Ca::generate(ca_name, validity)?,
            validity,
        };
        write_atomic(&pki.ca_file(), pki.ca.cert_pem().as_bytes(), CERT_MODE)?;
        Ok(pki)
    }

    /// The directory for this mesh's other files (etcd's data, configs, manifests).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA, to mint unusual certificates (expired ones, say).
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The CA's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("certs").join("ca.crt")
    }

    /// An apiserver certificate naming `cluster`, valid for 127.0.0.1 and localhost.
    pub fn server_files(&self, cluster: &ClusterName) -> Result<TlsFiles, CertError> {
        let ips = [IpAddr::from([127, 0, 0, 1])];
        let leaf =
            self.ca
                .issue_server(cluster, &["localhost".to_string()], &ips, self.validity)?;
        self.files(&format!("server-{cluster}"), &leaf)
    }

    /// A client certificate naming `cluster`: an agent of that cluster.
    pub fn client_files(&self, cluster: &ClusterName) -> Result<TlsFiles, CertError> {
        let leaf = self.ca.issue_client(cluster, self.validity)?;
        self.files(&format!("client-{cluster}"), &leaf)
    }

    fn files(&self, name: &str, leaf: &IssuedCert) -> Result<TlsFiles, CertError> {
        let pem = write_pem_files(&self.dir.join("certs"), name, leaf)?;
        Ok(TlsFiles {
            cert: pem.cert,
            key: pem.key,
            ca: self.ca_file(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_laid_out_by_role_and_cluster_and_chain_to_the_ca() {
        let pki =
            Pki::temporary("fleetmesh-pki-test-", "kit CA", Duration::from_secs(3600)).unwrap();
        let c1 = ClusterName::new("c1").unwrap();
        let server = pki.server_files(&c1).unwrap();
        let client = pki.client_files(&c1).unwrap();
        let certs = pki.dir().join("certs");
        assert_eq!(server.cert, certs.join("server-c1.crt"));
        assert_eq!(client.key, certs.join("client-c1.key"));
        assert_eq!(server.ca, certs.join("ca.crt"));
        // Loadable as the production code loads them.
        crate::tls::load_client_config(&client).unwrap();
        let dir = pki.dir().to_path_buf();
        drop(pki);
        assert!(!dir.exists(), "a temporary PKI removes its directory");
    }
}
