//! Fault suite: kill -9 of an apiserver process during churn, on the embedded store and on
//! etcd. The agent of another member must keep answering for every object that still
//! exists — no flap, no identity number moving — and converge exactly on what the
//! manifests say once the apiserver is back.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::fleet::{Fleet, FleetStore};
use support::oracle;

const NAMES: [&str; 3] = ["c1", "c2", "c3"];
const CHURN_PERIOD: Duration = Duration::from_millis(300);

async fn kill_during_churn(store: FleetStore) {
    let mut fleet = Fleet::plan(&NAMES, &store, "staleGraceSeconds: 300\n");
    let client = oracle::start_converged(&mut fleet, &NAMES, "c1").await;

    let (flaps, churn) = oracle::flaps_under_churn(&fleet, &NAMES, "c1", CHURN_PERIOD);
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.kill_apiserver("c2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet.start_apiserver("c2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (generation, took) = oracle::stop_and_converge(churn, &client, &NAMES, 5).await;
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
