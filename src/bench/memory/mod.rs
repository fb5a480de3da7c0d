//! `bench memory`: resident memory slopes, each measured in a process of its own (the
//! bench runs its own binary again as a probe, `fleetmesh bench probe …`), read from
//! `/proc/<pid>/status` once the process holds its state and has settled:
//!
//! - **apiserver per 100k endpoints**: an apiserver process (embedded store, watch
//!   cache, gRPC server) at several sizes;
//! - **per idle agent**: an apiserver process with K agents (in another process)
//!   connected, synced and idle, at several K;
//! - **per idle etcd watcher** (`--etcd-api`): an apiserver process serving the etcd
//!   API with K etcd clients (in another process) connected, each with a Cilium
//!   agent's watches open ([`watchers`]) and idle, at the same K;
//! - **agent per 100k merged endpoints**: an agent process merging several clusters'
//!   state (their apiservers in the bench's process), at several sizes.
//!
//! Each figure is the least-squares slope over its points, so the fixed part (runtime,
//! threads, certificates) drops out. Every probe's state is checked afterwards.

mod child;
mod probe;
mod rss;
mod slope;
mod table;
mod watchers;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

pub use self::probe::{Probe, ProbePeer, run_probe};
pub use self::rss::rss_kib;
pub use self::slope::{Fit, Point};
pub use self::table::memory_table;
pub use self::watchers::cilium_prefixes;

use self::child::ProbeProcess;
use super::agents::{spawn_agent, wait_ready};
use super::correctness::{Correctness, check_view};
use super::merge::start_member;
use super::pki::bench_pki;
use super::progress::Progress;
use super::setup::BenchOptions;
use crate::model::{ClusterName, IdMode};
use crate::remote::{LinkSettings, PeerConfig};
use crate::testkit::Pki;
use crate::tls::TlsFiles;

/// Apiserver sizes (endpoints) when not given: a slope over a 4× range in seconds.
pub const DEFAULT_APISERVER_SIZES: [u32; 3] = [25_000, 50_000, 100_000];
/// Idle agent counts when not given.
pub const DEFAULT_AGENT_COUNTS: [u32; 4] = [0, 64, 128, 256];
/// What the apiserver holds while idle agents are counted: small, so the per-agent
/// figure is the connection's, not the state's.
pub const DEFAULT_IDLE_ENDPOINTS: u32 = 1_000;
/// Merged sizes (endpoints in all) when not given.
pub const DEFAULT_MERGED_SIZES: [u32; 3] = [25_000, 50_000, 100_000];
/// Clusters an agent probe merges.
pub const DEFAULT_MERGED_CLUSTERS: u32 = 4;
/// How long a probe rests between holding its state and being measured: what a sync
/// allocated for the moment is freed by then.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(1);
/// Names the binary run as a probe (default: this one); tests point it at
/// `CARGO_BIN_EXE_fleetmesh`.
pub const EXE_ENV: &str = "FLEETMESH_BENCH_EXE";
/// The source cluster of the apiserver probes, and the agents' cluster.
const SOURCE: (&str, u32) = ("bench-source", 2);
const AGENT: (&str, u32) = ("bench-agent", 1);
/// The targets (issue 6).
const APISERVER_TARGET_MIB: f64 = 40.0;
const IDLE_AGENT_TARGET_KIB: f64 = 64.0;
const AGENT_TARGET_MIB: f64 = 16.0;

/// What `bench memory` measures.
#[derive(Clone, Debug)]
pub struct MemoryOptions {
    /// Endpoints of each apiserver point.
    pub apiserver_sizes: Vec<u32>,
    /// Idle agents of each point.
    pub agent_counts: Vec<u32>,
    /// Endpoints the apiserver holds while agents are counted.
    pub idle_endpoints: u32,
    /// Endpoints merged at each agent point.
    pub merged_sizes: Vec<u32>,
    /// Clusters those endpoints come from.
    pub merged_clusters: u32,
    pub settle: Duration,
    /// The binary to run as probes (else `$FLEETMESH_BENCH_EXE`, else this one).
    pub exe: Option<PathBuf>,
    pub bench: BenchOptions,
}

/// The report of one `bench memory` run.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryReport {
    pub scenario: &'static str,
    pub settle_ms: f64,
    /// Apiserver RSS against endpoints.
    pub apiserver: Fit,
    pub apiserver_mib_per_100k: f64,
    pub apiserver_target_met: bool,
    /// Apiserver RSS against idle connected agents.
    pub idle_agents: Fit,
    pub idle_agents_endpoints: u32,
    pub kib_per_idle_agent: f64,
    pub idle_agent_target_met: bool,
    /// Agent RSS against merged endpoints.
    pub agent: Fit,
    pub agent_clusters: u32,
    pub agent_mib_per_100k: f64,
    pub agent_target_met: bool,
    /// Apiserver RSS against idle etcd clients with Cilium's watches open
    /// (`--etcd-api`).
    pub idle_etcd_watchers: Option<IdleEtcdWatchers>,
    /// Every probe's state compared with what it should hold.
    pub correctness: Correctness,
}

/// The apiserver's memory per idle etcd client.
#[derive(Clone, Debug, Serialize)]
pub struct IdleEtcdWatchers {
    pub fit: Fit,
    /// Watches each client holds open on its one stream.
    pub watches_per_client: u32,
    pub kib_per_client: f64,
    pub kib_per_watch: f64,
    /// Per client, the stricter reading of the target.
    pub target_met: bool,
}

impl MemoryReport {
    /// Every correctness counter is zero.
    pub fn is_correct(&self) -> bool {
        self.correctness.is_clean()
    }
}

/// Runs the scenario.
pub async fn run(options: &MemoryOptions) -> anyhow::Result<MemoryReport> {
    let exe = match &options.exe {
        Some(exe) => exe.clone(),
        None => match std::env::var_os(EXE_ENV) {
            Some(exe) => PathBuf::from(exe),
            None => std::env::current_exe().context("cannot find the bench's own binary")?,
        },
    };
    if options.merged_clusters == 0 {
        bail!("an agent probe merges at least one cluster");
    }
    let pki = bench_pki()?;
    let run = Run {
        exe,
        server_tls: pki.server_files(&ClusterName::new(SOURCE.0)?)?,
        client_tls: pki.client_files(&ClusterName::new(AGENT.0)?)?,
        pki,
        options,
        done: Arc::new(AtomicUsize::new(0)),
    };
    let etcd_points = if options.bench.etcd_api {
        options.agent_counts.len()
    } else {
        0
    };
    let total = options.apiserver_sizes.len()
        + options.agent_counts.len()
        + options.merged_sizes.len()
        + etcd_points;
    let progress = Progress::start(
        options.bench.progress,
        "memory: points measured",
        total,
        run.done.clone(),
    );
    let measured = run.measure().await;
    progress.stop().await;
    let (apiserver, idle_agents, agent, idle_etcd_watchers, correctness) = measured?;
    let apiserver_mib_per_100k = apiserver.mib_per_100k();
    let kib_per_idle_agent = idle_agents.kib_per_unit;
    let agent_mib_per_100k = agent.mib_per_100k();
    Ok(MemoryReport {
        scenario: "memory",
        settle_ms: options.settle.as_secs_f64() * 1000.0,
        apiserver,
        apiserver_mib_per_100k,
        apiserver_target_met: apiserver_mib_per_100k <= APISERVER_TARGET_MIB,
        idle_agents,
        idle_agents_endpoints: options.idle_endpoints,
        kib_per_idle_agent,
        idle_agent_target_met: kib_per_idle_agent <= IDLE_AGENT_TARGET_KIB,
        agent,
        agent_clusters: options.merged_clusters,
        agent_mib_per_100k,
        agent_target_met: agent_mib_per_100k <= AGENT_TARGET_MIB,
        idle_etcd_watchers: idle_etcd_watchers.map(|fit| {
            let watches_per_client = cilium_prefixes(SOURCE.0).len() as u32;
            IdleEtcdWatchers {
                kib_per_client: fit.kib_per_unit,
                kib_per_watch: fit.kib_per_unit / f64::from(watches_per_client),
                target_met: fit.kib_per_unit <= IDLE_AGENT_TARGET_KIB,
                watches_per_client,
                fit,
            }
        }),
        correctness,
    })
}

/// One run's shared pieces.
struct Run<'a> {
    exe: PathBuf,
    pki: Pki,
    server_tls: TlsFiles,
    client_tls: TlsFiles,
    options: &'a MemoryOptions,
    /// Points measured, for the progress line.
    done: Arc<AtomicUsize>,
}

impl Run<'_> {
    async fn measure(&self) -> anyhow::Result<(Fit, Fit, Fit, Option<Fit>, Correctness)> {
        let mut correctness = Correctness::default();
        let mut points = Vec::new();
        for &endpoints in &self.options.apiserver_sizes {
            points.push(self.apiserver_point(endpoints, &mut correctness).await?);
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        let apiserver = Fit::of(points).context("apiserver sizes")?;
        let mut points = Vec::new();
        for &agents in &self.options.agent_counts {
            points.push(self.idle_agents_point(agents, &mut correctness).await?);
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        let idle_agents = Fit::of(points).context("idle agent counts")?;
        let mut points = Vec::new();
        for &endpoints in &self.options.merged_sizes {
            points.push(self.agent_point(endpoints, &mut correctness).await?);
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        let agent = Fit::of(points).context("merged sizes")?;
        let idle_etcd_watchers = match self.options.bench.etcd_api {
            true => {
                let mut points = Vec::new();
                for &clients in &self.options.agent_counts {
                    points.push(
                        self.idle_etcd_watchers_point(clients, &mut correctness)
                            .await?,
                    );
                    self.done.fetch_add(1, Ordering::Relaxed);
                }
                Some(Fit::of(points).context("idle etcd watcher counts")?)
            }
            false => None,
        };
        Ok((
            apiserver,
            idle_agents,
            agent,
            idle_etcd_watchers,
            correctness,
        ))
    }

    /// An apiserver probe holding `endpoints`, measured, then checked by a link from
    /// here.
    async fn apiserver_point(
        &self,
        endpoints: u32,
        correctness: &mut Correctness,
    ) -> anyhow::Result<Point> {
        let (apiserver, source) = self.start_apiserver(endpoints).await?;
        tokio::time::sleep(self.options.settle).await;
        let rss_kib = apiserver.rss_kib()?;
        correctness.add(&self.check_apiserver(&source).await?);
        apiserver.finish().await?;
        Ok(Point {
            size: u64::from(endpoints),
            rss_kib,
        })
    }

    /// An apiserver probe with `agents` idle agents of a probe connected, measured.
    async fn idle_agents_point(
        &self,
        agents: u32,
        correctness: &mut Correctness,
    ) -> anyhow::Result<Point> {
        let (apiserver, source) = self.start_apiserver(self.options.idle_endpoints).await?;
        let probe = match agents {
            0 => None,
            views => Some(self.start_agent(views, &[source]).await?),
        };
        self.measure_apiserver(apiserver, probe, agents, correctness)
            .await
    }

    /// An apiserver probe serving the etcd API with `clients` idle etcd clients of a
    /// probe connected, each with Cilium's watches open, measured.
    async fn idle_etcd_watchers_point(
        &self,
        clients: u32,
        correctness: &mut Correctness,
    ) -> anyhow::Result<Point> {
        let (apiserver, source) = self
            .start_apiserver_with(self.options.idle_endpoints, true)
            .await?;
        let probe = match clients {
            0 => None,
            count => {
                let mut args = vec![
                    "etcd-watchers".to_string(),
                    "--source".into(),
                    source.to_string(),
                    "--count".into(),
                    count.to_string(),
                ];
                args.extend(tls_args(&self.client_tls));
                let mut probe = ProbeProcess::spawn(&self.exe, &args)?;
                probe.expect("ready", self.options.bench.timeout).await?;
                Some(probe)
            }
        };
        self.measure_apiserver(apiserver, probe, clients, correctness)
            .await
    }

    /// The apiserver probe's RSS once `clients` (a probe holding that many, or none)
    /// have settled; then the clients' own check, and both stopped.
    async fn measure_apiserver(
        &self,
        apiserver: ProbeProcess,
        clients: Option<ProbeProcess>,
        size: u32,
        correctness: &mut Correctness,
    ) -> anyhow::Result<Point> {
        tokio::time::sleep(self.options.settle).await;
        let rss_kib = apiserver.rss_kib()?;
        if let Some(mut probe) = clients {
            correctness.add(&probe.check(self.options.bench.timeout).await?);
            probe.finish().await?;
        }
        apiserver.finish().await?;
        Ok(Point {
            size: u64::from(size),
            rss_kib,
        })
    }

    /// An agent probe merging `endpoints` from several clusters served from here,
    /// measured.
    async fn agent_point(
        &self,
        endpoints: u32,
        correctness: &mut Correctness,
    ) -> anyhow::Result<Point> {
        let clusters = self.options.merged_clusters;
        let per_cluster = (endpoints / clusters).max(1);
        let mut members = Vec::new();
        let mut peers = Vec::new();
        for k in 0..clusters {
            let member =
                start_member(&self.pki, per_cluster, k, IdMode::Normal, &self.client_tls).await?;
            peers.push(ProbePeer {
                name: member.workload.cluster.name.to_string(),
                id: member.workload.cluster.id.get(),
                endpoints: per_cluster,
                slot: k,
                address: member.peer.address.clone(),
            });
            members.push(member);
        }
        let mut probe = self.start_agent(1, &peers).await?;
        tokio::time::sleep(self.options.settle).await;
        let rss_kib = probe.rss_kib()?;
        correctness.add(&probe.check(self.options.bench.timeout).await?);
        probe.finish().await?;
        Ok(Point {
            size: u64::from(per_cluster) * u64::from(clusters),
            rss_kib,
        })
    }

    /// An apiserver probe serving `endpoints`, once it serves all of them.
    async fn start_apiserver(&self, endpoints: u32) -> anyhow::Result<(ProbeProcess, ProbePeer)> {
        self.start_apiserver_with(endpoints, false).await
    }

    /// An apiserver probe serving `endpoints`, also over the etcd API if `etcd_api` (the
    /// peer's address is then the etcd API's), once it serves all of them.
    async fn start_apiserver_with(
        &self,
        endpoints: u32,
        etcd_api: bool,
    ) -> anyhow::Result<(ProbeProcess, ProbePeer)> {
        let mut source = ProbePeer {
            name: SOURCE.0.to_string(),
            id: SOURCE.1,
            endpoints,
            slot: 0,
            address: String::new(),
        };
        let mut args = vec![
            "apiserver".to_string(),
            "--source".into(),
            source.to_string(),
        ];
        if etcd_api {
            args.push("--etcd-api".into());
        }
        args.extend(tls_args(&self.server_tls));
        let mut apiserver = ProbeProcess::spawn(&self.exe, &args)?;
        let ready = apiserver
            .expect("ready", self.options.bench.timeout)
            .await?;
        let mut addresses = ready.split_whitespace();
        let (grpc, etcd) = (addresses.next(), addresses.next());
        source.address = match (etcd_api, grpc, etcd) {
            (false, Some(grpc), _) => grpc.to_string(),
            (true, _, Some(etcd)) => etcd.to_string(),
            _ => bail!("the apiserver probe said {ready:?}, not where it listens"),
        };
        Ok((apiserver, source))
    }

    /// An agent probe with `views` views, each linked to every one of `peers`, once every
    /// link is synced.
    async fn start_agent(&self, views: u32, peers: &[ProbePeer]) -> anyhow::Result<ProbeProcess> {
        let mut args = vec![
            "agent".to_string(),
            "--local-name".into(),
            AGENT.0.into(),
            "--local-id".into(),
            AGENT.1.to_string(),
            "--views".into(),
            views.to_string(),
        ];
        for peer in peers {
            args.extend(["--peer".to_string(), peer.to_string()]);
        }
        args.extend(tls_args(&self.client_tls));
        let mut probe = ProbeProcess::spawn(&self.exe, &args)?;
        probe.expect("ready", self.options.bench.timeout).await?;
        Ok(probe)
    }

    /// Links an agent of this process to the apiserver probe of `source` and compares
    /// what it gets with the source's state.
    async fn check_apiserver(&self, source: &ProbePeer) -> anyhow::Result<Correctness> {
        let local = probe_cluster(AGENT)?;
        let config = PeerConfig {
            name: ClusterName::new(&source.name)?,
            address: source.address.clone(),
            server_name: None,
            tls: self.client_tls.clone(),
        };
        let (view, link) = spawn_agent(&config, &local, LinkSettings::default());
        let ready = wait_ready(
            std::slice::from_ref(&link),
            Instant::now(),
            None,
            self.options.bench.timeout,
        )
        .await;
        let status = link.status_rx().borrow().clone();
        link.stop().await;
        if let Err(err) = ready {
            return Err(err.context(format!(
                "no agent synced with the apiserver probe: {status:?}"
            )));
        }
        let mut checked = check_view(&view.read(), &source.workload()?);
        checked.flaps = status.reconnects;
        Ok(checked)
    }
}

/// The probe's certificate flags.
fn tls_args(tls: &TlsFiles) -> Vec<String> {
    let path = |p: &std::path::Path| p.display().to_string();
    vec![
        "--cert".into(),
        path(&tls.cert),
        "--key".into(),
        path(&tls.key),
        "--ca".into(),
        path(&tls.ca),
    ]
}

fn probe_cluster((name, id): (&str, u32)) -> anyhow::Result<crate::model::Cluster> {
    ProbePeer {
        name: name.to_string(),
        id,
        endpoints: 0,
        slot: 0,
        address: String::new(),
    }
    .cluster()
}
