use std::path::PathBuf;

use thiserror::Error;

/// Why a certificate could not be made, read or written.
#[derive(Debug, Error)]
pub enum CertError {
    #[error("cannot generate a key pair")]
    KeyGeneration(#[source] rcgen::Error),
    #[error("cannot sign the {what} certificate")]
    Sign {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid {what} {value:?} for a certificate")]
    InvalidName {
        what: &'static str,
        value: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid validity: {0}")]
    Validity(&'static str),
    #[error("a server certificate for cluster {cluster} needs at least one DNS name or IP address")]
    NoServerNames { cluster: String },
    #[error("CA certificate PEM: {0}")]
    CaCertificate(&'static str),
    #[error("CA certificate PEM cannot be parsed")]
    CaCertificatePem(#[source] std::io::Error),
    #[error("CA certificate cannot be used to issue certificates")]
    CaIssuer(#[source] rcgen::Error),
    #[error("CA key PEM cannot be parsed")]
    CaKey(#[source] rcgen::Error),
    #[error("CA key does not match the CA certificate")]
    CaKeyMismatch,
    #[error("trust bundle input #{index} is not valid PEM")]
    BundlePem {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("trust bundle input #{index} holds no certificate")]
    BundleEmpty { index: usize },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    BadCertificate { path: PathBuf, message: String },
    #[error("{} has no key file next to it (expected {})", cert.display(), key.display())]
    NoKeyFile { cert: PathBuf, key: PathBuf },
    #[error(
        "{} is the CA directory and lies inside the certificates directory; keep them apart",
        ca_dir.display()
    )]
    CaDirInside { ca_dir: PathBuf },
    #[error(
        "cannot retire the old CA: {} leaf certificate(s) are not signed by the current CA yet, e.g. {}",
        leaves.len(),
        leaves.first().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    LeavesOnOldCa { leaves: Vec<PathBuf> },
}
