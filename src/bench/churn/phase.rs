//! One system's churn: write the phase open-loop while its agents observe, wait until
//! every write reached every agent (or nothing arrives any more), then check each
//! agent's observations and sum up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::cpu::{children_cpu, process_cpu, threads_cpu};
use super::keys::{Confirmer, KeySpace};
use super::plan::{Phase, Plan};
use super::recorder::Recorder;
use super::verify::{Timing, check, writes_by_key};
use super::writer::{Prepared, Written, spawn_writer};
use super::{ChurnOptions, ChurnResult};
use crate::bench::correctness::Correctness;
use crate::bench::progress::Progress;
use crate::bench::stats::Tail;
use crate::kvstore::Store;

/// After the last write, agents still receiving are waited for; once nothing has
/// arrived for this long, what is missing is lost.
const DRAIN_IDLE: Duration = Duration::from_secs(10);
/// How often the drain checks.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Where a system's server runs, for its CPU.
#[derive(Clone, Copy, Debug)]
pub enum Server {
    /// Threads of this process of this name: the bench apiserver.
    Threads(&'static str),
    /// Child processes of this name: the etcd the bench started.
    Child(&'static str),
}

impl Server {
    fn cpu(self) -> anyhow::Result<Option<Duration>> {
        match self {
            Self::Threads(name) => threads_cpu(name).map(Some),
            Self::Child(name) => children_cpu(name),
        }
    }
}

/// What a phase measures the CPU of, and how its progress line is labelled.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// The system's name on the progress line.
    pub what: &'static str,
    pub server: Server,
    /// The agents' threads of this name, when they run on their own runtime.
    pub clients: Option<&'static str>,
}

/// What driving a phase measured.
pub struct PhaseRun {
    pub written: Written,
    /// Writes × agents.
    pub expected: u64,
    pub server: Server,
    /// The server's CPU from the first write to the end of the drain (`None`: a server
    /// outside the bench's reach).
    pub server_cpu: Option<Duration>,
    /// This process's CPU over the same time.
    pub process_cpu: Duration,
    /// The agents' threads' CPU over the same time, when they have their own.
    pub clients_cpu: Option<Duration>,
}

/// Writes `phase` into `store` at the options' rate while agents (whose recorders count
/// into `observed`) receive it; returns once all have it, or none gets more.
pub async fn drive(
    store: Arc<dyn Store>,
    plan: &Plan,
    phase: &Phase,
    observed: &Arc<AtomicUsize>,
    options: &ChurnOptions,
    measured: Measured,
) -> anyhow::Result<PhaseRun> {
    let Measured {
        what,
        server,
        clients,
    } = measured;
    let clients_cpu = || clients.map(threads_cpu).transpose();
    let prepared = phase
        .ops
        .iter()
        .map(|op| {
            Ok(Prepared {
                key: op.key,
                writes: plan.store_writes(*op)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let expected = phase.ops.len() as u64 * u64::from(options.agents);
    // The listings are in: from here on, only the phase's deliveries count.
    observed.store(0, Ordering::Relaxed);
    let progress = Progress::start(
        options.bench.progress,
        what,
        expected as usize,
        observed.clone(),
    );
    let (server_before, process_before, clients_before) =
        (server.cpu()?, process_cpu()?, clients_cpu()?);
    let writer = spawn_writer(
        store,
        prepared,
        phase.initial.len(),
        f64::from(options.rate),
    )?;
    let timeout = options.bench.timeout + Duration::from_secs(u64::from(options.seconds));
    let written = match tokio::time::timeout(timeout, writer).await {
        Ok(written) => written.context("the writer thread ended without a report")?,
        Err(_) => {
            progress.stop().await;
            bail!("the writes did not finish within {timeout:?}");
        }
    };
    drain(observed, expected as usize, options.bench.timeout).await;
    let server_cpu = match (server.cpu()?, server_before) {
        (Some(after), Some(before)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let process_cpu = process_cpu()?.saturating_sub(process_before);
    let clients_cpu = clients_cpu()?
        .zip(clients_before)
        .map(|(after, before)| after.saturating_sub(before));
    progress.stop().await;
    Ok(PhaseRun {
        written,
        expected,
        server,
        server_cpu,
        process_cpu,
        clients_cpu,
    })
}

/// Waits until `expected` changes were observed, nothing arrived for [`DRAIN_IDLE`],
/// or `timeout` passed.
async fn drain(observed: &AtomicUsize, expected: usize, timeout: Duration) {
    let started = Instant::now();
    let mut last = (observed.load(Ordering::Relaxed), Instant::now());
    loop {
        let now = observed.load(Ordering::Relaxed);
        if now >= expected || started.elapsed() > timeout {
            return;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > DRAIN_IDLE {
            return;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Checks every agent's observations against `phase` and sums up.
pub fn summarize(
    system: &'static str,
    space: &KeySpace,
    phase: &Phase,
    run: &PhaseRun,
    recorders: &[Arc<Recorder>],
    options: &ChurnOptions,
) -> ChurnResult {
    let by_key = writes_by_key(phase);
    let timing = Timing {
        start: run.written.start,
        rate: f64::from(options.rate),
        acks: run.written.acks.clone(),
    };
    let mut correctness = Correctness {
        duplicate: Some(0),
        out_of_order: Some(0),
        ..Correctness::default()
    };
    let (mut deliveries, mut superseded, mut last) = (0, 0, None);
    let (mut from_intended, mut from_ack) = (Vec::new(), Vec::new());
    let mut confirmer = Confirmer::new(space);
    for recorder in recorders {
        let (observations, unknown) = recorder.take(&mut confirmer);
        let outcome = check(phase, &by_key, observations, unknown, &timing);
        correctness.add(&outcome.correctness);
        deliveries += outcome.delivered;
        superseded += outcome.superseded;
        last = last.max(outcome.last_delivery);
        from_intended.extend(outcome.from_intended_us);
        from_ack.extend(outcome.from_ack_us);
    }
    let duration = last
        .map(|last| last.saturating_duration_since(timing.start))
        .unwrap_or_default()
        .as_secs_f64()
        .max(f64::MIN_POSITIVE);
    // The agents (and the writer) are this process, less the apiserver when it is here.
    let agents_cpu = match (run.server, run.server_cpu) {
        (Server::Threads(_), Some(server)) => run.process_cpu.saturating_sub(server),
        _ => run.process_cpu,
    };
    ChurnResult {
        system,
        writes: phase.ops.len() as u64,
        write_failure: run.written.failure.clone(),
        deliveries,
        expected_deliveries: run.expected,
        duration_s: duration,
        deliveries_per_s: deliveries as f64 / duration,
        latency: Tail::of_micros(from_intended),
        latency_from_ack: Tail::of_micros(from_ack),
        propagation_lag: None,
        server_cpu_cores: run.server_cpu.map(|cpu| cpu.as_secs_f64() / duration),
        server_cpu_us_per_delivery: run
            .server_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / (deliveries.max(1) as f64)),
        agents_cpu_cores: agents_cpu.as_secs_f64() / duration,
        clients_cpu_cores: run.clients_cpu.map(|cpu| cpu.as_secs_f64() / duration),
        clients_cpu_us_per_delivery: run
            .clients_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / (deliveries.max(1) as f64)),
        writer_max_lag_ms: run.written.max_send_lag.as_secs_f64() * 1000.0,
        reconnects: 0,
        relists: recorders.iter().map(|r| r.relists()).sum(),
        superseded,
        correctness,
    }
}
