use bytes::Bytes;

use super::*;
use crate::kvstore::LeaseId;

fn mk_epoch(name: &str) -> Epoch {
    Epoch(name.to_string())
}

fn mk_kv(key: &str, value: &str, create: u64, modified: u64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        create_revision: create,
        mod_revision: modified,
        lease: Some(LeaseId(7)),
    }
}

fn mk_cache(log_capacity: usize) -> KeyCache {
    KeyCache::new(
        42,
        KeyCacheSettings {
            log_capacity,
            notice_capacity: 16,
        },
    )
}

/// A cache that listed `a` (rev 2) and `b` (rev 3) at revision 3.
fn mk_listed(log_capacity: usize) -> KeyCache {
    let cache = mk_cache(log_capacity);
    cache.apply(
        &mk_epoch("e1"),
        [
            WatchEvent::ListStart,
            WatchEvent::Put(mk_kv("k/a", "a1", 2, 2)),
            WatchEvent::Put(mk_kv("k/b", "b1", 3, 3)),
            WatchEvent::ListDone { revision: 3 },
        ],
    );
    cache
}

fn keys_of(read: &RangeRead) -> Vec<(String, String)> {
    read.kvs
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.to_vec()).unwrap(),
                String::from_utf8(r.value.to_vec()).unwrap(),
            )
        })
        .collect()
}

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[test]
fn nothing_is_served_before_the_first_listing_completes() {
    let cache = mk_cache(10);
    let all = KeyRange::prefix("k/");
    assert_eq!(cache.range(&all, 0, 0).unwrap_err(), CacheError::NotReady);
    cache.apply(
        &mk_epoch("e1"),
        [
            WatchEvent::ListStart,
            WatchEvent::Put(mk_kv("k/a", "1", 2, 2)),
        ],
    );
    assert_eq!(cache.range(&all, 0, 0).unwrap_err(), CacheError::NotReady);
    assert!(!*cache.ready_rx().borrow());
    cache.apply(&mk_epoch("e1"), [WatchEvent::ListDone { revision: 2 }]);
    assert!(*cache.ready_rx().borrow());
    let read = cache.range(&all, 0, 0).unwrap();
    assert_eq!(keys_of(&read), [pair("k/a", "1")]);
    assert_eq!(read.kvs[0].lease, 7);
}

#[test]
fn a_read_pinned_to_a_revision_sees_the_keys_as_they_were() {
    let cache = mk_listed(10);
    let epoch = mk_epoch("e1");
    cache.apply(
        &epoch,
        [
            WatchEvent::Put(mk_kv("k/a", "a2", 2, 4)),
            WatchEvent::Put(mk_kv("k/c", "c1", 5, 5)),
            WatchEvent::Delete {
                key: "k/b".into(),
                revision: 6,
            },
        ],
    );
    let all = KeyRange::prefix("k/");
    let now = cache.range(&all, 0, 0).unwrap();
    assert_eq!(now.header.revision, 6);
    assert_eq!(keys_of(&now), [pair("k/a", "a2"), pair("k/c", "c1")]);
    assert_eq!(now.kvs[0].version, 2, "a second write to k/a");
    let at3 = cache.range(&all, 3, 0).unwrap();
    assert_eq!(at3.header.revision, 3);
    assert_eq!(keys_of(&at3), [pair("k/a", "a1"), pair("k/b", "b1")]);
    let at5 = cache.range(&all, 5, 0).unwrap();
    assert_eq!(
        keys_of(&at5),
        [pair("k/a", "a2"), pair("k/b", "b1"), pair("k/c", "c1")]
    );
    // Paging at a pinned revision: a limit, the count of the whole range, and the
    // next page starting after the last key.
    let page = cache.range(&all, 5, 2).unwrap();
    assert_eq!((keys_of(&page).len(), page.count), (2, 3));
    let next = KeyRange::from_request(Bytes::from_static(b"k/b\0"), Bytes::from_static(b"k0"));
    let rest = cache.range(&next, 5, 2).unwrap();
    assert_eq!((keys_of(&rest), rest.count), (vec![pair("k/c", "c1")], 1));

    assert_eq!(
        cache.range(&all, 7, 0).unwrap_err(),
        CacheError::FutureRevision {
            requested: 7,
            current: 6
        }
    );
}

#[test]
fn the_log_forgets_its_oldest_changes() {
    let cache = mk_listed(2);
    let epoch = mk_epoch("e1");
    for rev in 4..=7 {
        cache.apply(
            &epoch,
            [WatchEvent::Put(mk_kv("k/a", &format!("a{rev}"), 2, rev))],
        );
    }
    let all = KeyRange::prefix("k/");
    // Revisions 6 and 7 are held: reads at 5 and later, watches from 6 on.
    assert_eq!(
        keys_of(&cache.range(&all, 5, 0).unwrap())[0],
        pair("k/a", "a5")
    );
    assert_eq!(
        cache.range(&all, 4, 0).unwrap_err(),
        CacheError::Compacted {
            requested: 4,
            compact_revision: 6
        }
    );
    let (_, position) = cache.subscribe().unwrap();
    let replay = cache.replay(position.generation, 6, 7).unwrap();
    assert_eq!(
        replay.iter().map(|c| c.revision).collect::<Vec<_>>(),
        [6, 7]
    );
    assert!(matches!(
        cache.replay(position.generation, 5, 7),
        Err(CacheError::Compacted {
            compact_revision: 6,
            ..
        })
    ));
}

#[tokio::test]
async fn batches_reach_subscribers_and_a_relist_restarts_them() {
    let cache = mk_listed(10);
    let epoch = mk_epoch("e1");
    let (mut rx, position) = cache.subscribe().unwrap();
    assert_eq!(position.revision, 3);
    cache.apply(
        &epoch,
        [
            WatchEvent::Put(mk_kv("k/a", "a2", 2, 4)),
            WatchEvent::Put(mk_kv("k/c", "c1", 5, 5)),
        ],
    );
    let Ok(Notice::Changes(batch)) = rx.recv().await else {
        panic!("a batch")
    };
    assert_eq!(batch.revision, 5);
    assert_eq!(batch.changes.len(), 2);
    // One body per range, shared.
    let range = KeyRange::prefix("k/");
    let first = batch.shared_body(&range, || {
        body_of(&batch.header_field, batch.changes.iter())
    });
    let again = batch.shared_body(&range, || Bytes::from_static(b"not built twice"));
    assert_eq!(first, again);

    // A relist in the same epoch: a new history, the same cluster id.
    cache.apply(
        &epoch,
        [
            WatchEvent::ListStart,
            WatchEvent::Put(mk_kv("k/c", "c1", 5, 5)),
            WatchEvent::ListDone { revision: 9 },
        ],
    );
    let Ok(Notice::Restarted {
        position: relisted,
        compact_revision,
    }) = rx.recv().await
    else {
        panic!("a restart")
    };
    assert_eq!(relisted.cluster_id, position.cluster_id);
    assert_ne!(relisted.generation, position.generation);
    assert_eq!((relisted.revision, compact_revision), (9, 10));
    assert!(matches!(
        cache.replay(position.generation, 4, 5),
        Err(CacheError::Restarted { .. })
    ));

    // A new epoch: another cluster id.
    cache.apply(
        &mk_epoch("e2"),
        [WatchEvent::ListStart, WatchEvent::ListDone { revision: 1 }],
    );
    let Ok(Notice::Restarted {
        position: fresh, ..
    }) = rx.recv().await
    else {
        panic!("a restart")
    };
    assert_ne!(fresh.cluster_id, position.cluster_id);
    assert_eq!(cache.status().unwrap().keys, 0);
}

#[test]
fn cluster_ids_follow_the_epoch() {
    assert_eq!(
        cluster_id_of(&mk_epoch("e1")),
        cluster_id_of(&mk_epoch("e1"))
    );
    assert_ne!(
        cluster_id_of(&mk_epoch("e1")),
        cluster_id_of(&mk_epoch("e2"))
    );
    assert_ne!(cluster_id_of(&mk_epoch("")), 0);
}

#[test]
fn deletions_carry_the_key_and_revision_only() {
    let cache = mk_listed(10);
    cache.apply(
        &mk_epoch("e1"),
        [WatchEvent::Delete {
            key: "k/a".into(),
            revision: 4,
        }],
    );
    let (_, position) = cache.subscribe().unwrap();
    let replay = cache.replay(position.generation, 4, 4).unwrap();
    let event = replay[0].to_wire(true);
    let kv = event.kv.unwrap();
    assert_eq!(
        event.r#type,
        crate::etcd_api::wire::mvccpb::event::EventType::Delete as i32
    );
    assert_eq!(
        (kv.key, kv.mod_revision, kv.create_revision),
        (Bytes::from_static(b"k/a"), 4, 0)
    );
    assert_eq!(event.prev_kv.unwrap().value, Bytes::from_static(b"a1"));
}

#[test]
fn pages_pinned_to_a_revision_count_and_read_the_keys_as_they_were() {
    let cache = mk_cache(10_000);
    let epoch = mk_epoch("e1");
    let key = |peer: u64, host: u64| format!("cilium/cache/ip/v1/p{peer}/10.{peer}.0.{host}");
    let mut listing = vec![WatchEvent::ListStart];
    for peer in 0..3 {
        for host in 0..400 {
            listing.push(WatchEvent::Put(mk_kv(&key(peer, host), "v1", 1, 1)));
        }
    }
    listing.push(WatchEvent::ListDone { revision: 1 });
    cache.apply(&epoch, listing);
    // After revision 1: peer 1's keys deleted, peer 2's rewritten, a new peer 3.
    let mut revision = 1;
    let mut changes = Vec::new();
    for host in 0..400 {
        revision += 1;
        changes.push(WatchEvent::Delete {
            key: key(1, host),
            revision,
        });
        revision += 1;
        changes.push(WatchEvent::Put(mk_kv(&key(2, host), "v2", 1, revision)));
        revision += 1;
        changes.push(WatchEvent::Put(mk_kv(
            &key(3, host),
            "v1",
            revision,
            revision,
        )));
    }
    cache.apply(&epoch, changes);

    // Paged as Cilium pages: 256 a page, the next after the last key read.
    let page_through = |at: i64| {
        let end = Bytes::from_static(b"cilium/cache/ip/v10");
        let mut from = Bytes::from_static(b"cilium/cache/ip/v1/");
        let (mut read, mut counts) = (Vec::new(), Vec::new());
        loop {
            let range = KeyRange::from_request(from.clone(), end.clone());
            let page = cache.range(&range, at, 256).unwrap();
            counts.push(page.count);
            read.extend(keys_of(&page));
            if page.count <= page.kvs.len() {
                return (read, counts);
            }
            let mut next = page.kvs.last().unwrap().key.to_vec();
            next.push(0);
            from = Bytes::from(next);
        }
    };
    let (then, counts) = page_through(1);
    assert_eq!(then.len(), 1200);
    assert_eq!(counts, [1200, 944, 688, 432, 176]);
    assert!(then.iter().all(|(_, v)| v == "v1"));
    assert!(then.windows(2).all(|w| w[0].0 < w[1].0), "ascending");
    assert!(
        then.iter()
            .any(|(k, _)| k.starts_with("cilium/cache/ip/v1/p1/"))
    );
    assert!(
        !then
            .iter()
            .any(|(k, _)| k.starts_with("cilium/cache/ip/v1/p3/"))
    );

    let (now, counts) = page_through(0);
    assert_eq!(now.len(), 1200);
    assert_eq!(counts[0], 1200);
    assert!(
        !now.iter()
            .any(|(k, _)| k.starts_with("cilium/cache/ip/v1/p1/"))
    );
    let rewritten = now.iter().filter(|(_, v)| v == "v2").count();
    assert_eq!(rewritten, 400);
    assert_eq!(cache.status().unwrap().keys, 1200);
}
