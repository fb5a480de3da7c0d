//! A member's apiserver in-process, built from the production pieces: the store's state
//! watch feeding the watch cache, served by the gRPC server behind mutual TLS on
//! 127.0.0.1 (and, if asked, the etcd API from its own key cache). It runs on its own
//! thread with its own one-worker runtime, as its own process would (at most one core),
//! and stopping it drops that runtime: every connection closes at once and open watch
//! streams break, as when a process dies (tonic's graceful shutdown would wait for them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

use crate::apiserver::CacheSink;
use crate::cache::{CacheSettings, WatchCache};
use crate::etcd_api::feed::{CILIUM_PREFIX, follow_store};
use crate::etcd_api::{EtcdApi, KeyCache, KeyCacheSettings, ReadRules};
use crate::grpc::{AllowedPeers, GrpcServer};
use crate::kvstore::Store;
use crate::kvstore::state_watch::{StateWatchStats, follow};
use crate::model::Cluster;
use crate::proto::encode_event;
use crate::tls::{RELOAD_INTERVAL, TlsError, TlsFiles, spawn_reload};

/// How often a server told to report its sync looks at its cache: cheap next to a sync
/// (the cache's own notification is for its subscribers).
const SYNCED_POLL: Duration = Duration::from_millis(10);

/// The name of the server's threads (within Linux's 15 characters), by which the bench
/// tells its CPU time from the agents'.
pub const APISERVER_THREADS: &str = "local-apiserver";

/// Backlog of the gRPC listener: a reconnect storm of many agents at once.
const BACKLOG: u32 = 1024;

/// What can keep a [`LocalApiserver`] from serving.
#[derive(Debug, thiserror::Error)]
pub enum LocalApiserverError {
    #[error("cannot start the apiserver's thread or runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot load the apiserver's certificates")]
    Tls(#[source] TlsError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the apiserver's thread ended before listening")]
    Ended,
}

/// Where and when a [`LocalApiserver`] serves; the default listens on a free port of
/// 127.0.0.1, serves the store's state at once to every peer the CA trusts.
#[derive(Debug)]
pub struct ServeOptions {
    /// Listen here (an apiserver restarting on its old address, which its old connections
    /// may still hold in TIME_WAIT) instead of a free port.
    pub addr: Option<SocketAddr>,
    /// Who may watch; everyone the CA trusts by default.
    pub allowed: AllowedPeers,
    /// Feed the cache only once this fires, as the apiserver feeds it only once the
    /// export has written the source's whole state: until then watchers wait.
    pub feed_after: Option<oneshot::Receiver<()>>,
    /// Told when the cache has synced: the apiserver serves the whole state.
    pub synced_tx: Option<oneshot::Sender<()>>,
    /// Also serve the etcd API (from its own key cache, fed from the store at once).
    pub etcd_api: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            addr: None,
            allowed: AllowedPeers::Any,
            feed_after: None,
            synced_tx: None,
            etcd_api: false,
        }
    }
}

/// A running apiserver; stopped when dropped.
pub struct LocalApiserver {
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    /// Where it serves the etcd API, if it does.
    pub etcd_api_addr: Option<SocketAddr>,
    stop_tx: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalApiserver {
    /// Serves `cluster`'s state from `store` with the server certificate `tls`, as
    /// `options` say; returns once it listens.
    pub async fn start(
        cluster: Cluster,
        store: Arc<dyn Store>,
        tls: TlsFiles,
        options: ServeOptions,
    ) -> Result<Self, LocalApiserverError> {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<Addrs, LocalApiserverError>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(APISERVER_THREADS.into())
            .spawn(move || serve_thread(cluster, store, tls, options, ready_tx, stop_rx))
            .map_err(LocalApiserverError::Runtime)?;
        let (addr, etcd_api_addr) = ready_rx.await.map_err(|_| LocalApiserverError::Ended)??;
        Ok(Self {
            addr,
            etcd_api_addr,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops serving: every connection closes at once, as when the process dies; the
    /// address is free again when this returns. Blocks until the server's thread ends;
    /// stopping twice does nothing.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop_tx.take() {
            // An error means the server already ended.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic in the server thread was already reported on stderr.
            let _ = thread.join();
        }
    }
}

impl Drop for LocalApiserver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the gRPC server and the etcd API listen.
type Addrs = (SocketAddr, Option<SocketAddr>);

fn serve_thread(
    cluster: Cluster,
    store: Arc<dyn Store>,
    tls: TlsFiles,
    options: ServeOptions,
    ready_tx: oneshot::Sender<Result<Addrs, LocalApiserverError>>,
    stop_rx: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(APISERVER_THREADS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready_tx.send(Err(LocalApiserverError::Runtime(err)));
            return;
        }
    };
    runtime.block_on(async move {
        let listening = async {
            let configs = spawn_reload::<ServerConfig>(tls, RELOAD_INTERVAL)
                .map_err(LocalApiserverError::Tls)?;
            let addr = options
                .addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
            let listener = listen_reusing(addr)?;
            let etcd_listener = match options.etcd_api {
                true => Some(listen_reusing(SocketAddr::from(([127, 0, 0, 1], 0)))?),
                false => None,
            };
            Ok::<_, LocalApiserverError>((configs, listener, etcd_listener))
        };
        let (configs, listener, etcd_listener) = match listening.await {
            Ok(ok) => ok,
            Err(err) => {
                let _ = ready_tx.send(Err(err));
                return;
            }
        };
        let etcd_api_addr = match etcd_listener {
            Some(etcd_listener) => {
                let etcd_addr = etcd_listener.local_addr().ok();
                let keys = Arc::new(KeyCache::new(1, KeyCacheSettings::default()));
                tokio::spawn(follow_store(store.clone(), keys.clone(), CILIUM_PREFIX));
                let api = EtcdApi::new(
                    keys,
                    options.allowed.clone(),
                    ReadRules::remote(&cluster.name),
                );
                let incoming = crate::tls::server::incoming(etcd_listener, configs.config_rx());
                tokio::spawn(async move {
                    if let Err(err) = api.serve(incoming, std::future::pending()).await {
                        tracing::error!(error = %err, "the local etcd API stopped");
                    }
                });
                etcd_addr
            }
            None => None,
        };
        let cache = Arc::new(WatchCache::new(encode_event, CacheSettings::default()));
        let feed = follow(
            store,
            cluster.clone(),
            CacheSink(cache.clone()),
            StateWatchStats::default(),
        );
        let feed_after = options.feed_after;
        tokio::spawn(async move {
            if let Some(after) = feed_after {
                // Dropped unsent: the run is ending, nothing is served.
                if after.await.is_err() {
                    return;
                }
            }
            feed.await;
        });
        if let Some(synced_tx) = options.synced_tx {
            tokio::spawn(tell_synced(cache.clone(), synced_tx));
        }
        let server = GrpcServer::new(cache, cluster, options.allowed);
        let addr = listener
            .local_addr()
            .map_err(|source| LocalApiserverError::Listen {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                source,
            });
        let incoming = crate::tls::server::incoming(listener, configs.config_rx());
        let _ = ready_tx.send(addr.map(|a| (a, etcd_api_addr)));
        tokio::select! {
            served = server.serve(incoming, std::future::pending()) => {
                if let Err(err) = served {
                    tracing::error!(error = %err, "the local apiserver stopped");
                }
            }
            _ = stop_rx => {}
        }
    });
    // Dropping the runtime ends every task of the server: its connections close.
    drop(runtime);
}

/// A listener on `addr` that may take a port whose old connections linger in TIME_WAIT.
fn listen_reusing(addr: SocketAddr) -> Result<TcpListener, LocalApiserverError> {
    let listen = || {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    listen().map_err(|source| LocalApiserverError::Listen { addr, source })
}

/// Sends on `synced_tx` once `cache` has synced.
async fn tell_synced(cache: Arc<WatchCache>, synced_tx: oneshot::Sender<()>) {
    while !cache.stats().synced {
        tokio::time::sleep(SYNCED_POLL).await;
    }
    // Nobody waiting any more is fine.
    let _ = synced_tx.send(());
}
