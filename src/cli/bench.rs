//! `fleetmesh bench SCENARIO`: runs one benchmark scenario and prints its table, or its
//! JSON report with `-o json`. Exits non-zero when the run was not correct.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use super::Output;
use crate::bench::sync::{self, SyncOptions};
use crate::bench::{BenchOptions, StoreChoice, report};

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// An apiserver holding N endpoints (+ N/10 identities, N/100 nodes, N/100 services)
    /// and W agents connecting at once: time from connect to synced per agent.
    Sync(SyncArgs),
    /// R writes per second (7 of 10 endpoint upserts, 2 endpoint deletes, 1 identity,
    /// node or service) for T seconds, fanned out to W agents: deliveries per second,
    /// propagation latency (p50, p99, p99.9, max) and the apiserver's CPU.
    Churn(ChurnArgs),
    /// W agents synced with an apiserver holding N endpoints; the apiserver restarts
    /// with an emptied embedded store (a new epoch): time until every agent resynced,
    /// and the reconnects per second.
    Storm(StormArgs),
    /// One agent merging C clusters of N endpoints each, every cluster with its own
    /// apiserver: time until synced with all, and the memory it took.
    Merge(MergeArgs),
    /// Resident memory slopes of separate processes: apiserver per 100k endpoints, per
    /// idle connected agent, and agent per 100k merged endpoints.
    Memory(MemoryArgs),
    /// Every scenario above at its default size, one after the other (a few minutes).
    All(AllArgs),
    /// A process `memory` measures (run by the bench itself).
    #[command(hide = true, subcommand)]
    Probe(ProbeArgs),
}

/// The scenarios `all` runs, in order.
const ALL_SCENARIOS: &[&str] = &["sync", "churn", "storm", "merge", "memory"];

#[derive(Debug, Args)]
pub struct AllArgs {
    /// `table` for people, `json` for programs (one report per scenario).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// One scenario as its command line gives it, so that `all` runs each with exactly the
/// defaults a user gets.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct OneScenario {
    #[command(subcommand)]
    scenario: BenchCommand,
}

/// The apiserver's store in a bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreArg {
    Memory,
    Etcd,
}

/// What a scenario is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BaselineArg {
    /// Every agent watches the source etcd directly and decodes Cilium's JSON, as
    /// Cilium's agents do.
    EtcdDirect,
}

/// Options every scenario has.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The apiserver's store.
    #[arg(long, value_enum, default_value_t = StoreArg::Memory)]
    pub store: StoreArg,
    /// An etcd to use (e.g. `http://127.0.0.1:2379`); without it the bench starts its own
    /// from `etcd` on PATH when it needs one. Its keys go under a namespace of the run's,
    /// deleted at the end.
    #[arg(long, env = "FLEETMESH_BENCH_ETCD")]
    pub etcd: Option<String>,
    /// Also run the same workload the way Cilium agents work, and show the ratio.
    #[arg(long, value_enum)]
    pub baseline: Option<BaselineArg>,
    /// Also exercise the etcd API: in `sync` and `churn`, a third system, the baseline's
    /// etcd agents pointed at the apiserver's etcd API instead of etcd; in `memory`, idle
    /// etcd watchers are measured too; in `merge`, the agent also
    /// keeps every cluster's Cilium cache keys (KVStoreMesh's part), then listed as Cilium
    /// does, in pages of 256.
    #[arg(long)]
    pub etcd_api: bool,
    /// A phase taking longer than this many seconds fails the run.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// `table` for people, `json` for programs.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Endpoints the apiserver holds.
    #[arg(long, default_value_t = sync::DEFAULT_ENDPOINTS)]
    pub endpoints: u32,
    /// Agents connecting at once.
    #[arg(long, default_value_t = sync::DEFAULT_AGENTS)]
    pub agents: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct ChurnArgs {
    /// Writes per second (open loop: each write has an intended send time).
    #[arg(long, default_value_t = crate::bench::churn::DEFAULT_RATE)]
    pub rate: u32,
    /// Seconds of churn.
    #[arg(long, default_value_t = crate::bench::churn::DEFAULT_SECONDS)]
    pub seconds: u32,
    /// Agents receiving every write.
    #[arg(long, default_value_t = crate::bench::churn::DEFAULT_AGENTS)]
    pub agents: u32,
    /// Endpoints the source holds before the churn.
    #[arg(long, default_value_t = crate::bench::churn::DEFAULT_ENDPOINTS)]
    pub endpoints: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl CommonArgs {
    fn options(&self) -> BenchOptions {
        BenchOptions {
            store: match self.store {
                StoreArg::Memory => StoreChoice::Memory,
                StoreArg::Etcd => StoreChoice::Etcd,
            },
            etcd: self.etcd.clone(),
            etcd_direct: self.baseline == Some(BaselineArg::EtcdDirect),
            etcd_api: self.etcd_api,
            timeout: Duration::from_secs(self.timeout),
            // A progress line rewritten in place only makes sense on a terminal: in a
            // file it would be hundreds of lines glued together.
            progress: std::io::stderr().is_terminal(),
        }
    }
}

#[derive(Debug, Args)]
pub struct StormArgs {
    /// Endpoints the apiserver holds.
    #[arg(long, default_value_t = crate::bench::storm::DEFAULT_ENDPOINTS)]
    pub endpoints: u32,
    /// Agents synced with it when it restarts.
    #[arg(long, default_value_t = crate::bench::storm::DEFAULT_AGENTS)]
    pub agents: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Clusters merged (up to 254 with normal cluster ids; 255 and more use extended ids).
    #[arg(long, default_value_t = crate::bench::merge::DEFAULT_CLUSTERS)]
    pub clusters: u32,
    /// Endpoints per cluster.
    #[arg(long, default_value_t = crate::bench::merge::DEFAULT_ENDPOINTS)]
    pub endpoints: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Endpoints of each apiserver point (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = crate::bench::memory::DEFAULT_APISERVER_SIZES)]
    pub apiserver_sizes: Vec<u32>,
    /// Idle connected agents of each point (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = crate::bench::memory::DEFAULT_AGENT_COUNTS)]
    pub agent_counts: Vec<u32>,
    /// Endpoints the apiserver holds while idle agents are counted.
    #[arg(long, default_value_t = crate::bench::memory::DEFAULT_IDLE_ENDPOINTS)]
    pub idle_endpoints: u32,
    /// Endpoints an agent merges at each point (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = crate::bench::memory::DEFAULT_MERGED_SIZES)]
    pub merged_sizes: Vec<u32>,
    /// Clusters the merged endpoints come from.
    #[arg(long, default_value_t = crate::bench::memory::DEFAULT_MERGED_CLUSTERS)]
    pub merged_clusters: u32,
    /// Milliseconds a probe rests after it holds its state, before it is measured.
    #[arg(long, default_value_t = crate::bench::memory::DEFAULT_SETTLE.as_millis() as u64)]
    pub settle_ms: u64,
    /// The binary run as probes (default: this one).
    #[arg(long, env = crate::bench::memory::EXE_ENV)]
    pub probe_exe: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The probe roles.
#[derive(Debug, Subcommand)]
pub enum ProbeArgs {
    /// An apiserver serving a generated workload from its embedded store.
    Apiserver {
        /// `name:id:endpoints:slot`.
        #[arg(long)]
        source: crate::bench::memory::ProbePeer,
        #[command(flatten)]
        tls: ProbeTls,
        /// Also serve the etcd API; its address follows the gRPC one on the `ready` line.
        #[arg(long)]
        etcd_api: bool,
    },
    /// Idle etcd clients, each with Cilium's watches open on an etcd API.
    EtcdWatchers {
        /// `name:id:endpoints:slot@address`: the cluster served, at its etcd API.
        #[arg(long)]
        source: crate::bench::memory::ProbePeer,
        #[arg(long)]
        count: u32,
        #[command(flatten)]
        tls: ProbeTls,
    },
    /// Agent views, each linked to every peer.
    Agent {
        #[arg(long)]
        local_name: String,
        #[arg(long)]
        local_id: u32,
        #[arg(long, default_value_t = 1)]
        views: u32,
        /// `name:id:endpoints:slot@address`, once per peer.
        #[arg(long = "peer")]
        peers: Vec<crate::bench::memory::ProbePeer>,
        #[command(flatten)]
        tls: ProbeTls,
    },
}

/// A probe's certificate files.
#[derive(Debug, Args)]
pub struct ProbeTls {
    #[arg(long)]
    pub cert: std::path::PathBuf,
    #[arg(long)]
    pub key: std::path::PathBuf,
    #[arg(long)]
    pub ca: std::path::PathBuf,
}

impl From<ProbeTls> for crate::tls::TlsFiles {
    fn from(t: ProbeTls) -> Self {
        Self {
            cert: t.cert,
            key: t.key,
            ca: t.ca,
        }
    }
}

/// Prints `report` as `output` asks (`table` for people) and fails an incorrect run.
fn print_report<R: serde::Serialize>(
    report: &R,
    output: Output,
    table: impl FnOnce(&R) -> String,
    correct: bool,
) -> anyhow::Result<()> {
    match output {
        Output::Table => print!("{}", table(report)),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(report).context("cannot write the report as JSON")?
        ),
    }
    if !correct {
        bail!("the run was not correct");
    }
    Ok(())
}

/// Runs the scenario and prints its report.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Merge(args) => {
            let options = crate::bench::merge::MergeOptions {
                clusters: args.clusters,
                endpoints: args.endpoints,
                bench: args.common.options(),
                etcd_api: args.common.etcd_api,
            };
            let report = crate::bench::merge::run(&options).await?;
            let correct = report.is_correct();
            print_report(
                &report,
                args.common.output,
                crate::bench::merge::merge_table,
                correct,
            )
        }
        BenchCommand::Memory(args) => {
            let options = crate::bench::memory::MemoryOptions {
                apiserver_sizes: args.apiserver_sizes,
                agent_counts: args.agent_counts,
                idle_endpoints: args.idle_endpoints,
                merged_sizes: args.merged_sizes,
                merged_clusters: args.merged_clusters,
                settle: Duration::from_millis(args.settle_ms),
                exe: args.probe_exe,
                bench: args.common.options(),
            };
            let report = crate::bench::memory::run(&options).await?;
            let correct = report.is_correct();
            print_report(
                &report,
                args.common.output,
                crate::bench::memory::memory_table,
                correct,
            )
        }
        BenchCommand::Probe(role) => {
            let probe = match role {
                ProbeArgs::Apiserver {
                    source,
                    tls,
                    etcd_api,
                } => crate::bench::memory::Probe::Apiserver {
                    source,
                    tls: tls.into(),
                    etcd_api,
                },
                ProbeArgs::EtcdWatchers { source, count, tls } => {
                    crate::bench::memory::Probe::EtcdWatchers {
                        source,
                        count,
                        tls: tls.into(),
                    }
                }
                ProbeArgs::Agent {
                    local_name,
                    local_id,
                    views,
                    peers,
                    tls,
                } => crate::bench::memory::Probe::Agent {
                    local: (local_name, local_id),
                    views,
                    peers,
                    tls: tls.into(),
                },
            };
            crate::bench::memory::run_probe(probe).await
        }
        BenchCommand::Storm(args) => {
            let options = crate::bench::storm::StormOptions {
                endpoints: args.endpoints,
                agents: args.agents,
                bench: args.common.options(),
            };
            let report = crate::bench::storm::run(&options).await?;
            let correct = report.is_correct();
            print_report(
                &report,
                args.common.output,
                crate::bench::storm::storm_table,
                correct,
            )
        }
        BenchCommand::Churn(args) => {
            let options = crate::bench::churn::ChurnOptions {
                rate: args.rate,
                seconds: args.seconds,
                agents: args.agents,
                endpoints: args.endpoints,
                bench: args.common.options(),
            };
            let report = crate::bench::churn::run(&options).await?;
            let correct = report.is_correct();
            print_report(
                &report,
                args.common.output,
                crate::bench::churn::churn_table,
                correct,
            )
        }
        BenchCommand::Sync(args) => {
            let options = SyncOptions {
                endpoints: args.endpoints,
                agents: args.agents,
                bench: args.common.options(),
            };
            let report = sync::run(&options).await?;
            let correct = report.is_correct();
            print_report(&report, args.common.output, report::sync_table, correct)
        }
        BenchCommand::All(args) => run_all(args.output).await,
    }
}

/// Runs every scenario at its defaults; fails at the end if any failed.
async fn run_all(output: Output) -> anyhow::Result<()> {
    let output = match output {
        Output::Table => "table",
        Output::Json => "json",
    };
    let mut failed = Vec::new();
    for name in ALL_SCENARIOS {
        let OneScenario { scenario } = OneScenario::try_parse_from([name, "--output", output])
            .with_context(|| format!("the {name} scenario's defaults"))?;
        if output == "table" {
            println!("== fleetmesh bench {name} ==");
        }
        // Boxed: `run` is recursive through `all`.
        if let Err(err) = Box::pin(run(scenario)).await {
            eprintln!(
                "fleetmesh bench {name}: {}",
                crate::report::error_chain(&*err)
            );
            failed.push(*name);
        }
        if output == "table" {
            println!();
        }
    }
    if !failed.is_empty() {
        bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_of_all_parses_with_its_defaults() {
        for name in ALL_SCENARIOS {
            let parsed = OneScenario::try_parse_from([name, "--output", "json"]).unwrap();
            assert!(!matches!(parsed.scenario, BenchCommand::All(_)), "{name}");
        }
    }
}
