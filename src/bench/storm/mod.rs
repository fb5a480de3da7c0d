//! `bench storm`: W agents synced with an apiserver holding N endpoints; the apiserver
//! is restarted the way Cilium's restarts with its embedded store — the process dies,
//! comes back on the same address with an emptied store (a new epoch) and writes the
//! state again — and every agent must resync. Measured: the time from the restart until
//! each agent is ready again, and how the reconnects spread over the seconds after it
//! (target: no second in which more than half of the agents dial).
//!
//! Every agent's view must equal the source's state exactly afterwards, and no link may
//! relapse or withdraw anything on the way (rule 1: nothing is deleted because a peer
//! went away).

mod spread;
mod table;
mod trace;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

pub use self::spread::Second;
pub use self::table::storm_table;

use self::spread::{busiest_window, per_second};
use self::trace::Tracer;
use super::agents::{spawn_agents, wait_ready};
use super::correctness::{Correctness, check_view};
use super::progress::Progress;
use super::setup::{Bench, BenchOptions, StoreChoice};
use super::stats::Percentiles;
use super::workload::Sizes;
use crate::mesh::Counts;
use crate::remote::LinkSettings;

/// Endpoints when `--endpoints` is not given.
pub const DEFAULT_ENDPOINTS: u32 = 10_000;
/// Agents when `--agents` is not given: enough for the spread to show, a run of
/// seconds.
pub const DEFAULT_AGENTS: u32 = 64;
/// After the last agent resynced, links are watched this much longer for a relapse.
const QUIET: Duration = Duration::from_millis(500);
/// How often the resynced count is checked: the times themselves come from the tracers.
const RESYNC_POLL: Duration = Duration::from_millis(20);

/// What `bench storm` measures.
#[derive(Clone, Debug)]
pub struct StormOptions {
    pub endpoints: u32,
    pub agents: u32,
    pub bench: BenchOptions,
}

/// How long the apiserver's restart took, from when it began.
#[derive(Clone, Debug, Serialize)]
pub struct RestartTimes {
    /// Every connection closed.
    pub stopped_ms: f64,
    /// Listening on its address again.
    pub listening_ms: f64,
    /// Its emptied store written again; serving from then on.
    pub written_ms: f64,
}

/// The report of one `bench storm` run.
#[derive(Clone, Debug, Serialize)]
pub struct StormReport {
    pub scenario: &'static str,
    pub store: &'static str,
    /// What the restart does to the store.
    pub restart_kind: &'static str,
    pub sizes: Sizes,
    pub agents: u32,
    /// Connect to synced before the restart, per agent.
    pub initial_sync: Percentiles,
    pub restart: RestartTimes,
    /// Restart to ready again, per agent.
    pub resynced: Percentiles,
    /// Dial attempts, agents dialing and streams opened, per second since the restart.
    pub reconnects: Vec<Second>,
    pub attempts: u64,
    /// The most agents that dialed within one second of the histogram.
    pub busiest_second_agents: u64,
    /// The most agents that dialed within any one-second window.
    pub busiest_window_agents: u64,
    /// No one-second window in which more than half of the agents dialed.
    pub target_met: bool,
    pub correctness: Correctness,
}

impl StormReport {
    /// Every counter is zero (every agent resynced, or the run failed before).
    pub fn is_correct(&self) -> bool {
        self.correctness.is_clean()
    }
}

/// Runs the scenario.
pub async fn run(options: &StormOptions) -> anyhow::Result<StormReport> {
    if options.agents == 0 || options.endpoints == 0 {
        bail!("--agents and --endpoints must be at least 1");
    }
    if options.bench.store != StoreChoice::Memory || options.bench.etcd_direct {
        bail!(
            "storm restarts an apiserver with its embedded store: use --store memory, no baseline"
        );
    }
    let mut bench = Bench::start(&options.bench, options.endpoints).await?;
    let agents = spawn_agents(
        &bench.peer_config,
        &bench.agent_cluster,
        options.agents,
        LinkSettings::default,
    );
    let initial = wait_ready(
        agents.iter().map(|(_, link)| link),
        Instant::now(),
        options.bench.progress.then_some("storm: agents synced"),
        options.bench.timeout,
    )
    .await
    .context("the agents did not sync before the restart")?;

    // The resync is timed from each link's own trace of dials and readiness (not by
    // `wait_ready`): the spread of the reconnects is what this scenario measures.

    let expected = expected_counts(&bench.sizes);
    let resynced = Arc::new(AtomicUsize::new(0));
    let tracers: Vec<Tracer> = agents
        .iter()
        .map(|(_, link)| Tracer::start(link.status_rx(), expected, resynced.clone()))
        .collect();
    let progress = Progress::start(
        options.bench.progress,
        "storm: agents resynced",
        agents.len(),
        resynced.clone(),
    );
    let restart = bench.restart_apiserver().await?;
    let waited = wait_resynced(&resynced, agents.len(), options.bench.timeout).await;
    tokio::time::sleep(QUIET).await;
    progress.stop().await;
    let mut traces = Vec::with_capacity(tracers.len());
    for tracer in tracers {
        traces.push(tracer.finish().await?);
    }
    waited?;

    let mut correctness = Correctness::default();
    for ((view, link), trace) in agents.iter().zip(&traces) {
        let mut checked = check_view(&view.read(), &bench.workload);
        checked.flaps = trace.flaps + u64::from(!link.status_rx().borrow().ready);
        correctness.add(&checked);
    }
    for (_, link) in agents {
        link.stop().await;
    }
    let times: Vec<Duration> = traces
        .iter()
        .filter_map(|t| t.resynced_after(restart.at))
        .collect();
    let reconnects: Vec<_> = traces.iter().map(|t| t.reconnects(restart.at)).collect();
    let histogram = per_second(&reconnects);
    let busiest_window_agents = busiest_window(&reconnects);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let report = StormReport {
        scenario: "storm",
        store: options.bench.store.as_str(),
        restart_kind: "new epoch: the embedded store emptied and written again",
        sizes: bench.sizes,
        agents: options.agents,
        initial_sync: Percentiles::of(&initial),
        restart: RestartTimes {
            stopped_ms: ms(restart.stopped),
            listening_ms: ms(restart.listening),
            written_ms: ms(restart.written),
        },
        resynced: Percentiles::of(&times),
        attempts: histogram.iter().map(|s| s.attempts).sum(),
        busiest_second_agents: histogram.iter().map(|s| s.agents).max().unwrap_or(0),
        busiest_window_agents,
        target_met: busiest_window_agents * 2 <= u64::from(options.agents),
        reconnects: histogram,
        correctness,
    };
    bench.finish().await?;
    Ok(report)
}

/// Waits until `agents` agents resynced.
async fn wait_resynced(
    resynced: &AtomicUsize,
    agents: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while resynced.load(Ordering::Relaxed) < agents {
        if started.elapsed() > timeout {
            bail!(
                "only {} of {agents} agents resynced within {timeout:?} of the restart",
                resynced.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(RESYNC_POLL).await;
    }
    Ok(())
}

/// What an agent holds of a workload of `sizes`.
fn expected_counts(sizes: &Sizes) -> Counts {
    Counts {
        endpoints: sizes.endpoints as usize,
        identities: sizes.identities as usize,
        nodes: sizes.nodes as usize,
        services: sizes.services as usize,
        service_exports: 0,
    }
}
