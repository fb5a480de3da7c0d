//! The agent's running links, shared by the remotes watcher (which adds and removes
//! them) and the query API (which reads their status through [`Links`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::ClientCount;
use crate::cache_keys::CacheKeys;
use crate::mesh::{CacheStatus, PeerStatus};
use crate::model::ClusterName;
use crate::observe::{LinkReport, Links};
use crate::remote::{PeerLink, SharedView};

use super::remotes::ContentHash;

/// Every running link by peer name. The lock is held only to copy in or out.
///
/// A link's status counts what the view holds of its peer, read when the status is: the
/// view keeps a peer's state while its link is down or starting over, and the counts
/// must say so, not what the current stream has delivered.
pub(super) struct LinkTable {
    links: Mutex<BTreeMap<ClusterName, Running>>,
    view: SharedView,
    /// The Cilium cache keys, whose holdings each report shows.
    cache_keys: Option<Arc<CacheKeys>>,
    /// The etcd API's clients connected now.
    clients: ClientCount,
}

struct Running {
    link: PeerLink,
    /// The content of the peer file the link was started from.
    hash: ContentHash,
    since: Instant,
    /// Latched by a small task as soon as the link is ready (readiness counts links that
    /// have been ready once, however briefly).
    been_ready: Arc<AtomicBool>,
}

impl LinkTable {
    pub fn new(view: SharedView, cache_keys: Option<Arc<CacheKeys>>, clients: ClientCount) -> Self {
        Self {
            links: Mutex::default(),
            view,
            cache_keys,
            clients,
        }
    }

    /// `name`'s link status as published, with the counts of what the view holds and
    /// what the cache keys hold of its peer.
    fn status_of(&self, name: &ClusterName, running: &Running) -> PeerStatus {
        let mut status = running.link.status_rx().borrow().clone();
        status.counts = self.view.read().counts(name).unwrap_or_default();
        self.with_cache(status, false)
    }

    /// `status` with what the cache keys hold of its peer; `draining`: it has no link.
    fn with_cache(&self, mut status: PeerStatus, draining: bool) -> PeerStatus {
        if let (Some(keys), false) = (&self.cache_keys, status.local)
            && let Ok(peer) = ClusterName::new(&status.cluster)
        {
            let held = keys.held(&peer);
            status.cache = Some(CacheStatus {
                keys: held.keys as u64,
                canaries: held.canaries as u64,
                config: held.config,
                withdrawn_services: held.withdrawn as u64,
                etcd_clients: self.clients.get(),
                draining,
            });
        }
        status
    }

    /// The content hash of every running link's peer file.
    pub fn hashes(&self) -> BTreeMap<ClusterName, ContentHash> {
        self.links
            .lock()
            .iter()
            .map(|(name, r)| (name.clone(), r.hash))
            .collect()
    }

    /// Holds a link just started. The caller has stopped any link held under `name`
    /// before; one still held would be dropped, which stops it without waiting.
    pub fn insert(&self, name: ClusterName, link: PeerLink, hash: ContentHash) {
        let been_ready = Arc::new(AtomicBool::new(false));
        let latch = been_ready.clone();
        let mut status = link.status_rx();
        // Ends when the link is ready, or when it stops (its status sender is dropped).
        tokio::spawn(async move {
            if status.wait_for(|s| s.ready).await.is_ok() {
                latch.store(true, Ordering::Relaxed);
            }
        });
        let running = Running {
            link,
            hash,
            since: Instant::now(),
            been_ready,
        };
        self.links.lock().insert(name, running);
    }

    /// Takes the link of `name` out, to be stopped.
    pub fn remove(&self, name: &ClusterName) -> Option<PeerLink> {
        self.links.lock().remove(name).map(|r| r.link)
    }

    /// Takes every link out, to be stopped.
    pub fn take_all(&self) -> Vec<PeerLink> {
        std::mem::take(&mut *self.links.lock())
            .into_values()
            .map(|r| r.link)
            .collect()
    }

    /// Every link's current status, then the draining peers', sorted by cluster name.
    pub fn statuses(&self) -> Vec<PeerStatus> {
        self.reports().into_iter().map(|r| r.status).collect()
    }

    /// The peers whose file was removed but whose cache keys are still served (for the
    /// drain grace): their config deleted, their keys counted, marked draining. Never
    /// waited for: they are no longer configured.
    fn draining(&self, links: &BTreeMap<ClusterName, Running>) -> Vec<LinkReport> {
        let Some(keys) = &self.cache_keys else {
            return Vec::new();
        };
        keys.draining()
            .into_iter()
            .filter(|peer| !links.contains_key(peer))
            .map(|peer| LinkReport {
                status: self.with_cache(
                    PeerStatus {
                        cluster: peer.to_string(),
                        ..PeerStatus::default()
                    },
                    true,
                ),
                since: Instant::now(),
                been_ready: true,
            })
            .collect()
    }
}

impl Links for LinkTable {
    fn reports(&self) -> Vec<LinkReport> {
        let links = self.links.lock();
        let mut reports: Vec<LinkReport> = links
            .iter()
            .map(|(name, r)| LinkReport {
                status: self.status_of(name, r),
                since: r.since,
                been_ready: r.been_ready.load(Ordering::Relaxed),
            })
            .chain(self.draining(&links))
            .collect();
        reports.sort_by(|a, b| a.status.cluster.cmp(&b.status.cluster));
        reports
    }
}
