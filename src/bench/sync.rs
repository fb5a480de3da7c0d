//! `bench sync`: an apiserver holding N endpoints (+ N/10 identities, N/100 nodes, N/100
//! services) and W agents connecting at once; the time from connect to synced per agent.
//! With the etcd-direct baseline, the same W agents then list the same state from etcd
//! directly, in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::task::JoinSet;

use super::agents::{spawn_agents, wait_ready};
use super::correctness::{Correctness, check_decoded, check_view};
use super::direct::sync_direct;
use super::progress::Progress;
use super::setup::{Bench, BenchOptions};
use super::stats::Percentiles;
use super::workload::Sizes;
use crate::kvstore::etcd::EtcdConfig;
use crate::remote::LinkSettings;

/// Endpoints when `--endpoints` is not given: a full sync in a fraction of a second.
pub const DEFAULT_ENDPOINTS: u32 = 10_000;
/// Agents when `--agents` is not given.
pub const DEFAULT_AGENTS: u32 = 32;

/// What `bench sync` measures.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    pub endpoints: u32,
    pub agents: u32,
    pub bench: BenchOptions,
}

/// One system's figures: fleetmesh's, or the etcd-direct baseline's.
#[derive(Clone, Debug, Serialize)]
pub struct SyncResult {
    /// `fleetmesh` or `etcd-direct`.
    pub system: &'static str,
    /// Connect to synced, per agent.
    pub synced: Percentiles,
    /// Until the last agent was synced (its time to synced).
    pub all_synced_ms: f64,
    /// Objects delivered to all agents per second, over `all_synced_ms`.
    pub objects_per_s: f64,
    pub correctness: Correctness,
}

/// How much longer the baseline took (baseline / fleetmesh; above 1 is fleetmesh ahead).
#[derive(Clone, Debug, Serialize)]
pub struct SyncRatio {
    pub p99: f64,
    pub all_synced: f64,
}

/// The report of one `bench sync` run.
#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    pub scenario: &'static str,
    pub store: &'static str,
    pub sizes: Sizes,
    pub agents: u32,
    pub fleetmesh: SyncResult,
    pub baseline: Option<SyncResult>,
    pub ratio: Option<SyncRatio>,
    /// The baseline's agents against the apiserver's etcd API (`--etcd-api`).
    pub etcd_api: Option<SyncResult>,
    /// How much longer the baseline took than the etcd-api system.
    pub etcd_api_ratio: Option<SyncRatio>,
}

impl SyncReport {
    /// Every system's correctness counters are zero.
    pub fn is_correct(&self) -> bool {
        self.fleetmesh.correctness.is_clean()
            && self
                .baseline
                .as_ref()
                .is_none_or(|b| b.correctness.is_clean())
            && self
                .etcd_api
                .as_ref()
                .is_none_or(|b| b.correctness.is_clean())
    }
}

/// Runs the scenario.
pub async fn run(options: &SyncOptions) -> anyhow::Result<SyncReport> {
    if options.agents == 0 || options.endpoints == 0 {
        bail!("--agents and --endpoints must be at least 1");
    }
    let bench = Bench::start(&options.bench, options.endpoints).await?;
    let fleetmesh = run_fleetmesh(&bench, options).await?;
    let baseline = match bench.direct_config() {
        Some(config) => Some(run_direct(&bench, config, options, "etcd-direct").await?),
        None => None,
    };
    let etcd_api = match bench.etcd_api_config() {
        Some(config) => Some(run_direct(&bench, config, options, "etcd-api").await?),
        None => None,
    };
    let ratio_to = |ours: &SyncResult| {
        baseline.as_ref().map(|b| SyncRatio {
            p99: b.synced.p99_ms / ours.synced.p99_ms.max(f64::MIN_POSITIVE),
            all_synced: b.all_synced_ms / ours.all_synced_ms.max(f64::MIN_POSITIVE),
        })
    };
    let ratio = ratio_to(&fleetmesh);
    let etcd_api_ratio = etcd_api.as_ref().and_then(ratio_to);
    let report = SyncReport {
        scenario: "sync",
        store: options.bench.store.as_str(),
        sizes: bench.sizes,
        agents: options.agents,
        fleetmesh,
        baseline,
        ratio,
        etcd_api,
        etcd_api_ratio,
    };
    bench.finish().await?;
    Ok(report)
}

/// W agents' links (the agent's own code: `remote::spawn_link` into a `MeshView`), all
/// started at once.
async fn run_fleetmesh(bench: &Bench, options: &SyncOptions) -> anyhow::Result<SyncResult> {
    let started = Instant::now();
    let agents = spawn_agents(
        &bench.peer_config,
        &bench.agent_cluster,
        options.agents,
        LinkSettings::default,
    );
    let progress = options.bench.progress.then_some("sync fleetmesh");
    let times = wait_ready(
        agents.iter().map(|(_, link)| link),
        started,
        progress,
        options.bench.timeout,
    )
    .await
    .context("fleetmesh agents did not sync")?;

    let mut correctness = Correctness::default();
    for (view, link) in &agents {
        let mut checked = check_view(&view.read(), &bench.workload);
        let status = link.status_rx().borrow().clone();
        checked.flaps = status.reconnects + u64::from(!status.ready);
        correctness.add(&checked);
    }
    for (_, link) in agents {
        link.stop().await;
    }
    Ok(result("fleetmesh", &times, bench, options, correctness))
}

/// W etcd agents reading from `config` (etcd for `etcd-direct`, the apiserver's etcd API
/// for `etcd-api`), all started at once.
async fn run_direct(
    bench: &Bench,
    config: EtcdConfig,
    options: &SyncOptions,
    system: &'static str,
) -> anyhow::Result<SyncResult> {
    let synced_count = Arc::new(AtomicUsize::new(0));
    let progress = Progress::start(
        options.bench.progress,
        system,
        options.agents as usize,
        synced_count.clone(),
    );
    let started = Instant::now();
    let mut agents = JoinSet::new();
    for _ in 0..options.agents {
        let (config, source) = (config.clone(), bench.workload.cluster.clone());
        let synced_count = synced_count.clone();
        agents.spawn(async move {
            let synced = sync_direct(config, &source, started).await;
            synced_count.fetch_add(1, Ordering::Relaxed);
            synced
        });
    }
    let mut times = Vec::with_capacity(options.agents as usize);
    let mut correctness = Correctness::default();
    let deadline = tokio::time::sleep(options.bench.timeout);
    tokio::pin!(deadline);
    loop {
        let joined = tokio::select! {
            joined = agents.join_next() => joined,
            () = &mut deadline => bail!("{system} agents did not sync within {:?}", options.bench.timeout),
        };
        let Some(joined) = joined else { break };
        let synced = joined.with_context(|| format!("an {system} agent panicked"))??;
        times.push(synced.synced_after);
        let mut checked = check_decoded(&synced.held, &bench.workload);
        checked.duplicate = Some(synced.duplicate);
        checked.out_of_order = Some(synced.out_of_order);
        correctness.add(&checked);
        // Dropped here: the agent's decoded state is not kept while the others list.
    }
    progress.stop().await;
    Ok(result(system, &times, bench, options, correctness))
}

/// One system's figures; "all synced" is the last agent's time, so that checking the
/// agents' results (after the clock stopped for them) is never counted.
fn result(
    system: &'static str,
    times: &[Duration],
    bench: &Bench,
    options: &SyncOptions,
    correctness: Correctness,
) -> SyncResult {
    let objects = bench.sizes.total() as f64 * f64::from(options.agents);
    let all_synced = times.iter().max().copied().unwrap_or_default();
    SyncResult {
        system,
        synced: Percentiles::of(times),
        all_synced_ms: all_synced.as_secs_f64() * 1000.0,
        objects_per_s: objects / all_synced.as_secs_f64().max(f64::MIN_POSITIVE),
        correctness,
    }
}
