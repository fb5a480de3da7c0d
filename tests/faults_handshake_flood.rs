//! Pre-authentication starvation of the gRPC port (issue 15, defect 3): thousands of
//! loopback connections that each send the first bytes of a ClientHello and never finish
//! it, re-opened as soon as they are dropped, while a real agent connects. The flood is
//! bounded in count and time and stays on loopback.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetmesh::agent::{Agent, AgentConfig};
use fleetmesh::grpc::AllowedPeers;
use fleetmesh::remote::LinkSettings;
use support::mesh::{MeshPki, PeerServer, mk_cluster, mk_state, mk_store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// Connections the flood holds open at once.
const FLOOD: usize = 2000;
/// The first 10 bytes of a ClientHello: the record header (handshake, length 512) and
/// the start of the message (client hello, length 508, version 3.3) — the rest never
/// comes.
const HELLO_START: [u8; 10] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
/// How long a flood client waits before re-opening a dropped connection: eager, yet not
/// a busy loop on the test machine.
const REOPEN_PAUSE: Duration = Duration::from_millis(50);
/// A real peer connects within this long of starting, flood or not.
const CONNECT_WITHIN: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_secs(30);

/// A running flood; it stops when dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    connects: Arc<AtomicU64>,
}

impl Flood {
    /// `FLOOD` connections to `server`, spread over the loopback source addresses
    /// 127.0.0.`first`.. (`per_source` from each).
    fn start(server: SocketAddr, first: u8, per_source: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(AtomicU64::new(0));
        let tasks = (0..FLOOD)
            .map(|i| {
                let source = IpAddr::from([127, 0, 0, first + (i / per_source) as u8]);
                let (stop, connects) = (stop.clone(), connects.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = hold_one(server, source, &connects).await;
                        tokio::time::sleep(REOPEN_PAUSE).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            connects,
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One flood connection: opened from `source`, the start of a hello, then held until the
/// server drops it.
async fn hold_one(server: SocketAddr, source: IpAddr, connects: &AtomicU64) -> std::io::Result<()> {
    let socket = TcpSocket::new_v4()?;
    // Closed with a reset: tens of thousands of connections leave no TIME_WAIT behind to
    // hold ports other tests bind next.
    socket.set_zero_linger()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut tcp = tokio::time::timeout(Duration::from_secs(1), socket.connect(server)).await??;
    connects.fetch_add(1, Ordering::Relaxed);
    tcp.write_all(&HELLO_START).await?;
    let mut buf = [0u8; 256];
    while tcp.read(&mut buf).await? > 0 {}
    Ok(())
}

/// Starts an agent of `local` linked to c1 at `addr`; returns it and when it started.
async fn start_agent(pki: &MeshPki, local: &str, id: u32, addr: SocketAddr) -> Agent {
    let client = pki.client_files(local);
    let remotes = pki.dir().join(format!("remotes-{local}"));
    std::fs::create_dir_all(&remotes).unwrap();
    let config = pki.peer_config("c1", addr, &client);
    drop(config);
    std::fs::rename(pki.dir().join("remotes/c1.yaml"), remotes.join("c1.yaml")).unwrap();
    let text = format!(
        "cluster: {{name: {local}, id: {id}}}\nremotesDir: {remotes:?}\napi: {{listen: \"127.0.0.1:0\"}}\n",
    );
    let mut config =
        AgentConfig::parse(&text, &pki.dir().join(format!("agent-{local}.yaml"))).unwrap();
    config.link = LinkSettings {
        backoff_max: Duration::from_millis(500),
        ..LinkSettings::default()
    };
    Agent::start(config).await.unwrap()
}

/// How long an agent of `local` takes from its start to hold c1's synced state.
async fn connect_time(pki: &MeshPki, local: &str, id: u32, addr: SocketAddr) -> (Duration, Agent) {
    let started = Instant::now();
    let agent = start_agent(pki, local, id, addr).await;
    support::wait_until("the agent to sync c1", TIMEOUT, || {
        agent.statuses().iter().any(|s| s.synced.all())
    })
    .await;
    (started.elapsed(), agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_does_not_keep_a_real_agent_out() {
    let pki = MeshPki::new();
    let c1 = mk_cluster("c1", 1);
    let store = mk_store(&c1, &mk_state(&c1, 20)).await;
    let server = PeerServer::start(c1, store, pki.server_files("c1"), AllowedPeers::Any, 0).await;

    let (quiet, _a) = connect_time(&pki, "c2", 2, server.addr).await;

    // One flooding host: 2,000 connections from 127.0.0.2.
    let flood = Flood::start(server.addr, 2, FLOOD);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (one_host, _b) = connect_time(&pki, "c3", 3, server.addr).await;
    let one_host_connects = flood.connects.load(Ordering::Relaxed);
    drop(flood);

    // Many flooding hosts (100 × 20 connections), each within the per-source limit: a
    // new agent on a host whose peers connected before keeps a slot.
    let flood = Flood::start(server.addr, 2, FLOOD / 100);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (many_hosts, _c) = connect_time(&pki, "c4", 4, server.addr).await;
    let many_hosts_connects = flood.connects.load(Ordering::Relaxed);
    drop(flood);

    eprintln!(
        "connect time: {quiet:?} without a flood; {one_host:?} during a flood from one host \
         ({one_host_connects} connects); {many_hosts:?} during a flood from 100 hosts \
         ({many_hosts_connects} connects)"
    );
    assert!(
        one_host_connects >= FLOOD as u64,
        "the flood never got going"
    );
    assert!(
        many_hosts_connects >= FLOOD as u64,
        "the flood never got going"
    );
    assert!(
        one_host < CONNECT_WITHIN,
        "{one_host:?} during a flood from one host"
    );
    assert!(
        many_hosts < CONNECT_WITHIN,
        "{many_hosts:?} during a flood from 100 hosts"
    );
    drop(server);
}
