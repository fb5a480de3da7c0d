//! A watcher that never reads (issue 15, defect 5): a raw HTTP/2 client opens a Watch,
//! takes its first frame, and then never releases its flow-control window while still
//! answering pings (its connection task keeps running). Under churn the server must cut
//! it off within `STALL_LIMIT` and a second, and count it — while a watcher that reads
//! on the same server keeps going.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use fleetmesh::apiserver::CacheSink;
use fleetmesh::cache::{CacheSettings, WatchCache};
use fleetmesh::grpc::{AllowedPeers, GrpcServer, STALL_LIMIT};
use fleetmesh::kvstore::state_watch::{StateWatchStats, follow};
use fleetmesh::kvstore::{Store, codec, keys};
use fleetmesh::model::{Endpoint, IdentityId, IpPrefix};
use fleetmesh::proto::v1;
use prost::Message;
use rustls::pki_types::ServerName;
use support::mesh::{MeshPki, mk_cluster, mk_state, mk_store};
use tokio::net::{TcpListener, TcpStream};

/// The process's resident memory, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

/// A gRPC Watch of everything over raw HTTP/2 to `addr`: the response body, the task
/// running the connection (it ends when the server closes it).
async fn raw_watch(
    pki: &MeshPki,
    addr: std::net::SocketAddr,
) -> (
    h2::RecvStream,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let files = pki.client_files("c2");
    let config = fleetmesh::tls::load_client_config(&files).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!("https://{addr}/fleetmesh.v1.Mesh/Watch"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let message = v1::WatchRequest::default().encode_to_vec();
    let mut framed = BytesMut::new();
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    send.send_data(framed.freeze(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    (response.into_body(), connection)
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
    let (mut reader, _reader_conn) = raw_watch(&pki, addr).await;
    let read = tokio::spawn(async move {
        let mut bytes = 0usize;
        while let Some(Ok(data)) = reader.data().await {
            bytes += data.len();
            let _ = reader.flow_control().release_capacity(data.len());
        }
        bytes
    });
    let (mut stuck, stuck_conn) = raw_watch(&pki, addr).await;
    let first: Bytes = stuck.data().await.unwrap().unwrap();
    assert!(!first.is_empty());

    // Churn: every pod's identity flips, over and over, ~2,000 changes a second.
    let churn_store = store.clone();
    let churn_cluster = c1.clone();
    let churn = tokio::spawn(async move {
        for round in 0u32.. {
            for i in 0..100u32 {
                let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
                let local = 1 + (i + round) % 2;
                let id = IdentityId::new(churn_cluster.identity_range().first() + local).unwrap();
                let mut e = Endpoint::new(IpPrefix::host(ip.parse().unwrap()), id);
                e.namespace = Some("test".into());
                e.pod = Some(format!("pod-{ip}"));
                churn_store
                    .put(&keys::ip(e.prefix), codec::encode_endpoint(&e), None)
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    });

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
