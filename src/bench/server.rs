//! The source cluster's apiserver, built from the production pieces: the store's state
//! watch feeding the watch cache, served by the gRPC server behind mutual TLS on
//! 127.0.0.1. It runs on its own thread with its own one-worker runtime, as its own
//! process would (at most one core), and stopping it drops that runtime: every
//! connection closes at once, as when a process dies.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::apiserver::CacheSink;
use crate::cache::{CacheSettings, WatchCache};
use crate::grpc::{AllowedPeers, GrpcServer};
use crate::kvstore::Store;
use crate::kvstore::state_watch::{StateWatchStats, follow};
use crate::model::Cluster;
use crate::proto::encode_event;
use crate::tls::{RELOAD_INTERVAL, TlsFiles, spawn_reload};

/// A running apiserver; stopped when dropped.
pub struct BenchServer {
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    stop_tx: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BenchServer {
    /// Serves `cluster`'s state from `store` with the certificate `tls` to every peer the
    /// CA trusts; returns once it listens.
    pub async fn start(
        cluster: Cluster,
        store: Arc<dyn Store>,
        tls: TlsFiles,
    ) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel::<anyhow::Result<SocketAddr>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-apiserver".into())
            .spawn(move || serve_thread(cluster, store, tls, ready_tx, stop_rx))
            .context("cannot start the apiserver thread")?;
        let addr = ready_rx
            .await
            .context("the apiserver thread ended before listening")??;
        Ok(Self {
            addr,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
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

fn serve_thread(
    cluster: Cluster,
    store: Arc<dyn Store>,
    tls: TlsFiles,
    ready_tx: oneshot::Sender<anyhow::Result<SocketAddr>>,
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
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .context("cannot listen on 127.0.0.1")?;
            Ok::<_, anyhow::Error>((configs, listener))
        };
        let (configs, listener) = match listening.await {
            Ok(ok) => ok,
            Err(err) => {
                let _ = ready_tx.send(Err(err));
                return;
            }
        };
        let addr = listener.local_addr();
        let cache = Arc::new(WatchCache::new(encode_event, CacheSettings::default()));
        tokio::spawn(follow(
            store,
            cluster.clone(),
            CacheSink(cache.clone()),
            StateWatchStats::default(),
        ));
        let server = GrpcServer::new(cache, cluster, AllowedPeers::Any);
        let incoming = crate::tls::server::incoming(listener, configs.config_rx());
        let _ = ready_tx.send(addr.context("no local address"));
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
