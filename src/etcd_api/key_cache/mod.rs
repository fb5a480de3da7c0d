//! The key-level watch cache behind the etcd API: every key as the store holds it
//! (value, create and mod revision, lease), a bounded log of the latest changes, and a
//! broadcast of each applied batch to the watch streams.
//!
//! It is fed [`WatchEvent`]s — a listing (`ListStart`, `Put`s, `ListDone`), then deltas
//! in revision order — by whoever holds the keys: [`super::feed::follow_store`] in the
//! apiserver; anything else that produces the same events (the agent's cache keys) in
//! the same way. A listing is gathered aside and swapped in whole when it completes, so
//! readers never see half of one; until the first one completes the cache is not ready.
//!
//! A completed listing starts a new *history*: the log is emptied, every watch stream
//! is told ([`Notice::Restarted`]) and cancels its watches with a compact revision, so
//! their clients re-list — what etcd clients do after a compaction. The `cluster_id`
//! of every header is derived from the store's epoch, so it stays put across reconnects
//! and relists in one epoch and changes with the epoch, which makes Cilium's agents
//! reconnect and re-list.
//!
//! Consistency: the header revision is the revision of the last change applied, and a
//! batch is broadcast under the same lock that applies it; a stream subscribes and
//! reads its position under that lock, so it gets every change after its position and
//! no other, and never announces a revision whose events it has not delivered.

mod record;
mod table;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::{broadcast, watch};
use tracing::warn;

pub use self::record::{Change, Record};
pub use self::table::{EntryRef, Meta};

use self::table::KeyTable;

use super::range::KeyRange;
use super::wire::encode_header_field;
use super::wire::etcdserverpb::ResponseHeader;
use crate::kvstore::{Epoch, KeyValue, WatchEvent};

/// The raft term every header reports: there is no raft here, and etcd's clients only
/// require it to be set consistently.
const RAFT_TERM: u64 = 1;

/// How much the cache keeps and buffers.
#[derive(Clone, Copy, Debug)]
pub struct KeyCacheSettings {
    /// Changes the revision log holds: a watch may start (or a read be pinned) this
    /// far back; beyond, clients get "required revision has been compacted".
    pub log_capacity: usize,
    /// Batches buffered per watch stream before it counts as fallen behind.
    pub notice_capacity: usize,
}

impl Default for KeyCacheSettings {
    fn default() -> Self {
        Self {
            log_capacity: 50_000,
            notice_capacity: 1024,
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CacheError {
    #[error("the key cache has not listed the store yet")]
    NotReady,
    /// The revision asked for is older than the log.
    #[error("revision {requested} has been compacted (oldest held: {compact_revision})")]
    Compacted {
        requested: i64,
        compact_revision: i64,
    },
    #[error("revision {requested} is ahead of the current revision {current}")]
    FutureRevision { requested: i64, current: i64 },
    /// The history a stream follows was replaced by a new listing.
    #[error("the store's history restarted")]
    Restarted { compact_revision: i64 },
}

/// Where a watch stream stands: the history it follows and the revision it has seen
/// every change up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Counts histories, so a stream notices it follows a replaced one.
    pub generation: u64,
    pub cluster_id: u64,
    pub revision: i64,
}

/// What a watch stream receives.
#[derive(Clone, Debug)]
pub enum Notice {
    /// Changes applied together, in revision order.
    Changes(Arc<Batch>),
    /// A new history started here; every watch ends with this compact revision.
    Restarted {
        position: Position,
        compact_revision: i64,
    },
}

/// One applied batch of changes, as every stream receives it.
#[derive(Debug)]
pub struct Batch {
    /// The revision of the last change: the header revision of responses made of it.
    pub revision: i64,
    pub changes: Vec<Arc<Change>>,
    /// The header field at `revision`, encoded once.
    pub header_field: Bytes,
    /// Encoded bodies (header and events) by watched range, so that the watches of
    /// one range share one.
    bodies: Mutex<Vec<(KeyRange, Bytes)>>,
}

impl Batch {
    /// The body of `range`'s response: made by `build` for the first watch of that
    /// range, shared by the others.
    pub fn shared_body(&self, range: &KeyRange, build: impl FnOnce() -> Bytes) -> Bytes {
        let mut bodies = self.bodies.lock();
        if let Some((_, body)) = bodies.iter().find(|(r, _)| r == range) {
            return body.clone();
        }
        let body = build();
        bodies.push((range.clone(), body.clone()));
        body
    }
}

/// A read of a range: the keys in order, with the header to answer it with.
#[derive(Debug)]
pub struct RangeRead {
    pub header: ResponseHeader,
    pub kvs: Vec<Arc<Record>>,
    /// Keys in the range at that revision, whatever the limit.
    pub count: usize,
}

/// How a stream that fell behind resumes: a new receiver, the position it starts after,
/// and the changes it missed up to there.
#[derive(Debug)]
pub struct CatchUp {
    pub rx: broadcast::Receiver<Notice>,
    pub position: Position,
    pub missed: Vec<Arc<Change>>,
}

/// What `Maintenance.Status` reports.
#[derive(Clone, Copy, Debug)]
pub struct CacheStatus {
    pub header: ResponseHeader,
    pub keys: usize,
    /// Bytes of every key and value held.
    pub bytes: usize,
}

/// The cache; shared by the feed and every request.
pub struct KeyCache {
    inner: Mutex<Inner>,
    notices: broadcast::Sender<Notice>,
    ready: watch::Sender<bool>,
    member_id: u64,
    settings: KeyCacheSettings,
}

#[derive(Default)]
struct Inner {
    history: Option<History>,
    /// A listing being gathered: its epoch and keys.
    listing: Option<(Epoch, KeyTable)>,
    generations: u64,
}

struct History {
    epoch: Epoch,
    generation: u64,
    cluster_id: u64,
    revision: i64,
    /// Every change after this revision is in the log.
    floor: i64,
    keys: KeyTable,
    log: VecDeque<Arc<Change>>,
}

impl History {
    /// What a client gets as `compact_revision`: the oldest revision it may start at.
    fn compact_revision(&self) -> i64 {
        self.floor + 1
    }

    fn position(&self) -> Position {
        Position {
            generation: self.generation,
            cluster_id: self.cluster_id,
            revision: self.revision,
        }
    }
}

impl KeyCache {
    /// An empty cache; `member_id` is what headers name as the answering member.
    pub fn new(member_id: u64, settings: KeyCacheSettings) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notices: broadcast::channel(settings.notice_capacity.max(1)).0,
            ready: watch::channel(false).0,
            member_id,
            settings,
        }
    }

    /// Becomes `true` when the first listing completes.
    pub fn ready_rx(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// A header at `revision` of the history with `cluster_id`.
    pub fn header(&self, cluster_id: u64, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: RAFT_TERM,
        }
    }

    /// Applies events of store epoch `epoch` (see the module docs for their order).
    pub fn apply(&self, epoch: &Epoch, events: impl IntoIterator<Item = WatchEvent>) {
        self.write(epoch, |write| {
            for event in events {
                write.apply(event);
            }
        });
    }

    /// Runs `write`, which applies events of store epoch `epoch` and may read the keys
    /// in between (a writer that only writes what changed), as one batch: under one
    /// lock, broadcast once.
    pub fn write<R>(&self, epoch: &Epoch, write: impl FnOnce(&mut KeyWrite<'_>) -> R) -> R {
        let mut inner = self.inner.lock();
        let mut batch = KeyWrite {
            cache: self,
            inner: &mut inner,
            epoch,
            changes: Vec::new(),
        };
        let result = write(&mut batch);
        let changes = std::mem::take(&mut batch.changes);
        let Some(history) = &inner.history else {
            return result;
        };
        if changes.is_empty() {
            return result;
        }
        let header = self.header(history.cluster_id, history.revision);
        let batch = Batch {
            revision: history.revision,
            changes,
            header_field: encode_header_field(&header),
            bodies: Mutex::new(Vec::new()),
        };
        // No receiver is fine: nobody watches.
        let _ = self.notices.send(Notice::Changes(Arc::new(batch)));
        result
    }

    fn start_history(&self, inner: &mut Inner, epoch: Epoch, keys: KeyTable, revision: i64) {
        inner.generations += 1;
        let history = History {
            cluster_id: cluster_id_of(&epoch),
            epoch,
            generation: inner.generations,
            revision,
            floor: revision,
            keys,
            log: VecDeque::new(),
        };
        let notice = Notice::Restarted {
            position: history.position(),
            compact_revision: history.compact_revision(),
        };
        inner.history = Some(history);
        let _ = self.notices.send(notice);
        self.ready.send_replace(true);
    }

    /// The history `epoch`'s deltas apply to; `None` (and a warning) when they do not
    /// follow a listing of that epoch.
    fn history_of<'a>(inner: &'a mut Inner, epoch: &Epoch) -> Option<&'a mut History> {
        match &mut inner.history {
            Some(history) if history.epoch == *epoch => Some(history),
            _ => {
                warn!(%epoch, "a change of an epoch not listed yet; ignored");
                None
            }
        }
    }

    fn put(&self, inner: &mut Inner, epoch: &Epoch, kv: KeyValue) -> Option<Arc<Change>> {
        let history = Self::history_of(inner, epoch)?;
        let key = Bytes::from(kv.key.into_bytes());
        let meta = Meta {
            create_revision: to_i64(kv.create_revision),
            mod_revision: to_i64(kv.mod_revision),
            version: 1,
            lease: kv.lease.map_or(0, |l| l.0),
        };
        let mut version = 1;
        let prev = history.keys.insert(&key, &kv.value, |held| {
            if let Some(held) = held.filter(|h| h.create_revision == meta.create_revision) {
                version = held.version + 1;
            }
            Meta { version, ..meta }
        });
        let record = Arc::new(Record {
            key: key.clone(),
            value: kv.value,
            create_revision: meta.create_revision,
            mod_revision: meta.mod_revision,
            version,
            lease: meta.lease,
        });
        let change = Change::new(meta.mod_revision, key, Some(record), prev.map(Arc::new));
        Some(self.log(history, change))
    }

    /// `value` under `key` at `revision` unless it is held already (one lookup): created
    /// then if it was not held, else a new version of what was.
    fn put_changed(
        &self,
        inner: &mut Inner,
        epoch: &Epoch,
        key: String,
        value: Bytes,
        revision: i64,
    ) -> Option<Arc<Change>> {
        let history = Self::history_of(inner, epoch)?;
        let key = Bytes::from(key.into_bytes());
        let mut made = Meta {
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        };
        let prev = history.keys.insert_changed(&key, &value, |held| {
            if let Some(held) = held {
                made.create_revision = held.create_revision;
                made.version = held.version + 1;
            }
            made
        })?;
        let record = Arc::new(Record {
            key: key.clone(),
            value,
            create_revision: made.create_revision,
            mod_revision: revision,
            version: made.version,
            lease: 0,
        });
        let change = Change::new(revision, key, Some(record), prev.map(Arc::new));
        Some(self.log(history, change))
    }

    fn delete(
        &self,
        inner: &mut Inner,
        epoch: &Epoch,
        key: String,
        revision: u64,
    ) -> Option<Arc<Change>> {
        let history = Self::history_of(inner, epoch)?;
        let revision = to_i64(revision);
        let Some(prev) = history.keys.remove(key.as_bytes()) else {
            // Nothing held, nothing to tell; the revision still moves on.
            history.revision = history.revision.max(revision);
            return None;
        };
        let change = Change::new(revision, prev.key.clone(), None, Some(Arc::new(prev)));
        Some(self.log(history, change))
    }

    fn log(&self, history: &mut History, change: Change) -> Arc<Change> {
        let change = Arc::new(change);
        history.revision = history.revision.max(change.revision);
        history.log.push_back(change.clone());
        while history.log.len() > self.settings.log_capacity {
            if let Some(old) = history.log.pop_front() {
                history.floor = history.floor.max(old.revision);
            }
        }
        change
    }

    /// Reads `range` as of `revision` (0: the latest), at most `limit` keys (0: all).
    pub fn range(
        &self,
        range: &KeyRange,
        revision: i64,
        limit: usize,
    ) -> Result<RangeRead, CacheError> {
        let inner = self.inner.lock();
        let history = inner.history.as_ref().ok_or(CacheError::NotReady)?;
        let at = if revision <= 0 {
            history.revision
        } else {
            revision
        };
        if at > history.revision {
            return Err(CacheError::FutureRevision {
                requested: at,
                current: history.revision,
            });
        }
        if at < history.floor {
            return Err(CacheError::Compacted {
                requested: at,
                compact_revision: history.compact_revision(),
            });
        }
        let limit = if limit == 0 { usize::MAX } else { limit };
        // The keys changed after `at`, as they were at `at`: walking the log backwards,
        // the earliest change after `at` writes last.
        let mut undone: BTreeMap<Bytes, Option<Arc<Record>>> = BTreeMap::new();
        for change in history.log.iter().rev() {
            if change.revision <= at {
                break;
            }
            if range.contains(&change.key) {
                undone.insert(change.key.clone(), change.prev.clone());
            }
        }
        let bounds = range.bounds();
        let mut count = history.keys.count(bounds);
        let current = history.keys.range(bounds);
        let kvs = if undone.is_empty() {
            current
                .take(limit)
                .map(|e| Arc::new(e.to_record()))
                .collect()
        } else {
            // The keys at `at`: those held now that did not change since, and what the
            // changed ones were (if anything), merged in key order.
            for (key, prev) in &undone {
                count -= usize::from(history.keys.get(key).is_some());
                count += usize::from(prev.is_some());
            }
            let changed: HashSet<Bytes> = undone.keys().cloned().collect();
            let mut now = current.filter(|e| !changed.contains(&e.key())).peekable();
            let mut then = undone.into_values().flatten().peekable();
            let mut kvs = Vec::new();
            while kvs.len() < limit {
                let take_now = match (now.peek(), then.peek()) {
                    (Some(n), Some(t)) => n.key_cmp(&t.key).is_lt(),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                let next = if take_now {
                    now.next().map(|e| Arc::new(e.to_record()))
                } else {
                    then.next()
                };
                kvs.extend(next);
            }
            kvs
        };
        Ok(RangeRead {
            header: self.header(history.cluster_id, at),
            kvs,
            count,
        })
    }

    /// Watch streams following the broadcast now: how many responses each batch
    /// costs, at least.
    pub fn streams(&self) -> usize {
        self.notices.receiver_count()
    }

    /// A receiver of every batch applied from now on, and the position it starts
    /// after.
    pub fn subscribe(&self) -> Result<(broadcast::Receiver<Notice>, Position), CacheError> {
        let inner = self.inner.lock();
        let history = inner.history.as_ref().ok_or(CacheError::NotReady)?;
        Ok((self.notices.subscribe(), history.position()))
    }

    /// The changes of history `generation` from revision `from` through `through`, in
    /// order; compacted if the log no longer holds all of them.
    pub fn replay(
        &self,
        generation: u64,
        from: i64,
        through: i64,
    ) -> Result<Vec<Arc<Change>>, CacheError> {
        let inner = self.inner.lock();
        let history = inner.history.as_ref().ok_or(CacheError::NotReady)?;
        if history.generation != generation {
            return Err(CacheError::Restarted {
                compact_revision: history.compact_revision(),
            });
        }
        if from <= history.floor {
            return Err(CacheError::Compacted {
                requested: from,
                compact_revision: history.compact_revision(),
            });
        }
        Ok(history
            .log
            .iter()
            .filter(|c| c.revision >= from && c.revision <= through)
            .cloned()
            .collect())
    }

    /// For a stream that fell behind at `position`: a new receiver, its position, and
    /// the changes in between — if the log still holds them.
    pub fn catch_up(&self, position: Position) -> Result<CatchUp, CacheError> {
        let inner = self.inner.lock();
        let history = inner.history.as_ref().ok_or(CacheError::NotReady)?;
        if history.generation != position.generation {
            return Err(CacheError::Restarted {
                compact_revision: history.compact_revision(),
            });
        }
        if position.revision < history.floor {
            return Err(CacheError::Compacted {
                requested: position.revision + 1,
                compact_revision: history.compact_revision(),
            });
        }
        let missed = history
            .log
            .iter()
            .filter(|c| c.revision > position.revision)
            .cloned()
            .collect();
        Ok(CatchUp {
            rx: self.notices.subscribe(),
            position: history.position(),
            missed,
        })
    }

    /// The current header, key count and size.
    pub fn status(&self) -> Result<CacheStatus, CacheError> {
        let inner = self.inner.lock();
        let history = inner.history.as_ref().ok_or(CacheError::NotReady)?;
        Ok(CacheStatus {
            header: self.header(history.cluster_id, history.revision),
            keys: history.keys.len(),
            bytes: history.keys.bytes(),
        })
    }
}

/// One batch of writes to a [`KeyCache`] (see [`KeyCache::write`]), holding its lock.
pub struct KeyWrite<'a> {
    cache: &'a KeyCache,
    inner: &'a mut Inner,
    epoch: &'a Epoch,
    changes: Vec<Arc<Change>>,
}

impl KeyWrite<'_> {
    /// The key as held now, this batch's writes included; `None` before the first
    /// listing completes.
    pub fn get(&self, key: &[u8]) -> Option<EntryRef<'_>> {
        self.inner.history.as_ref()?.keys.get(key)
    }

    /// Every key held that starts with `prefix`, in order.
    pub fn keys_under(&self, prefix: &str) -> Vec<Bytes> {
        let range = KeyRange::prefix(prefix);
        self.inner
            .history
            .as_ref()
            .map_or_else(Vec::new, |history| {
                history
                    .keys
                    .range(range.bounds())
                    .map(|e| e.key())
                    .collect()
            })
    }

    /// Puts `value` under `key` at `revision` unless it is held already, with one lookup
    /// (for a writer of its own revisions, after the first listing); whether it did.
    pub fn put_changed(&mut self, key: String, value: Bytes, revision: u64) -> bool {
        let (cache, epoch) = (self.cache, self.epoch);
        match cache.put_changed(self.inner, epoch, key, value, to_i64(revision)) {
            Some(change) => {
                self.changes.push(change);
                true
            }
            None => false,
        }
    }

    /// Applies one event (see the module docs for their order).
    pub fn apply(&mut self, event: WatchEvent) {
        let (cache, inner, epoch) = (self.cache, &mut *self.inner, self.epoch);
        match event {
            WatchEvent::ListStart => {
                inner.listing = Some((epoch.clone(), KeyTable::default()));
            }
            WatchEvent::ListDone { revision } => {
                let Some((epoch, keys)) = inner.listing.take() else {
                    warn!("a listing ended that never started; ignored");
                    return;
                };
                self.changes.clear();
                cache.start_history(inner, epoch, keys, to_i64(revision));
            }
            WatchEvent::Put(kv) => {
                if let Some((_, keys)) = &mut inner.listing {
                    let meta = Meta {
                        create_revision: to_i64(kv.create_revision),
                        mod_revision: to_i64(kv.mod_revision),
                        version: 1,
                        lease: kv.lease.map_or(0, |l| l.0),
                    };
                    keys.insert(kv.key.as_bytes(), &kv.value, |_| meta);
                } else if let Some(change) = cache.put(inner, epoch, kv) {
                    self.changes.push(change);
                }
            }
            WatchEvent::Delete { key, revision } => {
                if let Some((_, keys)) = &mut inner.listing {
                    keys.remove(key.as_bytes());
                } else if let Some(change) = cache.delete(inner, epoch, key, revision) {
                    self.changes.push(change);
                }
            }
        }
    }
}

/// The `cluster_id` of a store epoch: stable for the epoch, another for another one,
/// never 0 (which etcd's clients read as "not set").
pub fn cluster_id_of(epoch: &Epoch) -> u64 {
    let digest = Sha256::digest(epoch.0.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(id).max(1)
}

/// etcd's revisions are `int64`; the store's never come near the limit.
fn to_i64(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

/// The encoded body of a response: `header_field` and every change's event.
pub fn body_of<'a>(header_field: &Bytes, changes: impl Iterator<Item = &'a Arc<Change>>) -> Bytes {
    let mut body = BytesMut::from(&header_field[..]);
    for change in changes {
        body.extend_from_slice(change.field());
    }
    body.freeze()
}
