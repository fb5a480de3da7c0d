//! Wiring of one member's apiserver: open the store, start the source, run the exporter
//! and the health endpoints. No business logic lives here.

pub mod config;
mod etcd_serve;
mod health;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::{ApiserverConfig, EtcdApiConfig, GrpcConfig, SourceConfig, StoreSettings};
pub use serve::CacheSink;

use crate::etcd_api::EtcdApiStats;
use crate::export::{ExportSettings, ExportStatus, Exporter};
use crate::grpc::GrpcStats;
use crate::k8s::kube::{self as kube_source, KubeSource};
use crate::k8s::{Snapshot, manifests};
use crate::kvstore::Store;
use crate::kvstore::etcd::EtcdStore;
use crate::kvstore::memory::MemoryStore;
use crate::model::DesiredState;
use crate::report::error_chain;
use crate::tls::server::HandshakeStats;

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
        let health_status = status.clone();
        tasks.spawn(async move {
            health::serve(listener, health_status)
                .await
                .context("health server stopped")
        });
        let serving = match &config.grpc {
            Some(grpc) => Some(
                serve::start(
                    grpc,
                    &config.cluster,
                    store.clone(),
                    status.clone(),
                    &mut tasks,
                )
                .await?,
            ),
            None => None,
        };
        let grpc_addr = serving.as_ref().map(|s| s.addr);
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
        })
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
    pub async fn wait(mut self) -> anyhow::Result<()> {
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
