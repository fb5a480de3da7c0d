//! `fleetmesh bench SCENARIO`: runs one benchmark scenario and prints its table, or its
//! JSON report with `-o json`. Exits non-zero when the run was not correct.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use super::Output;
use crate::bench::sync::{self, SyncOptions};
use crate::bench::{BenchOptions, StoreChoice, report};

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// An apiserver holding N endpoints (+ N/10 identities, N/100 nodes, N/100 services)
    /// and W agents connecting at once: time from connect to synced per agent.
    Sync(SyncArgs),
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

impl CommonArgs {
    fn options(&self) -> BenchOptions {
        BenchOptions {
            store: match self.store {
                StoreArg::Memory => StoreChoice::Memory,
                StoreArg::Etcd => StoreChoice::Etcd,
            },
            etcd: self.etcd.clone(),
            etcd_direct: self.baseline == Some(BaselineArg::EtcdDirect),
            timeout: Duration::from_secs(self.timeout),
            progress: true,
        }
    }
}

/// Runs the scenario and prints its report.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Sync(args) => {
            let options = SyncOptions {
                endpoints: args.endpoints,
                agents: args.agents,
                bench: args.common.options(),
            };
            let report = sync::run(&options).await?;
            match args.common.output {
                Output::Table => print!("{}", report::sync_table(&report)),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&report)
                        .context("cannot write the report as JSON")?
                ),
            }
            if !report.is_correct() {
                bail!("the run was not correct");
            }
            Ok(())
        }
    }
}
