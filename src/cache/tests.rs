use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;

use tokio::sync::broadcast::error::TryRecvError;

use super::*;
use crate::model::{Endpoint, IdentityId, Resource};
use crate::proto::fixtures::{mk_cluster, mk_node};

/// A readable encoding: `+ endpoint 10.0.0.1 @5`.
fn mk_encode(event: &Event) -> Bytes {
    let op = match event.change {
        Change::Upsert(_) => '+',
        Change::Delete(_) => '-',
    };
    Bytes::from(format!("{op} {} @{}", event.change.key(), event.revision))
}

fn text(bytes: &Bytes) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn mk_cache(log_capacity: usize, live_capacity: usize) -> WatchCache {
    WatchCache::new(
        mk_encode,
        CacheSettings {
            log_capacity,
            live_capacity,
        },
    )
}

fn mk_upsert(ip: &str, revision: Revision) -> Event {
    let ep = Endpoint::new(ip.parse().unwrap(), IdentityId::new(2).unwrap());
    Event {
        revision,
        change: Change::Upsert(Resource::Endpoint(ep)),
    }
}

fn mk_delete(ip: &str, revision: Revision) -> Event {
    Event {
        revision,
        change: Change::Delete(ResourceKey::Endpoint(ip.parse().unwrap())),
    }
}

/// A synced cache in epoch `e1` holding `ips`, listed at revisions 2, 3, …; the list
/// completes at `revision`.
fn mk_synced(cache: &WatchCache, ips: &[&str], revision: Revision) {
    cache.reset("e1");
    let listed: Vec<Event> = ips
        .iter()
        .zip(2..)
        .map(|(ip, r)| mk_upsert(ip, r))
        .collect();
    cache.apply(&listed);
    cache.synced(revision);
}

fn full_state(sub: &Subscription) -> Vec<String> {
    let Initial::Full(parts) = &sub.initial else {
        panic!("expected a full state, got {:?}", sub.initial);
    };
    let mut all: Vec<String> = parts.iter().flat_map(|p| p.iter().map(text)).collect();
    all.sort();
    all
}

fn live_texts(sub: &mut Subscription) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(batch) = sub.live.try_recv() {
        out.extend(batch.events.iter().map(|e| text(&e.bytes)));
    }
    out
}

#[tokio::test]
async fn serves_only_after_the_first_sync() {
    let cache = Arc::new(mk_cache(100, 100));
    assert!(cache.subscribe(KindSet::ALL, None).is_err());

    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.subscribe_synced(KindSet::ALL, None).await })
    };
    cache.reset("e1");
    cache.apply(&[mk_upsert("10.0.0.1", 2), mk_upsert("10.0.0.2", 3)]);
    assert!(
        cache.subscribe(KindSet::ALL, None).is_err(),
        "a list in progress is not a state"
    );
    cache.synced(5);

    let sub = waiter.await.unwrap();
    assert_eq!(sub.revision, 5);
    assert_eq!(&*sub.epoch, "e1");
    assert_eq!(
        full_state(&sub),
        ["+ endpoint 10.0.0.1 @2", "+ endpoint 10.0.0.2 @3"]
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.synced, stats.revision, stats.log_events),
        (true, 5, 0)
    );
    assert_eq!(stats.entries[3], (Kind::Endpoint, 2));
}

#[test]
fn full_states_and_live_batches_are_filtered_by_kind() {
    let cache = mk_cache(100, 100);
    mk_synced(&cache, &["10.0.0.1"], 3);
    let c1 = mk_cluster("c1", 1);
    let node = Event {
        revision: 4,
        change: Change::Upsert(Resource::Node(mk_node(&c1, "n1"))),
    };
    cache.apply(&[node]);

    let nodes_only: KindSet = [Kind::Node].into_iter().collect();
    let sub = cache.subscribe(nodes_only, None).unwrap();
    assert_eq!(full_state(&sub), ["+ node n1 @4"]);
    // Live batches carry every kind; the subscription says which ones the watcher reads.
    assert_eq!(sub.kinds, nodes_only);
}

#[test]
fn deltas_are_logged_and_broadcast_in_batches() {
    let cache = mk_cache(100, 100);
    mk_synced(&cache, &["10.0.0.1"], 3);
    let mut sub = cache.subscribe(KindSet::ALL, None).unwrap();

    cache.apply(&[mk_upsert("10.0.0.2", 4), mk_delete("10.0.0.1", 5)]);
    // Deleting what is not held changes nothing: no event.
    cache.apply(&[mk_delete("10.0.0.9", 6)]);

    let batch = sub.live.try_recv().unwrap();
    assert_eq!(batch.revision, 5);
    let texts: Vec<String> = batch.events.iter().map(|e| text(&e.bytes)).collect();
    assert_eq!(texts, ["+ endpoint 10.0.0.2 @4", "- endpoint 10.0.0.1 @5"]);
    assert!(matches!(sub.live.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(cache.stats().log_events, 2);
}

/// Subscriptions taken while a writer applies deltas: each one's snapshot holds exactly
/// the events up to its revision, and its live part exactly those after — nothing
/// missing, nothing twice.
#[test]
fn snapshot_and_subscription_are_atomic() {
    const WRITES: u64 = 2000;
    let cache = Arc::new(mk_cache(100_000, 100_000));
    mk_synced(&cache, &["10.1.0.0"], 2);

    let writer = {
        let cache = cache.clone();
        thread::spawn(move || {
            for i in 0..WRITES {
                let revision = 3 + i;
                let ip = format!("10.1.{}.{}", i % 7, i % 251);
                let event = if i % 5 == 4 {
                    mk_delete(&ip, revision)
                } else {
                    mk_upsert(&ip, revision)
                };
                cache.apply(&[event]);
                thread::yield_now();
            }
        })
    };
    let mut subs = Vec::new();
    while !writer.is_finished() {
        if subs.len() < 100 {
            subs.push(cache.subscribe(KindSet::ALL, None).unwrap());
        }
        thread::sleep(std::time::Duration::from_micros(20));
    }
    writer.join().unwrap();
    assert!(
        subs.len() > 1,
        "subscriptions should interleave with writes"
    );

    let expected = state_of(&cache.subscribe(KindSet::ALL, None).unwrap());
    for mut sub in subs {
        let mut state = state_of(&sub);
        assert!(state.values().all(|rev| *rev <= sub.revision));
        while let Ok(batch) = sub.live.try_recv() {
            for event in &batch.events {
                assert!(event.revision > sub.revision, "an event came twice");
                let t = text(&event.bytes);
                let (op, rest) = t.split_at(2);
                let (key, rev) = rest.rsplit_once(" @").unwrap();
                if op == "+ " {
                    state.insert(key.to_string(), rev.parse().unwrap());
                } else {
                    state.remove(key);
                }
            }
        }
        assert_eq!(state, expected, "subscribed at {}", sub.revision);
    }
}

/// Key → revision of a full state.
fn state_of(sub: &Subscription) -> BTreeMap<String, Revision> {
    full_state(sub)
        .iter()
        .map(|t| {
            let (key, rev) = t[2..].rsplit_once(" @").unwrap();
            (key.to_string(), rev.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_resume_point_in_the_log_gets_only_what_was_missed() {
    let cache = mk_cache(3, 100);
    mk_synced(&cache, &["10.0.0.1"], 3);
    let at = |revision| ResumePoint {
        epoch: "e1".into(),
        revision,
    };

    // Right after the list: nothing missed.
    let sub = cache.subscribe(KindSet::ALL, Some(&at(3))).unwrap();
    assert!(matches!(sub.initial, Initial::Resumed { .. }));
    assert_eq!(sub.missed().count(), 0);

    cache.apply(&[mk_upsert("10.0.0.2", 4)]);
    cache.apply(&[mk_upsert("10.0.0.3", 5), mk_upsert("10.0.0.4", 5)]);
    let sub = cache.subscribe(KindSet::ALL, Some(&at(4))).unwrap();
    let missed: Vec<String> = sub.missed().map(|e| text(&e.bytes)).collect();
    assert_eq!(missed, ["+ endpoint 10.0.0.3 @5", "+ endpoint 10.0.0.4 @5"]);
    assert_eq!(sub.revision, 5);

    // The log holds 3 events: the next batch evicts revision 4's.
    cache.apply(&[mk_upsert("10.0.0.5", 6)]);
    let sub = cache.subscribe(KindSet::ALL, Some(&at(3))).unwrap();
    assert!(matches!(sub.initial, Initial::Full(_)), "out of the log");
    assert_eq!(full_state(&sub).len(), 5);
    let sub = cache.subscribe(KindSet::ALL, Some(&at(4))).unwrap();
    assert_eq!(sub.missed().count(), 3);

    // Another epoch, or a revision the cache never reached: full state.
    let other = ResumePoint {
        epoch: "e0".into(),
        revision: 5,
    };
    for point in [other, at(99)] {
        let sub = cache.subscribe(KindSet::ALL, Some(&point)).unwrap();
        assert!(matches!(sub.initial, Initial::Full(_)), "{point:?}");
    }
}

#[test]
fn a_lagging_watcher_is_cut_off_while_others_continue() {
    let cache = mk_cache(100, 2);
    mk_synced(&cache, &[], 2);
    let mut slow = cache.subscribe(KindSet::ALL, None).unwrap();
    let mut fast = cache.subscribe(KindSet::ALL, None).unwrap();

    let mut seen = Vec::new();
    for i in 0..5 {
        cache.apply(&[mk_upsert(&format!("10.0.0.{i}"), 3 + i)]);
        seen.extend(live_texts(&mut fast));
    }
    assert_eq!(seen.len(), 5, "the fast watcher got every batch");
    assert!(matches!(slow.live.try_recv(), Err(TryRecvError::Lagged(3))));
}

#[test]
fn a_relist_publishes_only_the_differences() {
    let cache = mk_cache(100, 100);
    // a@2, b@3, c@4, listed at 4.
    mk_synced(&cache, &["10.0.0.1", "10.0.0.2", "10.0.0.3"], 4);
    let mut sub = cache.subscribe(KindSet::ALL, None).unwrap();

    // The store relists (say its history was compacted while the feeder reconnected):
    // a is unchanged, b changed at 6, c is gone, d is new at 5.
    cache.reset("e1");
    cache.apply(&[
        mk_upsert("10.0.0.1", 2),
        mk_upsert("10.0.0.2", 6),
        mk_upsert("10.0.0.4", 5),
    ]);
    assert!(
        matches!(sub.live.try_recv(), Err(TryRecvError::Empty)),
        "nothing is published before the list completes"
    );
    let during = cache.subscribe(KindSet::ALL, None).unwrap();
    assert_eq!(
        full_state(&during).len(),
        3,
        "the old state is served meanwhile"
    );
    cache.synced(7);

    let batch = sub.live.try_recv().unwrap();
    let texts: Vec<String> = batch.events.iter().map(|e| text(&e.bytes)).collect();
    assert_eq!(
        texts,
        [
            "+ endpoint 10.0.0.4 @5",
            "+ endpoint 10.0.0.2 @6",
            "- endpoint 10.0.0.3 @7",
        ],
        "in revision order, and nothing for the unchanged one"
    );
    assert_eq!(batch.revision, 7);
    assert!(matches!(sub.live.try_recv(), Err(TryRecvError::Empty)));

    let after = cache.subscribe(KindSet::ALL, None).unwrap();
    assert_eq!(
        full_state(&after),
        [
            "+ endpoint 10.0.0.1 @2",
            "+ endpoint 10.0.0.2 @6",
            "+ endpoint 10.0.0.4 @5",
        ]
    );
    // A watcher that stopped at 4 resumes with the differences.
    let point = ResumePoint {
        epoch: "e1".into(),
        revision: 4,
    };
    let resumed = cache.subscribe(KindSet::ALL, Some(&point)).unwrap();
    assert_eq!(resumed.missed().count(), 3);

    // A relist that finds nothing new publishes nothing.
    cache.reset("e1");
    cache.apply(&[
        mk_upsert("10.0.0.1", 2),
        mk_upsert("10.0.0.2", 6),
        mk_upsert("10.0.0.4", 5),
    ]);
    cache.synced(9);
    assert!(matches!(sub.live.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(cache.stats().revision, 9);
}

#[test]
fn a_new_store_epoch_ends_every_subscription_and_starts_over() {
    let cache = mk_cache(100, 100);
    mk_synced(&cache, &["10.0.0.1"], 3);
    let mut old = cache.subscribe(KindSet::ALL, None).unwrap();
    cache.apply(&[mk_upsert("10.0.0.2", 4)]);

    cache.reset("e2");
    assert!(
        cache.subscribe(KindSet::ALL, None).is_err(),
        "no state until the new list completes"
    );
    // What was sent before still arrives, then the subscription ends.
    assert_eq!(live_texts(&mut old), ["+ endpoint 10.0.0.2 @4"]);
    assert!(matches!(old.live.try_recv(), Err(TryRecvError::Closed)));

    cache.apply(&[mk_upsert("10.0.0.9", 2)]);
    cache.synced(2);
    let point = ResumePoint {
        epoch: "e1".into(),
        revision: 4,
    };
    let sub = cache.subscribe(KindSet::ALL, Some(&point)).unwrap();
    assert_eq!(&*sub.epoch, "e2");
    assert_eq!(full_state(&sub), ["+ endpoint 10.0.0.9 @2"]);
}

#[test]
fn a_relist_repairing_a_missed_change_logs_it_after_the_caches_revision() {
    let cache = mk_cache(100, 100);
    mk_synced(&cache, &["10.0.0.1"], 3);
    cache.apply(&[mk_upsert("10.0.0.2", 7)]);

    // The store holds a change at 5 that the feeder never delivered; it has written
    // other keys since (the list is at 9).
    cache.reset("e1");
    cache.apply(&[
        mk_upsert("10.0.0.1", 2),
        mk_upsert("10.0.0.2", 7),
        mk_upsert("10.0.0.3", 5),
    ]);
    cache.synced(9);

    let point = ResumePoint {
        epoch: "e1".into(),
        revision: 7,
    };
    let sub = cache.subscribe(KindSet::ALL, Some(&point)).unwrap();
    let missed: Vec<(Revision, String)> =
        sub.missed().map(|e| (e.revision, text(&e.bytes))).collect();
    assert_eq!(missed, [(8, "+ endpoint 10.0.0.3 @5".to_string())]);
    assert_eq!(sub.revision, 9);
}

#[test]
fn an_interrupted_list_leaves_nothing_behind() {
    let cache = mk_cache(100, 100);
    cache.reset("e1");
    cache.apply(&[mk_upsert("10.0.0.1", 2), mk_upsert("10.0.0.2", 3)]);
    // The feeder's watch failed mid-list; it lists again, and 10.0.0.1 is gone by then.
    cache.reset("e1");
    cache.apply(&[mk_upsert("10.0.0.2", 3)]);
    cache.synced(4);
    let sub = cache.subscribe(KindSet::ALL, None).unwrap();
    assert_eq!(full_state(&sub), ["+ endpoint 10.0.0.2 @3"]);
}
