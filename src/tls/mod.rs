//! Mutual TLS between clusters: rustls configs from PEM files, the peer's cluster name
//! from its certificate, reload when the files change, and the plumbing that puts both
//! under tonic.
//!
//! - [`identity`]: THE place a peer's cluster name is read from its certificate (one URI
//!   SAN `spiffe://fleetmesh/cluster/<cluster-name>`; see [`crate::certs`] for the whole
//!   convention). The subject CN is never used.
//! - [`load_server_config`] / [`load_client_config`]: configs from a [`TlsFiles`] triple
//!   (leaf certificate chain, its key, CA bundle). Servers require a client certificate
//!   signed by a CA in the bundle; both sides speak TLS 1.3 with ALPN `h2` only, with
//!   the ring provider chosen explicitly (never a process-wide default).
//! - [`spawn_reload`]: the current config published through a `tokio::sync::watch`,
//!   swapped when the files' content changes; a bad file is logged and the old config
//!   kept. Nothing is published — and so nothing served or dialed — until the files
//!   have loaded once (fail closed).
//! - [`server::incoming`]: a TLS accept stream for `Server::serve_with_incoming`; each
//!   connection carries a [`server::PeerInfo`] that handlers read from the request's
//!   extensions. [`client::channel`]: a tonic `Channel` dialing through the same configs.
//!
//! A CA rollover needs nothing special here: the CA file is a bundle, and every CA in it
//! is trusted.

pub mod client;
mod config;
mod error;
pub mod identity;
mod material;
mod reload;
pub mod server;

pub use config::{FromTlsMaterial, load_client_config, load_server_config};
pub use error::{PeerIdentityError, TlsError};
pub use material::{TlsFiles, TlsMaterial};
pub use reload::{
    RELOAD_INTERVAL, Reloading, ReloadingClientConfig, ReloadingServerConfig, spawn_reload,
};

/// The only application protocol spoken between clusters: gRPC over HTTP/2.
const ALPN_H2: &[u8] = b"h2";
