//! The dialing side: a tonic [`Channel`] whose connections go through mutual TLS with
//! the client config current at each (re)connect, so a reloaded certificate is used from
//! the next connection on.
//!
//! [`channel_to_cluster`] also checks, after each handshake, that the server's
//! certificate names the cluster the caller meant to reach: a peer file pointing at the
//! wrong apiserver (or a load balancer in front of the wrong cluster) fails the
//! connection with an error naming both clusters, before any request is sent.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use thiserror::Error;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;
use tonic::codegen::http::uri::Authority;
use tonic::transport::{Channel, Endpoint};

use super::identity::peer_identity;
use super::{PeerIdentityError, TlsError};
use crate::model::ClusterName;

/// HTTP/2 keepalive towards a peer: how a silent peer (a partition, a stopped process, a
/// NAT entry dropped) is noticed without waiting for the next write — within `interval`
/// plus `timeout` — and idle connections stay under the idle timeouts of cloud load
/// balancers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// PING period.
    pub interval: Duration,
    /// How long a PING may go unanswered before the connection is dropped.
    pub timeout: Duration,
}

impl Default for Keepalive {
    /// A silent peer is noticed within 10 s: soon enough that the stale policy's grace,
    /// not the detection, decides how long a peer's backends stay; a PING every 5 s is
    /// nothing on a link that streams.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Dial plus TLS handshake; beyond this the peer counts as unreachable and the caller's
/// backoff takes over.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the last completed handshake of a [`channel_to_cluster`] channel learnt about the
/// server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCert {
    /// The cluster the server's certificate names (equal to the one expected).
    pub cluster: ClusterName,
    /// When the server's certificate expires.
    pub not_after: Option<OffsetDateTime>,
    /// The server's end-entity certificate (DER), for checks beyond the handshake's
    /// (which CA of a rollover bundle signed it).
    pub der: Vec<u8>,
}

/// Why a handshake that rustls accepted was refused anyway: the server is not the
/// cluster the caller dialed. Travels inside the `io::Error` of the failed connection;
/// find it in the error's chain (through `io::Error::get_ref`).
#[derive(Clone, Debug, Error)]
pub enum ServerIdentityError {
    #[error("the server's certificate names no cluster (expected {expected:?})")]
    NoIdentity {
        expected: ClusterName,
        #[source]
        source: PeerIdentityError,
    },
    #[error("the server's certificate names cluster {found:?}, not {expected:?}")]
    WrongCluster {
        expected: ClusterName,
        found: ClusterName,
    },
}

/// A lazy channel to `endpoint` (`host:port` or `https://host:port`). The server's
/// certificate must be valid for `server_name`, or for the endpoint's host when `None`
/// (a DNS name or an IP address). Nothing is dialed until the first call.
pub fn channel(
    endpoint: &str,
    server_name: Option<&str>,
    configs: watch::Receiver<Arc<ClientConfig>>,
) -> Result<Channel, TlsError> {
    build(endpoint, server_name, configs, None, Keepalive::default())
}

/// Like [`channel`], and every connection also checks that the server's certificate
/// names `expected`; a connection to another cluster fails with a
/// [`ServerIdentityError`]. The receiver holds what the last successful handshake saw
/// (`None` until one succeeds).
pub fn channel_to_cluster(
    endpoint: &str,
    server_name: Option<&str>,
    configs: watch::Receiver<Arc<ClientConfig>>,
    expected: &ClusterName,
) -> Result<(Channel, watch::Receiver<Option<ServerCert>>), TlsError> {
    channel_to_cluster_with(
        endpoint,
        server_name,
        configs,
        expected,
        Keepalive::default(),
    )
}

/// [`channel_to_cluster`] with the given keepalive.
pub fn channel_to_cluster_with(
    endpoint: &str,
    server_name: Option<&str>,
    configs: watch::Receiver<Arc<ClientConfig>>,
    expected: &ClusterName,
    keepalive: Keepalive,
) -> Result<(Channel, watch::Receiver<Option<ServerCert>>), TlsError> {
    let (tx, rx) = watch::channel(None);
    let check = ClusterCheck {
        expected: expected.clone(),
        seen: Arc::new(tx),
    };
    Ok((
        build(endpoint, server_name, configs, Some(check), keepalive)?,
        rx,
    ))
}

/// Checks that `endpoint` is something [`channel`] accepts (`host:port` or
/// `https://host:port`), for validating configuration before dialing.
pub fn check_endpoint(endpoint: &str) -> Result<(), TlsError> {
    parse_endpoint(endpoint).map(|_| ())
}

fn build(
    endpoint: &str,
    server_name: Option<&str>,
    configs: watch::Receiver<Arc<ClientConfig>>,
    check: Option<ClusterCheck>,
    keepalive: Keepalive,
) -> Result<Channel, TlsError> {
    let authority = parse_endpoint(endpoint)?;
    // tonic sees `http://`: built with its own TLS (another dependency turns it on) it would
    // insist on doing TLS itself for `https://`. The connector below always does TLS.
    let uri = format!("http://{authority}");
    let tonic_endpoint = Endpoint::from_shared(uri)
        .map_err(|source| TlsError::EndpointUri {
            endpoint: endpoint.to_string(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout)
        .keep_alive_while_idle(true);
    let name = server_name.unwrap_or_else(|| unbracket(authority.host()));
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|source| TlsError::ServerName {
            name: name.to_string(),
            source,
        })?;
    Ok(tonic_endpoint.connect_with_connector_lazy(Dialer {
        configs,
        server_name,
        check,
    }))
}

/// The cluster a [`channel_to_cluster`] channel must reach, and where it reports what
/// each handshake saw.
#[derive(Clone)]
struct ClusterCheck {
    expected: ClusterName,
    seen: Arc<watch::Sender<Option<ServerCert>>>,
}

impl ClusterCheck {
    fn verify(&self, tls: &TlsStream<TcpStream>) -> Result<(), ServerIdentityError> {
        let (cluster, not_after, der) = match tls.get_ref().1.peer_certificates() {
            Some([leaf, ..]) => {
                let (cluster, not_after) = peer_identity(leaf);
                (cluster, not_after, leaf.to_vec())
            }
            _ => (Err(PeerIdentityError::NoCertificate), None, Vec::new()),
        };
        let cluster = cluster.map_err(|source| ServerIdentityError::NoIdentity {
            expected: self.expected.clone(),
            source,
        })?;
        if cluster != self.expected {
            return Err(ServerIdentityError::WrongCluster {
                expected: self.expected.clone(),
                found: cluster,
            });
        }
        self.seen.send_replace(Some(ServerCert {
            cluster,
            not_after,
            der,
        }));
        Ok(())
    }
}

fn parse_endpoint(endpoint: &str) -> Result<Authority, TlsError> {
    let refuse = |reason| TlsError::Endpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let rest = match endpoint.split_once("://") {
        Some(("https", rest)) => rest,
        Some(_) => {
            return Err(refuse(
                "only https:// is allowed: peers speak mutual TLS only",
            ));
        }
        None => endpoint,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let authority: Authority = rest
        .parse()
        .map_err(|_| refuse("expected host:port or https://host:port"))?;
    if authority.port_u16().is_none() {
        return Err(refuse("missing port"));
    }
    Ok(authority)
}

/// `[::1]` → `::1`: URIs bracket IPv6 addresses, socket addresses and TLS names do not.
fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Dials TCP and does the TLS handshake; tonic calls it for every (re)connect.
struct Dialer {
    configs: watch::Receiver<Arc<ClientConfig>>,
    server_name: ServerName<'static>,
    check: Option<ClusterCheck>,
}

type Dialed = TokioIo<TlsStream<TcpStream>>;

impl tower::Service<Uri> for Dialer {
    type Response = Dialed;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Dialed>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = TlsConnector::from(self.configs.borrow().clone());
        let server_name = self.server_name.clone();
        let check = self.check.clone();
        Box::pin(async move {
            let (host, port) = match (uri.host(), uri.port_u16()) {
                (Some(host), Some(port)) => (unbracket(host).to_string(), port),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("no host:port in {uri}"),
                    ));
                }
            };
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            // gRPC frames are small and latency-bound: send them as soon as they are written.
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            if let Some(check) = check {
                check.verify(&tls).map_err(io::Error::other)?;
            }
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_host_port_with_an_optional_https_scheme() {
        for good in [
            "mesh.example:443",
            "https://mesh.example:443",
            "https://10.0.0.1:2379/",
            "[::1]:50051",
        ] {
            assert!(parse_endpoint(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("http://mesh.example:443", "only https"),
            ("grpc://mesh.example:443", "only https"),
            ("mesh.example", "missing port"),
            ("https://mesh.example:443/path", "expected host:port"),
            ("", "expected host:port"),
        ] {
            let err = parse_endpoint(bad).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets() {
        assert_eq!(unbracket("[::1]"), "::1");
        assert_eq!(unbracket("mesh.example"), "mesh.example");
    }
}
