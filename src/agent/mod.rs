//! Wiring of one agent: the merged view, one link per peer file in the remotes directory
//! (kept in step with the directory), the query API and, when enabled, the EndpointSlice
//! writer. No business logic lives here.

mod cache_api;
mod config;
mod endpoint_slices;
mod links;
mod remotes;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use cache_api::ClientCount;
pub use config::{AgentConfig, AgentConfigError, ApiConfig, CacheApiConfig, EndpointSlicesConfig};
pub use endpoint_slices::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, SOURCE_CLUSTER_LABEL};

use crate::cache_keys::{CacheKeys, follow_stale_policy};
use crate::etcd_api::KeyCacheSettings;
use crate::mesh::{MeshView, PeerStatus};
use crate::model::Cluster;
use crate::observe::{ApiState, SliceStats};
use crate::remote::{IdRegistry, LinkSettings, SharedView, spawn_link};

use self::links::LinkTable;
use self::remotes::Action;

/// How often the remotes directory is scanned: a new or changed peer file takes effect
/// within a second.
const REMOTES_POLL: Duration = Duration::from_secs(1);

/// A running agent. Dropping it stops everything without waiting; [`Agent::stop`] waits.
pub struct Agent {
    /// Where the query API listens.
    pub api_addr: SocketAddr,
    /// The merged view of every cluster the agent sees.
    pub view: SharedView,
    /// Where the etcd API serves the Cilium cache keys, if it does.
    pub etcd_api_addr: Option<SocketAddr>,
    /// The Cilium cache keys, when the etcd API is configured.
    pub cache_keys: Option<Arc<CacheKeys>>,
    links: Arc<LinkTable>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Agent {
    /// Starts the API, then one link per peer file found now; the remotes directory is
    /// watched from then on.
    pub async fn start(config: AgentConfig) -> anyhow::Result<Self> {
        let AgentConfig {
            cluster,
            remotes_dir,
            api,
            stale,
            mut link,
            endpoint_slices,
            etcd_api,
        } = config;
        anyhow::ensure!(
            remotes_dir.is_dir(),
            "remotes directory {} does not exist or is not a directory",
            remotes_dir.display()
        );
        let view: SharedView = Arc::new(RwLock::new(MeshView::new(cluster.clone(), stale)));
        let mut tasks = JoinSet::new();
        let clients = ClientCount::default();
        let (cache_keys, etcd_api_addr) = match &etcd_api {
            None => (None, None),
            Some(settings) => {
                let keys = Arc::new(CacheKeys::new(
                    &cluster,
                    settings.drain_grace,
                    KeyCacheSettings {
                        log_capacity: settings.history_events,
                        ..KeyCacheSettings::default()
                    },
                ));
                let addr = cache_api::start(settings, &cluster, &keys, clients.clone(), &mut tasks)
                    .await?;
                link.sink = Some(keys.clone());
                let beat = keys.clone();
                tasks.spawn(async move {
                    beat.beat().await;
                    Ok(())
                });
                let stale = follow_stale_policy(keys.clone(), view.clone());
                tasks.spawn(async move {
                    stale.await;
                    Ok(())
                });
                info!(%addr, "etcd API serving the Cilium cache keys");
                (Some(keys), Some(addr))
            }
        };
        let links = Arc::new(LinkTable::new(view.clone(), cache_keys.clone(), clients));
        let listener = TcpListener::bind(api.listen)
            .await
            .with_context(|| format!("cannot listen for the query API on {}", api.listen))?;
        let api_addr = listener.local_addr()?;
        // Credentials are loaded before anything runs: a missing or broken kubeconfig is a
        // configuration error to refuse at start, not something to find in the logs later.
        let slice_writer = match endpoint_slices {
            None => None,
            Some(settings) => {
                let client = crate::k8s::client::connect(settings.kubeconfig.as_deref())
                    .await
                    .context("endpointSlices is enabled, but no Kubernetes client can be made")?;
                Some((client, settings))
            }
        };

        let propagation_lag = link.propagation_lag.clone();
        let mut remotes = Remotes {
            dir: remotes_dir,
            ids: IdRegistry::new(&cluster),
            local: cluster,
            view: view.clone(),
            settings: link,
            links: links.clone(),
            cache_keys: cache_keys.clone(),
            reported: BTreeSet::new(),
        };
        // The first scan before returning: a started agent has its links.
        remotes.reconcile().await;

        tasks.spawn(remotes.run());
        let slice_stats = SliceStats::default();
        let mut state =
            ApiState::new(view.clone(), links.clone()).with_propagation_lag(propagation_lag);
        if slice_writer.is_some() {
            state = state.with_slice_stats(slice_stats.clone());
        }
        tasks.spawn(async move {
            crate::observe::serve(listener, state)
                .await
                .context("query API stopped")
        });
        if let Some((client, settings)) = slice_writer {
            let links: Arc<dyn crate::observe::Links> = links.clone();
            let view = view.clone();
            tasks.spawn(endpoint_slices::run(
                client,
                view,
                links,
                settings,
                slice_stats,
            ));
        }
        info!(%api_addr, "agent started");
        Ok(Self {
            api_addr,
            view,
            etcd_api_addr,
            cache_keys,
            links,
            tasks,
        })
    }

    /// Every link's status, sorted by cluster name.
    pub fn statuses(&self) -> Vec<PeerStatus> {
        self.links.statuses()
    }

    /// Runs until a task fails (they run forever otherwise).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(join)) => Err(join).context("agent task panicked"),
            None => Ok(()),
        }
    }

    /// Stops the API and the watcher, then every link, waiting for each. What the links
    /// put in the view stays (an agent shutting down drains nothing).
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
        for link in self.links.take_all() {
            link.stop().await;
        }
    }
}

/// Keeps one link per usable peer file.
struct Remotes {
    dir: PathBuf,
    local: Cluster,
    view: SharedView,
    ids: IdRegistry,
    settings: LinkSettings,
    links: Arc<LinkTable>,
    cache_keys: Option<Arc<CacheKeys>>,
    /// Problems already logged, so that a bad file is reported once, not every scan.
    reported: BTreeSet<String>,
}

impl Remotes {
    async fn run(mut self) -> anyhow::Result<()> {
        loop {
            tokio::time::sleep(REMOTES_POLL).await;
            self.reconcile().await;
        }
    }

    async fn reconcile(&mut self) {
        let mut scan = match remotes::scan(&self.dir) {
            Ok(scan) => scan,
            Err(e) => {
                let problem = format!(
                    "cannot list the remotes directory {}: {e}; keeping every link as it is",
                    self.dir.display()
                );
                self.report(vec![problem]);
                return;
            }
        };
        self.report(std::mem::take(&mut scan.problems));
        for action in remotes::plan(&self.links.hashes(), scan) {
            match action {
                Action::Add(file) => {
                    info!(peer = %file.config.name, address = %file.config.address, "peer added");
                    self.spawn(file);
                }
                Action::Replace(file) => {
                    info!(peer = %file.config.name, address = %file.config.address, "peer file changed: reconnecting");
                    if let Some(old) = self.links.remove(&file.config.name) {
                        old.stop().await;
                    }
                    self.spawn(file);
                }
                Action::Remove(name) => {
                    info!(peer = %name, "peer file removed: disconnecting and removing its state");
                    if let Some(old) = self.links.remove(&name) {
                        old.stop().await;
                    }
                    let removed = self.view.write().drain(&name).len();
                    info!(peer = %name, removed, "peer state removed");
                    if let Some(keys) = &self.cache_keys {
                        keys.remove_peer(&name);
                    }
                }
            }
        }
    }

    fn spawn(&self, file: remotes::PeerFile) {
        let name = file.config.name.clone();
        let link = spawn_link(
            file.config,
            self.local.clone(),
            self.view.clone(),
            self.ids.clone(),
            self.settings.clone(),
        );
        self.links.insert(name, link, file.hash);
    }

    /// Logs the problems not logged before; forgets those that went away, so a problem
    /// that comes back is logged again.
    fn report(&mut self, problems: Vec<String>) {
        let now: BTreeSet<String> = problems.into_iter().collect();
        for problem in now.difference(&self.reported) {
            warn!("{problem}");
        }
        self.reported = now;
    }
}
