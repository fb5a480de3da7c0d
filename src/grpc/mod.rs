//! The gRPC server of `fleetmesh.v1.Mesh`: `Info` and `Watch` over mutual TLS.
//!
//! Every call is authorized before anything else: the peer's cluster comes from its
//! client certificate (the [`PeerInfo`](crate::tls::server::PeerInfo) that
//! [`tls::server::incoming`](crate::tls::server::incoming) attaches to each connection)
//! and must be in the serving cluster's [`AllowedPeers`]. A connection without a usable
//! identity gets `UNAUTHENTICATED`, a peer that may not see this cluster
//! `PERMISSION_DENIED` with a message naming the peer and the rule; both are logged and
//! counted ([`GrpcStats`]).
//!
//! A watch streams from a [`WatchSource`] — the [`WatchCache`](crate::cache::WatchCache)
//! in the apiserver, a fake in tests — in frames of pre-encoded events, each at most
//! [`MAX_FRAME_BYTES`] (so tonic's per-stream buffer stays at its initial size) and
//! [`MAX_FRAME_EVENTS`]: the full state (or, when resuming, the missed events), a frame
//! marked synced, then live batches of the requested kinds. A watcher that falls too
//! far behind is ended with `ABORTED` ("watcher fell behind; resync"), and all of them
//! with `UNAVAILABLE` when the store's history restarts or the server stops (a graceful
//! shutdown: no new connections, every open watch told to reconnect); they reconnect and
//! resume. Each rewrite of the store's heartbeat (when the server is given one, see
//! [`GrpcServer::with_heartbeat`]) goes to every watcher on its next frame, or alone on
//! an idle stream. A watcher whose peer takes no frames for [`STALL_LIMIT`] has its connection
//! closed (module `stall`).
//! Every internal error becomes a `Status` in one place ([`GrpcError`]).
//!
//! Mounting it:
//!
//! ```ignore
//! let grpc = GrpcServer::new(cache, cluster, AllowedPeers::Any);
//! let stats = grpc.stats();
//! grpc.serve(tls::server::incoming(listener, tls_configs), shutdown).await?;
//! ```

mod authz;
mod error;
mod frames;
mod service;
mod source;
mod stall;
mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tonic::transport::server::Connected;

pub use self::authz::AllowedPeers;
pub use self::error::GrpcError;
pub use self::frames::{HeartbeatRx, MAX_FRAME_BYTES, MAX_FRAME_EVENTS};
pub use self::service::WatchStream;
pub use self::source::WatchSource;
pub use self::stall::STALL_LIMIT;
pub use self::stats::{GrpcStats, WatcherSnapshot};

use crate::model::Cluster;
use crate::proto::v1::mesh_server::MeshServer;

/// Largest request accepted: a watch request is a few kinds and a resume point (tens of
/// bytes), so anything bigger is refused before it costs memory, without touching the
/// connection's other streams.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// HTTP/2 PING period towards each peer: notices a vanished agent (its node gone, a NAT
/// entry dropped) within seconds, freeing its watch, and keeps idle connections under
/// the idle timeouts of cloud load balancers.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How long a PING may go unanswered before the connection is dropped: longer than the
/// interval, so one slow answer across regions is not fatal.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(25);

/// The `Mesh` service of one cluster, streaming from `S`.
pub struct GrpcServer<S> {
    source: Arc<S>,
    cluster: Cluster,
    allowed: AllowedPeers,
    stats: GrpcStats,
    /// Turns true when the server stops: every open watch then ends with `UNAVAILABLE`,
    /// which its peer takes as "reconnect" (a watch never ends by itself, so a graceful
    /// shutdown would otherwise wait for them forever).
    stopping: Arc<watch::Sender<bool>>,
    /// When the served store's heartbeat was last written: each watcher is told of every
    /// rewrite. Never set unless [`GrpcServer::with_heartbeat`] gives one, as servers that
    /// predate it (their watchers then show no heartbeat age).
    heartbeat: HeartbeatRx,
}

impl<S: WatchSource> GrpcServer<S> {
    /// Serves `cluster`'s state from `source` to the peers `allowed` names.
    pub fn new(source: Arc<S>, cluster: Cluster, allowed: AllowedPeers) -> Self {
        Self {
            source,
            cluster,
            allowed,
            stats: GrpcStats::default(),
            stopping: Arc::new(watch::channel(false).0),
            heartbeat: watch::channel(None).1,
        }
    }

    /// Tells every watcher when the served store's heartbeat was written, on each rewrite
    /// (an idle stream gets a frame for it).
    pub fn with_heartbeat(mut self, heartbeat: HeartbeatRx) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// The server's counters (shared: they keep counting after the server is mounted).
    pub fn stats(&self) -> GrpcStats {
        self.stats.clone()
    }

    /// The tonic service, with the request size limit set, to mount with
    /// `tonic::transport::Server::builder().add_service(..)`.
    pub fn into_service(self) -> MeshServer<Self> {
        MeshServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// Serves the connections of `incoming` (normally
    /// [`tls::server::incoming`](crate::tls::server::incoming)) until `shutdown`
    /// completes, with keepalive towards every peer. Then it accepts nothing new, ends
    /// every open watch with `UNAVAILABLE` ("reconnect") and returns once they are gone.
    pub async fn serve<I, IO, IE>(
        self,
        incoming: I,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error>
    where
        I: Stream<Item = Result<IO, IE>>,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stopping = Arc::clone(&self.stopping);
        let shutdown = async move {
            shutdown.await;
            stopping.send_replace(true);
        };
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .add_service(self.into_service())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }
}
