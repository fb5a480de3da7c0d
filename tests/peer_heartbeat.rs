//! The peer's heartbeat reaches the agent over gRPC: a real apiserver (embedded store,
//! exporter rewriting `cilium/.heartbeat`) and a real agent over mutual TLS. The agent's
//! `remote_cluster_heartbeat_age_seconds` is small after a rewrite, grows while the
//! heartbeat is not rewritten (on an idle, healthy link, and after the apiserver is
//! gone), and is absent for a peer whose server tells no heartbeat (one that predates
//! it: the test kit's server, which serves the store without an exporter).
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fleetmesh::apiserver::Apiserver;
use fleetmesh::grpc::AllowedPeers;
use fleetmesh::observe::AgentClient;
use support::mesh::{
    MeshPki, PeerServer, mk_cluster, mk_state, mk_store, start_agent, start_manifest_member_with,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(20);
/// The apiserver's heartbeat interval here: long enough to watch the age grow between
/// two rewrites, short enough to see the next one.
const HEARTBEAT_SECONDS: u64 = 3;

/// `c2`'s real apiserver over an empty manifest directory, rewriting its heartbeat every
/// [`HEARTBEAT_SECONDS`].
async fn start_apiserver(pki: &MeshPki) -> Apiserver {
    let extra = format!("export: {{heartbeatSeconds: {HEARTBEAT_SECONDS}}}\n");
    start_manifest_member_with(pki, "c2", 2, None, &extra)
        .await
        .0
}

/// The agent's `/metrics` text.
async fn metrics(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(" 200 "), "{head}");
    body.to_string()
}

/// The heartbeat age the agent exports for `peer`, if it exports one.
async fn heartbeat_age(addr: SocketAddr, peer: &str) -> Option<f64> {
    let text = metrics(addr).await;
    let prefix = format!(
        "fleetmesh_agent_remote_cluster_heartbeat_age_seconds{{target_cluster=\"{peer}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

/// Polls the agent until `peer`'s heartbeat age satisfies `wanted`; returns it.
async fn wait_for_age(
    addr: SocketAddr,
    peer: &str,
    what: &str,
    wanted: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let age = heartbeat_age(addr, peer).await;
        if let Some(age) = age.filter(|a| wanted(*a)) {
            return age;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{peer}'s heartbeat age never became {what}; last {age:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_peers_heartbeat_age_is_exported_grows_when_not_rewritten_and_is_absent_for_old_peers()
{
    let pki = MeshPki::new();
    let apiserver = start_apiserver(&pki).await;
    // c3 is served without an exporter: no heartbeat is ever told, as by a server that
    // predates it.
    let c3 = mk_cluster("c3", 3);
    let old = PeerServer::start(
        c3.clone(),
        mk_store(&c3, &mk_state(&c3, 2)).await,
        pki.server_files("c3"),
        AllowedPeers::Any,
        0,
    )
    .await;
    let agent = start_agent(
        &pki,
        "c1",
        1,
        &[("c2", apiserver.grpc_addr.unwrap()), ("c3", old.addr)],
        "",
    )
    .await;
    let client = AgentClient::new(&format!("http://{}", agent.api_addr)).unwrap();
    support::wait_until_async("both links ready", || async {
        let status = client.status().await.unwrap();
        status.peers.iter().filter(|p| !p.local && p.ready).count() == 2
    })
    .await;

    // Present and small: the link was told the apiserver's last rewrite.
    let api = agent.api_addr;
    let fresh = wait_for_age(api, "c2", "below a second", |a| a < 1.0).await;
    assert!(fresh >= 0.0);
    let status = client.status().await.unwrap();
    let c2 = status.peers.iter().find(|p| p.cluster == "c2").unwrap();
    assert!(c2.heartbeat_unix_ms.is_some(), "{c2:?}");

    // Between two rewrites the idle link's age grows past what a frame-by-frame reading
    // could hide, then a rewrite reaches the idle link on its own and the age drops.
    let grown = wait_for_age(api, "c2", "over two seconds", |a| a >= 2.0).await;
    assert!(grown < HEARTBEAT_SECONDS as f64 + 1.0, "{grown}");
    wait_for_age(api, "c2", "small again after the next rewrite", |a| a < 1.0).await;

    // The old peer is ready and synced, and its age is absent, not 0.
    assert_eq!(heartbeat_age(api, "c3").await, None);
    let status = client.status().await.unwrap();
    let c3_status = status.peers.iter().find(|p| p.cluster == "c3").unwrap();
    assert!(
        c3_status.ready && c3_status.heartbeat_unix_ms.is_none(),
        "{c3_status:?}"
    );
    assert!(c3_status.counts.endpoints > 0, "{c3_status:?}");

    // The apiserver goes away: nobody rewrites its heartbeat, and the age keeps growing
    // beyond the interval.
    apiserver.stop(Duration::from_secs(1)).await;
    let stale = wait_for_age(api, "c2", "beyond the interval", |a| {
        a > HEARTBEAT_SECONDS as f64 + 0.5
    })
    .await;
    assert!(stale > HEARTBEAT_SECONDS as f64, "{stale}");
    let status = client.status().await.unwrap();
    let c2 = status.peers.iter().find(|p| p.cluster == "c2").unwrap();
    assert!(!c2.connected && c2.heartbeat_unix_ms.is_some(), "{c2:?}");
    old.stop().await;
}
