//! A watcher that never reads (issue 15, defect 5): a raw HTTP/2 client opens a Watch,
//! takes its first frame, and then never releases its flow-control window while still
//! answering pings (its connection task keeps running). Under churn the server must cut
//! it off within `STALL_LIMIT` and a second, and count it — while a watcher that reads
//! on the same server keeps going.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetmesh::apiserver::CacheSink;
use fleetmesh::cache::{CacheSettings, WatchCache};
use fleetmesh::grpc::{AllowedPeers, GrpcServer, STALL_LIMIT};
use fleetmesh::kvstore::Store;
use fleetmesh::kvstore::state_watch::{StateWatchStats, follow};
use support::mesh::{MeshPki, mk_cluster, mk_state, mk_store};
use support::stuck_watcher::{churn_endpoints, raw_watch};
use tokio::net::TcpListener;

/// The process's resident memory, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_is_cut_off_and_counted() {
    let pki = MeshPki::new();
    let c1 = mk_cluster("c1", 1);
    let store = mk_store(&c1, &mk_state(&c1, 100)).await;
    let cache = Arc::new(WatchCache::new(
        fleetmesh::proto::encode_event,
        CacheSettings::default(),
    ));
    let feed = tokio::spawn(follow(
        store.clone() as Arc<dyn Store>,
        c1.clone(),
        CacheSink(cache.clone()),
        StateWatchStats::default(),
    ));
    let server_files = pki.server_files("c1");
    let configs =
        fleetmesh::tls::spawn_reload::<rustls::ServerConfig>(server_files, Duration::from_secs(60))
            .unwrap();
    let grpc = GrpcServer::new(cache.clone(), c1.clone(), AllowedPeers::Any);
    let stats = grpc.stats();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = fleetmesh::tls::server::incoming(listener, configs.config_rx());
    let server = tokio::spawn(async move { grpc.serve(incoming, std::future::pending()).await });

    // One watcher that reads everything, one that stops after its first frame.
    let (mut reader, _reader_conn) = raw_watch(&pki, addr, "c2").await;
    let read = tokio::spawn(async move {
        let mut bytes = 0usize;
        while let Some(Ok(data)) = reader.data().await {
            bytes += data.len();
            let _ = reader.flow_control().release_capacity(data.len());
        }
        bytes
    });
    let (mut stuck, stuck_conn) = raw_watch(&pki, addr, "c2").await;
    let first: Bytes = stuck.data().await.unwrap().unwrap();
    assert!(!first.is_empty());

    // Churn: every pod's identity flips, over and over, ~2,000 changes a second.
    let churn = churn_endpoints(store.clone(), c1.clone(), 100);

    let stuck_at = Instant::now();
    let rss_at_stall = rss_mib();
    let mut rss_peak = rss_at_stall;
    let limit = STALL_LIMIT + Duration::from_secs(3);
    while !stuck_conn.is_finished() {
        assert!(
            stuck_at.elapsed() < limit,
            "the stuck watcher is still connected after {:?}",
            stuck_at.elapsed()
        );
        rss_peak = rss_peak.max(rss_mib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut_after = stuck_at.elapsed();
    assert_eq!(stats.stalled(), 1);
    // The reading watcher is still served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!read.is_finished(), "the reading watcher was cut too");
    eprintln!(
        "stuck watcher cut after {cut_after:?}; process RSS {rss_at_stall} MiB when it stopped \
         reading, at most {rss_peak} MiB until the cut"
    );
    churn.abort();
    feed.abort();
    server.abort();
}
