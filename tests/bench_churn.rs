//! Small, fast runs of `fleetmesh bench churn`, asserting what a run must get right —
//! every write delivered to every agent, once and in order, nothing lost, phantom or
//! flapping — and never how fast it was (too noisy to gate on).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fleetmesh::bench::churn::{self, ChurnOptions, ChurnReport, ChurnResult};
use fleetmesh::bench::{BenchOptions, StoreChoice};

/// A small run takes a couple of seconds; this only catches a hang.
const TIMEOUT: Duration = Duration::from_secs(60);

fn mk_options(store: StoreChoice, etcd: Option<String>, etcd_direct: bool) -> ChurnOptions {
    ChurnOptions {
        rate: 200,
        seconds: 2,
        agents: 3,
        endpoints: 500,
        bench: BenchOptions {
            store,
            etcd,
            etcd_direct,
            etcd_api: false,
            timeout: TIMEOUT,
            progress: false,
        },
    }
}

fn assert_complete(result: &ChurnResult, options: &ChurnOptions) {
    let writes = u64::from(options.rate * options.seconds);
    assert_eq!(result.writes, writes);
    assert_eq!(
        result.deliveries,
        writes * u64::from(options.agents),
        "{result:#?}"
    );
    assert_eq!(result.latency.count as u64, result.deliveries);
    let c = &result.correctness;
    assert_eq!((c.lost, c.phantom, c.flaps), (0, 0, 0), "{result:#?}");
    assert_eq!(
        (c.duplicate, c.out_of_order),
        (Some(0), Some(0)),
        "{result:#?}"
    );
    assert!(result.write_failure.is_none(), "{result:#?}");
}

fn assert_correct(report: &ChurnReport, options: &ChurnOptions) {
    assert_complete(&report.fleetmesh, options);
    for other in report.baseline.iter().chain(&report.etcd_api) {
        assert_complete(other, options);
    }
    assert!(report.is_correct());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_on_the_embedded_store_reaches_every_agent_exactly() {
    let options = mk_options(StoreChoice::Memory, None, false);
    let report = churn::run(&options).await.unwrap();
    assert_correct(&report, &options);
    assert!(report.fleetmesh.server_cpu_cores.is_some());
    assert!(report.baseline.is_none());
    // The table says so too.
    let table = churn::churn_table(&report);
    assert!(table.contains("\ncorrect: "));
    // The agents' own lag histogram holds one reading per change they applied, each
    // delivery being a live one, and is shown beside the bench's latency.
    let lag = report.fleetmesh.propagation_lag.as_ref().unwrap();
    assert_eq!(lag.count, report.fleetmesh.deliveries, "{lag:?}");
    assert!(lag.mean_ms > 0.0, "{lag:?}");
    assert!(table.contains("agents' propagation lag"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_on_etcd_with_the_etcd_direct_baseline_is_exact_on_both_sides() {
    let etcd = support::etcd().await;
    let options = mk_options(StoreChoice::Etcd, Some(etcd.endpoints[0].clone()), true);
    let report = churn::run(&options).await.unwrap();
    assert_correct(&report, &options);
    assert!(report.baseline.is_some() && report.ratio.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_through_the_etcd_api_is_exact_beside_etcd_direct() {
    let etcd = support::etcd().await;
    let mut options = mk_options(StoreChoice::Memory, Some(etcd.endpoints[0].clone()), true);
    options.bench.etcd_api = true;
    let report = churn::run(&options).await.unwrap();
    assert_correct(&report, &options);
    let (api, direct) = (
        report.etcd_api.as_ref().unwrap(),
        report.baseline.as_ref().unwrap(),
    );
    assert_eq!((api.system, direct.system), ("etcd-api", "etcd-direct"));
    // The apiserver's threads are measured; the same clients' own threads in both.
    assert!(api.server_cpu_us_per_delivery.is_some(), "{api:#?}");
    for r in [api, direct] {
        assert!(r.clients_cpu_us_per_delivery.is_some(), "{r:#?}");
    }
    assert!(report.fleetmesh.clients_cpu_cores.is_none());
    assert!(report.etcd_api_ratio.is_some());
    let table = churn::churn_table(&report);
    assert!(table.contains("etcd-api vs etcd-direct"), "{table}");
}

/// More etcd agents than the apiserver admits TLS handshakes from one address at once
/// (32): they dial in turn instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_etcd_api_agents_than_the_handshake_guard_admits_at_once_all_connect() {
    let mut options = mk_options(StoreChoice::Memory, None, false);
    options.bench.etcd_api = true;
    (options.agents, options.rate, options.seconds) = (64, 20, 1);
    let report = churn::run(&options).await.unwrap();
    assert_correct(&report, &options);
    assert_eq!(report.etcd_api.as_ref().unwrap().deliveries, 20 * 64);
}
