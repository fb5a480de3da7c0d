//! Fault suite: etcd compacts its history under churn (as `--auto-compaction-retention`
//! does in production, here every half second up to the latest revision). The apiservers'
//! state watches lose their resume points and must re-list without the agent of another
//! member seeing any stable object flap, and everything converges on the manifests.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::fleet::{Fleet, FleetStore};
use support::oracle;

const NAMES: [&str; 3] = ["c1", "c2", "c3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_under_churn_flaps_nothing_and_converges() {
    // This binary's own etcd: compacting it cannot disturb another test's.
    let etcd = support::etcd().await;
    let mut fleet = Fleet::plan(
        &NAMES,
        &FleetStore::Etcd {
            endpoint: etcd.endpoints[0].clone(),
            namespace: support::unique_prefix(),
        },
        "",
    );
    let client = oracle::start_converged(&mut fleet, &NAMES, "c1").await;

    let (flaps, churn) =
        oracle::flaps_under_churn(&fleet, &NAMES, "c1", Duration::from_millis(300));
    let mut raw = etcd.client().await;
    let mut compactions = 0;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let revision = raw
            .get("x", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        // Nothing written since the last one: etcd says it is compacted already.
        if raw.compact(revision, None).await.is_ok() {
            compactions += 1;
        }
    }
    assert!(compactions >= 4, "only {compactions} compactions happened");
    oracle::stop_and_converge(churn, &client, &NAMES, 5).await;
    flaps
        .finish()
        .assert_none(1, &format!("across {compactions} compactions"));
}
