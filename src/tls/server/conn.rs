use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::coalesce::Coalesce;
use tonic::transport::server::Connected;

use crate::model::ClusterName;
use crate::tls::PeerIdentityError;
use crate::tls::identity::peer_identity;

/// Who is on the other end of a connection, as its verified certificate says. tonic puts
/// it in every request's extensions: `request.extensions().get::<PeerInfo>()`.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The peer's cluster, or why its certificate names none; the handler refuses the
    /// call in the second case.
    pub cluster: Result<ClusterName, PeerIdentityError>,
    /// When the peer's certificate expires (unknown only if it cannot be parsed).
    pub cert_not_after: Option<OffsetDateTime>,
    /// Closes this connection from a handler (a watcher that stopped reading).
    pub closer: ConnectionCloser,
}

/// Closes a connection from outside the task that serves it: its next read or write
/// fails, and a read waiting for data is woken to find that out. A stream whose peer
/// stopped reading cannot end itself — the server no longer polls it — but its
/// connection's reads are always polled.
#[derive(Clone, Debug, Default)]
pub struct ConnectionCloser(Arc<CloserState>);

#[derive(Debug, Default)]
struct CloserState {
    closed: AtomicBool,
    reader: AtomicWaker,
}

impl ConnectionCloser {
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.reader.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    fn closed_error() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionAborted, "closed by the server")
    }
}

/// A server-side connection whose TLS handshake has completed.
pub struct TlsConn {
    stream: TlsStream<Coalesce<TcpStream>>,
    peer: PeerInfo,
}

impl TlsConn {
    pub(super) fn new(stream: TlsStream<Coalesce<TcpStream>>, addr: SocketAddr) -> Self {
        // Read once per connection, not per request.
        let (cluster, cert_not_after) = match stream.get_ref().1.peer_certificates() {
            Some([leaf, ..]) => peer_identity(leaf),
            _ => (Err(PeerIdentityError::NoCertificate), None),
        };
        Self {
            stream,
            peer: PeerInfo {
                addr,
                cluster,
                cert_not_after,
                closer: ConnectionCloser::default(),
            },
        }
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let closer = &self.peer.closer.0;
        closer.reader.register(cx.waker());
        if closer.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(ConnectionCloser::closed_error()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.peer.closer.is_closed() {
            return Poll::Ready(Err(ConnectionCloser::closed_error()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.peer.closer.is_closed() {
            return Poll::Ready(Err(ConnectionCloser::closed_error()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
