//! The serving half of the apiserver: the store's state → watch cache → gRPC over mTLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::GrpcConfig;
use crate::cache::{CacheSettings, WatchCache};
use crate::export::ExportStatus;
use crate::grpc::{GrpcServer, GrpcStats, HeartbeatRx};
use crate::kvstore::state_watch::{StateSink, StateWatchStats, follow};
use crate::kvstore::{Epoch, Store};
use crate::model::{Cluster, Event, Revision};
use crate::proto::encode_event;
use crate::tls::server::HandshakeStats;
use crate::tls::spawn_reload;

/// The watch cache as the state watch's sink: how the store's state reaches the cache.
pub struct CacheSink(pub Arc<WatchCache>);

impl StateSink for CacheSink {
    fn reset(&mut self, epoch: &Epoch) {
        self.0.reset(&epoch.0);
    }

    fn apply(&mut self, events: Vec<Event>) {
        self.0.apply(&events);
    }

    fn synced(&mut self, revision: Revision) {
        self.0.synced(revision);
    }
}

/// How long a list waits for the exporter to complete the list's epoch before the epoch
/// is checked again (the store may have moved on to another one).
const EPOCH_RECHECK: Duration = Duration::from_secs(5);

/// The watch cache fed only with lists of a store that the exporter has completely
/// written in the list's epoch: a cache that synced on a half-written store (an embedded
/// store after a restart, an etcd just wiped) would make every agent sweep what it holds
/// of this cluster.
struct ExportedSink {
    cache: Arc<WatchCache>,
    export: watch::Receiver<ExportStatus>,
}

impl StateSink for ExportedSink {
    fn reset(&mut self, epoch: &Epoch) {
        self.cache.reset(&epoch.0);
    }

    fn apply(&mut self, events: Vec<Event>) {
        self.cache.apply(&events);
    }

    fn synced(&mut self, revision: Revision) {
        self.cache.synced(revision);
    }

    async fn ready_to_list(&mut self, epoch: &Epoch) -> bool {
        // A new history: the cache drops the old one now, so watchers resync (they wait
        // for the list) and `Info` names the epoch being served.
        if self.cache.epoch().as_deref() != Some(epoch.0.as_str()) {
            self.cache.reset(&epoch.0);
        }
        // Should the store have moved on to yet another epoch, the exporter never
        // syncs in this one: look again after a while.
        let written = self
            .export
            .wait_for(|s| s.synced && s.epoch.as_ref() == Some(epoch));
        let outcome = match tokio::time::timeout(EPOCH_RECHECK, written).await {
            Ok(Ok(_)) => Some(true),
            Ok(Err(_)) => None,
            Err(_) => Some(false),
        };
        match outcome {
            Some(ready) => ready,
            // The exporter is gone, and the apiserver with it.
            None => std::future::pending().await,
        }
    }
}

/// What the running gRPC server exposes to the rest of the apiserver.
pub struct Serving {
    pub addr: SocketAddr,
    /// The task serving gRPC: it ends once `stop` has turned true and every watch ended.
    pub task: tokio::task::Id,
    pub stats: GrpcStats,
    /// TLS handshakes accepted and refused (no certificate, untrusted, expired, ...).
    pub handshakes: HandshakeStats,
    pub cache: Arc<WatchCache>,
}

/// Starts the cache feed and the gRPC server on `tasks`. Certificates must load now:
/// nothing is served before they do (fail closed).
pub async fn start(
    config: &GrpcConfig,
    cluster: &Cluster,
    store: Arc<dyn Store>,
    export: watch::Receiver<ExportStatus>,
    heartbeat: HeartbeatRx,
    mut stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<Serving> {
    let tls = spawn_reload::<ServerConfig>(config.tls.clone(), config.tls_reload)
        .with_context(|| "cannot load the gRPC server certificates")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", config.listen))?;
    let addr = listener.local_addr()?;

    let cache = Arc::new(WatchCache::new(encode_event, CacheSettings::default()));
    let feed = follow(
        store,
        cluster.clone(),
        ExportedSink {
            cache: cache.clone(),
            export,
        },
        StateWatchStats::default(),
    );
    tasks.spawn(async move {
        feed.await;
        anyhow::bail!("the state watch feeding the cache stopped")
    });

    let server = GrpcServer::new(cache.clone(), cluster.clone(), config.allowed_peers.clone())
        .with_heartbeat(heartbeat);
    let stats = server.stats();
    let incoming = crate::tls::server::incoming(listener, tls.config_rx());
    let handshakes = incoming.stats();
    let task = tasks.spawn(async move {
        // The reloader lives as long as the server uses its configs.
        let _tls = tls;
        let stopped = async move {
            // A dropped sender means the apiserver is gone: stop as well.
            let _ = stop.wait_for(|stop| *stop).await;
        };
        server
            .serve(incoming, stopped)
            .await
            .context("gRPC server stopped")
    });
    Ok(Serving {
        addr,
        task: task.id(),
        stats,
        handshakes,
        cache,
    })
}
