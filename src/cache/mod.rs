//! The apiserver's watch cache: one cluster's exported state, encoded once, served to
//! every watcher.
//!
//! It holds three things, all of them encoded bytes (nothing decoded is kept, so 100k
//! endpoints cost their wire size plus a hash-map slot each):
//!
//! - the **current state**: per kind, resource key → its latest upsert;
//! - a bounded, revision-ordered **log** of recent batches, for watchers that resume;
//! - a **broadcast** of live batches: one slow watcher never slows the others, and one
//!   that falls a whole channel behind is told so (`Lagged`) and must resync.
//!
//! [`WatchCache::subscribe`] reads the snapshot (or the log) and subscribes to the
//! broadcast under the same lock that every update takes, so no event falls between
//! the initial part and the live part.
//!
//! # Feeding it
//!
//! The cache knows nothing of the store; its feeder (the store's state watch) calls:
//!
//! - [`reset`](WatchCache::reset) when a list of the store starts, with the store's
//!   epoch. A new epoch means the store's history restarted: the cache forgets
//!   everything, ends every live subscription, and serves nothing until it has synced
//!   again. The same epoch means a relist: the cache keeps serving what it has.
//! - [`apply`](WatchCache::apply) with events. Between a reset and the next synced
//!   marker they are the listing (upserts); otherwise deltas. Each call must hold whole
//!   revisions (never some of one revision's events), because a batch's end is a point
//!   a watcher may resume from.
//! - [`synced`](WatchCache::synced) when the list is complete. The first time, the cache
//!   starts serving. After a relist, it compares the listing with what it held (mark and
//!   sweep) and publishes only real changes — updated and new resources, and deletes
//!   for what the listing no longer has — as one batch. Watchers never see the state
//!   dropped and re-added.

mod arena;
mod batch;
mod kinds;
mod log;
mod state;
mod subscription;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast};

pub use self::batch::{Batch, CachedEvent};
pub use self::kinds::KindSet;
pub use self::subscription::{Initial, NotSynced, ResumePoint, Subscription};

use self::batch::unix_micros_now;
use self::log::EventLog;
use self::state::States;
use crate::model::{Change, Event, Kind, ResourceKey, Revision};

/// Events kept for resuming watchers: minutes of steady churn, or a burst of tens of
/// thousands of changes, for a few megabytes of pointers and shared bytes.
pub const DEFAULT_LOG_CAPACITY: usize = 65_536;
/// Live batches a watcher may fall behind before it is cut off. A batch holds whatever
/// arrived together, so this is seconds of churn even at thousands of writes per second;
/// a watcher cut off resumes from the log, which is larger.
pub const DEFAULT_LIVE_CAPACITY: usize = 4096;

/// How the cache encodes an event: once per event, for every watcher.
pub type Encoder = fn(&Event) -> Bytes;

/// Sizes of the log and the live channel.
#[derive(Clone, Copy, Debug)]
pub struct CacheSettings {
    /// Events kept for resuming watchers.
    pub log_capacity: usize,
    /// Live batches a watcher may fall behind before it must resync (at least one).
    pub live_capacity: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            log_capacity: DEFAULT_LOG_CAPACITY,
            live_capacity: DEFAULT_LIVE_CAPACITY,
        }
    }
}

/// What the cache holds, for metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheStats {
    pub epoch: Option<Arc<str>>,
    pub synced: bool,
    pub revision: Revision,
    /// Resources held, per kind.
    pub entries: Vec<(Kind, usize)>,
    /// Events in the resume log.
    pub log_events: usize,
    /// Live subscriptions.
    pub watchers: usize,
}

/// The watch cache. Share it in an `Arc`; every method takes `&self`.
pub struct WatchCache {
    encode: Encoder,
    inner: Mutex<Inner>,
    /// Wakes [`WatchCache::subscribe_synced`] callers when the cache syncs.
    synced: Notify,
}

struct Inner {
    /// The store epoch the state belongs to; `None` before the first reset.
    epoch: Option<Arc<str>>,
    synced: bool,
    /// The watcher has everything up to this revision once it has read every batch.
    revision: Revision,
    /// Bumped by every reset; entries carry the generation that last saw them.
    generation: u32,
    /// Between a reset and its synced marker: the listed resources that differ from
    /// what the cache holds, applied together at the marker.
    relist: Option<HashMap<ResourceKey, CachedEvent>>,
    kinds: States,
    log: EventLog,
    live: broadcast::Sender<Arc<Batch>>,
    live_capacity: usize,
}

/// An event encoded outside the lock.
struct Encoded {
    key: ResourceKey,
    delete: bool,
    revision: Revision,
    bytes: Bytes,
}

impl WatchCache {
    pub fn new(encode: Encoder, settings: CacheSettings) -> Self {
        let live_capacity = settings.live_capacity.max(1);
        Self {
            encode,
            inner: Mutex::new(Inner {
                epoch: None,
                synced: false,
                revision: 0,
                generation: 0,
                relist: None,
                kinds: Default::default(),
                log: EventLog::new(settings.log_capacity),
                live: broadcast::channel(live_capacity).0,
                live_capacity,
            }),
            synced: Notify::new(),
        }
    }

    /// A list of the store starts, in store epoch `epoch`.
    pub fn reset(&self, epoch: &str) {
        let mut inner = self.inner.lock();
        if inner.epoch.as_deref() != Some(epoch) {
            if inner.epoch.is_some() {
                inner.restart();
            }
            inner.epoch = Some(epoch.into());
        }
        inner.generation = inner.generation.wrapping_add(1);
        inner.relist = Some(HashMap::new());
    }

    /// Applies events: the listing after a reset, deltas otherwise. `events` holds
    /// whole revisions, in revision order for deltas.
    pub fn apply(&self, events: &[Event]) {
        // Encoding is the expensive part and needs no lock.
        let encoded: Vec<Encoded> = events
            .iter()
            .map(|event| Encoded {
                key: event.change.key(),
                delete: matches!(event.change, Change::Delete(_)),
                revision: event.revision,
                bytes: (self.encode)(event),
            })
            .collect();
        let mut inner = self.inner.lock();
        if inner.relist.is_some() {
            inner.apply_listed(encoded);
        } else {
            inner.apply_deltas(encoded);
        }
    }

    /// The list that the last reset started is complete as of `revision`.
    ///
    /// After a relist the changes are published in revision order; a delete (whose
    /// revision the listing cannot tell) gets `revision`. A change the store made at or
    /// before the cache's revision — possible only if the feeder lost events, which is
    /// what relists repair — is logged just after it (but not beyond `revision`), so
    /// the log stays ordered and a watcher resuming from the cache's revision still
    /// gets it.
    pub fn synced(&self, revision: Revision) {
        let first = {
            let mut inner = self.inner.lock();
            let first = !inner.synced;
            inner.finish_relist(revision, self.encode);
            first && inner.synced
        };
        if first {
            self.synced.notify_waiters();
        }
    }

    /// Subscribes to the state of `kinds`: the full state, or — when `resume` is a
    /// point of this epoch still covered by the log — only what was missed after it;
    /// then the live batches.
    pub fn subscribe(
        &self,
        kinds: KindSet,
        resume: Option<&ResumePoint>,
    ) -> Result<Subscription, NotSynced> {
        let mut inner = self.inner.lock();
        let epoch = match (&inner.epoch, inner.synced) {
            (Some(epoch), true) => epoch.clone(),
            _ => return Err(NotSynced),
        };
        let missed = resume
            .filter(|p| *p.epoch == *epoch && p.revision <= inner.revision)
            .and_then(|p| Some((p.revision, inner.log.after(p.revision)?)));
        let initial = match missed {
            Some((after, batches)) => Initial::Resumed { after, batches },
            None => Initial::Full(kinds.iter().map(|k| inner.kinds.of(k).snapshot()).collect()),
        };
        Ok(Subscription {
            epoch,
            kinds,
            revision: inner.revision,
            initial,
            live: inner.live.subscribe(),
        })
    }

    /// [`subscribe`](Self::subscribe), waiting first until the cache has synced.
    pub async fn subscribe_synced(
        &self,
        kinds: KindSet,
        resume: Option<&ResumePoint>,
    ) -> Subscription {
        loop {
            let notified = self.synced.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before checking, so a sync in between still wakes us.
            notified.as_mut().enable();
            if let Ok(subscription) = self.subscribe(kinds, resume) {
                return subscription;
            }
            notified.await;
        }
    }

    /// The store epoch of the state held, once a list has started.
    pub fn epoch(&self) -> Option<Arc<str>> {
        self.inner.lock().epoch.clone()
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock();
        CacheStats {
            epoch: inner.epoch.clone(),
            synced: inner.synced,
            revision: inner.revision,
            entries: Kind::ALL
                .iter()
                .map(|k| (*k, inner.kinds.len(*k)))
                .collect(),
            log_events: inner.log.len(),
            watchers: inner.live.receiver_count(),
        }
    }
}

impl Inner {
    /// The store's history restarted: nothing held is valid any more.
    fn restart(&mut self) {
        for kind in Kind::ALL {
            self.kinds.of(kind).clear();
        }
        self.synced = false;
        self.revision = 0;
        self.log.restart(0);
        // Dropping the old sender ends every live subscription once it has read what
        // was sent before: those watchers must start over.
        self.live = broadcast::channel(self.live_capacity).0;
    }

    fn apply_deltas(&mut self, encoded: Vec<Encoded>) {
        let mut events = Vec::with_capacity(encoded.len());
        for e in encoded {
            let kind = e.key.kind();
            if e.delete {
                if !self.kinds.delete(&e.key) {
                    // Nothing to delete: not a change for any watcher.
                    continue;
                }
            } else {
                self.kinds.upsert(e.key, &e.bytes, self.generation);
            }
            self.revision = self.revision.max(e.revision);
            events.push(CachedEvent {
                revision: self.revision,
                kind,
                bytes: e.bytes,
            });
        }
        self.publish(events);
    }

    fn apply_listed(&mut self, encoded: Vec<Encoded>) {
        let generation = self.generation;
        let Some(relist) = self.relist.as_mut() else {
            return;
        };
        for e in encoded {
            let kind = e.key.kind();
            if e.delete {
                // A listing holds no deletes; should one come, the key is simply not
                // listed.
                relist.remove(&e.key);
                self.kinds.unmark(&e.key, generation);
                continue;
            }
            if !self.synced {
                // Nobody watches yet, so nothing needs comparing: straight into the
                // state (which spares holding the whole listing twice).
                self.kinds.upsert(e.key, &e.bytes, generation);
                continue;
            }
            if self.kinds.mark(&e.key, &e.bytes, generation) {
                relist.remove(&e.key);
                continue;
            }
            let event = CachedEvent {
                revision: e.revision,
                kind,
                bytes: e.bytes,
            };
            relist.insert(e.key, event);
        }
    }

    fn finish_relist(&mut self, revision: Revision, encode: Encoder) {
        // A marker without a list (which a feeder never sends) has nothing to sweep.
        let Some(relist) = self.relist.take() else {
            return;
        };
        // Before the first sync nobody watches: the listing is the starting point, not
        // news, so no events are made of it.
        let publish = self.synced;
        let generation = self.generation;
        let mut changes = Vec::new();
        for kind in Kind::ALL {
            for key in self.kinds.of(kind).sweep(generation) {
                if publish {
                    let delete = Event {
                        revision,
                        change: Change::Delete(key),
                    };
                    let bytes = encode(&delete);
                    changes.push(CachedEvent {
                        revision,
                        kind,
                        bytes,
                    });
                }
            }
        }
        for (key, event) in relist {
            self.kinds.upsert(key, &event.bytes, generation);
            if publish {
                changes.push(event);
            }
        }
        if !publish {
            self.revision = revision;
            self.log.restart(revision);
            self.synced = true;
            return;
        }
        changes.sort_by_key(|e| e.revision);
        // Every change is news to the watchers, so each is logged after the cache's
        // revision, even one the store made earlier (see `synced`) — but never beyond
        // the listing's revision, which the store's next write will follow.
        let next = (self.revision + 1).min(revision);
        for event in &mut changes {
            event.revision = event.revision.max(next);
        }
        let last = changes.last().map_or(0, |e| e.revision);
        self.revision = self.revision.max(last).max(revision);
        self.publish(changes);
    }

    fn publish(&mut self, events: Vec<CachedEvent>) {
        if events.is_empty() {
            return;
        }
        let batch = Arc::new(Batch {
            events,
            revision: self.revision,
            received_unix_micros: unix_micros_now(),
        });
        self.log.push(batch.clone());
        // An error only says that nobody is watching right now.
        let _ = self.live.send(batch);
    }
}

#[cfg(test)]
mod tests;
