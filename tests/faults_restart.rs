//! Fault suite: kill -9 of an apiserver process during churn, on the embedded store and on
//! etcd. The agent of another member must keep answering for every object that still
//! exists — no flap, no identity number moving — and converge exactly on what the
//! manifests say once the apiserver is back.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::fleet::{Fleet, FleetStore};
use support::oracle::{self, Churn, Expected, FlapDetector};

const NAMES: [&str; 3] = ["c1", "c2", "c3"];
const CONVERGE: Duration = Duration::from_secs(30);
const CHURN_PERIOD: Duration = Duration::from_millis(300);

/// Every member's stable objects, which must never flap.
fn stable() -> Expected {
    oracle::expected_fleet(&NAMES, None)
}

fn at_generation(generation: u64) -> Expected {
    oracle::expected_fleet(&NAMES, Some(generation))
}

fn every_churn_ip() -> Vec<std::net::IpAddr> {
    oracle::every_churn_ip(NAMES.len())
}

async fn kill_during_churn(store: FleetStore) {
    let mut fleet = Fleet::plan(&NAMES, &store, "staleGraceSeconds: 300\n");
    oracle::seed_and_start(&mut fleet, &NAMES).await;
    fleet.start_agent("c1").await;
    let client = fleet.member("c1").agent_client();
    oracle::converge(&client, &at_generation(0), &every_churn_ip(), CONVERGE).await;

    let flaps = FlapDetector::start(fleet.member("c1").agent_client(), stable());
    let churn = Churn::start_fleet(&fleet, &NAMES, CHURN_PERIOD);
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.kill_apiserver("c2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.start_apiserver("c2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let generation = churn.stop();
    assert!(
        generation >= 5,
        "the churn wrote only {generation} generations"
    );

    let took = oracle::converge(
        &client,
        &at_generation(generation),
        &every_churn_ip(),
        CONVERGE,
    )
    .await;
    let seen = flaps.finish();
    seen.assert_none(20, "across the kill and restart");
    println!(
        "converged {took:?} after the churn stopped at generation {generation}; {} polls, no flap",
        seen.polls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_apiserver_on_the_embedded_store_during_churn() {
    kill_during_churn(FleetStore::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_apiserver_on_etcd_during_churn() {
    let etcd = support::etcd().await;
    kill_during_churn(FleetStore::Etcd {
        endpoint: etcd.endpoints[0].clone(),
        namespace: support::unique_prefix(),
    })
    .await;
}
