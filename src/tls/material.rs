use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::TlsError;

/// Where a member's TLS material lives: its leaf certificate (chain, leaf first), the
/// leaf's private key, and the CA bundle it trusts (one or more CA certificates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The contents of a [`TlsFiles`] triple, read together: hashed to notice a change, then
/// parsed, so what is hashed is exactly what is loaded.
pub struct TlsMaterial {
    files: TlsFiles,
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl TlsMaterial {
    /// Reads the three files (blocking I/O; they are small).
    pub fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Self {
            cert: read("certificate", &files.cert)?,
            key: read("key", &files.key)?,
            ca: read("CA", &files.ca)?,
            files: files.clone(),
        })
    }

    /// The files this material was read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A digest of all three contents: equal digests, same material.
    pub(super) fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [&self.cert, &self.key, &self.ca] {
            // Length-prefixed, so bytes moving from one file to the next change the digest.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hash.finalize().into()
    }

    /// The certificate chain, leaf first.
    pub(super) fn cert_chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        certificates("certificate", &self.files.cert, &self.cert)
    }

    pub(super) fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let path = &self.files.key;
        rustls_pemfile::private_key(&mut self.key.as_slice())
            .map_err(|source| TlsError::Pem {
                what: "key",
                path: path.clone(),
                source,
            })?
            .ok_or_else(|| TlsError::NoPrivateKey { path: path.clone() })
    }

    /// Every CA of the bundle as a trust anchor.
    pub(super) fn roots(&self) -> Result<RootCertStore, TlsError> {
        let path = &self.files.ca;
        let mut roots = RootCertStore::empty();
        for (index, cert) in certificates("CA", path, &self.ca)?.into_iter().enumerate() {
            roots.add(cert).map_err(|source| TlsError::InvalidCa {
                path: path.clone(),
                index,
                source,
            })?;
        }
        Ok(roots)
    }

    /// Maps rustls' refusal of the certificate/key pair to an error naming the files.
    pub(super) fn key_error(&self, err: rustls::Error) -> TlsError {
        match err {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: self.files.cert.clone(),
                    key: self.files.key.clone(),
                }
            }
            source => TlsError::InvalidKey {
                path: self.files.key.clone(),
                source,
            },
        }
    }
}

fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}
