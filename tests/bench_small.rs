//! Small, fast runs of every `fleetmesh bench` scenario, asserting that each run was
//! correct — nothing lost, phantom, duplicate or out of order, no flaps — and never how
//! fast it was (too noisy to gate on).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fleetmesh::bench::sync::{self, SyncOptions};
use fleetmesh::bench::{BenchOptions, StoreChoice};

/// A small run finishes in well under a second; this only catches a hang.
const TIMEOUT: Duration = Duration::from_secs(60);

fn mk_options(store: StoreChoice, etcd: Option<String>, etcd_direct: bool) -> BenchOptions {
    BenchOptions {
        store,
        etcd,
        etcd_direct,
        etcd_api: false,
        timeout: TIMEOUT,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_on_the_embedded_store_delivers_exactly_the_source_state() {
    let options = SyncOptions {
        endpoints: 1_000,
        agents: 4,
        bench: mk_options(StoreChoice::Memory, None, false),
    };
    let report = sync::run(&options).await.unwrap();
    let fleetmesh = &report.fleetmesh;
    assert_eq!(fleetmesh.synced.count, 4);
    assert!(report.is_correct(), "{:#?}", fleetmesh.correctness);
    assert!(report.baseline.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_on_etcd_with_the_etcd_direct_baseline_is_correct_on_both_sides() {
    let etcd = support::etcd().await;
    let options = SyncOptions {
        endpoints: 1_000,
        agents: 3,
        bench: mk_options(StoreChoice::Etcd, Some(etcd.endpoints[0].clone()), true),
    };
    let report = sync::run(&options).await.unwrap();
    let baseline = report.baseline.as_ref().unwrap();
    assert_eq!(
        (report.fleetmesh.synced.count, baseline.synced.count),
        (3, 3)
    );
    assert_eq!(baseline.correctness.duplicate, Some(0));
    assert_eq!(baseline.correctness.out_of_order, Some(0));
    assert!(report.is_correct(), "{report:#?}");
    assert!(report.ratio.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_the_etcd_api_system_delivers_exactly_the_source_state() {
    let etcd = support::etcd().await;
    let mut bench = mk_options(StoreChoice::Memory, Some(etcd.endpoints[0].clone()), true);
    bench.etcd_api = true;
    let options = SyncOptions {
        endpoints: 1_000,
        agents: 3,
        bench,
    };
    let report = sync::run(&options).await.unwrap();
    let etcd_api = report.etcd_api.as_ref().unwrap();
    assert_eq!(etcd_api.system, "etcd-api");
    assert_eq!(etcd_api.synced.count, 3);
    assert_eq!(etcd_api.correctness.duplicate, Some(0));
    assert_eq!(etcd_api.correctness.out_of_order, Some(0));
    assert!(report.is_correct(), "{report:#?}");
    assert!(report.etcd_api_ratio.is_some());
}
