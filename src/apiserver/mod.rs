//! Wiring of one member's apiserver: open the store, start the source, run the exporter
//! and the health endpoints. No business logic lives here.

pub mod config;
mod health;
mod metrics;
mod serve;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::{ApiserverConfig, GrpcConfig, SourceConfig, StoreSettings};
pub use serve::CacheSink;
pub use status::{
    ApiserverStatus, ExportState, ServingState, WatcherState, apiserver_status_table,
};

use crate::export::{ExportSettings, ExportStatus, Exporter};
use crate::grpc::GrpcStats;
use crate::k8s::kube::{self as kube_source, KubeSource};
use crate::k8s::{Snapshot, manifests};
use crate::kvstore::Store;
use crate::kvstore::etcd::EtcdStore;
use crate::kvstore::memory::MemoryStore;
use crate::kvstore::timed::TimedStore;
use crate::model::DesiredState;
use crate::report::error_chain;
use crate::tls::server::HandshakeStats;
use futures::FutureExt;
use metrics::{ApiserverMetrics, ExportCounters, GrpcServing, count_exports};

/// How often the manifest directory is checked for changes.
const MANIFEST_POLL: Duration = Duration::from_secs(1);

/// Opens the configured store.
pub async fn open_store(settings: &StoreSettings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match settings {
        StoreSettings::Memory => MemoryStore::new(),
        StoreSettings::Etcd(cfg) => Arc::new(
            EtcdStore::connect(cfg.clone())
                .await
                .with_context(|| format!("cannot connect to etcd at {:?}", cfg.endpoints))?,
        ),
    })
}

/// A running apiserver. Dropping it stops every task.
pub struct Apiserver {
    pub health_addr: SocketAddr,
    /// Where gRPC is served, if it is.
    pub grpc_addr: Option<SocketAddr>,
    pub grpc_stats: Option<GrpcStats>,
    pub handshake_stats: Option<HandshakeStats>,
    pub status: watch::Receiver<ExportStatus>,
    pub store: Arc<dyn Store>,
    tasks: JoinSet<anyhow::Result<()>>,
    /// Turns true to stop serving gRPC gracefully.
    stop_tx: watch::Sender<bool>,
    /// The task serving gRPC, if any: [`Apiserver::stop`] waits for it.
    grpc_task: Option<tokio::task::Id>,
}

impl Apiserver {
    /// Opens the configured store and starts.
    pub async fn start(config: ApiserverConfig) -> anyhow::Result<Self> {
        let store = open_store(&config.store).await?;
        Self::start_with_store(config, store).await
    }

    /// Starts on a store opened by the caller (tests share one embedded store across a
    /// restart this way).
    pub async fn start_with_store(
        config: ApiserverConfig,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Self> {
        let mut tasks = JoinSet::new();
        let timed = TimedStore::new(store);
        let store_latency = timed.latency();
        let store: Arc<dyn Store> = Arc::new(timed);
        let listener = health::bind(config.health.listen).await?;
        let health_addr = listener.local_addr()?;

        let (desired_tx, desired_rx) = watch::channel(None);
        let snapshots = match &config.source {
            SourceConfig::Manifests(dir) => {
                manifests::watch(dir.clone(), config.cluster.clone(), MANIFEST_POLL)
            }
            SourceConfig::Kube { kubeconfig } => {
                let client = kube_source::connect(kubeconfig.as_deref())
                    .await
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                    .context("cannot set up the kube source")?;
                KubeSource::new(client, config.cluster.clone()).watch_rx()
            }
        };
        tasks.spawn(forward_snapshots(snapshots, desired_tx));

        let (status_tx, status) = watch::channel(ExportStatus::default());
        let exporter = Exporter::new(
            store.clone(),
            config.cluster.clone(),
            ExportSettings {
                lease_ttl: config.lease_ttl,
                heartbeat_interval: config.heartbeat_interval,
            },
        );
        tasks.spawn(async move {
            exporter
                .run(desired_rx, status_tx)
                .await
                .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                .context("exporter stopped")
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let serving = match &config.grpc {
            Some(grpc) => Some(
                serve::start(
                    grpc,
                    &config.cluster,
                    store.clone(),
                    status.clone(),
                    stop_rx,
                    &mut tasks,
                )
                .await?,
            ),
            None => None,
        };
        let export_counters = Arc::new(ExportCounters::default());
        tasks.spawn(count_exports(status.clone(), export_counters.clone()).map(Ok));
        let metrics = ApiserverMetrics {
            cluster: config.cluster.name.to_string(),
            export: status.clone(),
            export_counters,
            store_latency,
            grpc: serving
                .as_ref()
                .zip(config.grpc.as_ref())
                .map(|(s, grpc)| GrpcServing {
                    stats: s.stats.clone(),
                    handshakes: s.handshakes.clone(),
                    cache: s.cache.clone(),
                    cert: grpc.tls.cert.clone(),
                }),
        };
        tasks.spawn(async move {
            health::serve(listener, metrics)
                .await
                .context("health server stopped")
        });
        let grpc_addr = serving.as_ref().map(|s| s.addr);
        let grpc_task = serving.as_ref().map(|s| s.task);
        tracing::info!(cluster = %config.cluster, %health_addr, ?grpc_addr, "apiserver started");
        Ok(Self {
            health_addr,
            grpc_addr,
            grpc_stats: serving.as_ref().map(|s| s.stats.clone()),
            handshake_stats: serving.map(|s| s.handshakes),
            status,
            store,
            tasks,
            stop_tx,
            grpc_task,
        })
    }

    /// Stops gracefully: gRPC accepts no new connection and ends every open watch with
    /// `UNAVAILABLE`, which agents take as "reconnect" (not as a failure of this
    /// cluster). Waits at most `grace` for the watches to end, then drops everything
    /// else (the exporter's leases expire by themselves; a restart adopts what the store
    /// holds).
    pub async fn stop(mut self, grace: Duration) {
        self.stop_tx.send_replace(true);
        let Some(grpc) = self.grpc_task else {
            return;
        };
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(Ok((id, result)))) if id == grpc => {
                    if let Err(err) = result {
                        tracing::warn!(reason = %format!("{err:#}"), "gRPC server stopped with an error");
                    }
                    return;
                }
                Ok(Some(Err(join))) if join.id() == grpc => {
                    tracing::warn!(reason = %join, "gRPC server task failed while stopping");
                    return;
                }
                // Another task ended meanwhile: keep waiting for gRPC.
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => {
                    tracing::warn!(?grace, "gRPC watches did not end within the grace period");
                    return;
                }
            }
        }
    }

    /// Waits until the export is synced (every canary written).
    pub async fn synced(&mut self) -> anyhow::Result<()> {
        self.status
            .wait_for(|s| s.synced)
            .await
            .context("apiserver stopped before it synced")?;
        Ok(())
    }

    /// Runs until a task fails (they run forever otherwise).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(join)) => Err(join).context("apiserver task panicked"),
            None => Ok(()),
        }
    }
}

/// Hands the source's snapshots to the exporter (the source logs their problems). The
/// exporter marks the apiserver ready once it has written the first one, which each
/// source publishes only when it has read the cluster's full state.
async fn forward_snapshots(
    mut snapshots: watch::Receiver<Option<Snapshot>>,
    desired: watch::Sender<Option<DesiredState>>,
) -> anyhow::Result<()> {
    loop {
        snapshots.changed().await.context("the source stopped")?;
        let snapshot = snapshots.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            desired.send_replace(Some(snapshot.state));
        }
    }
}
