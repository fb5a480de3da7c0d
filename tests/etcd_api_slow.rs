//! A watch stream whose client stops reading: it catches up from the revision log while
//! the log holds what it missed, and is canceled with a compact revision (its client
//! re-lists) once it does not — and the other streams get every change meanwhile. A
//! client that reads slower than the changes come gets them in fuller responses.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::WatchOptions;
use fleetmesh::etcd_api::{EtcdApi, EtcdApiStats, KeyCache, KeyCacheSettings, ReadRules};
use fleetmesh::grpc::AllowedPeers;
use fleetmesh::kvstore::{Epoch, KeyValue, WatchEvent};
use fleetmesh::tls::spawn_reload;
use rustls::ServerConfig;
use support::etcd_api::EtcdApiServer;
use support::mesh::{MeshPki, mk_name};

const PREFIX: &str = "cilium/state/slow/";
/// Changes written while the slow client reads nothing: far more than its HTTP/2 window,
/// its stream's queue and the broadcast hold.
const CHANGES: i64 = 1500;
/// Batches the broadcast buffers per stream.
const NOTICES: usize = 8;

/// An etcd API over `cache` on 127.0.0.1; returns its endpoint and counters.
async fn serve(cache: Arc<KeyCache>, pki: &MeshPki) -> (String, EtcdApiStats) {
    let tls =
        spawn_reload::<ServerConfig>(pki.server_files("c1"), Duration::from_secs(60)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let api = EtcdApi::new(cache, AllowedPeers::Any, ReadRules::remote(&mk_name("c1")));
    let stats = api.stats();
    let incoming = fleetmesh::tls::server::incoming(listener, tls.config_rx());
    tokio::spawn(async move {
        let _tls = tls;
        api.serve(incoming, std::future::pending()).await.unwrap();
    });
    (endpoint, stats)
}

fn mk_cache(log_capacity: usize) -> Arc<KeyCache> {
    mk_cache_buffering(log_capacity, NOTICES)
}

fn mk_cache_buffering(log_capacity: usize, notice_capacity: usize) -> Arc<KeyCache> {
    let cache = Arc::new(KeyCache::new(
        1,
        KeyCacheSettings {
            log_capacity,
            notice_capacity,
        },
    ));
    cache.apply(
        &Epoch("e1".into()),
        [WatchEvent::ListStart, WatchEvent::ListDone { revision: 1 }],
    );
    cache
}

async fn connect(pki: &MeshPki, endpoint: &str) -> etcd_client::Client {
    EtcdApiServer::client_to(endpoint, &pki.client_files("c2")).await
}

/// How far the writer may run ahead of the fast watcher: well inside the smallest log
/// (100), so the fast watcher is fast by construction — on one thread, a writer that
/// never waited could outrun any reader, and the log with it.
const FAST_WITHIN: i64 = 40;

/// Writes revisions 2..=CHANGES+1, one batch each, with values big enough to fill a
/// client's window quickly; a fast watcher reads them all meanwhile, in order.
async fn write_while_a_fast_watcher_reads(cache: &KeyCache, fast: &mut etcd_client::WatchStream) {
    let value = Bytes::from(vec![b'x'; 16 * 1024]);
    let read_upto = std::sync::atomic::AtomicI64::new(1);
    let reader = async {
        let mut next = 2;
        while next <= CHANGES + 1 {
            let resp = tokio::time::timeout(Duration::from_secs(10), fast.message())
                .await
                .expect("the fast watcher is never held up")
                .unwrap()
                .unwrap();
            for event in resp.events() {
                assert_eq!(event.kv().unwrap().mod_revision(), next);
                next += 1;
            }
            read_upto.store(next - 1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let writer = async {
        for revision in 2..=CHANGES + 1 {
            while revision - read_upto.load(std::sync::atomic::Ordering::Relaxed) > FAST_WITHIN {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let kv = KeyValue {
                key: format!("{PREFIX}{revision}"),
                value: value.clone(),
                create_revision: revision as u64,
                mod_revision: revision as u64,
                lease: None,
            };
            cache.apply(&Epoch("e1".into()), [WatchEvent::Put(kv)]);
            if revision % 50 == 0 {
                // Let the streams run, as a real feed does between batches.
                tokio::task::yield_now().await;
            }
        }
    };
    tokio::join!(reader, writer);
}

async fn watch(client: &mut etcd_client::Client) -> etcd_client::WatchStream {
    let mut stream = client
        .watch(PREFIX, Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    stream
}

#[tokio::test]
async fn a_slow_stream_catches_up_from_the_log_while_it_holds_the_changes() {
    let pki = MeshPki::new();
    let cache = mk_cache(10_000);
    let (endpoint, stats) = serve(cache.clone(), &pki).await;
    let mut slow = watch(&mut connect(&pki, &endpoint).await).await;
    let mut fast = watch(&mut connect(&pki, &endpoint).await).await;
    write_while_a_fast_watcher_reads(&cache, &mut fast).await;

    let mut next = 2;
    while next <= CHANGES + 1 {
        let resp = tokio::time::timeout(Duration::from_secs(10), slow.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!resp.canceled(), "{resp:?}");
        for event in resp.events() {
            assert_eq!(event.kv().unwrap().mod_revision(), next);
            next += 1;
        }
    }
    assert!(
        stats.streams_caught_up() >= 1,
        "the slow stream fell behind"
    );
    assert_eq!(stats.watches_dropped(), 0);
}

#[tokio::test]
async fn a_slow_stream_past_the_log_is_canceled_with_a_compact_revision() {
    let pki = MeshPki::new();
    let cache = mk_cache(100);
    let (endpoint, stats) = serve(cache.clone(), &pki).await;
    let mut slow_client = connect(&pki, &endpoint).await;
    let mut slow = watch(&mut slow_client).await;
    let mut fast = watch(&mut connect(&pki, &endpoint).await).await;
    write_while_a_fast_watcher_reads(&cache, &mut fast).await;

    // What it had been sent, in order, then the cancel.
    let mut next = 2;
    let compact_revision = loop {
        let resp = tokio::time::timeout(Duration::from_secs(10), slow.message())
            .await
            .unwrap_or_else(|_| panic!("stuck after {next}: {stats:?}"))
            .unwrap()
            .unwrap();
        if resp.canceled() {
            break resp.compact_revision();
        }
        for event in resp.events() {
            assert_eq!(event.kv().unwrap().mod_revision(), next);
            next += 1;
        }
    };
    assert!(next < CHANGES + 1, "it had fallen behind");
    assert!(compact_revision > next, "{compact_revision} after {next}");
    assert_eq!(stats.watches_dropped(), 1);

    // It re-lists, as etcd's clients do, and finds everything.
    let listed = slow_client
        .get(
            PREFIX,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(listed.count(), CHANGES);
    assert_eq!(listed.header().unwrap().revision(), CHANGES + 1);
}

#[tokio::test]
async fn a_slow_reader_gets_the_batches_waiting_for_it_in_fuller_responses() {
    let pki = MeshPki::new();
    // The broadcast holds every batch: the stream never falls behind it.
    let cache = mk_cache_buffering(10_000, 4096);
    let (endpoint, stats) = serve(cache.clone(), &pki).await;
    let mut slow = watch(&mut connect(&pki, &endpoint).await).await;
    // One change a batch, written before the client reads any.
    let value = Bytes::from(vec![b'x'; 16 * 1024]);
    for revision in 2..=CHANGES + 1 {
        let kv = KeyValue {
            key: format!("{PREFIX}{revision}"),
            value: value.clone(),
            create_revision: revision as u64,
            mod_revision: revision as u64,
            lease: None,
        };
        cache.apply(&Epoch("e1".into()), [WatchEvent::Put(kv)]);
        if revision % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }

    let (mut next, mut responses) = (2, 0);
    while next <= CHANGES + 1 {
        let resp = tokio::time::timeout(Duration::from_secs(10), slow.message())
            .await
            .unwrap_or_else(|_| panic!("stuck after {next}: {stats:?}"))
            .unwrap()
            .unwrap();
        assert!(!resp.canceled(), "{resp:?}");
        for event in resp.events() {
            assert_eq!(event.kv().unwrap().mod_revision(), next);
            next += 1;
        }
        assert_eq!(resp.header().unwrap().revision(), next - 1);
        responses += 1;
    }
    assert!(
        responses <= CHANGES / 4,
        "{responses} responses for {CHANGES} changes"
    );
    assert_eq!(stats.streams_caught_up(), 0);
    assert_eq!(stats.watches_dropped(), 0);
}
