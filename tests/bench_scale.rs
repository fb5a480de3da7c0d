//! Small, fast runs of the scale scenarios of `fleetmesh bench` — storm, merge and
//! memory — asserting that each run was correct and complete, never how fast it was
//! (too noisy to gate on).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use fleetmesh::bench::memory::{self, MemoryOptions};
use fleetmesh::bench::merge::{self, MergeOptions};
use fleetmesh::bench::storm::{self, StormOptions};
use fleetmesh::bench::{BenchOptions, StoreChoice};

/// A small run finishes in seconds; this only catches a hang.
const TIMEOUT: Duration = Duration::from_secs(60);

fn mk_options() -> BenchOptions {
    BenchOptions {
        store: StoreChoice::Memory,
        etcd: None,
        etcd_direct: false,
        etcd_api: false,
        timeout: TIMEOUT,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_resyncs_every_agent_to_exactly_the_rewritten_state() {
    let options = StormOptions {
        endpoints: 500,
        agents: 6,
        bench: mk_options(),
    };
    let report = storm::run(&options).await.unwrap();
    assert!(report.is_correct(), "{:#?}", report.correctness);
    assert_eq!(report.initial_sync.count, 6);
    assert_eq!(report.resynced.count, 6, "every agent resynced");
    // Every agent dialed again after the restart, and its stream opened again.
    let opened: u64 = report.reconnects.iter().map(|s| s.connected).sum();
    assert!(
        report.attempts >= 6 && opened >= 6,
        "{:?}",
        report.reconnects
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_holds_every_cluster_state_under_its_own_name() {
    let options = MergeOptions {
        clusters: 5,
        endpoints: 300,
        bench: mk_options(),
        etcd_api: true,
    };
    let report = merge::run(&options).await.unwrap();
    assert!(report.is_correct(), "{:#?}", report.correctness);
    assert_eq!(report.synced.count, 5);
    assert_eq!(report.merged_endpoints, 1_500);
    assert_eq!(report.target_met, None, "the target is for 255 × 1,000");
    let cache = report.cache_keys.unwrap();
    assert_eq!(
        cache.ip_keys, 1_500,
        "every merged endpoint is an ipcache key"
    );
    assert_eq!(cache.pages, 6, "1,500 keys in pages of 256");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_probes_run_as_processes_and_hold_their_state() {
    let options = MemoryOptions {
        apiserver_sizes: vec![500, 1_000],
        agent_counts: vec![0, 2],
        idle_endpoints: 200,
        merged_sizes: vec![400, 800],
        merged_clusters: 2,
        settle: Duration::from_millis(50),
        exe: Some(PathBuf::from(env!("CARGO_BIN_EXE_fleetmesh"))),
        bench: BenchOptions {
            etcd_api: true,
            ..mk_options()
        },
    };
    let report = memory::run(&options).await.unwrap();
    // The etcd watchers' listings of every Cilium prefix are checked too.
    assert!(report.is_correct(), "{:#?}", report.correctness);
    let etcd = report.idle_etcd_watchers.as_ref().unwrap();
    assert_eq!(etcd.watches_per_client, 7);
    for fit in [
        &report.apiserver,
        &report.idle_agents,
        &report.agent,
        &etcd.fit,
    ] {
        assert_eq!(fit.points.len(), 2);
        assert!(fit.points.iter().all(|p| p.rss_kib > 0), "{fit:?}");
    }
    let sizes: Vec<u64> = report.agent.points.iter().map(|p| p.size).collect();
    assert_eq!(sizes, [400, 800]);
}
