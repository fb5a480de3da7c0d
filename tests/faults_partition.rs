//! Fault suite: a silent partition (SIGSTOP of an apiserver: its connections stay open and
//! nothing answers). The agent notices within seconds, keeps the peer's nodes, ipcache and
//! identities, withdraws its service backends after the stale grace — and withdraws
//! nothing while more than half of its peers are silent, when it is probably the isolated
//! one. Throughout, no stable object flaps.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fleetmesh::observe::AgentClient;
use support::fleet::{Fleet, FleetStore};
use support::oracle::{self, Expected, FlapDetector};

const NAMES: [&str; 3] = ["c1", "c2", "c3"];
/// The agent's settings for this suite: a short stale grace, and partition detection
/// within a few seconds (the default is ≤ 10 s; the test shortens it to stay fast).
const AGENT_EXTRA: &str = "staleGraceSeconds: 2\n";
const WITHIN: Duration = Duration::from_secs(30);

fn stable() -> Expected {
    oracle::expected_fleet(&NAMES, None)
}

/// The clusters whose `app/web` backends the agent selects now.
async fn selected(client: &AgentClient) -> BTreeSet<String> {
    let services = client.services().await.unwrap();
    let web = services
        .into_iter()
        .find(|s| s.name.to_string() == "app/web")
        .unwrap();
    web.selected.iter().map(|b| b.cluster.to_string()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

async fn wait_selected(client: &AgentClient, want: &[&str]) -> Duration {
    let started = Instant::now();
    loop {
        let got = selected(client).await;
        if got == set(want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < WITHIN,
            "app/web selects {got:?}, not {want:?}, after {WITHIN:?}"
        );
        tokio::time::sleep(oracle::POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_withdrawn_after_the_grace_and_the_isolation_guard_holds() {
    let mut fleet = Fleet::plan(&NAMES, &FleetStore::Memory, AGENT_EXTRA);
    for (i, name) in NAMES.iter().enumerate() {
        oracle::seed(fleet.member(name), i + 1);
        fleet.start_apiserver(name).await;
    }
    fleet.start_agent("c1").await;
    let client = fleet.member("c1").agent_client();
    oracle::converge(&client, &stable(), &[], WITHIN).await;
    wait_selected(&client, &NAMES).await;
    let flaps = FlapDetector::start(fleet.member("c1").agent_client(), stable());

    // One silent peer: noticed, then withdrawn after the grace.
    fleet.pause_apiserver("c2");
    let took = wait_selected(&client, &["c1", "c3"]).await;
    println!("c2 silent: withdrawn from selection after {took:?}");
    fleet.resume_apiserver("c2");
    let back = wait_selected(&client, &NAMES).await;
    println!("c2 back in selection after {back:?}");

    // Two of two peers silent: this cluster is the isolated one; nothing is withdrawn.
    fleet.pause_apiserver("c2");
    fleet.pause_apiserver("c3");
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        selected(&client).await,
        set(&NAMES),
        "the isolation guard let go"
    );
    fleet.resume_apiserver("c2");
    fleet.resume_apiserver("c3");
    oracle::converge(&client, &stable(), &[], WITHIN).await;

    flaps.finish().assert_none(1, "across the partition");
}
