//! The accepting side: a stream of TLS connections for
//! `tonic::transport::Server::serve_with_incoming`.
//!
//! Each TCP connection is handshaken with the server config current when it arrived, so
//! a reload applies to new connections while established ones keep going. Handshakes run
//! concurrently with accepting, each under a timeout, so a slow or silent client holds up
//! no one. Failures are logged with the peer's address and counted in [`HandshakeStats`].

mod conn;

use std::io;
use std::net::SocketAddr;
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

pub use conn::{PeerInfo, TlsConn};

/// Longest a handshake may take: TLS 1.3 needs one or two round trips, so this tolerates
/// slow cross-region links while freeing a slot held by a client that says nothing.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at most; beyond that accepting pauses and the kernel's backlog
/// holds new connections, so a connection flood cannot grow memory without bound.
const MAX_HANDSHAKES: usize = 1024;
/// Pause after an accept error that is not about one connection (out of file
/// descriptors, say), so the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// Handshake outcomes since the listener started; cheap to clone, shared with the
/// accept stream (for metrics and tests).
#[derive(Clone, Debug, Default)]
pub struct HandshakeStats {
    accepted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
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
        paused_until: None,
    };
    let inner = futures::stream::unfold(acceptor, |mut acceptor| async move {
        let next = acceptor.next().await;
        Some((next, acceptor))
    })
    .boxed();
    Incoming { inner, stats }
}

struct Acceptor {
    listener: TcpListener,
    configs: watch::Receiver<Arc<ServerConfig>>,
    stats: HandshakeStats,
    handshakes: FuturesUnordered<BoxFuture<'static, Option<TlsConn>>>,
    paused_until: Option<Instant>,
}

impl Acceptor {
    /// The next connection whose handshake completed, or an accept error. Handshakes
    /// progress only while this is polled, which tonic does continuously.
    async fn next(&mut self) -> io::Result<TlsConn> {
        loop {
            let paused = self.paused_until.filter(|t| *t > Instant::now());
            let accepting = paused.is_none() && self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                Some(done) = self.handshakes.next(), if !self.handshakes.is_empty() => {
                    if let Some(conn) = done {
                        return Ok(conn);
                    }
                }
                accepted = self.listener.accept(), if accepting => match accepted {
                    Ok((tcp, addr)) => {
                        let config = self.configs.borrow().clone();
                        let stats = self.stats.clone();
                        self.handshakes.push(Box::pin(handshake(tcp, addr, config, stats)));
                    }
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

async fn handshake(
    tcp: TcpStream,
    addr: SocketAddr,
    config: Arc<ServerConfig>,
    stats: HandshakeStats,
) -> Option<TlsConn> {
    // gRPC frames are small and latency-bound: send them as soon as they are written.
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(peer = %addr, error = %e, "cannot set TCP_NODELAY");
    }
    let outcome =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(tcp)).await;
    match outcome {
        Ok(Ok(stream)) => {
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            Some(TlsConn::new(stream, addr))
        }
        Ok(Err(e)) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            if e.kind() == io::ErrorKind::UnexpectedEof {
                // Usually a TCP probe (load balancer, kubelet) that connects and leaves.
                debug!(peer = %addr, "connection closed before the TLS handshake completed");
            } else {
                warn!(peer = %addr, error = %e, "TLS handshake refused");
            }
            None
        }
        Err(_) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            warn!(peer = %addr, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            None
        }
    }
}
