//! `bench churn`: R writes per second for T seconds — of every 10, 7 endpoint upserts, 2
//! endpoint deletes (re-created later, so the set stays about constant) and 1 identity,
//! node or service — into the source's store, fanned out to W agents through the
//! production path (store → state watch → watch cache → gRPC with mTLS → remote link →
//! mesh view). With `--etcd-api`, the same load is then written again and W etcd
//! agents — the baseline's — watch it through the apiserver's etcd API; with the
//! etcd-direct baseline, it is written to etcd and W agents watch it directly, in the
//! same run. The etcd agents run on their own runtime ([`clients`]), so their CPU is
//! reported for both etcd systems.
//!
//! The load is open loop ([`writer`]): each write has an intended send time and its
//! latency counts from then, so a stall cannot hide; the latency from the store's
//! acknowledgement is reported too. Every write's value is unique ([`keys`]), so each
//! agent's observations ([`recorder`]) are matched write by write ([`verify`]): lost,
//! phantom, duplicate, out-of-order and flapping changes must all be zero, and every
//! write must reach every agent.

mod clients;
mod cpu;
mod direct;
mod keys;
mod lag;
mod phase;
mod plan;
mod recorder;
mod table;
mod verify;
mod writer;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::Semaphore;

use self::clients::{CLIENT_THREADS, Clients};
use self::direct::DirectAgent;
use self::keys::KeySpace;
use self::phase::{Measured, PhaseRun, Server, drive, summarize};
use self::plan::Plan;
use self::recorder::Recorder;
use super::agents::{spawn_agents, wait_ready};
use super::correctness::Correctness;
use super::setup::{Bench, BenchOptions, StoreChoice};
use super::stats::Tail;
use super::workload::Sizes;
use crate::exposition::MeanHistogram;
use crate::kvstore::Store;
use crate::kvstore::etcd::{EtcdConfig, EtcdStore};
use crate::remote::{LinkSettings, PeerLink};

pub use self::lag::{AGREEMENT, LagFigures};
pub use self::table::churn_table;

/// Writes per second when `--rate` is not given: the target rate.
pub const DEFAULT_RATE: u32 = 1_000;
/// Seconds of churn when `--seconds` is not given: the whole run stays well under a
/// minute.
pub const DEFAULT_SECONDS: u32 = 10;
/// Agents when `--agents` is not given (the target is 255).
pub const DEFAULT_AGENTS: u32 = 32;
/// Endpoints the source holds before the churn starts.
pub const DEFAULT_ENDPOINTS: u32 = 10_000;

/// The bench apiserver's runtime names its threads so.
const APISERVER_THREADS: &str = crate::testkit::APISERVER_THREADS;

/// etcd agents dialing at once: the apiserver refuses more than 32 handshakes in
/// flight from one address (a flood guard), and the agents of a bench share 127.0.0.1.
/// Only the set-up before the churn waits for it.
const DIALS_AT_ONCE: usize = 16;

/// The process name of the etcd the bench starts (see `testkit::LocalEtcd`).
const ETCD_PROCESS: &str = "etcd";

/// How the deliveries-per-second and p99 ratios are computed, printed with them.
pub const RATIO_DEFINITION: &str = "deliveries/s ratio = the system ÷ etcd-direct, each \
    = deliveries ÷ (last delivery − first intended send) under the same offered load, so \
    it is ≈1× whenever both keep up and grows only when the baseline falls behind; p99 \
    ratio = etcd-direct p99 ÷ the system's p99 (above 1: the system is faster); server \
    CPU ratio = etcd's CPU per delivery ÷ the apiserver's";

/// What `bench churn` runs.
#[derive(Clone, Debug)]
pub struct ChurnOptions {
    /// Writes per second.
    pub rate: u32,
    pub seconds: u32,
    pub agents: u32,
    /// Endpoints before the churn starts.
    pub endpoints: u32,
    pub bench: BenchOptions,
}

/// One system's figures: fleetmesh's, etcd-api's or the etcd-direct baseline's.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnResult {
    /// `fleetmesh`, `etcd-api` or `etcd-direct`.
    pub system: &'static str,
    pub writes: u64,
    /// Writes the store refused (the first reason), which fails the run.
    pub write_failure: Option<String>,
    /// Writes seen by agents, summed over agents.
    pub deliveries: u64,
    /// Writes × agents.
    pub expected_deliveries: u64,
    /// From the first write's intended send time to the last delivery.
    pub duration_s: f64,
    pub deliveries_per_s: f64,
    /// From each write's intended send time to each agent's view.
    pub latency: Tail,
    /// From the store's acknowledgement of each write to each agent's view.
    pub latency_from_ack: Tail,
    /// The agents' own propagation-lag histogram (fleetmesh only).
    pub propagation_lag: Option<LagFigures>,
    /// The server's CPU over the run, in cores: the apiserver's threads (fleetmesh and
    /// etcd-api; with the embedded store, the store's work included), or the etcd
    /// process the bench started (etcd-direct; `None` with `--etcd URL`).
    pub server_cpu_cores: Option<f64>,
    /// The server's CPU per delivery, in µs.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// The agents' CPU (with the load generator's), in cores: this process less the
    /// apiserver's threads.
    pub agents_cpu_cores: f64,
    /// The etcd agents' own threads' CPU (their runtime's, nothing else), in cores
    /// (`None` for fleetmesh's agents, which share the bench's runtime).
    pub clients_cpu_cores: Option<f64>,
    /// The etcd agents' CPU per delivery, in µs.
    pub clients_cpu_us_per_delivery: Option<f64>,
    /// The most a write went out after its intended time (the load generator's lag;
    /// already inside `latency`).
    pub writer_max_lag_ms: f64,
    /// Times an agent's link reconnected during the run: a link that drops under
    /// churn is a failure of the run, as in the other scenarios.
    pub reconnects: u64,
    /// Times an etcd agent's watch was canceled with a compact revision (it fell behind
    /// the server's history) and the agent listed again, as Cilium's agents do: not a
    /// failure.
    pub relists: u64,
    /// Writes those listings passed over (a newer value or the key's deletion came
    /// with the listing): neither delivered nor lost.
    pub superseded: u64,
    pub correctness: Correctness,
}

impl ChurnResult {
    /// Correct, and every write reached every agent.
    pub fn is_correct(&self) -> bool {
        self.correctness.is_clean()
            && self.write_failure.is_none()
            && self.deliveries + self.superseded == self.expected_deliveries
            && self.reconnects == 0
    }
}

/// A system (fleetmesh or etcd-api) against the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnRatio {
    /// The system's ÷ etcd-direct's deliveries per second.
    pub deliveries_per_s: f64,
    /// etcd-direct's ÷ the system's p99 latency.
    pub p99: f64,
    /// etcd-direct's ÷ the system's p99.9 latency.
    pub p999: f64,
    /// etcd-direct's ÷ the system's server CPU per delivery, when both were measured.
    pub server_cpu_per_delivery: Option<f64>,
    pub definition: &'static str,
}

impl ChurnRatio {
    fn of(system: &ChurnResult, baseline: &ChurnResult) -> Self {
        Self {
            deliveries_per_s: system.deliveries_per_s
                / baseline.deliveries_per_s.max(f64::MIN_POSITIVE),
            p99: baseline.latency.p99_ms / system.latency.p99_ms.max(f64::MIN_POSITIVE),
            p999: baseline.latency.p999_ms / system.latency.p999_ms.max(f64::MIN_POSITIVE),
            server_cpu_per_delivery: baseline
                .server_cpu_us_per_delivery
                .zip(system.server_cpu_us_per_delivery)
                .map(|(b, s)| b / s.max(f64::MIN_POSITIVE)),
            definition: RATIO_DEFINITION,
        }
    }
}

/// The report of one `bench churn` run.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnReport {
    pub scenario: &'static str,
    pub store: &'static str,
    pub rate: u32,
    pub seconds: u32,
    pub agents: u32,
    /// The source's state before the churn.
    pub sizes: Sizes,
    pub fleetmesh: ChurnResult,
    pub baseline: Option<ChurnResult>,
    /// fleetmesh against the baseline.
    pub ratio: Option<ChurnRatio>,
    /// The baseline's agents against the apiserver's etcd API (`--etcd-api`).
    pub etcd_api: Option<ChurnResult>,
    /// etcd-api against the baseline.
    pub etcd_api_ratio: Option<ChurnRatio>,
}

impl ChurnReport {
    /// Every system was correct and complete.
    pub fn is_correct(&self) -> bool {
        self.fleetmesh.is_correct()
            && self.baseline.as_ref().is_none_or(ChurnResult::is_correct)
            && self.etcd_api.as_ref().is_none_or(ChurnResult::is_correct)
    }
}

/// Runs the scenario.
pub async fn run(options: &ChurnOptions) -> anyhow::Result<ChurnReport> {
    if options.agents == 0 || options.endpoints == 0 || options.rate == 0 || options.seconds == 0 {
        bail!("--agents, --endpoints, --rate and --seconds must be at least 1");
    }
    let writes = options.rate as usize * options.seconds as usize;
    let bench = Bench::start(&options.bench, options.endpoints).await?;
    let space = Arc::new(KeySpace::new(&bench.workload));
    let mut plan = Plan::new(space.clone());
    let phase = plan.phase(writes)?;
    let fleetmesh = run_fleetmesh(&bench, &space, &plan, phase, options).await?;
    // The apiserver's store holds what the fleetmesh phase left: the etcd-api phase
    // continues from it.
    let etcd_api = match bench.etcd_api_config() {
        Some(config) => {
            let phase = plan.phase(writes)?;
            let system = EtcdSystem {
                name: "etcd-api",
                label: "churn etcd-api",
                store: bench.store(),
                config,
                server: Server::Threads(APISERVER_THREADS),
            };
            Some(run_etcd_agents(&bench, system, &space, &plan, phase, options).await?)
        }
        None => None,
    };
    let baseline = match bench.direct_config() {
        Some(config) => {
            // The baseline's etcd holds what the phases before left when it was the
            // apiserver's store too, else the initial state.
            if options.bench.store != StoreChoice::Etcd {
                plan = Plan::new(space.clone());
            }
            let phase = plan.phase(writes)?;
            let store: Arc<dyn Store> = Arc::new(
                EtcdStore::connect(config.clone())
                    .await
                    .context("cannot connect to the baseline's etcd")?,
            );
            let system = EtcdSystem {
                name: "etcd-direct",
                label: "churn etcd-direct",
                store,
                config,
                server: Server::Child(ETCD_PROCESS),
            };
            Some(run_etcd_agents(&bench, system, &space, &plan, phase, options).await?)
        }
        None => None,
    };
    let ratio = baseline.as_ref().map(|b| ChurnRatio::of(&fleetmesh, b));
    let etcd_api_ratio = baseline
        .as_ref()
        .zip(etcd_api.as_ref())
        .map(|(b, api)| ChurnRatio::of(api, b));
    let report = ChurnReport {
        scenario: "churn",
        store: options.bench.store.as_str(),
        rate: options.rate,
        seconds: options.seconds,
        agents: options.agents,
        sizes: bench.sizes,
        fleetmesh,
        baseline,
        ratio,
        etcd_api,
        etcd_api_ratio,
    };
    bench.finish().await?;
    Ok(report)
}

/// W fleetmesh agents — the agent's own links into mesh views — each observed.
async fn run_fleetmesh(
    bench: &Bench,
    space: &Arc<KeySpace>,
    plan: &Plan,
    phase: plan::Phase,
    options: &ChurnOptions,
) -> anyhow::Result<ChurnResult> {
    let observed = Arc::new(AtomicUsize::new(0));
    let mut recorders = Vec::with_capacity(options.agents as usize);
    // One histogram for every agent's link: they all watch the same peer.
    let lag = MeanHistogram::new("target_cluster");
    let agents = spawn_agents(
        &bench.peer_config,
        &bench.agent_cluster,
        options.agents,
        || {
            let recorder = Arc::new(Recorder::new(space.clone(), observed.clone()));
            recorders.push(recorder.clone());
            LinkSettings {
                observer: Some(recorder),
                propagation_lag: lag.clone(),
                ..LinkSettings::default()
            }
        },
    );
    // The views are read through the recorders only.
    let links: Vec<PeerLink> = agents.into_iter().map(|(_, link)| link).collect();
    wait_ready(&links, Instant::now(), None, options.bench.timeout)
        .await
        .context("the fleetmesh agents did not sync before the churn")?;
    let reconnects_before: u64 = links
        .iter()
        .map(|l| l.status_rx().borrow().reconnects)
        .sum();

    let run = drive(
        bench.store(),
        plan,
        &phase,
        &observed,
        options,
        Measured {
            what: "churn fleetmesh",
            server: Server::Threads(APISERVER_THREADS),
            clients: None,
        },
    )
    .await;
    let reconnects: u64 = links
        .iter()
        .map(|l| l.status_rx().borrow().reconnects)
        .sum();
    for link in links {
        link.stop().await;
    }
    let run: PhaseRun = run?;
    let mut result = summarize("fleetmesh", space, &phase, &run, &recorders, options);
    result.reconnects = reconnects - reconnects_before;
    result.propagation_lag = Some(LagFigures::of(&lag));
    Ok(result)
}

/// An etcd system: where its agents read, where its writes go, where its server runs.
struct EtcdSystem {
    /// `etcd-direct` or `etcd-api`.
    name: &'static str,
    /// Its progress line's label.
    label: &'static str,
    /// The store written: the source etcd, or the apiserver's.
    store: Arc<dyn Store>,
    /// Where the agents read: the source etcd, or the apiserver's etcd API.
    config: EtcdConfig,
    server: Server,
}

/// W etcd agents — the same for both etcd systems — on their own runtime, watching
/// `system`'s etcd.
async fn run_etcd_agents(
    bench: &Bench,
    system: EtcdSystem,
    space: &Arc<KeySpace>,
    plan: &Plan,
    phase: plan::Phase,
    options: &ChurnOptions,
) -> anyhow::Result<ChurnResult> {
    let name = system.name;
    let clients = Clients::start()?;
    let dialing = Arc::new(Semaphore::new(DIALS_AT_ONCE));
    let observed = Arc::new(AtomicUsize::new(0));
    let mut recorders = Vec::with_capacity(options.agents as usize);
    let mut agents = Vec::with_capacity(options.agents as usize);
    let mut synced = Vec::with_capacity(options.agents as usize);
    for _ in 0..options.agents {
        let recorder = Arc::new(Recorder::new(space.clone(), observed.clone()));
        let (agent, synced_rx) = DirectAgent::spawn(
            clients.handle(),
            system.config.clone(),
            bench.workload.cluster.clone(),
            recorder.clone(),
            dialing.clone(),
        );
        agents.push(agent);
        synced.push(synced_rx);
        recorders.push(recorder);
    }
    let listed = tokio::time::timeout(options.bench.timeout, futures::future::join_all(synced))
        .await
        .with_context(|| format!("the {name} agents did not list before the churn"))?;
    if listed.iter().any(Result::is_err) {
        // An agent that ended reports why when stopped.
        for agent in agents {
            agent.stop().await?;
        }
        bail!("an {name} agent ended before it listed");
    }
    let run = drive(
        system.store,
        plan,
        &phase,
        &observed,
        options,
        Measured {
            what: system.label,
            server: system.server,
            clients: Some(CLIENT_THREADS),
        },
    )
    .await;
    let mut failure = None;
    for agent in agents {
        if let Err(err) = agent.stop().await {
            failure.get_or_insert(err);
        }
    }
    drop(clients);
    let run = run?;
    if let Some(err) = failure {
        return Err(err.context(format!("an {name} agent failed during the churn")));
    }
    Ok(summarize(name, space, &phase, &run, &recorders, options))
}
