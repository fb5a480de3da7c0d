//! The agent's HTTP API and the apiserver's health port under idle and header-trickling
//! clients (issue 15, defect 3): a connection cap, and connections that send no complete
//! request head in time are closed.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleetmesh::agent::{Agent, AgentConfig};
use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use fleetmesh::observe::http::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server closes `tcp` within `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

async fn get_healthz(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    answer
}

/// Idle connections up to the cap, one that trickles its request head, and one over the
/// cap, against the HTTP server at `addr`.
async fn idle_and_trickling_clients_are_cut(addr: SocketAddr) {
    let opened = Instant::now();
    let mut trickling = TcpStream::connect(addr).await.unwrap();
    trickling
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut idle = Vec::new();
    for _ in 1..MAX_CONNECTIONS {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Every slot is taken: one more is closed at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(1)).await,
        "a connection over the cap was kept"
    );

    // The trickler keeps sending, a header line at a time, never the end of its head.
    let trickle = tokio::spawn(async move {
        for i in 0.. {
            let line = format!("X-Slow-{i}: 1\r\n");
            if trickling.write_all(line.as_bytes()).await.is_err() {
                return opened.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        unreachable!()
    });
    let deadline = HEADER_READ_TIMEOUT + Duration::from_secs(3);
    for tcp in &mut idle {
        let left = deadline.saturating_sub(opened.elapsed());
        assert!(
            closed_within(tcp, left).await,
            "an idle connection was kept"
        );
    }
    let cut_after = tokio::time::timeout(deadline, trickle)
        .await
        .unwrap()
        .unwrap();
    assert!(
        cut_after < deadline,
        "the trickler was cut after {cut_after:?}"
    );
    // And the port serves again.
    assert!(get_healthz(addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_api_caps_connections_and_cuts_idle_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("remotes")).unwrap();
    let text = format!(
        "cluster: {{name: c2, id: 2}}\nremotesDir: {:?}\napi: {{listen: \"127.0.0.1:0\"}}\n",
        dir.path().join("remotes")
    );
    let config = AgentConfig::parse(&text, &dir.path().join("agent.yaml")).unwrap();
    let agent = Agent::start(config).await.unwrap();
    idle_and_trickling_clients_are_cut(agent.api_addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_health_port_caps_connections_and_cuts_idle_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    let text = format!(
        "cluster: {{name: c1, id: 1}}\nsource: {{manifests: {:?}}}\nhealth: {{listen: \"127.0.0.1:0\"}}\n",
        dir.path().join("manifests")
    );
    let config = ApiserverConfig::parse(&text, &dir.path().join("apiserver.yaml")).unwrap();
    let apiserver = Apiserver::start(config).await.unwrap();
    idle_and_trickling_clients_are_cut(apiserver.health_addr).await;
}
