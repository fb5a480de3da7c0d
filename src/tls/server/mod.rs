//! The accepting side: a stream of TLS connections for
//! `tonic::transport::Server::serve_with_incoming`.
//!
//! Each TCP connection is handshaken with the server config current when it arrived, so
//! a reload applies to new connections while established ones keep going. Handshakes run
//! concurrently with accepting, each under a short timeout, and only as many as
//! [`admission`] allows — per source address, with slots kept for peers that completed a
//! handshake before — so neither a slow client nor a flood of clients that never finish
//! holds up a real peer. Refusals and failures are counted in [`HandshakeStats`] and
//! logged with the peer's address at a bounded rate.

mod admission;
mod coalesce;
mod conn;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{Stream, StreamExt};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

pub use admission::{MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE, RESERVED_FOR_KNOWN};
pub use conn::{ConnectionCloser, PeerInfo, TlsConn};

use crate::report::LogBudget;
use admission::{Admission, Refusal};
use coalesce::Coalesce;

/// Longest a handshake may take: TLS 1.3 needs one or two round trips, well under a
/// second even across regions, so this frees a slot held by a client that says nothing
/// (or trickles its hello) soon.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Log lines about refused connections and failed handshakes: a few per window each, the
/// rest counted into the next line.
const LOG_BURST: u32 = 5;
const LOG_WINDOW: Duration = Duration::from_secs(10);
/// Pause after an accept error that is not about one connection (out of file
/// descriptors, say), so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// Handshake outcomes since the listener started; cheap to clone, shared with the
/// accept stream (for metrics and tests).
#[derive(Clone, Debug, Default)]
pub struct HandshakeStats {
    accepted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    shed: Arc<AtomicU64>,
    /// Per [`RefusalReason`], in the order of [`RefusalReason::ALL`].
    by_reason: Arc<[AtomicU64; RefusalReason::ALL.len()]>,
}

/// Why a connection was refused, before its handshake (over a limit) or in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// Closed before its handshake: its address had too many handshakes running.
    SourceBusy,
    /// Closed before its handshake: every slot it may take was busy.
    Full,
    /// The client left during the handshake (usually a TCP probe).
    Closed,
    /// The client did not finish within [`HANDSHAKE_TIMEOUT`].
    TimedOut,
    /// The client presented no certificate.
    NoCertificate,
    /// The client's certificate had expired (or was not valid yet).
    ExpiredCertificate,
    /// The client's certificate was not signed by a trusted CA, or was otherwise bad.
    BadCertificate,
    /// Any other TLS failure: a protocol error, an alert from the client.
    Protocol,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 8] = [
        Self::SourceBusy,
        Self::Full,
        Self::Closed,
        Self::TimedOut,
        Self::NoCertificate,
        Self::ExpiredCertificate,
        Self::BadCertificate,
        Self::Protocol,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SourceBusy => "source_busy",
            Self::Full => "full",
            Self::Closed => "closed",
            Self::TimedOut => "timed_out",
            Self::NoCertificate => "no_certificate",
            Self::ExpiredCertificate => "expired_certificate",
            Self::BadCertificate => "bad_certificate",
            Self::Protocol => "protocol",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// Why the TLS acceptor failed with `e`.
    fn of_handshake_error(e: &io::Error) -> Self {
        let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return Self::Protocol;
        };
        match tls {
            rustls::Error::NoCertificatesPresented => Self::NoCertificate,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. }
                | rustls::CertificateError::NotValidYet
                | rustls::CertificateError::NotValidYetContext { .. },
            ) => Self::ExpiredCertificate,
            rustls::Error::InvalidCertificate(_) => Self::BadCertificate,
            _ => Self::Protocol,
        }
    }
}

impl HandshakeStats {
    /// Handshakes that completed: the peer presented a certificate of a trusted CA.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Handshakes that failed or timed out: no client certificate, an untrusted or
    /// expired one, a client that went silent.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed before their handshake started, over the limits of
    /// [`admission`]: too many from one address, or every slot taken.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Connections refused for `reason` (shed and refused ones together).
    pub fn refused_for(&self, reason: RefusalReason) -> u64 {
        self.by_reason[reason.index()].load(Ordering::Relaxed)
    }

    fn count(&self, reason: RefusalReason) {
        self.by_reason[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// The stream [`incoming`] returns: TLS connections, and accept errors (after which it
/// keeps accepting). It never ends on its own.
pub struct Incoming {
    inner: BoxStream<'static, io::Result<TlsConn>>,
    stats: HandshakeStats,
}

impl Incoming {
    /// The counters of this listener's handshakes.
    pub fn stats(&self) -> HandshakeStats {
        self.stats.clone()
    }
}

impl Stream for Incoming {
    type Item = io::Result<TlsConn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// Accepts TCP connections on `listener` and yields those whose TLS handshake, with the
/// config `configs` holds at that moment, succeeds.
pub fn incoming(listener: TcpListener, configs: watch::Receiver<Arc<ServerConfig>>) -> Incoming {
    let stats = HandshakeStats::default();
    let acceptor = Acceptor {
        listener,
        configs,
        stats: stats.clone(),
        handshakes: FuturesUnordered::new(),
        admission: Admission::default(),
        refusal_log: LogBudget::new(LOG_BURST, LOG_WINDOW),
        failure_log: LogBudget::new(LOG_BURST, LOG_WINDOW),
        paused_until: None,
    };
    let inner = futures::stream::unfold(acceptor, |mut acceptor| async move {
        let next = acceptor.next().await;
        Some((next, acceptor))
    })
    .boxed();
    Incoming { inner, stats }
}

/// How a handshake ended.
type Handshaken = (SocketAddr, Result<TlsConn, HandshakeFailure>);

enum HandshakeFailure {
    /// The client left first: usually a TCP probe (load balancer, kubelet).
    Closed,
    Refused(io::Error),
    TimedOut,
}

struct Acceptor {
    listener: TcpListener,
    configs: watch::Receiver<Arc<ServerConfig>>,
    stats: HandshakeStats,
    handshakes: FuturesUnordered<BoxFuture<'static, Handshaken>>,
    admission: Admission,
    refusal_log: LogBudget,
    failure_log: LogBudget,
    paused_until: Option<Instant>,
}

impl Acceptor {
    /// The next connection whose handshake completed, or an accept error. Handshakes
    /// progress only while this is polled, which tonic does continuously. Accepting never
    /// pauses for the limits: a connection over them is closed at once.
    async fn next(&mut self) -> io::Result<TlsConn> {
        loop {
            let paused = self.paused_until.filter(|t| *t > Instant::now());
            tokio::select! {
                Some((addr, outcome)) = self.handshakes.next(), if !self.handshakes.is_empty() => {
                    self.admission.release(addr.ip(), outcome.is_ok());
                    match outcome {
                        Ok(conn) => {
                            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                            return Ok(conn);
                        }
                        Err(failure) => self.failed(addr, failure),
                    }
                }
                accepted = self.listener.accept(), if paused.is_none() => match accepted {
                    Ok((tcp, addr)) => self.admit(tcp, addr),
                    Err(e) => {
                        warn!(error = %e, "accepting a TCP connection failed");
                        if !is_connection_error(&e) {
                            self.paused_until = Some(Instant::now() + ACCEPT_ERROR_PAUSE);
                        }
                        return Err(e);
                    }
                },
                () = sleep_until(paused.unwrap_or_else(Instant::now)), if paused.is_some() => {
                    self.paused_until = None;
                }
            }
        }
    }

    /// Starts the handshake of `tcp`, or closes it if it is over a limit.
    fn admit(&mut self, tcp: TcpStream, addr: SocketAddr) {
        match self.admission.admit(addr.ip()) {
            Ok(()) => {
                let config = self.configs.borrow().clone();
                self.handshakes.push(Box::pin(handshake(tcp, addr, config)));
            }
            Err(refusal) => {
                drop(tcp);
                self.stats.shed.fetch_add(1, Ordering::Relaxed);
                self.stats.count(match refusal {
                    Refusal::SourceBusy => RefusalReason::SourceBusy,
                    Refusal::Full => RefusalReason::Full,
                });
                self.log_refusal(addr.ip(), refusal);
            }
        }
    }

    fn log_refusal(&mut self, source: IpAddr, refusal: Refusal) {
        if let Some(held_back) = self.refusal_log.allow() {
            warn!(
                peer = %source,
                reason = refusal.as_str(),
                in_flight = self.admission.in_flight(),
                refused_before_unlogged = held_back,
                "connection closed before its TLS handshake"
            );
        }
    }

    fn failed(&mut self, addr: SocketAddr, failure: HandshakeFailure) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.stats.count(match &failure {
            HandshakeFailure::Closed => RefusalReason::Closed,
            HandshakeFailure::TimedOut => RefusalReason::TimedOut,
            HandshakeFailure::Refused(e) => RefusalReason::of_handshake_error(e),
        });
        if let HandshakeFailure::Closed = failure {
            debug!(peer = %addr, "connection closed before the TLS handshake completed");
            return;
        }
        let Some(held_back) = self.failure_log.allow() else {
            return;
        };
        match failure {
            HandshakeFailure::Refused(e) => {
                warn!(peer = %addr, error = %e, failed_before_unlogged = held_back, "TLS handshake refused");
            }
            HandshakeFailure::TimedOut => {
                warn!(peer = %addr, timeout = ?HANDSHAKE_TIMEOUT, failed_before_unlogged = held_back,
                    "TLS handshake timed out");
            }
            HandshakeFailure::Closed => {}
        }
    }
}

/// Errors about one connection that went away while queued; the listener is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

async fn handshake(tcp: TcpStream, addr: SocketAddr, config: Arc<ServerConfig>) -> Handshaken {
    // gRPC frames are small and latency-bound: send them as soon as they are written.
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(peer = %addr, error = %e, "cannot set TCP_NODELAY");
    }
    let outcome = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsAcceptor::from(config).accept(Coalesce::new(tcp)),
    )
    .await;
    let result = match outcome {
        Ok(Ok(stream)) => Ok(TlsConn::new(stream, addr)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(HandshakeFailure::Closed),
        Ok(Err(e)) => Err(HandshakeFailure::Refused(e)),
        Err(_) => Err(HandshakeFailure::TimedOut),
    };
    (addr, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_error(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn handshake_errors_are_counted_by_what_the_client_got_wrong() {
        let cases = [
            (
                tls_error(rustls::Error::NoCertificatesPresented),
                RefusalReason::NoCertificate,
            ),
            (
                tls_error(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired,
                )),
                RefusalReason::ExpiredCertificate,
            ),
            (
                tls_error(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                )),
                RefusalReason::BadCertificate,
            ),
            (
                tls_error(rustls::Error::DecryptError),
                RefusalReason::Protocol,
            ),
            (
                io::Error::new(io::ErrorKind::InvalidData, "not TLS"),
                RefusalReason::Protocol,
            ),
        ];
        for (err, reason) in cases {
            assert_eq!(RefusalReason::of_handshake_error(&err), reason, "{err}");
        }
        let stats = HandshakeStats::default();
        stats.count(RefusalReason::Full);
        assert_eq!(stats.refused_for(RefusalReason::Full), 1);
        assert_eq!(stats.refused_for(RefusalReason::SourceBusy), 0);
    }
}
