//! One cluster's exported state as model events, read from the store: what feeds the
//! apiserver's watch cache.
//!
//! The state lives under five prefixes — `keys::nodes_of(c)`,
//! `keys::fleetmesh_services_of(c)` (fleetmesh's services, with every backend's
//! conditions; Cilium's copies are not read), `keys::IDENTITIES_ID_PREFIX`,
//! `keys::IP_PREFIX` and `keys::service_exports_of(c)` (present only with MCS-API
//! exports on) — that share no parent but the root. So [`StateWatch`] is **one** store
//! watch of the root, filtered by key: one revision-ordered stream, and a relist that
//! covers every prefix at once, so a relist can never lose one prefix's state while
//! another's is being read, and the synced marker comes when all are listed. The price is reading (and dropping) the few other keys a store holds: sync
//! canaries, the heartbeat, cluster config, Cilium's service copies and the identity
//! allocator's keys — few next to the endpoints.
//!
//! A value that cannot be decoded, or contradicts its key (a node under another
//! node's name, an ipcache entry for another prefix), is logged, counted and skipped.
//!
//! [`follow`] keeps a [`StateWatch`] going for as long as it runs — resuming after a
//! failure from the last revision it delivered whole, relisting when the store's epoch
//! changed — and hands what it reads to a [`StateSink`] in revision-complete batches.

mod decode;
mod follow;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use futures::{Stream, StreamExt};
use tracing::warn;

pub use self::follow::{StateSink, follow};

use self::decode::{decode_delete, decode_put};
use super::{Epoch, Store, StoreError, WatchEvent, WatchStart, WatchStream};
use crate::model::{Cluster, Event, Revision};

/// The store prefix watched: the root (see the module docs).
const WATCH_PREFIX: &str = "";

/// What a [`StateWatch`] yields: every list is `Reset`, the listed resources as
/// `Change`s, then `Synced`; after that, `Change`s in revision order.
// Nearly every item is a `Change`: boxing it would cost an allocation per event to save
// space in the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEvent {
    /// A (re)list starts, in this store epoch: whatever the consumer holds and does
    /// not see again before `Synced` is gone.
    Reset { epoch: Epoch },
    /// A change, with the revision that made it (for a listed resource, its last
    /// write).
    Change(Event),
    /// The list is complete as of `revision`.
    Synced { revision: Revision },
}

/// Counters of a state watch; cheap to clone, shared with the watches it is given to.
#[derive(Clone, Debug, Default)]
pub struct StateWatchStats {
    skipped: Arc<AtomicU64>,
    restarts: Arc<AtomicU64>,
}

impl StateWatchStats {
    /// Values skipped because they could not be decoded or contradicted their key.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Times [`follow`] started a new watch after a failure.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

/// One store watch of one cluster's exported state. It ends with the store watch's
/// error (the store became unreachable or its epoch changed); [`follow`] starts anew.
pub struct StateWatch {
    inner: WatchStream,
    cluster: Cluster,
    epoch: Epoch,
    stats: StateWatchStats,
}

impl StateWatch {
    /// Starts watching `cluster`'s state in `store`: listing first, or following the
    /// changes after a revision (the store lists anyway if that point is gone).
    pub async fn start(
        store: &dyn Store,
        cluster: Cluster,
        start: WatchStart,
        stats: StateWatchStats,
    ) -> Result<Self, StoreError> {
        // Read before watching: if the epoch changes in between, the watch fails.
        let epoch = store.epoch();
        let inner = store.watch(WATCH_PREFIX, start).await?;
        Ok(Self {
            inner,
            cluster,
            epoch,
            stats,
        })
    }

    /// The store epoch this watch reads.
    pub fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    fn convert(&self, event: WatchEvent) -> Option<StateEvent> {
        match event {
            WatchEvent::ListStart => Some(StateEvent::Reset {
                epoch: self.epoch.clone(),
            }),
            WatchEvent::ListDone { revision } => Some(StateEvent::Synced { revision }),
            WatchEvent::Delete { key, revision } => {
                decode_delete(&key, revision, &self.cluster).map(StateEvent::Change)
            }
            WatchEvent::Put(kv) => match decode_put(&kv, &self.cluster)? {
                Ok(event) => Some(StateEvent::Change(event)),
                Err(err) => {
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        cluster = %self.cluster.name,
                        revision = kv.mod_revision,
                        error = %crate::report::error_chain(&err),
                        "skipping a stored value"
                    );
                    None
                }
            },
        }
    }
}

impl Stream for StateWatch {
    type Item = Result<StateEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let event = match ready!(self.inner.poll_next_unpin(cx)) {
                Some(Ok(event)) => event,
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => return Poll::Ready(None),
            };
            // Keys outside the state, and skipped values, yield nothing: read on.
            if let Some(event) = self.convert(event) {
                return Poll::Ready(Some(Ok(event)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
