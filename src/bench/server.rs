//! The source cluster's apiserver, built from the production pieces: the store's state
//! watch feeding the watch cache, served by the gRPC server behind mutual TLS on
//! 127.0.0.1. It runs on its own thread with its own one-worker runtime, as its own
//! process would (at most one core), and stopping it drops that runtime: every
//! connection closes at once, as when a process dies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::ServerConfig;
use tokio::net::TcpListener;
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
use crate::tls::{RELOAD_INTERVAL, TlsFiles, spawn_reload};

/// How often a server told to report its sync looks at its cache: cheap next to a sync
/// (the cache's own notification is for its subscribers).
const SYNCED_POLL: Duration = Duration::from_millis(10);

/// Where and when a [`BenchServer`] serves; the default listens on a free port of
/// 127.0.0.1 and serves the store's state at once.
#[derive(Debug, Default)]
pub struct ServeOptions {
    /// Listen here (an apiserver restarting on its old address) instead of a free port.
    pub addr: Option<SocketAddr>,
    /// Feed the cache only once this fires, as the apiserver feeds it only once the
    /// export has written the source's whole state: until then watchers wait.
    pub feed_after: Option<oneshot::Receiver<()>>,
    /// Told when the cache has synced: the apiserver serves the whole state.
    pub synced_tx: Option<oneshot::Sender<()>>,
    /// Also serve the etcd API (from its own key cache, fed from the store at once).
    pub etcd_api: bool,
}

/// A running apiserver; stopped when dropped.
pub struct BenchServer {
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    /// Where it serves the etcd API, if it does.
    pub etcd_api_addr: Option<SocketAddr>,
    stop_tx: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BenchServer {
    /// Serves `cluster`'s state from `store` with the certificate `tls` to every peer the
    /// CA trusts, as `options` say; returns once it listens.
    pub async fn start_with(
        cluster: Cluster,
        store: Arc<dyn Store>,
        tls: TlsFiles,
        options: ServeOptions,
    ) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel::<anyhow::Result<Addrs>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-apiserver".into())
            .spawn(move || serve_thread(cluster, store, tls, options, ready_tx, stop_rx))
            .context("cannot start the apiserver thread")?;
        let (addr, etcd_api_addr) = ready_rx
            .await
            .context("the apiserver thread ended before listening")??;
        Ok(Self {
            addr,
            etcd_api_addr,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl BenchServer {
    /// Stops serving: every connection closes at once, as when the process dies; the
    /// address is free again when this returns. Stopping twice does nothing.
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

impl Drop for BenchServer {
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
    ready_tx: oneshot::Sender<anyhow::Result<Addrs>>,
    stop_rx: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-apiserver")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = ready_tx.send(Err(err).context("cannot build the apiserver's runtime"));
            return;
        }
    };
    runtime.block_on(async move {
        let listening = async {
            let configs = spawn_reload::<ServerConfig>(tls, RELOAD_INTERVAL)
                .context("cannot load the apiserver's certificates")?;
            let addr = options
                .addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let etcd_listener = match options.etcd_api {
                true => Some(
                    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                        .await
                        .context("cannot listen for the etcd API")?,
                ),
                false => None,
            };
            Ok::<_, anyhow::Error>((configs, listener, etcd_listener))
        };
        let (configs, listener, etcd_listener) = match listening.await {
            Ok(ok) => ok,
            Err(err) => {
                let _ = ready_tx.send(Err(err));
                return;
            }
        };
        let addr = listener.local_addr();
        let etcd_api_addr = match etcd_listener {
            Some(etcd_listener) => {
                let etcd_addr = etcd_listener.local_addr().ok();
                let keys = Arc::new(KeyCache::new(1, KeyCacheSettings::default()));
                tokio::spawn(follow_store(store.clone(), keys.clone(), CILIUM_PREFIX));
                let api = EtcdApi::new(keys, AllowedPeers::Any, ReadRules::remote(&cluster.name));
                let incoming = crate::tls::server::incoming(etcd_listener, configs.config_rx());
                tokio::spawn(async move {
                    if let Err(err) = api.serve(incoming, std::future::pending()).await {
                        tracing::error!(error = %err, "the bench etcd API stopped");
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
        let server = GrpcServer::new(cache, cluster, AllowedPeers::Any);
        let incoming = crate::tls::server::incoming(listener, configs.config_rx());
        let _ = ready_tx.send(addr.context("no local address").map(|a| (a, etcd_api_addr)));
        tokio::select! {
            served = server.serve(incoming, std::future::pending()) => {
                if let Err(err) = served {
                    tracing::error!(error = %err, "the bench apiserver stopped");
                }
            }
            _ = stop_rx => {}
        }
    });
    // Dropping the runtime ends every task of the server: its connections close.
    drop(runtime);
}

/// Sends on `synced_tx` once `cache` has synced.
async fn tell_synced(cache: Arc<WatchCache>, synced_tx: oneshot::Sender<()>) {
    while !cache.stats().synced {
        tokio::time::sleep(SYNCED_POLL).await;
    }
    // Nobody waiting any more is fine.
    let _ = synced_tx.send(());
}
