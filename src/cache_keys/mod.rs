//! The agent's Cilium cache keys: KVStoreMesh's part. Every peer the agent reads once is
//! re-served to the member's own Cilium agents under `cilium/cache/<res>/v1/<peer>/…`
//! (the [`layout`]), through the etcd API ([`crate::etcd_api`]) from a [`KeyCache`] this
//! module alone writes.
//!
//! ```text
//!  link ─► MeshView (apply, sweep at synced) ─► query API, EndpointSlices, …
//!    └──► CacheKeys (PeerSink: the same changes, at the same points, queued)
//!            └► writer thread ─► KeyCache (own revisions) ─► etcd API ─► Cilium agents
//! ```
//!
//! Every write is queued, in order, for the cache keys' own [`writer`] thread: a link
//! never waits for the key cache's lock on a runtime thread. What a call wrote is so
//! in the cache a little later; [`CacheKeys::flush`] and [`CacheKeys::written`] wait
//! for it.
//!
//! It is a sink of the merged view's inputs (DESIGN.md §10), so the view's rules hold
//! here without a second copy of any of them:
//!
//! - **Validation**: only what the link accepted and applied to the view arrives here;
//!   a refused event never does, and nothing comes before the peer's `Info` was
//!   validated (which writes its cluster config).
//! - **Mark and sweep**: a relisting peer's upserts of unchanged values write nothing
//!   (the key keeps its mod revision); what it no longer has is deleted at its synced
//!   marker, by the view's sweep, whose deletions arrive here.
//! - **Removal drains late**: a peer removed from the remotes directory loses its cluster
//!   config at once — Cilium's agents disconnect from it — and its keys and canaries
//!   after a grace period, as KVStoreMesh does, so that agents restarting meanwhile do
//!   not drop its identities and ipcache entries. Re-added within the grace period, it
//!   keeps them; its next synced marker deletes what it no longer has.
//! - **Stale policy**: a service's backends in an unreachable peer are withdrawn from its
//!   cache key exactly when the view withdraws them (DESIGN.md §6 rule 5; KVStoreMesh
//!   keeps everything), and put back when the view does.
//!
//! Revisions are the cache's own, starting at 1 with a new epoch (so a new etcd
//! `cluster_id`) each time the agent starts: Cilium's agents then re-list.

pub mod layout;
mod stale;
mod writer;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use time::OffsetDateTime;
use tracing::{info, warn};

pub use self::stale::follow_stale_policy;
use self::writer::{Op, WriteQueue};

use crate::etcd_api::key_cache::KeyWrite;
use crate::etcd_api::{KeyCache, KeyCacheSettings, KeyRange};
use crate::kvstore::{Epoch, KeyValue, WatchEvent, codec, keys};
use crate::model::{Change, Cluster, ClusterName, IdMode, Kind, Revision, ServiceName};
use crate::remote::{ApplyObserver, PeerSink};

/// How long a removed peer's keys stay after its cluster config is gone: KVStoreMesh's
/// own delay, long enough for every agent to have noticed the config's deletion.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(3 * 60);
/// How often the heartbeat is rewritten: Cilium's agents count a peer unhealthy after
/// two minutes without one.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

/// What the cache keys hold of one peer, for the status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldKeys {
    /// Its `cilium/cache/` keys.
    pub keys: usize,
    /// Its sync canaries.
    pub canaries: usize,
    /// Its cluster config is served.
    pub config: bool,
    /// Services whose backends the stale policy withdrew.
    pub withdrawn: usize,
}

/// The cache keys of one agent; shared by its links (as their [`PeerSink`]), the
/// remotes watcher (removals), the stale policy and the etcd API (through
/// [`CacheKeys::key_cache`]).
pub struct CacheKeys {
    local: ClusterName,
    mode: IdMode,
    cache: Arc<KeyCache>,
    drain_grace: Duration,
    /// The writer's state, written by its thread alone; read for the status.
    writer: Arc<Mutex<Writer>>,
    queue: Arc<WriteQueue>,
}

impl Drop for CacheKeys {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl std::fmt::Debug for CacheKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheKeys")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// The only writer of the key cache: its revision counter and what it tracks per peer.
struct Writer {
    revision: Revision,
    peers: BTreeMap<ClusterName, PeerKeys>,
}

#[derive(Default)]
struct PeerKeys {
    /// Bumped by every removal and acceptance: a drain fires only if nothing happened
    /// to the peer since it was scheduled.
    generation: u64,
    /// Removed, its keys not yet deleted.
    draining: bool,
    /// Re-added while draining: the keys its listing wrote, until its synced marker
    /// deletes the others (the view, drained at the removal, no longer knows them).
    relisted: Option<HashSet<String>>,
    /// Service keys whose backends the stale policy withdrew, with the value the peer
    /// sent (put back when the policy does).
    withdrawn: HashMap<String, Bytes>,
}

impl CacheKeys {
    /// Empty cache keys of the agent of `local` (whose own data is never cached), with
    /// the heartbeat written: the etcd API is ready from here on. Starts the writer
    /// thread, which stops when these are dropped.
    ///
    /// # Panics
    ///
    /// If the writer thread cannot be started (the process is out of threads).
    pub fn new(local: &Cluster, drain_grace: Duration, settings: KeyCacheSettings) -> Self {
        let cache = Arc::new(KeyCache::new(member_id(&local.name), settings));
        let epoch = Epoch(format!("{}-{:016x}", local.name, rand::random::<u64>()));
        cache.apply(
            &epoch,
            [
                WatchEvent::ListStart,
                WatchEvent::Put(KeyValue {
                    key: keys::HEARTBEAT.to_string(),
                    value: codec::encode_timestamp(OffsetDateTime::now_utc()),
                    create_revision: 1,
                    mod_revision: 1,
                    lease: None,
                }),
                WatchEvent::ListDone { revision: 1 },
            ],
        );
        let writer = Arc::new(Mutex::new(Writer {
            revision: 1,
            peers: BTreeMap::new(),
        }));
        let queue = WriteQueue::start(cache.clone(), epoch.clone(), writer.clone())
            .expect("the cache keys' writer thread starts");
        Self {
            local: local.name.clone(),
            mode: local.mode,
            cache,
            drain_grace,
            writer,
            queue,
        }
    }

    /// Queues `write` for the writer thread, which runs it with the writer's state in a
    /// batch of the key cache.
    fn write(&self, write: impl FnOnce(&mut Writer, &mut KeyWrite<'_>) + Send + 'static) {
        self.write_weighing(1, write);
    }

    /// [`Self::write`] of `weight` changes (what the queue's bound counts).
    fn write_weighing(
        &self,
        weight: usize,
        write: impl FnOnce(&mut Writer, &mut KeyWrite<'_>) + Send + 'static,
    ) {
        let op: Op = Box::new(write);
        self.queue.submit(weight, op);
    }

    /// Blocks until everything queued before is in the key cache. Not for a runtime
    /// thread: see [`Self::written`].
    pub fn flush(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        self.write(move |_, _| {
            let _ = done.send(());
        });
        let _ = wait.recv();
    }

    /// Resolves once everything queued before is in the key cache.
    pub async fn written(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.write(move |_, _| {
            let _ = done.send(());
        });
        let _ = wait.await;
    }

    /// The key cache the etcd API serves.
    pub fn key_cache(&self) -> Arc<KeyCache> {
        self.cache.clone()
    }

    /// What is held of `peer`.
    pub fn held(&self, peer: &ClusterName) -> HeldKeys {
        let count = |prefix: &str| {
            self.cache
                .range(&KeyRange::prefix(prefix), 0, 1)
                .map_or(0, |read| read.count)
        };
        let withdrawn = self
            .writer
            .lock()
            .peers
            .get(peer)
            .map_or(0, |p| p.withdrawn.len());
        HeldKeys {
            keys: Kind::ALL
                .iter()
                .map(|kind| count(&layout::prefix_of(peer, *kind)))
                .sum(),
            canaries: count(&keys::synced_of(peer)),
            config: count(&keys::cluster_config(peer)) > 0,
            withdrawn,
        }
    }

    /// The removed peers whose keys are still served, waiting for the drain grace.
    pub fn draining(&self) -> Vec<ClusterName> {
        self.writer
            .lock()
            .peers
            .iter()
            .filter(|(_, state)| state.draining)
            .map(|(peer, _)| peer.clone())
            .collect()
    }

    /// Rewrites the heartbeat every [`HEARTBEAT_INTERVAL`], for as long as it runs.
    pub async fn beat(self: Arc<Self>) {
        loop {
            tokio::time::sleep(HEARTBEAT_INTERVAL).await;
            let now = codec::encode_timestamp(OffsetDateTime::now_utc());
            self.write(move |writer, batch| writer.put(batch, keys::HEARTBEAT.to_string(), now));
        }
    }

    /// `peer`'s file left the remotes directory (its link is stopped): its cluster
    /// config goes now, the rest after the drain grace unless it comes back first.
    pub fn remove_peer(self: &Arc<Self>, peer: &ClusterName) {
        let (scheduled, generation) = tokio::sync::oneshot::channel();
        let removed = peer.clone();
        self.write(move |writer, batch| {
            writer.delete(batch, &keys::cluster_config(&removed));
            let state = writer.peers.entry(removed).or_default();
            state.generation += 1;
            state.draining = true;
            let _ = scheduled.send(state.generation);
        });
        info!(%peer, grace = ?self.drain_grace, "peer removed: its cluster config is deleted, its cache keys follow after the grace period");
        let this = self.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let Ok(generation) = generation.await else {
                return;
            };
            tokio::time::sleep(this.drain_grace).await;
            this.finish_drain(peer, generation);
        });
    }

    fn finish_drain(&self, peer: ClusterName, generation: u64) {
        self.write(move |writer, batch| {
            match writer.peers.get(&peer) {
                Some(state) if state.draining && state.generation == generation => {}
                _ => return,
            }
            let deleted = writer.delete_peer(batch, &peer);
            writer.peers.remove(&peer);
            info!(%peer, deleted, "removed peer drained from the cache keys");
        });
    }

    /// Applies the stale policy's verdict: the services of each peer whose backends are
    /// withdrawn now. Every other withdrawn key gets the peer's value back.
    pub fn set_withdrawn(&self, withdrawn: &BTreeMap<ClusterName, BTreeSet<ServiceName>>) {
        let (withdrawn, mode) = (withdrawn.clone(), self.mode);
        self.write(move |writer, batch| withdraw_all(writer, batch, &withdrawn, mode));
    }

    fn is_peer(&self, peer: &ClusterName) -> bool {
        *peer != self.local
    }
}

fn withdraw_all(
    writer: &mut Writer,
    batch: &mut KeyWrite<'_>,
    withdrawn: &BTreeMap<ClusterName, BTreeSet<ServiceName>>,
    mode: IdMode,
) {
    let peers: Vec<ClusterName> = writer
        .peers
        .keys()
        .chain(withdrawn.keys())
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let none = BTreeSet::new();
    for peer in peers {
        let wanted: BTreeSet<String> = withdrawn
            .get(&peer)
            .unwrap_or(&none)
            .iter()
            .map(|name| layout::cache_key(&peer, &crate::model::ResourceKey::Service(name.clone())))
            .collect();
        writer.withdraw(batch, &peer, &wanted, mode);
    }
}

impl ApplyObserver for CacheKeys {
    fn applied(&self, peer: &ClusterName, changes: &[Change], _at: Instant) {
        if !self.is_peer(peer) {
            return;
        }
        // Keys and values are made before the lock: each link makes its own meanwhile.
        let writes: Vec<(String, Option<Bytes>)> = changes
            .iter()
            .map(|change| {
                let value = match change {
                    Change::Upsert(resource) => layout::cache_value(resource),
                    Change::Delete(_) => None,
                };
                (layout::cache_key(peer, &change.key()), value)
            })
            .collect();
        let (peer, mode) = (peer.clone(), self.mode);
        self.write_weighing(writes.len(), move |writer, batch| {
            for (key, value) in writes {
                match value {
                    Some(value) => writer.put_resource(batch, &peer, key, value, mode),
                    None => writer.delete_resource(batch, &peer, &key),
                }
            }
        });
    }
}

impl PeerSink for CacheKeys {
    fn accepted(&self, peer: &Cluster) {
        if !self.is_peer(&peer.name) {
            return;
        }
        let (name, config) = (peer.name.clone(), layout::cluster_config(peer));
        self.write(move |writer, batch| {
            let state = writer.peers.entry(name.clone()).or_default();
            state.generation += 1;
            if std::mem::take(&mut state.draining) {
                info!(peer = %name, "removed peer is back before its keys were drained: they stay until its synced marker");
                state.relisted = Some(HashSet::new());
            }
            writer.put(batch, keys::cluster_config(&name), config);
        });
    }

    fn synced(&self, peer: &ClusterName) {
        if !self.is_peer(peer) {
            return;
        }
        let peer = peer.clone();
        self.write(move |writer, batch| {
            let peer = &peer;
            let relisted = writer
                .peers
                .get_mut(peer)
                .and_then(|state| state.relisted.take());
            if let Some(relisted) = relisted {
                let mut swept = 0;
                for kind in Kind::ALL {
                    for key in batch.keys_under(&layout::prefix_of(peer, kind)) {
                        let key = String::from_utf8_lossy(&key).into_owned();
                        if !relisted.contains(&key) {
                            writer.delete_resource(batch, peer, &key);
                            swept += 1;
                        }
                    }
                }
                info!(%peer, swept, "keys the re-added peer no longer has are deleted");
            }
            // Written once: a canary says the kind was complete once, which a resync
            // does not undo.
            let now = codec::encode_timestamp(OffsetDateTime::now_utc());
            for kind in layout::CANARY_KINDS {
                let canary = layout::canary(peer, kind);
                if batch.get(canary.as_bytes()).is_none() {
                    writer.put(batch, canary, now.clone());
                }
            }
        });
    }

    fn drained(&self, peer: &ClusterName) {
        if !self.is_peer(peer) {
            return;
        }
        let peer = peer.clone();
        self.write(move |writer, batch| {
            let deleted = writer.delete_peer(batch, &peer);
            if let Some(state) = writer.peers.get_mut(&peer) {
                state.withdrawn.clear();
                state.relisted = None;
            }
            warn!(%peer, deleted, "the peer changed its cluster id: its cache keys are deleted");
        });
    }
}

impl Writer {
    /// Writes `value` under `key` unless it is held already.
    fn put(&mut self, batch: &mut KeyWrite<'_>, key: String, value: Bytes) {
        if batch.put_changed(key, value, self.revision + 1) {
            self.revision += 1;
        }
    }

    fn delete(&mut self, batch: &mut KeyWrite<'_>, key: &str) {
        if batch.get(key.as_bytes()).is_none() {
            return;
        }
        self.revision += 1;
        batch.apply(WatchEvent::Delete {
            key: key.to_string(),
            revision: self.revision,
        });
    }

    /// A peer's resource: noted for a pending sweep, and written as the stale policy
    /// has it.
    fn put_resource(
        &mut self,
        batch: &mut KeyWrite<'_>,
        peer: &ClusterName,
        key: String,
        value: Bytes,
        mode: IdMode,
    ) {
        let state = self.peers.entry(peer.clone()).or_default();
        if let Some(relisted) = &mut state.relisted {
            relisted.insert(key.clone());
        }
        let value = match state.withdrawn.get_mut(&key) {
            Some(original) => {
                *original = value.clone();
                stale::without_backends(&value, mode).unwrap_or(value)
            }
            None => value,
        };
        self.put(batch, key, value);
    }

    fn delete_resource(&mut self, batch: &mut KeyWrite<'_>, peer: &ClusterName, key: &str) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.withdrawn.remove(key);
            if let Some(relisted) = &mut state.relisted {
                relisted.remove(key);
            }
        }
        self.delete(batch, key);
    }

    /// Deletes `peer`'s cache keys and canaries; how many.
    fn delete_peer(&mut self, batch: &mut KeyWrite<'_>, peer: &ClusterName) -> usize {
        let mut prefixes: Vec<String> = Kind::ALL
            .iter()
            .map(|kind| layout::prefix_of(peer, *kind))
            .collect();
        prefixes.push(keys::synced_of(peer));
        let mut deleted = 0;
        for prefix in prefixes {
            for key in batch.keys_under(&prefix) {
                self.delete(batch, &String::from_utf8_lossy(&key));
                deleted += 1;
            }
        }
        deleted
    }

    /// Withdraws the backends of exactly the service keys `wanted` of `peer` (those it
    /// holds), and puts back the others withdrawn before.
    fn withdraw(
        &mut self,
        batch: &mut KeyWrite<'_>,
        peer: &ClusterName,
        wanted: &BTreeSet<String>,
        mode: IdMode,
    ) {
        let held: Vec<(String, Bytes)> = match self.peers.get(peer) {
            Some(state) => state
                .withdrawn
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None if wanted.is_empty() => return,
            None => Vec::new(),
        };
        for (key, original) in held {
            if !wanted.contains(&key) {
                if let Some(state) = self.peers.get_mut(peer) {
                    state.withdrawn.remove(&key);
                }
                info!(%peer, %key, "the stale policy puts the service's backends back");
                self.put(batch, key, original);
            }
        }
        for key in wanted {
            let already = self
                .peers
                .get(peer)
                .is_some_and(|state| state.withdrawn.contains_key(key));
            if already {
                continue;
            }
            let Some(record) = batch.get(key.as_bytes()).map(|held| held.to_record()) else {
                continue;
            };
            let Some(emptied) = stale::without_backends(&record.value, mode) else {
                continue;
            };
            self.peers
                .entry(peer.clone())
                .or_default()
                .withdrawn
                .insert(key.clone(), record.value.clone());
            info!(%peer, %key, "the stale policy withdraws the service's backends");
            self.put(batch, key.clone(), emptied);
        }
    }
}

/// The `member_id` headers name: stable for the cluster.
fn member_id(cluster: &ClusterName) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("cache-{cluster}").as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(id).max(1)
}

#[cfg(test)]
mod tests;
