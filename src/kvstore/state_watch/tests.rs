use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::*;
use crate::kvstore::codec::{
    encode_endpoint, encode_fleetmesh_service, encode_identity, encode_node, encode_service,
};
use crate::kvstore::memory::MemoryStore;
use crate::kvstore::{CasOutcome, Expect, KeyValue, LeaseId, Listing, keys};
use crate::model::{Change, Endpoint, Resource, ResourceKey};
use crate::proto::fixtures::{mk_cluster, mk_endpoint, mk_identity, mk_node, mk_service};

const WAIT: Duration = Duration::from_secs(5);

async fn put_endpoint(store: &dyn Store, ep: &Endpoint) -> Revision {
    store
        .put(&keys::ip(ep.prefix), encode_endpoint(ep), None)
        .await
        .unwrap()
}

async fn next_event(watch: &mut StateWatch) -> StateEvent {
    tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("a state event in time")
        .expect("the watch goes on")
        .expect("no store error")
}

fn upsert(event: &StateEvent) -> &Resource {
    match event {
        StateEvent::Change(Event {
            change: Change::Upsert(resource),
            ..
        }) => resource,
        other => panic!("expected an upsert, got {other:?}"),
    }
}

#[tokio::test]
async fn lists_one_clusters_state_then_follows_its_changes() {
    let store = MemoryStore::new();
    let c1 = mk_cluster("c1", 1);
    let c2 = mk_cluster("c2", 2);
    let node = mk_node(&c1, "n1");
    let svc = mk_service(&c1, "shop", "cart");
    let identity = mk_identity(&c1, 307);
    let ep = mk_endpoint(&c1, "10.0.0.1");
    let writes = [
        (keys::node(&c1.name, "n1"), encode_node(&node)),
        (keys::node(&c2.name, "n9"), encode_node(&mk_node(&c2, "n9"))),
        (
            keys::fleetmesh_service(&c1.name, &svc.name),
            encode_fleetmesh_service(&svc),
        ),
        (keys::service(&c1.name, &svc.name), encode_service(&svc)),
        (keys::identity(identity.id()), encode_identity(&identity)),
        (keys::ip(ep.prefix), encode_endpoint(&ep)),
        (keys::HEARTBEAT.to_string(), Bytes::from_static(b"now")),
        (
            keys::ip("10.9.9.9".parse().unwrap()),
            Bytes::from_static(b"{oops"),
        ),
    ];
    for (key, value) in writes {
        store.put(&key, value, None).await.unwrap();
    }
    let listed_at = store.list("").await.unwrap().revision;

    let stats = StateWatchStats::default();
    let mut watch = StateWatch::start(store.as_ref(), c1.clone(), WatchStart::List, stats.clone())
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut watch).await,
        StateEvent::Reset {
            epoch: store.epoch()
        }
    );
    let mut listed = Vec::new();
    for _ in 0..4 {
        listed.push(upsert(&next_event(&mut watch).await).clone());
    }
    assert_eq!(
        next_event(&mut watch).await,
        StateEvent::Synced {
            revision: listed_at
        }
    );
    for expected in [
        Resource::Node(node),
        Resource::Service(svc),
        Resource::Identity(identity),
        Resource::Endpoint(ep.clone()),
    ] {
        assert!(listed.contains(&expected), "{expected:?} not listed");
    }
    assert_eq!(stats.skipped(), 1, "the undecodable ipcache value");

    // Deltas, with the revisions that made them; other keys stay silent.
    store
        .put(keys::HEARTBEAT, Bytes::from_static(b"later"), None)
        .await
        .unwrap();
    let ep2 = mk_endpoint(&c1, "10.0.0.0/24");
    let put_at = put_endpoint(store.as_ref(), &ep2).await;
    store.delete(&keys::node(&c1.name, "n1")).await.unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!(
        event,
        StateEvent::Change(Event {
            revision: put_at,
            change: Change::Upsert(Resource::Endpoint(ep2)),
        })
    );
    assert_eq!(
        next_event(&mut watch).await,
        StateEvent::Change(Event {
            revision: put_at + 1,
            change: Change::Delete(ResourceKey::Node("n1".into())),
        })
    );
}

#[tokio::test]
async fn a_watch_after_a_revision_gets_only_later_changes() {
    let store = MemoryStore::new();
    let c1 = mk_cluster("c1", 1);
    let before = put_endpoint(store.as_ref(), &mk_endpoint(&c1, "10.0.0.1")).await;
    let later = mk_endpoint(&c1, "10.0.0.2");
    let after = put_endpoint(store.as_ref(), &later).await;

    let mut watch = StateWatch::start(
        store.as_ref(),
        c1,
        WatchStart::After(before),
        StateWatchStats::default(),
    )
    .await
    .unwrap();
    let event = next_event(&mut watch).await;
    assert_eq!(upsert(&event), &Resource::Endpoint(later));
    assert!(matches!(event, StateEvent::Change(Event { revision, .. }) if revision == after));
}

/// What a sink was told.
#[derive(Debug, PartialEq)]
enum Call {
    Reset(String),
    Apply(Vec<Event>),
    Synced(Revision),
}

struct Recorder(mpsc::UnboundedSender<Call>);

impl StateSink for Recorder {
    fn reset(&mut self, epoch: &Epoch) {
        let _ = self.0.send(Call::Reset(epoch.0.clone()));
    }
    fn apply(&mut self, events: Vec<Event>) {
        let _ = self.0.send(Call::Apply(events));
    }
    fn synced(&mut self, revision: Revision) {
        let _ = self.0.send(Call::Synced(revision));
    }
}

async fn next_call(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    tokio::time::timeout(WAIT, calls.recv())
        .await
        .expect("a sink call in time")
        .expect("follow runs")
}

/// A memory store whose watches can be broken on demand and whose epoch can be
/// changed, recording where each watch started.
struct FlakyStore {
    inner: Arc<MemoryStore>,
    starts: Mutex<Vec<WatchStart>>,
    breaks: watch::Sender<u64>,
    epoch: Mutex<Option<Epoch>>,
}

impl FlakyStore {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(),
            starts: Mutex::new(Vec::new()),
            breaks: watch::channel(0).0,
            epoch: Mutex::new(None),
        })
    }

    /// Ends every open watch with an error.
    fn break_watches(&self) {
        self.breaks.send_modify(|n| *n += 1);
    }
}

#[async_trait]
impl Store for FlakyStore {
    fn epoch(&self) -> Epoch {
        self.epoch
            .lock()
            .clone()
            .unwrap_or_else(|| self.inner.epoch())
    }
    async fn check_epoch(&self) -> Result<Epoch, StoreError> {
        Ok(self.epoch())
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.inner.list(prefix).await
    }
    async fn put(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.inner.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Option<Bytes>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError> {
        self.inner.compare_and_swap(key, expect, value, lease).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke_lease(lease).await
    }
    async fn watch(&self, prefix: &str, start: WatchStart) -> Result<WatchStream, StoreError> {
        self.starts.lock().push(start);
        let inner = self.inner.watch(prefix, start).await?;
        let mut breaks = self.breaks.subscribe();
        let broken = async move {
            let _ = breaks.changed().await;
        };
        let failure = futures::stream::once(async { Err(StoreError::Closed) });
        Ok(Box::pin(inner.take_until(broken).chain(failure)))
    }
}

fn endpoints(events: &[Event]) -> Vec<(Revision, String)> {
    events
        .iter()
        .map(|e| (e.revision, e.change.key().to_string()))
        .collect()
}

#[tokio::test]
async fn follow_resumes_after_a_failure_and_relists_in_a_new_epoch() {
    let store = FlakyStore::new();
    let c1 = mk_cluster("c1", 1);
    let r1 = put_endpoint(store.as_ref(), &mk_endpoint(&c1, "10.0.0.1")).await;

    let (tx, mut calls) = mpsc::unbounded_channel();
    let stats = StateWatchStats::default();
    let task = tokio::spawn(follow(
        store.clone(),
        c1.clone(),
        Recorder(tx),
        stats.clone(),
    ));
    let epoch = store.epoch().0;
    assert_eq!(next_call(&mut calls).await, Call::Reset(epoch.clone()));
    let Call::Apply(listed) = next_call(&mut calls).await else {
        panic!("expected the listing");
    };
    assert_eq!(endpoints(&listed), [(r1, "endpoint 10.0.0.1".into())]);
    assert_eq!(next_call(&mut calls).await, Call::Synced(r1));

    let r2 = put_endpoint(store.as_ref(), &mk_endpoint(&c1, "10.0.0.2")).await;
    assert!(matches!(next_call(&mut calls).await, Call::Apply(e) if e.len() == 1));

    // The watch fails; meanwhile the store moves on. The next watch resumes after r2:
    // no list, only what was missed.
    store.break_watches();
    tokio::task::yield_now().await;
    let r3 = put_endpoint(store.as_ref(), &mk_endpoint(&c1, "10.0.0.3")).await;
    let Call::Apply(missed) = next_call(&mut calls).await else {
        panic!("expected the missed change");
    };
    assert_eq!(endpoints(&missed), [(r3, "endpoint 10.0.0.3".into())]);
    assert_eq!(
        *store.starts.lock(),
        [WatchStart::List, WatchStart::After(r2)]
    );
    assert_eq!(stats.restarts(), 1);

    // A new epoch: the resume point is worthless, so it lists again.
    *store.epoch.lock() = Some(Epoch("e2".into()));
    store.break_watches();
    assert_eq!(next_call(&mut calls).await, Call::Reset("e2".into()));
    let Call::Apply(listed) = next_call(&mut calls).await else {
        panic!("expected the listing");
    };
    assert_eq!(listed.len(), 3);
    assert_eq!(next_call(&mut calls).await, Call::Synced(r3));
    assert_eq!(store.starts.lock().last(), Some(&WatchStart::List));
    task.abort();
}

#[tokio::test]
async fn follow_hands_over_a_revision_whole() {
    let store = MemoryStore::new();
    let c1 = mk_cluster("c1", 1);
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let (tx, mut calls) = mpsc::unbounded_channel();
    let task = tokio::spawn(follow(
        store.clone(),
        c1.clone(),
        Recorder(tx),
        StateWatchStats::default(),
    ));
    assert!(matches!(next_call(&mut calls).await, Call::Reset(_)));
    assert!(matches!(next_call(&mut calls).await, Call::Synced(_)));

    for i in 0..3 {
        let ep = mk_endpoint(&c1, &format!("10.0.0.{i}"));
        store
            .put(&keys::ip(ep.prefix), encode_endpoint(&ep), Some(lease))
            .await
            .unwrap();
    }
    let mut upserts = 0;
    while upserts < 3 {
        let Call::Apply(events) = next_call(&mut calls).await else {
            panic!("expected deltas");
        };
        upserts += events.len();
    }
    // Revoking the lease deletes its three keys in one revision: one batch.
    store.revoke_lease(lease).await.unwrap();
    let Call::Apply(deletes) = next_call(&mut calls).await else {
        panic!("expected the deletes");
    };
    assert_eq!(deletes.len(), 3);
    assert!(deletes.iter().all(|e| e.revision == deletes[0].revision));
    task.abort();
}
