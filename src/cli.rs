//! The command line: one clap `Args` per subcommand; every flag documented (the doc
//! comment is the help text) and readable from the environment.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::apiserver::{Apiserver, ApiserverConfig};

/// fleetmesh: multi-cluster mesh state synchronizer.
#[derive(Debug, Parser)]
#[command(name = "fleetmesh", version, about)]
pub struct Cli {
    /// Log filter (tracing's env-filter syntax, e.g. `info,fleetmesh=debug`).
    #[arg(long, global = true, env = "FLEETMESH_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a member cluster's apiserver: export its state into the store.
    Apiserver(ApiserverArgs),
}

#[derive(Debug, Args)]
pub struct ApiserverArgs {
    /// The apiserver's YAML configuration file.
    #[arg(long, env = "FLEETMESH_CONFIG")]
    pub config: PathBuf,
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Apiserver(args) => run_apiserver(args).await,
    }
}

async fn run_apiserver(args: ApiserverArgs) -> anyhow::Result<()> {
    let config = ApiserverConfig::load(&args.config)?;
    let apiserver = Apiserver::start(config).await?;
    tokio::select! {
        result = apiserver.wait() => result,
        signal = tokio::signal::ctrl_c() => {
            signal.context("cannot listen for Ctrl-C")?;
            tracing::info!("stopping");
            Ok(())
        }
    }
}
