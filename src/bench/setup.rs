//! What every scenario starts from: certificates, the source cluster's state written into
//! its store (embedded, or etcd started here or named by URL), the source's apiserver
//! serving it, and what agents need to connect. Torn down by `finish`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::oneshot;

use super::agents::{spawn_agent, wait_ready};
use super::pki::bench_pki;
use super::workload::{Sizes, Workload};
use crate::kvstore::Store;
use crate::kvstore::etcd::{EtcdConfig, EtcdStore, EtcdTls};
use crate::kvstore::memory::MemoryStore;
use crate::model::{Cluster, ClusterId, ClusterName, IdMode};
use crate::remote::{LinkSettings, PeerConfig};
use crate::testkit::{LocalApiserver, LocalEtcd, LocalEtcdSettings, Pki, ServeOptions};
use crate::tls::TlsFiles;

/// The cluster whose state is served.
const SOURCE: (&str, u32) = ("bench-source", 2);
/// The cluster the agents belong to.
const AGENT: (&str, u32) = ("bench-agent", 1);
/// How long the apiserver may take to have its state in its cache.
const SERVER_SYNC_TIMEOUT: Duration = Duration::from_secs(300);
/// Caps the etcd the bench starts at 4 GiB: enough for the largest bench, bounded as
/// production should be.
const ETCD_QUOTA_BACKEND_BYTES: u64 = 4 << 30;

/// The apiserver's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    Memory,
    Etcd,
}

impl StoreChoice {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Etcd => "etcd",
        }
    }
}

/// Options every scenario shares.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub store: StoreChoice,
    /// An etcd to use instead of starting one.
    pub etcd: Option<String>,
    /// Also run the etcd-direct baseline.
    pub etcd_direct: bool,
    /// Also serve the etcd API, and run the baseline's agents against it.
    pub etcd_api: bool,
    /// How long a phase may take before the run fails.
    pub timeout: Duration,
    /// Show a progress line on stderr.
    pub progress: bool,
}

/// A running bench setup.
pub struct Bench {
    pub sizes: Sizes,
    pub workload: Workload,
    pub agent_cluster: Cluster,
    /// How an agent reaches the source's apiserver.
    pub peer_config: PeerConfig,
    /// The apiserver's store.
    store: Arc<dyn Store>,
    server: LocalApiserver,
    /// The apiserver's certificate, kept for its restarts.
    server_tls: TlsFiles,
    etcd: Option<EtcdTarget>,
    // Dropped last: the certificate files must outlive the server and the links.
    pki: Pki,
}

/// When an apiserver restart began, and how long after that it had closed every
/// connection, listened again and written the source's state again.
#[derive(Clone, Copy, Debug)]
pub struct Restart {
    pub at: Instant,
    pub stopped: Duration,
    pub listening: Duration,
    pub written: Duration,
}

/// The etcd of a run and the namespace its keys are under.
struct EtcdTarget {
    endpoint: String,
    namespace: String,
    /// Set when the bench started it.
    local: Option<LocalEtcd>,
    /// Holds the source's state for the etcd-direct agents.
    direct: bool,
}

impl Bench {
    /// Writes a workload of `endpoints` endpoints and serves it.
    pub async fn start(options: &BenchOptions, endpoints: u32) -> anyhow::Result<Self> {
        let pki = bench_pki()?;
        let source = cluster(SOURCE)?;
        let agent_cluster = cluster(AGENT)?;
        let sizes = Sizes::for_endpoints(endpoints, &source);
        let workload = Workload::generate(&source, sizes)?;

        let etcd = if options.store == StoreChoice::Etcd || options.etcd_direct {
            Some(EtcdTarget::start(options).await?)
        } else {
            None
        };
        let store: Arc<dyn Store> = match (&etcd, options.store) {
            (Some(etcd), StoreChoice::Etcd) => Arc::new(etcd.store().await?),
            _ => MemoryStore::new(),
        };
        workload
            .write(&store)
            .await
            .context("cannot write the source's state")?;
        // The etcd-direct agents read the source's state from etcd even when the
        // apiserver's store is the embedded one.
        let direct_only = options.store != StoreChoice::Etcd;
        if let Some(etcd) = etcd.as_ref().filter(|e| e.direct && direct_only) {
            let direct: Arc<dyn Store> = Arc::new(etcd.store().await?);
            workload
                .write(&direct)
                .await
                .context("cannot write the state into etcd")?;
        }

        let server_tls = pki.server_files(&source.name)?;
        let server = LocalApiserver::start(
            source.clone(),
            store.clone(),
            server_tls.clone(),
            ServeOptions {
                etcd_api: options.etcd_api,
                ..ServeOptions::default()
            },
        )
        .await?;
        let peer_config = PeerConfig {
            name: source.name.clone(),
            address: server.addr.to_string(),
            server_name: None,
            tls: pki.client_files(&agent_cluster.name)?,
        };
        let bench = Self {
            sizes,
            workload,
            agent_cluster,
            peer_config,
            store,
            server,
            server_tls,
            etcd,
            pki,
        };
        bench.wait_served().await?;
        Ok(bench)
    }

    /// Where the etcd-api agents read the source's state, when that system runs: the
    /// apiserver's etcd API, with the agents' client certificate.
    pub fn etcd_api_config(&self) -> Option<EtcdConfig> {
        let addr = self.server.etcd_api_addr?;
        let tls = &self.peer_config.tls;
        Some(EtcdConfig {
            endpoints: vec![format!("https://{addr}")],
            tls: Some(EtcdTls {
                ca_file: tls.ca.clone(),
                cert_file: tls.cert.clone(),
                key_file: tls.key.clone(),
            }),
            ..EtcdConfig::default()
        })
    }

    /// Where the etcd-direct agents read the source's state, when the baseline runs: the
    /// run's etcd and namespace.
    pub fn direct_config(&self) -> Option<EtcdConfig> {
        self.etcd
            .as_ref()
            .filter(|e| e.direct)
            .map(EtcdTarget::config)
    }

    /// Restarts the source's apiserver the way Cilium's restarts with its embedded store:
    /// the process dies (every connection closes at once), comes back on the same address
    /// with an empty store — a new epoch — writes the source's state again, and serves
    /// it once written (watchers that connect meanwhile wait, as they wait for the
    /// apiserver's export to sync). Only for the embedded store: an etcd outlives its
    /// apiserver.
    pub async fn restart_apiserver(&mut self) -> anyhow::Result<Restart> {
        if self.etcd.is_some() {
            bail!("an apiserver restart is measured on the embedded store only");
        }
        let addr = self.server.addr;
        let stopping = Instant::now();
        self.server.stop();
        let stopped = stopping.elapsed();
        let store: Arc<dyn Store> = MemoryStore::new();
        let (feed_tx, feed_rx) = oneshot::channel();
        let options = ServeOptions {
            addr: Some(addr),
            feed_after: Some(feed_rx),
            synced_tx: None,
            // The storm scenario measures the gRPC agents only.
            etcd_api: false,
            ..ServeOptions::default()
        };
        self.server = LocalApiserver::start(
            self.workload.cluster.clone(),
            store.clone(),
            self.server_tls.clone(),
            options,
        )
        .await
        .context("cannot restart the apiserver on its address")?;
        self.store = store.clone();
        let listening = stopping.elapsed();
        self.workload
            .write(&store)
            .await
            .context("cannot write the source's state again")?;
        // An error means the server already stopped; the run notices when agents do not
        // resync.
        let _ = feed_tx.send(());
        Ok(Restart {
            at: stopping,
            stopped,
            listening,
            written: stopping.elapsed(),
        })
    }

    /// The store the apiserver serves: writing into it is how a scenario changes the
    /// source's state.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Stops the apiserver and removes what the run wrote into an etcd it did not start.
    pub async fn finish(self) -> anyhow::Result<()> {
        drop(self.server);
        if let Some(etcd) = self.etcd {
            etcd.clean().await?;
        }
        drop(self.pki);
        Ok(())
    }

    /// Waits until the apiserver serves the whole state: one probe agent syncs.
    async fn wait_served(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let (_view, link) = spawn_agent(
            &self.peer_config,
            &self.agent_cluster,
            LinkSettings::default(),
        );
        let waited = wait_ready(
            std::slice::from_ref(&link),
            started,
            None,
            SERVER_SYNC_TIMEOUT,
        )
        .await;
        let last = link.status_rx().borrow().clone();
        link.stop().await;
        waited.map(drop).with_context(|| {
            format!(
                "the apiserver did not serve its state within {:?}: {last:?}",
                started.elapsed()
            )
        })
    }
}

impl EtcdTarget {
    async fn start(options: &BenchOptions) -> anyhow::Result<Self> {
        let namespace = format!("fleetmesh-bench-{:016x}/", rand::random::<u64>());
        let (endpoint, local) = match &options.etcd {
            Some(url) => (url.clone(), None),
            None => {
                let settings = LocalEtcdSettings {
                    quota_backend_bytes: ETCD_QUOTA_BACKEND_BYTES,
                    ..LocalEtcdSettings::default()
                };
                let local = LocalEtcd::start_with(settings)
                    .await
                    .context("cannot start etcd (or pass --etcd URL)")?;
                (local.endpoint().to_string(), Some(local))
            }
        };
        Ok(Self {
            endpoint,
            namespace,
            local,
            direct: options.etcd_direct,
        })
    }

    fn config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.endpoint.clone()],
            namespace: self.namespace.clone(),
            ..EtcdConfig::default()
        }
    }

    async fn store(&self) -> anyhow::Result<EtcdStore> {
        EtcdStore::connect(self.config())
            .await
            .with_context(|| format!("cannot connect to etcd at {}", self.endpoint))
    }

    /// Deletes the run's keys from an etcd the bench did not start (its own is removed).
    async fn clean(self) -> anyhow::Result<()> {
        if self.local.is_some() {
            return Ok(());
        }
        let mut client = etcd_client::Client::connect([self.endpoint.as_str()], None)
            .await
            .context("cannot connect to etcd to clean up")?;
        client
            .delete(
                self.namespace.as_str(),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await
            .context("cannot delete the bench's keys from etcd")?;
        Ok(())
    }
}

fn cluster((name, id): (&str, u32)) -> anyhow::Result<Cluster> {
    let mode = IdMode::Normal;
    Ok(Cluster::new(
        ClusterName::new(name)?,
        ClusterId::new(id, mode)?,
        mode,
    ))
}
