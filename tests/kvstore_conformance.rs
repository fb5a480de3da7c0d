//! One conformance suite for every `Store` backend: each case below is a plain async
//! function over a [`Harness`], and `conformance!` turns it into `memory::<case>` and
//! `etcd::<case>` tests. Backend-specific tests follow the suite.

// The cases are plain functions shared by two tests each, which clippy's
// allow-unwrap-in-tests does not recognise as tests.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::CompactionOptions;
use fleetmesh::kvstore::etcd::{EtcdStore, EtcdTls};
use fleetmesh::kvstore::memory::MemoryStore;
use fleetmesh::kvstore::{
    CasOutcome, Expect, KeyValue, LeaseId, Store, StoreError, WatchEvent, WatchStart, WatchStream,
};
use fleetmesh::model::Revision;
use futures::StreamExt;
use futures::future::join_all;
use tokio::sync::RwLock;

use support::{EtcdHandle, LocalEtcd, ServerTls};

/// How long a watch event may take to arrive before the test fails.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// History of the memory stores under test: small, so a test can outrun it cheaply.
const MEMORY_HISTORY: usize = 64;

/// Lease TTL for the memory store: short, so lease tests stay fast.
const MEMORY_LEASE_TTL: Duration = Duration::from_millis(300);

/// etcd raises shorter TTLs to its minimum, 1.5 × the election timeout rounded up: 2 s.
const ETCD_LEASE_TTL: Duration = Duration::from_secs(2);

/// Compaction is global to an etcd, and this process shares one: a test that compacts
/// holds this for writing; tests that rely on recent history hold it for reading.
static HISTORY: RwLock<()> = RwLock::const_new(());

/// A backend under test.
struct Harness {
    store: Arc<dyn Store>,
    lease_ttl: Duration,
    backend: Backend,
}

enum Backend {
    Memory,
    Etcd(EtcdHandle),
}

impl Harness {
    async fn memory() -> Self {
        Harness {
            store: MemoryStore::with_history(MEMORY_HISTORY),
            lease_ttl: MEMORY_LEASE_TTL,
            backend: Backend::Memory,
        }
    }

    async fn etcd() -> Self {
        Harness {
            store: Arc::new(support::mk_etcd_store().await),
            lease_ttl: ETCD_LEASE_TTL,
            backend: Backend::Etcd(support::etcd().await),
        }
    }

    /// Makes every revision written so far unusable as a resume point: the memory store
    /// is made to evict it, etcd to compact it. Hold `HISTORY` for writing.
    async fn forget_history(&self) {
        let filler = "zz-filler";
        match &self.backend {
            Backend::Memory => {
                for _ in 0..=MEMORY_HISTORY {
                    self.store.put(filler, b("x"), None).await.unwrap();
                }
            }
            Backend::Etcd(handle) => {
                // Compact past a fresh write so even the newest earlier revision is gone.
                let rev = self.store.put(filler, b("x"), None).await.unwrap();
                handle
                    .client()
                    .await
                    .compact(
                        i64::try_from(rev).unwrap(),
                        Some(CompactionOptions::new().with_physical()),
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next(events: &mut WatchStream) -> WatchEvent {
    next_within(events, EVENT_TIMEOUT).await
}

async fn next_within(events: &mut WatchStream, limit: Duration) -> WatchEvent {
    tokio::time::timeout(limit, events.next())
        .await
        .expect("no watch event in time")
        .expect("the watch ended")
        .expect("the watch failed")
}

fn put_event(event: WatchEvent) -> KeyValue {
    match event {
        WatchEvent::Put(kv) => kv,
        other => panic!("expected a put, got {other:?}"),
    }
}

/// Reads a list (`ListStart`, puts, `ListDone`); returns its keys and revision.
async fn read_list(events: &mut WatchStream) -> (Vec<KeyValue>, Revision) {
    assert_eq!(next(events).await, WatchEvent::ListStart);
    let mut kvs = Vec::new();
    loop {
        match next(events).await {
            WatchEvent::Put(kv) => kvs.push(kv),
            WatchEvent::ListDone { revision } => return (kvs, revision),
            other => panic!("expected a put or the end of the list, got {other:?}"),
        }
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

// ---- the suite -------------------------------------------------------------------------

async fn get_put_delete(h: Harness) {
    let s = &h.store;
    assert_eq!(s.get("k").await.unwrap(), None);
    let rev = s.put("k", b("v1"), None).await.unwrap();
    assert_eq!(
        s.get("k").await.unwrap(),
        Some(KeyValue {
            key: "k".to_owned(),
            value: b("v1"),
            create_revision: rev,
            mod_revision: rev,
            lease: None,
        })
    );
    assert!(s.delete("k").await.unwrap());
    assert!(!s.delete("k").await.unwrap());
    assert_eq!(s.get("k").await.unwrap(), None);
}

async fn put_returns_increasing_revisions(h: Harness) {
    let s = &h.store;
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(s.put("k", b(&i.to_string()), None).await.unwrap());
    }
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    let kv = s.get("k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (revs[0], revs[4]));
    assert_eq!(kv.value, b("4"));
    let other = s.put("other", b("x"), None).await.unwrap();
    assert!(other > revs[4]);
    s.delete("k").await.unwrap();
    let again = s.put("k", b("new"), None).await.unwrap();
    let kv = s.get("k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (again, again));
}

async fn list_is_sorted_and_at_a_revision(h: Harness) {
    let s = &h.store;
    let mut last = 0;
    for key in ["a/3", "a/1", "ab/1", "a/2", "b"] {
        last = s.put(key, b(key), None).await.unwrap();
    }
    let listing = s.list("a/").await.unwrap();
    assert_eq!(keys(&listing.kvs), ["a/1", "a/2", "a/3"]);
    assert_eq!(listing.kvs[0].value, b("a/1"));
    assert!(listing.revision >= last);
    assert!(
        listing
            .kvs
            .iter()
            .all(|kv| kv.mod_revision <= listing.revision)
    );

    let later = s.put("a/0", b("a/0"), None).await.unwrap();
    let listing = s.list("a/").await.unwrap();
    assert_eq!(keys(&listing.kvs), ["a/0", "a/1", "a/2", "a/3"]);
    assert!(listing.revision >= later);

    let empty = s.list("none/").await.unwrap();
    assert!(empty.kvs.is_empty());
    assert!(empty.revision >= later);
}

async fn cas_absent(h: Harness) {
    let s = &h.store;
    let CasOutcome::Swapped(rev) = s
        .compare_and_swap("k", Expect::Absent, Some(b("v1")), None)
        .await
        .unwrap()
    else {
        panic!("creating an absent key must succeed");
    };
    let current = s.get("k").await.unwrap().unwrap();
    assert_eq!(
        (current.mod_revision, current.value.clone()),
        (rev, b("v1"))
    );
    assert_eq!(
        s.compare_and_swap("k", Expect::Absent, Some(b("v2")), None)
            .await
            .unwrap(),
        CasOutcome::Failed(Some(current))
    );
}

async fn cas_mod_revision(h: Harness) {
    let s = &h.store;
    let first = s.put("k", b("v1"), None).await.unwrap();
    let CasOutcome::Swapped(second) = s
        .compare_and_swap("k", Expect::ModRevision(first), Some(b("v2")), None)
        .await
        .unwrap()
    else {
        panic!("the revision matched");
    };
    assert!(second > first);
    let CasOutcome::Failed(Some(current)) = s
        .compare_and_swap("k", Expect::ModRevision(first), Some(b("v3")), None)
        .await
        .unwrap()
    else {
        panic!("a stale revision must fail and return the key");
    };
    assert_eq!((current.value, current.mod_revision), (b("v2"), second));
    assert_eq!(
        s.compare_and_swap("missing", Expect::ModRevision(0), Some(b("v")), None)
            .await
            .unwrap(),
        CasOutcome::Failed(None)
    );
    assert_eq!(s.get("missing").await.unwrap(), None);
}

async fn cas_value(h: Harness) {
    let s = &h.store;
    s.put("k", b("v1"), None).await.unwrap();
    assert!(matches!(
        s.compare_and_swap("k", Expect::Value(b("v1")), Some(b("v2")), None)
            .await
            .unwrap(),
        CasOutcome::Swapped(_)
    ));
    let CasOutcome::Failed(Some(current)) = s
        .compare_and_swap("k", Expect::Value(b("v1")), Some(b("v3")), None)
        .await
        .unwrap()
    else {
        panic!("a stale value must fail and return the key");
    };
    assert_eq!(current.value, b("v2"));
    assert_eq!(
        s.compare_and_swap("missing", Expect::Value(b("")), Some(b("v")), None)
            .await
            .unwrap(),
        CasOutcome::Failed(None)
    );
}

async fn cas_delete(h: Harness) {
    let s = &h.store;
    let rev = s.put("k", b("v"), None).await.unwrap();
    let CasOutcome::Swapped(deleted) = s
        .compare_and_swap("k", Expect::ModRevision(rev), None, None)
        .await
        .unwrap()
    else {
        panic!("the revision matched");
    };
    assert!(deleted > rev);
    assert_eq!(s.get("k").await.unwrap(), None);
    assert_eq!(
        s.compare_and_swap("k", Expect::ModRevision(rev), None, None)
            .await
            .unwrap(),
        CasOutcome::Failed(None)
    );
}

async fn cas_attaches_the_lease(h: Harness) {
    let s = &h.store;
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let outcome = s
        .compare_and_swap("k", Expect::Absent, Some(b("v")), Some(lease))
        .await
        .unwrap();
    assert!(matches!(outcome, CasOutcome::Swapped(_)));
    assert_eq!(s.get("k").await.unwrap().unwrap().lease, Some(lease));
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(s.get("k").await.unwrap(), None);
}

async fn concurrent_cas_creates_have_one_winner(h: Harness) {
    let attempts = (0..8).map(|i| {
        let store = h.store.clone();
        tokio::spawn(async move {
            let value = b(&format!("writer-{i}"));
            let outcome = store
                .compare_and_swap("k", Expect::Absent, Some(value.clone()), None)
                .await
                .unwrap();
            (value, outcome)
        })
    });
    let results: Vec<_> = join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<&Bytes> = results
        .iter()
        .filter(|(_, outcome)| matches!(outcome, CasOutcome::Swapped(_)))
        .map(|(value, _)| value)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let stored = h.store.get("k").await.unwrap().unwrap();
    assert_eq!(&stored.value, winners[0]);
    for (_, outcome) in &results {
        if let CasOutcome::Failed(current) = outcome {
            assert_eq!(current.as_ref(), Some(&stored));
        }
    }
}

async fn lease_expiry_deletes_keys_with_events(h: Harness) {
    let _history = HISTORY.read().await;
    let s = &h.store;
    let lease = s.grant_lease(h.lease_ttl).await.unwrap();
    s.put("a/leased", b("v"), Some(lease)).await.unwrap();
    s.put("a/kept", b("v"), None).await.unwrap();
    let mut events = s.watch("a/", WatchStart::List).await.unwrap();
    let (kvs, listed) = read_list(&mut events).await;
    assert_eq!(keys(&kvs), ["a/kept", "a/leased"]);
    assert_eq!(kvs[1].lease, Some(lease));

    let started = Instant::now();
    let event = next_within(&mut events, h.lease_ttl + EVENT_TIMEOUT).await;
    let WatchEvent::Delete { key, revision } = event else {
        panic!("expected the leased key's deletion, got {event:?}");
    };
    assert_eq!(key, "a/leased");
    assert!(revision > listed);
    assert!(started.elapsed() + Duration::from_millis(100) >= h.lease_ttl / 2);
    assert_eq!(s.get("a/leased").await.unwrap(), None);
    assert!(s.get("a/kept").await.unwrap().is_some());
    assert!(matches!(
        s.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(id)) if id == lease
    ));
    assert!(matches!(
        s.put("a/late", b("v"), Some(lease)).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

async fn keep_alive_keeps_keys(h: Harness) {
    let s = &h.store;
    let lease = s.grant_lease(h.lease_ttl).await.unwrap();
    s.put("k", b("v"), Some(lease)).await.unwrap();
    // Renew four times per TTL for one and a half TTLs.
    for _ in 0..6 {
        tokio::time::sleep(h.lease_ttl / 4).await;
        s.keep_alive(lease).await.unwrap();
    }
    assert_eq!(s.get("k").await.unwrap().unwrap().lease, Some(lease));
    s.revoke_lease(lease).await.unwrap();
}

async fn revoke_deletes_keys(h: Harness) {
    let s = &h.store;
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let other = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert_ne!(lease, other);
    s.put("a", b("v"), Some(lease)).await.unwrap();
    s.put("b", b("v"), Some(lease)).await.unwrap();
    s.put("c", b("v"), Some(other)).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), None);
    assert_eq!(s.get("b").await.unwrap(), None);
    assert!(s.get("c").await.unwrap().is_some());
    let not_found =
        |r: Result<(), StoreError>| matches!(r, Err(StoreError::LeaseNotFound(id)) if id == lease);
    assert!(not_found(s.revoke_lease(lease).await));
    assert!(not_found(s.keep_alive(lease).await));
    assert!(matches!(
        s.put("d", b("v"), Some(lease)).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    let never = LeaseId(lease.0 ^ 0x5a5a_5a5a);
    assert!(matches!(
        s.keep_alive(never).await,
        Err(StoreError::LeaseNotFound(id)) if id == never
    ));
    s.revoke_lease(other).await.unwrap();
}

async fn watch_lists_then_follows_its_prefix(h: Harness) {
    let _history = HISTORY.read().await;
    let s = &h.store;
    s.put("a/2", b("2"), None).await.unwrap();
    let last = s.put("a/1", b("1"), None).await.unwrap();
    s.put("ab/x", b("x"), None).await.unwrap();
    let mut events = s.watch("a/", WatchStart::List).await.unwrap();
    let (kvs, listed) = read_list(&mut events).await;
    assert_eq!(keys(&kvs), ["a/1", "a/2"]);
    assert!(listed >= last);

    let put3 = s.put("a/3", b("3"), None).await.unwrap();
    assert!(s.delete("a/1").await.unwrap());
    s.put("ab/y", b("y"), None).await.unwrap();
    let put2 = s.put("a/2", b("2b"), None).await.unwrap();
    let sentinel = s.put("a/zz", b("end"), None).await.unwrap();

    let kv = put_event(next(&mut events).await);
    assert_eq!(
        (kv.key.as_str(), kv.mod_revision, kv.value),
        ("a/3", put3, b("3"))
    );
    let WatchEvent::Delete { key, revision } = next(&mut events).await else {
        panic!("expected a/1's deletion");
    };
    assert_eq!(key, "a/1");
    assert!(revision > put3 && revision < put2);
    let kv = put_event(next(&mut events).await);
    assert_eq!(
        (kv.key.as_str(), kv.mod_revision, kv.value),
        ("a/2", put2, b("2b"))
    );
    // Nothing under ab/ came in between.
    let kv = put_event(next(&mut events).await);
    assert_eq!((kv.key.as_str(), kv.mod_revision), ("a/zz", sentinel));
}

async fn watch_after_yields_exactly_the_missed_events(h: Harness) {
    let _history = HISTORY.read().await;
    let s = &h.store;
    let seen = s.put("a/1", b("1"), None).await.unwrap();
    let put2 = s.put("a/2", b("2"), None).await.unwrap();
    s.put("b/1", b("other prefix"), None).await.unwrap();
    assert!(s.delete("a/1").await.unwrap());
    let put3 = s.put("a/3", b("3"), None).await.unwrap();

    let mut events = s.watch("a/", WatchStart::After(seen)).await.unwrap();
    let kv = put_event(next(&mut events).await);
    assert_eq!((kv.key.as_str(), kv.mod_revision), ("a/2", put2));
    let WatchEvent::Delete { key, revision } = next(&mut events).await else {
        panic!("expected a/1's deletion");
    };
    assert_eq!(key, "a/1");
    assert!(revision > put2 && revision < put3);
    let kv = put_event(next(&mut events).await);
    assert_eq!((kv.key.as_str(), kv.mod_revision), ("a/3", put3));
    let live = s.put("a/4", b("4"), None).await.unwrap();
    let kv = put_event(next(&mut events).await);
    assert_eq!((kv.key.as_str(), kv.mod_revision), ("a/4", live));
}

async fn compacted_resume_point_falls_back_to_a_list(h: Harness) {
    let _history = HISTORY.write().await;
    let s = &h.store;
    let seen = s.put("a/1", b("1"), None).await.unwrap();
    s.put("a/2", b("2"), None).await.unwrap();
    assert!(s.delete("a/1").await.unwrap());
    let last = s.put("a/3", b("3"), None).await.unwrap();
    h.forget_history().await;

    let mut events = s.watch("a/", WatchStart::After(seen)).await.unwrap();
    let (kvs, listed) = read_list(&mut events).await;
    assert_eq!(keys(&kvs), ["a/2", "a/3"]);
    assert!(listed > last);
    let live = s.put("a/4", b("4"), None).await.unwrap();
    let kv = put_event(next(&mut events).await);
    assert_eq!((kv.key.as_str(), kv.mod_revision), ("a/4", live));
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Harness::memory().await).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Harness::etcd().await).await;
                }
            )*
        }
    };
}

conformance!(
    get_put_delete,
    put_returns_increasing_revisions,
    list_is_sorted_and_at_a_revision,
    cas_absent,
    cas_mod_revision,
    cas_value,
    cas_delete,
    cas_attaches_the_lease,
    concurrent_cas_creates_have_one_winner,
    lease_expiry_deletes_keys_with_events,
    keep_alive_keeps_keys,
    revoke_deletes_keys,
    watch_lists_then_follows_its_prefix,
    watch_after_yields_exactly_the_missed_events,
    compacted_resume_point_falls_back_to_a_list,
);

// ---- the memory store only -------------------------------------------------------------

#[tokio::test]
async fn memory_slow_watcher_does_not_block_puts() {
    const PUTS: usize = 20_000;
    let store = MemoryStore::new();
    // Opened and never read while the puts run.
    let mut idle = store.watch("k/", WatchStart::List).await.unwrap();
    let started = Instant::now();
    let mut revs = Vec::with_capacity(PUTS);
    for i in 0..PUTS {
        revs.push(store.put(&format!("k/{i:05}"), b("v"), None).await.unwrap());
    }
    // Tens of milliseconds in practice; a writer waiting on the watcher would never end.
    assert!(started.elapsed() < Duration::from_secs(10));
    let (kvs, _) = read_list(&mut idle).await;
    assert!(kvs.is_empty());
    for (i, rev) in revs.into_iter().enumerate() {
        let kv = put_event(next(&mut idle).await);
        assert_eq!((kv.key, kv.mod_revision), (format!("k/{i:05}"), rev));
    }
}

#[tokio::test]
async fn memory_watcher_that_falls_out_of_the_history_lists_again() {
    let store = MemoryStore::with_history(16);
    let mut events = store.watch("k/", WatchStart::List).await.unwrap();
    read_list(&mut events).await;
    let mut last = 0;
    for i in 0..100 {
        last = store.put(&format!("k/{i:03}"), b("v"), None).await.unwrap();
    }
    let (kvs, listed) = read_list(&mut events).await;
    assert_eq!(kvs.len(), 100);
    assert_eq!(listed, last);
    let live = store.put("k/live", b("v"), None).await.unwrap();
    assert_eq!(put_event(next(&mut events).await).mod_revision, live);
}

// ---- etcd only -------------------------------------------------------------------------

#[tokio::test]
async fn etcd_namespaces_isolate_stores() {
    let handle = support::etcd().await;
    let (ns_a, ns_b) = (support::unique_prefix(), support::unique_prefix());
    let a = EtcdStore::connect(handle.config(&ns_a)).await.unwrap();
    let b_store = EtcdStore::connect(handle.config(&ns_b)).await.unwrap();

    a.put("k", b("from a"), None).await.unwrap();
    assert_eq!(b_store.get("k").await.unwrap(), None);
    assert!(b_store.list("").await.unwrap().kvs.is_empty());
    assert_eq!(keys(&a.list("").await.unwrap().kvs), ["k"]);

    // The namespace is a plain key prefix in etcd.
    let raw = handle
        .client()
        .await
        .get(format!("{ns_a}k"), None)
        .await
        .unwrap();
    assert_eq!(raw.kvs()[0].value(), b"from a");

    let mut events = b_store.watch("", WatchStart::List).await.unwrap();
    assert!(read_list(&mut events).await.0.is_empty());
    a.put("k2", b("from a"), None).await.unwrap();
    let mine = b_store.put("mine", b("from b"), None).await.unwrap();
    let kv = put_event(next(&mut events).await);
    assert_eq!((kv.key.as_str(), kv.mod_revision), ("mine", mine));
}

#[tokio::test]
async fn etcd_epoch_is_the_cluster_id_and_stable() {
    let handle = support::etcd().await;
    let a = support::mk_etcd_store().await;
    let b_store = support::mk_etcd_store().await;
    let epoch = a.epoch();
    a.put("k", b("v"), None).await.unwrap();
    a.get("k").await.unwrap();
    assert_eq!(a.epoch(), epoch);
    assert_eq!(b_store.epoch(), epoch);
    let status = handle.client().await.status().await.unwrap();
    let cluster_id = status.header().unwrap().cluster_id();
    assert_eq!(epoch.0, format!("{cluster_id:016x}"));
}

/// A CA and leaf certificates for an etcd over mutual TLS, written under `dir`.
struct TestPki {
    server: ServerTls,
    client: EtcdTls,
}

fn mk_pki(dir: &std::path::Path, name: &str) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let write = |file: &str, pem: String| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, pem).unwrap();
        path
    };
    let leaf = |sans: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let ca_file = write("ca.pem", ca.pem());
    let (server_cert, server_key) = leaf(vec!["localhost".to_owned()]);
    let (client_cert, client_key) = leaf(vec!["client".to_owned()]);
    TestPki {
        server: ServerTls {
            ca_file: ca_file.clone(),
            cert_file: write("server.pem", server_cert),
            key_file: write("server-key.pem", server_key),
        },
        client: EtcdTls {
            ca_file,
            cert_file: write("client.pem", client_cert),
            key_file: write("client-key.pem", client_key),
        },
    }
}

#[tokio::test]
async fn etcd_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = mk_pki(dir.path(), "good");
    let stranger = mk_pki(dir.path(), "stranger");
    let local = LocalEtcd::start(Some(&pki.server)).await.unwrap();

    let mut config = local.handle().config(&support::unique_prefix());
    config.tls = Some(pki.client.clone());
    let store = EtcdStore::connect(config.clone()).await.unwrap();
    let rev = store.put("k", b("v"), None).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().mod_revision, rev);

    // A client certificate from another CA is refused.
    config.tls = Some(EtcdTls {
        ca_file: pki.client.ca_file,
        ..stranger.client
    });
    config.dial_timeout = Duration::from_secs(2);
    assert!(EtcdStore::connect(config).await.is_err());
}
