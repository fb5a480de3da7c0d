use std::path::PathBuf;

use thiserror::Error;

use super::identity::CLUSTER_URI_PREFIX;
use crate::model::ModelError;

/// Why TLS material could not be loaded or a TLS endpoint set up. Every file error names
/// the file and what is wrong with it.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {what} file {}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} file {} is not valid PEM", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} file {} holds no certificate", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("key file {} holds no private key", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("key file {} holds a private key rustls cannot use", path.display())]
    InvalidKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("key file {} does not match certificate file {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("CA file {}: certificate #{index} is not a usable trust anchor", path.display())]
    InvalidCa {
        path: PathBuf,
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot verify client certificates with CA file {}", path.display())]
    ClientVerifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("the ring provider refused the TLS protocol versions")]
    Versions(#[source] rustls::Error),
    #[error("cannot set up the session ticket key")]
    Ticketer(#[source] rustls::Error),
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        endpoint: String,
        reason: &'static str,
    },
    #[error("invalid endpoint {endpoint:?}")]
    EndpointUri {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("invalid TLS server name {name:?}")]
    ServerName {
        name: String,
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
}

/// Why a peer's certificate does not name a cluster. Cloneable so that it can travel in
/// every request's [`PeerInfo`](super::server::PeerInfo) and be reported by the handler.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum PeerIdentityError {
    #[error("the peer presented no certificate")]
    NoCertificate,
    #[error("the peer's certificate cannot be parsed")]
    Unparseable(#[source] x509_parser::error::X509Error),
    #[error(
        "the peer's certificate has no fleetmesh identity: it needs one URI SAN \
         {CLUSTER_URI_PREFIX}<cluster-name> (the subject CN is not used)"
    )]
    NoClusterUri,
    #[error("the peer's certificate names several clusters ({}); exactly one is allowed", .0.join(", "))]
    SeveralClusterUris(Vec<String>),
    #[error("the peer's certificate URI SAN {uri:?} does not hold a valid cluster name")]
    InvalidClusterName {
        uri: String,
        #[source]
        source: ModelError,
    },
}
