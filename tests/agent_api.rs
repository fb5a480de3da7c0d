//! An agent started in-process on a temporary remotes directory, observed only through
//! its query API (the client the CLI uses): peers appear when their file is written,
//! reconnect when it changes and disappear when it is removed; a peer that cannot be
//! reached shows as not connected, with a last failure naming its address.

// Test helpers outside `#[test]` functions panic on failure too, by design.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use fleetmesh::agent::{Agent, AgentConfig};
use fleetmesh::certs::Ca;
use fleetmesh::certs::files::write_pem_files;
use fleetmesh::mesh::PeerStatus;
use fleetmesh::model::ClusterName;
use fleetmesh::observe::{AgentClient, StatusReport};

const DAY: Duration = Duration::from_secs(86_400);
/// How long a test waits for something asynchronous before failing: several remotes
/// directory scans (one per second).
const PATIENCE: Duration = Duration::from_secs(10);

/// A CA and a client leaf for `c1` in `<dir>/certs`.
fn mk_certs(dir: &Path) {
    let ca = Ca::generate("fleetmesh test CA", DAY).unwrap();
    let leaf = ca
        .issue_client(&ClusterName::new("c1").unwrap(), DAY)
        .unwrap();
    let certs = dir.join("certs");
    write_pem_files(&certs, "client", &leaf).unwrap();
    std::fs::write(certs.join("ca.crt"), ca.cert_pem()).unwrap();
}

fn peer_file(port: u16) -> String {
    format!(
        "address: 127.0.0.1:{port}\n\
         tls: {{ca: ../certs/ca.crt, cert: ../certs/client.crt, key: ../certs/client.key}}\n"
    )
}

/// A port nothing listens on: bound by the OS, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn start_agent(dir: &Path) -> (Agent, AgentClient) {
    std::fs::create_dir(dir.join("remotes")).unwrap();
    let path = dir.join("agent.yaml");
    let config = AgentConfig::parse(
        "cluster: {name: c1, id: 1}\nremotesDir: remotes\napi: {listen: \"127.0.0.1:0\"}\n",
        &path,
    )
    .unwrap();
    let agent = Agent::start(config).await.unwrap();
    let client = AgentClient::new(&format!("http://{}", agent.api_addr)).unwrap();
    (agent, client)
}

/// Polls the status until `done` holds, failing with the last status after PATIENCE.
async fn wait_for_status(
    client: &AgentClient,
    what: &str,
    done: impl Fn(&StatusReport) -> bool,
) -> StatusReport {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = client.status().await.unwrap();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn failure_names(peer: &PeerStatus, address: &str) -> bool {
    peer.last_failure
        .as_ref()
        .is_some_and(|f| f.reason.contains(address))
}

#[tokio::test]
async fn an_unreachable_peer_shows_as_not_connected_with_its_address() {
    let dir = tempfile::tempdir().unwrap();
    mk_certs(dir.path());
    let (agent, client) = start_agent(dir.path()).await;

    let status = client.status().await.unwrap();
    assert_eq!(status.cluster.as_str(), "c1");
    assert_eq!(status.cluster_id, 1);
    assert!(status.peers.is_empty());
    assert!(status.ready, "an agent without peers is ready");

    let port = closed_port();
    let address = format!("127.0.0.1:{port}");
    std::fs::write(dir.path().join("remotes/c2.yaml"), peer_file(port)).unwrap();
    let status = wait_for_status(&client, "c2 to fail naming its address", |s| {
        s.peers.first().is_some_and(|p| failure_names(p, &address))
    })
    .await;
    let c2 = &status.peers[0];
    assert_eq!(c2.cluster, "c2");
    assert!(!c2.local);
    assert!(!c2.connected);
    assert!(!c2.ready);
    // Within the per-link timeout the agent waits for the peer, and says why.
    assert!(!status.ready);
    assert!(
        status.not_ready[0].starts_with("c2: not connected: "),
        "{:?}",
        status.not_ready
    );
    assert_eq!(agent.statuses()[0].cluster, "c2");
    agent.stop().await;
}

#[tokio::test]
async fn peers_follow_their_files() {
    let dir = tempfile::tempdir().unwrap();
    mk_certs(dir.path());
    let (agent, client) = start_agent(dir.path()).await;
    let remotes = dir.path().join("remotes");

    let first_port = closed_port();
    let first = format!("127.0.0.1:{first_port}");
    let second_port = closed_port();
    let second = format!("127.0.0.1:{second_port}");
    std::fs::write(remotes.join("c2.yml"), peer_file(first_port)).unwrap();
    // Ignored, and reported in the log: not a cluster name, not a peer file.
    std::fs::write(remotes.join("Not_A_Cluster.yaml"), peer_file(1)).unwrap();
    std::fs::write(remotes.join("notes.txt"), "not a peer").unwrap();
    wait_for_status(&client, "c2 to fail at its first address", |s| {
        s.peers.len() == 1 && failure_names(&s.peers[0], &first)
    })
    .await;

    // A changed file reconnects to the new address.
    std::fs::write(remotes.join("c2.yml"), peer_file(second_port)).unwrap();
    wait_for_status(&client, "c2 to fail at its new address", |s| {
        s.peers.len() == 1 && failure_names(&s.peers[0], &second)
    })
    .await;

    // A file that becomes invalid keeps the running link.
    std::fs::write(remotes.join("c2.yml"), "address: [").unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let status = client.status().await.unwrap();
    assert_eq!(status.peers.len(), 1, "{status:#?}");

    // A removed file removes the peer.
    std::fs::remove_file(remotes.join("c2.yml")).unwrap();
    let status = wait_for_status(&client, "c2 to be removed", |s| s.peers.is_empty()).await;
    assert!(status.ready);
    agent.stop().await;
}
