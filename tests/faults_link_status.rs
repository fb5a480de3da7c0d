//! What a link reports under faults (issue 15): `failures` counts failed attempts and
//! broken sessions, `reconnects` counts reconnections (not attempts), the counts say what
//! the view holds of the peer even while its link is down or starting over, and a silent
//! partition is noticed within the configured keepalive.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleetmesh::agent::{Agent, AgentConfig};
use fleetmesh::grpc::AllowedPeers;
use fleetmesh::mesh::PeerStatus;
use fleetmesh::remote::LinkSettings;
use support::mesh::{MeshPki, PeerServer, mk_cluster, mk_name, mk_state, mk_store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const TIMEOUT: Duration = Duration::from_secs(20);

/// An agent of c2 linked to c1 at `addr`; `extra` is more YAML for its config.
async fn start_agent(pki: &MeshPki, addr: SocketAddr, extra: &str) -> Agent {
    pki.peer_config("c1", addr, &pki.client_files("c2"));
    let text = format!(
        "cluster: {{name: c2, id: 2}}\nremotesDir: {:?}\napi: {{listen: \"127.0.0.1:0\"}}\n{extra}",
        pki.dir().join("remotes")
    );
    let mut config = AgentConfig::parse(&text, &pki.dir().join("agent.yaml")).unwrap();
    config.link = LinkSettings {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        keepalive: config.link.keepalive,
        ..LinkSettings::default()
    };
    Agent::start(config).await.unwrap()
}

fn status(agent: &Agent) -> PeerStatus {
    agent.statuses().into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_count_failed_attempts_reconnects_count_reconnections_and_counts_stay() {
    let pki = MeshPki::new();
    let c1 = mk_cluster("c1", 1);
    let store = mk_store(&c1, &mk_state(&c1, 30)).await;
    let server = PeerServer::start(
        c1.clone(),
        store,
        pki.server_files("c1"),
        AllowedPeers::Any,
        0,
    )
    .await;
    let agent = start_agent(&pki, server.addr, "").await;
    support::wait_until("the link to be ready", TIMEOUT, || status(&agent).ready).await;
    let held = agent.view.read().counts(&mk_name("c1")).unwrap();
    assert_eq!(held.endpoints, 30);
    assert_eq!((status(&agent).failures, status(&agent).reconnects), (0, 0));

    // The peer goes away: the session breaks, and every attempt after it fails.
    let (store, port) = server.stop().await;
    support::wait_until("attempts to fail", TIMEOUT, || status(&agent).failures >= 3).await;
    let down = status(&agent);
    assert!(!down.connected);
    assert_eq!(
        down.reconnects, 0,
        "attempts counted as reconnections: {down:?}"
    );
    assert_eq!(down.counts, held, "the view still holds c1's state");

    // The peer comes back: one reconnection.
    let server = PeerServer::start(
        c1.clone(),
        store,
        pki.server_files("c1"),
        AllowedPeers::Any,
        port,
    )
    .await;
    support::wait_until("the link to be ready again", TIMEOUT, || {
        status(&agent).ready
    })
    .await;
    let up = status(&agent);
    assert_eq!(up.reconnects, 1, "{up:?}");
    assert!(up.failures >= down.failures);
    assert_eq!(up.counts, held);

    // Down again, and the peer file changes meanwhile: a new link starts over, and the
    // view still holds what the old one put there.
    let (_store, _port) = server.stop().await;
    support::wait_until("the link to fail", TIMEOUT, || !status(&agent).connected).await;
    let old_failures = status(&agent).failures;
    let file = pki.dir().join("remotes/c1.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("# rewritten\n{text}")).unwrap();
    support::wait_until("the new link to fail", TIMEOUT, || {
        let s = status(&agent);
        s.failures >= 1 && s.failures < old_failures
    })
    .await;
    assert_eq!(agent.view.read().counts(&mk_name("c1")).unwrap(), held);
    assert_eq!(status(&agent).counts, held);
}

/// Forwards connections to `upstream` until `partitioned` is set; then every connection
/// goes silent both ways (held open, nothing read or written), as under a partition.
async fn partitioning_proxy(upstream: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (partition_tx, partition_rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(upstream).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pipe(client_read, server_write, partition_rx.clone()));
            tokio::spawn(pipe(server_read, client_write, partition_rx.clone()));
        }
    });
    (addr, partition_tx)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    partitioned: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut silent = partitioned.clone();
    loop {
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let cut = *partitioned.borrow();
                    if cut || to.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            },
            () = async { let _ = silent.wait_for(|p| *p).await; } => break,
        }
    }
    // Silent from now on, the sockets held open.
    std::future::pending::<()>().await;
    drop((from, to));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_is_noticed_within_the_configured_keepalive() {
    let pki = MeshPki::new();
    let c1 = mk_cluster("c1", 1);
    let store = mk_store(&c1, &mk_state(&c1, 5)).await;
    let server = PeerServer::start(c1, store, pki.server_files("c1"), AllowedPeers::Any, 0).await;
    let (proxy, partition) = partitioning_proxy(server.addr).await;
    let agent = start_agent(
        &pki,
        proxy,
        "keepaliveSeconds: 1\nkeepaliveTimeoutSeconds: 1\n",
    )
    .await;
    support::wait_until("the link to be ready", TIMEOUT, || status(&agent).ready).await;

    let partitioned_at = Instant::now();
    partition.send_replace(true);
    support::wait_until("the partition to be noticed", TIMEOUT, || {
        !status(&agent).connected
    })
    .await;
    let noticed = partitioned_at.elapsed();
    eprintln!("a silent partition noticed after {noticed:?} (keepalive 1 s + 1 s)");
    assert!(
        noticed < Duration::from_secs(4),
        "noticed after {noticed:?}"
    );
    drop(server);
}
