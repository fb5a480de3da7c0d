//! Fault suite: kill -9 of etcd under churn, with every apiserver on `store: etcd`, and
//! etcd started again on its data (a crashed etcd pod whose volume survives). The same
//! history comes back — same cluster id, revisions and leases as the crash left them —
//! so nothing may be rewritten as a new epoch: the agent of another member must keep
//! answering for every stable object, no identity number moving, and converge exactly on
//! the manifests once the churn that went on during the outage has been written.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::LocalEtcd;
use support::fleet::{Fleet, FleetStore, http_status};
use support::oracle;

const NAMES: [&str; 3] = ["c1", "c2", "c3"];
const CHURN_PERIOD: Duration = Duration::from_millis(300);
/// How long etcd stays down: several churn generations are written meanwhile.
const OUTAGE: Duration = Duration::from_secs(2);

/// Waits until every apiserver's `/readyz` answers 200; how long that took.
async fn every_apiserver_ready(fleet: &Fleet) -> Duration {
    let started = Instant::now();
    for name in NAMES {
        let url = format!("http://127.0.0.1:{}/readyz", fleet.member(name).health_port);
        while http_status(&url).await != Some(200) {
            assert!(
                started.elapsed() < oracle::CONVERGE,
                "{name}'s apiserver is not ready {:?} after etcd came back",
                oracle::CONVERGE
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_and_restarted_on_its_data_under_churn_flaps_nothing_and_converges() {
    // An etcd of this test's own: killing the shared one would break other tests.
    let mut etcd = LocalEtcd::start(None).await.unwrap();
    let store = FleetStore::Etcd {
        endpoint: etcd.handle().endpoints[0].clone(),
        namespace: support::unique_prefix(),
    };
    let mut fleet = Fleet::plan(&NAMES, &store, "staleGraceSeconds: 300\n");
    let client = oracle::start_converged(&mut fleet, &NAMES, "c1").await;

    let (flaps, churn) = oracle::flaps_under_churn(&fleet, &NAMES, "c1", CHURN_PERIOD);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    etcd.kill();
    // A change made while etcd is down: how long after etcd is back does it reach c1?
    let (marker, yaml) = oracle::marker_pod(2);
    fleet.member("c2").write_manifest("marker.yaml", &yaml);
    tokio::time::sleep(OUTAGE).await;
    etcd.restart().await;
    let restarted = Instant::now();
    let ready = every_apiserver_ready(&fleet).await;
    while !matches!(oracle::lookup(&client, marker).await, Ok(Some(_))) {
        assert!(
            restarted.elapsed() < oracle::CONVERGE,
            "a pod written while etcd was down did not reach c1's agent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = restarted.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (generation, converged) = oracle::stop_and_converge(churn, &client, &NAMES, 10).await;
    flaps
        .finish()
        .assert_none(20, "across an etcd kill -9 and restart");
    println!(
        "etcd down {OUTAGE:?}: every apiserver ready {ready:?} after it was back, a pod \
         written during the outage at c1's agent {recovered:?} after; converged \
         {converged:?} after the churn stopped at generation {generation}; no flap"
    );
}
