//! The embedded backend: an in-process, etcd-like store with one global revision counter,
//! a bounded history for resuming watches, and leases that expire on their own. It is the
//! default store, so one process is a working apiserver.

pub(crate) mod dictionary;
mod record;
mod state;
mod watch;

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch as latest};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use self::record::Record;
use self::state::State;
use self::watch::Watcher;
use super::{
    CasOutcome, Epoch, Expect, KeyValue, LeaseId, Listing, Store, StoreError, WatchStart,
    WatchStream,
};
use crate::model::Revision;

/// Events kept for watchers resuming with `WatchStart::After`: enough to ride out a
/// reconnect during heavy churn (seconds at tens of thousands of writes per second) while
/// bounding memory to tens of megabytes; an older resume point re-lists instead.
pub const DEFAULT_HISTORY: usize = 100_000;

/// The embedded store. Dropping it stops its lease expiry task and ends its watches with
/// [`StoreError::Closed`].
pub struct MemoryStore {
    shared: Arc<Shared>,
    epoch: Epoch,
    /// Started with the first lease, since only leases need a timer.
    expiry: Mutex<Option<AbortHandle>>,
}

/// What watches and the expiry task share with the store. They hold it weakly, so it goes
/// away with the store.
struct Shared {
    state: Mutex<State>,
    /// The latest revision; watchers wait on it instead of being pushed to.
    changes: latest::Sender<Revision>,
    /// Wakes the expiry task when a lease is granted (its deadline may be the earliest).
    lease_granted: Arc<Notify>,
}

impl Shared {
    /// Runs `op` on the state under the lock, then wakes watchers if it wrote anything.
    fn write<T>(&self, op: impl FnOnce(&mut State) -> T) -> T {
        let (result, revision) = {
            let mut state = self.state.lock();
            let result = op(&mut state);
            (result, state.revision())
        };
        self.changes.send_if_modified(|latest| {
            let newer = revision > *latest;
            *latest = (*latest).max(revision);
            newer
        });
        result
    }
}

impl MemoryStore {
    /// A new, empty store with a fresh random epoch and the default history.
    pub fn new() -> Arc<Self> {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// A new, empty store keeping the last `events` events (at least one) for resuming
    /// watches.
    pub fn with_history(events: usize) -> Arc<Self> {
        // Lease ids start at a random point so an id kept from another store's life is
        // unlikely to name a live lease here.
        let state = State::new(events, rand::random_range(1..i64::from(u32::MAX)));
        let (changes, _) = latest::channel(state.revision());
        Arc::new(MemoryStore {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changes,
                lease_granted: Arc::new(Notify::new()),
            }),
            epoch: Epoch(format!("{:016x}", rand::random::<u64>())),
            expiry: Mutex::new(None),
        })
    }

    fn start_expiry(&self) {
        let mut expiry = self.expiry.lock();
        if expiry.is_none() {
            let task = expire_leases(
                Arc::downgrade(&self.shared),
                self.shared.lease_granted.clone(),
            );
            *expiry = Some(tokio::spawn(task).abort_handle());
        }
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        if let Some(expiry) = self.expiry.lock().take() {
            expiry.abort();
        }
    }
}

/// Ends leases at their deadlines. It holds the store only weakly and never across a
/// sleep, so it cannot keep a dropped store alive.
async fn expire_leases(shared: Weak<Shared>, lease_granted: Arc<Notify>) {
    loop {
        let next = match shared.upgrade() {
            Some(shared) => shared.write(|state| state.expire_leases(Instant::now())),
            None => return,
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = lease_granted.notified() => {}
                }
            }
            None => lease_granted.notified().await,
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn epoch(&self) -> Epoch {
        self.epoch.clone()
    }

    /// An embedded store's history restarts only with the process.
    async fn check_epoch(&self) -> Result<Epoch, StoreError> {
        Ok(self.epoch())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.shared.state.lock().get(key))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let (revision, mut records) = {
            let state = self.shared.state.lock();
            (state.revision(), state.listed(prefix))
        };
        // Sorted once the lock is released: writers need not wait for it.
        record::sort_by_key(&mut records);
        Ok(Listing {
            revision,
            kvs: records.iter().map(Record::to_key_value).collect(),
        })
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.shared
            .write(|state| state.put(key, value, lease, Instant::now()))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.shared.write(|state| state.delete(key)))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Option<Bytes>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError> {
        self.shared
            .write(|state| state.compare_and_swap(key, &expect, value, lease, Instant::now()))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let id = self
            .shared
            .write(|state| state.grant_lease(ttl, Instant::now()));
        self.start_expiry();
        self.shared.lease_granted.notify_one();
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.shared
            .write(|state| state.keep_alive(lease, Instant::now()))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.shared.write(|state| state.revoke_lease(lease))
    }

    async fn watch(&self, prefix: &str, start: WatchStart) -> Result<WatchStream, StoreError> {
        let changes = self.shared.changes.subscribe();
        let state = self.shared.state.lock();
        let watcher = Watcher::new(Arc::downgrade(&self.shared), changes, &state, prefix, start);
        drop(state);
        Ok(watcher.into_stream())
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::kvstore::WatchEvent;

    #[test]
    fn every_store_has_its_own_epoch() {
        let (a, b) = (MemoryStore::new(), MemoryStore::new());
        assert_ne!(a.epoch(), b.epoch());
        assert_eq!(a.epoch().0.len(), 16);
        assert_eq!(a.epoch(), a.epoch());
    }

    #[tokio::test]
    async fn dropping_the_store_ends_its_watches() {
        let store = MemoryStore::new();
        let mut watch = store.watch("", WatchStart::List).await.unwrap();
        assert_eq!(watch.next().await.unwrap().unwrap(), WatchEvent::ListStart);
        assert!(matches!(
            watch.next().await.unwrap().unwrap(),
            WatchEvent::ListDone { .. }
        ));
        drop(store);
        assert!(matches!(watch.next().await, Some(Err(StoreError::Closed))));
        assert!(watch.next().await.is_none());
    }

    #[tokio::test]
    async fn dropping_the_store_stops_its_expiry_task() {
        let store = MemoryStore::new();
        store.grant_lease(Duration::from_secs(60)).await.unwrap();
        let shared = Arc::downgrade(&store.shared);
        drop(store);
        // The task held the state only weakly, so nothing keeps it alive.
        assert!(shared.upgrade().is_none());
    }

    #[tokio::test]
    async fn leases_expire_without_any_other_call() {
        let store = MemoryStore::new();
        let lease = store.grant_lease(Duration::from_millis(50)).await.unwrap();
        store
            .put("k", Bytes::from_static(b"v"), Some(lease))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(store.shared.state.lock().get("k"), None);
    }

    #[tokio::test]
    async fn a_watcher_behind_other_prefixes_catches_up() {
        let store = MemoryStore::new();
        let mut events = store.watch("a/", WatchStart::After(1)).await.unwrap();
        // More events than one scan reads, none of them under the prefix.
        for i in 0..(watch::MAX_SCAN * 2 + 1) {
            store
                .put(&format!("b/{i}"), Bytes::new(), None)
                .await
                .unwrap();
        }
        let rev = store.put("a/x", Bytes::new(), None).await.unwrap();
        let WatchEvent::Put(kv) = events.next().await.unwrap().unwrap() else {
            panic!("expected the put under a/");
        };
        assert_eq!((kv.key.as_str(), kv.mod_revision), ("a/x", rev));
    }
}
