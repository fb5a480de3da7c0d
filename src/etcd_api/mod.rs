//! The subset of etcd's v3 API that Cilium's agents and KVStoreMesh use to read a
//! cluster (`KV.Range`, `Watch`, `Maintenance.Status`), served read-only from a
//! key-level watch cache over mutual TLS, so that a stock Cilium agent — or `etcdctl`
//! — reads a fleetmesh apiserver as it would a clustermesh-apiserver's etcd.
//!
//! ```text
//!  store ──follow_store──► KeyCache ──Range──────────────► etcd clients
//!  (or any feed of          keys, revision log,
//!   WatchEvents)            broadcast of batches ──Watch──► (one task per stream)
//! ```
//!
//! - [`key_cache`]: keys, values, revisions and leases as the store holds them, a
//!   bounded revision log (reads pinned to a revision, watches from a revision), and
//!   the broadcast every watch stream follows. Each event is encoded once; the
//!   watches of one range share one encoded response body.
//! - [`feed::follow_store`]: keeps the cache fed from a [`Store`](crate::kvstore::Store)
//!   (embedded or etcd). Anything else that yields the same events can feed it.
//! - Authorization: the peer's cluster comes from its certificate and must be in
//!   [`AllowedPeers`]; it may then read what [`ReadRules`] permit (Cilium's `remote`
//!   role by default). Everything else, and every write, gets etcd's own
//!   `permission denied`, and is counted ([`EtcdApiStats`]).
//! - A watch stream that falls behind the broadcast catches up from the log; one that
//!   fell further behind than the log reaches has its watches canceled with a compact
//!   revision — its client re-lists, as after an etcd compaction — and slows no one.

pub mod codec;
mod error;
pub mod feed;
pub mod key_cache;
mod kv;
mod lease;
mod maintenance;
mod range;
mod rules;
mod stats;
mod watch;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::server::Connected;
use tonic::{Request, Status};
use tracing::warn;

pub use self::error::{COMPACTED, EtcdApiError, PERMISSION_DENIED};
pub use self::key_cache::{KeyCache, KeyCacheSettings, cluster_id_of};
pub use self::range::KeyRange;
pub use self::rules::ReadRules;
pub use self::stats::EtcdApiStats;

use self::wire::etcdserverpb::kv_server::KvServer;
use self::wire::etcdserverpb::lease_server::LeaseServer;
use self::wire::etcdserverpb::maintenance_server::MaintenanceServer;
use self::wire::etcdserverpb::watch_server::WatchServer;
use crate::grpc::AllowedPeers;
use crate::model::ClusterName;
use crate::report::error_chain;
use crate::tls::server::PeerInfo;

/// Largest request accepted: etcd requests are a key, a range end and a few numbers.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Longest a request waits for the cache's first listing before it is answered
/// "unavailable" (which etcd's clients retry).
const READY_WAIT: Duration = Duration::from_secs(5);
/// How often the server pings a connection it has read nothing from, and how long it
/// waits for the answer: etcd's own defaults (`--grpc-keepalive-interval`,
/// `--grpc-keepalive-timeout`). A PING's answer waits behind every response already
/// sent and not yet read, so a client that is busy but reading can take longer than
/// the gRPC API's 25 s to answer; etcd does not cut such a client, and neither does
/// this API. A client that reads nothing at all still holds only its stream's bounded
/// outbox, and is canceled with a compact revision once it reads again.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2 * 60 * 60);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The etcd API of one cluster: cheap to clone, every clone serves the same cache.
#[derive(Clone)]
pub struct EtcdApi {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Arc<KeyCache>,
    allowed: AllowedPeers,
    rules: ReadRules,
    stats: EtcdApiStats,
}

impl EtcdApi {
    /// Serves `cache` to the peers `allowed` names, each reading what `rules` permit.
    pub fn new(cache: Arc<KeyCache>, allowed: AllowedPeers, rules: ReadRules) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache,
                allowed,
                rules,
                stats: EtcdApiStats::default(),
            }),
        }
    }

    /// The counters (shared: they keep counting after the server is mounted).
    pub fn stats(&self) -> EtcdApiStats {
        self.inner.stats.clone()
    }

    /// Serves the connections of `incoming` (normally
    /// [`tls::server::incoming`](crate::tls::server::incoming)) until `shutdown`
    /// completes. HTTP/2 pings are answered whatever their rate (etcd's clients send
    /// one every 10 to 15 s), and sent as etcd sends them ([`KEEPALIVE_INTERVAL`]).
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
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .add_service(KvServer::new(self.clone()).max_decoding_message_size(MAX_REQUEST_BYTES))
            .add_service(
                WatchServer::new(self.clone()).max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(
                LeaseServer::new(self.clone()).max_decoding_message_size(MAX_REQUEST_BYTES),
            )
            .add_service(MaintenanceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    fn cache(&self) -> &KeyCache {
        &self.inner.cache
    }

    /// The calling peer's cluster, if its certificate names one that is allowed.
    fn authorize<T>(&self, request: &Request<T>) -> Result<ClusterName, Status> {
        let peer = request.extensions().get::<PeerInfo>();
        let cluster = match peer {
            None => Err(EtcdApiError::NoPeerIdentity),
            Some(peer) => match &peer.cluster {
                Err(e) => Err(EtcdApiError::BadPeerIdentity(e.clone())),
                Ok(cluster) if !self.inner.allowed.allows(cluster) => {
                    Err(EtcdApiError::PeerNotAllowed {
                        peer: cluster.clone(),
                    })
                }
                Ok(cluster) => Ok(cluster.clone()),
            },
        };
        cluster.map_err(|err| {
            self.inner.stats.count_refused_peer();
            let addr = peer.map(|p| p.addr.to_string()).unwrap_or_default();
            warn!(peer = %addr, allowed = %self.inner.allowed, reason = %error_chain(&err), "etcd API call refused");
            err.into()
        })
    }

    /// Refuses a read of `range` unless `peer`'s role permits it.
    fn check_read(&self, peer: &ClusterName, range: &KeyRange) -> Result<(), EtcdApiError> {
        if self.inner.rules.permits(range) {
            return Ok(());
        }
        self.inner.stats.count_refused_read();
        let err = EtcdApiError::ReadNotAllowed {
            peer: peer.clone(),
            range: format!("{range:?}"),
        };
        warn!(role = %self.inner.rules, reason = %error_chain(&err), "etcd API read refused");
        Err(err)
    }

    /// Refuses a write: authorized peers get etcd's permission error too.
    fn refuse_write<T>(&self, request: &Request<T>, method: &'static str) -> Status {
        let peer = match self.authorize(request) {
            Ok(peer) => peer,
            Err(status) => return status,
        };
        self.inner.stats.count_refused_write();
        let err = EtcdApiError::WriteNotAllowed { peer, method };
        warn!(reason = %error_chain(&err), "etcd API write refused");
        err.into()
    }

    /// Waits (a little) for the cache's first listing.
    async fn ready(&self) -> Result<(), EtcdApiError> {
        let mut ready = self.cache().ready_rx();
        match tokio::time::timeout(READY_WAIT, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(key_cache::CacheError::NotReady.into()),
        }
    }
}
