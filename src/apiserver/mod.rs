//! Wiring of one member's apiserver: open the store, start the source, run the exporter
//! and the health endpoints. No business logic lives here.

pub mod config;
mod etcd_serve;
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

pub use config::{
    ApiserverConfig, EtcdApiConfig, GrpcConfig, IdentitySettings, SourceConfig, StoreSettings,
};
pub use serve::CacheSink;
pub use status::{
    ApiserverStatus, ExportState, ServingState, WatcherState, apiserver_status_table,
};

use crate::etcd_api::EtcdApiStats;
use crate::export::{
    ExportSettings, ExportStatus, Exporter, IdentityLedger, KubeLedger, RedbLedger,
};
use crate::grpc::GrpcStats;
use crate::k8s::Snapshot;
use crate::k8s::kube::{self as kube_source, KubeOptions, KubeSource};
use crate::k8s::manifests::ManifestSource;
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
    /// Where the etcd API is served, if it is.
    pub etcd_api_addr: Option<SocketAddr>,
    pub etcd_api_stats: Option<EtcdApiStats>,
    pub etcd_api_handshakes: Option<HandshakeStats>,
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
        let (snapshots, kube_client) = match &config.source {
            SourceConfig::Manifests(dir) => (
                ManifestSource::new(dir.clone(), config.cluster.clone())
                    .with_max_file_bytes(config.manifest_max_file_bytes)
                    .with_options(config.convert)
                    .watch_rx(MANIFEST_POLL),
                None,
            ),
            SourceConfig::Kube { kubeconfig } => {
                let client = kube_source::connect(kubeconfig.as_deref())
                    .await
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                    .context("cannot set up the kube source")?;
                let snapshots = KubeSource::new(client.clone(), config.cluster.clone())
                    .with_options(KubeOptions {
                        convert: config.convert,
                        endpoint_slices: config.cilium_endpoint_slices,
                        service_exports: config.mcs_api,
                    })
                    .watch_rx();
                (snapshots, Some(client))
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
                identity_quarantine: config.identity.quarantine,
                mcs_api: config.mcs_api,
            },
        );
        let exporter = match identity_ledger(&config, kube_client).await? {
            Some(ledger) => exporter.with_identity_ledger(ledger),
            None => exporter,
        };
        let heartbeat = exporter.heartbeat_rx();
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
                    heartbeat,
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
        let etcd_serving = match &config.etcd_api {
            Some(etcd_api) => Some(
                etcd_serve::start(
                    etcd_api,
                    &config.cluster,
                    store.clone(),
                    status.clone(),
                    &mut tasks,
                )
                .await?,
            ),
            None => None,
        };
        let etcd_api_addr = etcd_serving.as_ref().map(|s| s.addr);
        tracing::info!(cluster = %config.cluster, %health_addr, ?grpc_addr, ?etcd_api_addr, "apiserver started");
        Ok(Self {
            health_addr,
            grpc_addr,
            grpc_stats: serving.as_ref().map(|s| s.stats.clone()),
            handshake_stats: serving.map(|s| s.handshakes),
            etcd_api_addr,
            etcd_api_stats: etcd_serving.as_ref().map(|s| s.stats.clone()),
            etcd_api_handshakes: etcd_serving.map(|s| s.handshakes),
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

/// Where identity allocations are kept when not in the store: with the embedded store,
/// the state directory's file, else (with the kube source) the cluster itself. `None`: in
/// the store.
async fn identity_ledger(
    config: &ApiserverConfig,
    kube_client: Option<kube::Client>,
) -> anyhow::Result<Option<Arc<dyn IdentityLedger>>> {
    if !matches!(config.store, StoreSettings::Memory) {
        return Ok(None);
    }
    if let Some(dir) = &config.identity.state_dir {
        let ledger = RedbLedger::open(dir)
            .await
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))
            .context("cannot open the identity state")?;
        return Ok(Some(Arc::new(ledger)));
    }
    if let Some(client) = kube_client {
        let namespace = client.default_namespace().to_string();
        tracing::info!(%namespace, "identity allocations are kept as ConfigMaps in the cluster");
        let ledger = KubeLedger::new(client, &namespace, config.cluster.name.clone());
        return Ok(Some(Arc::new(ledger)));
    }
    tracing::warn!(
        "identity allocations live only as long as this process: set identity.stateDir \
         to keep them across restarts"
    );
    Ok(None)
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
