//! The command line: one clap `Args` per subcommand; every flag documented (the doc
//! comment is the help text) and readable from the environment.

mod bench;
mod certs;
mod fleet;
mod logging;
mod signal;

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::agent::{Agent, AgentConfig};
use crate::apiserver::{Apiserver, ApiserverConfig};
use crate::observe::{self, AgentClient, DEFAULT_AGENT_URL};

pub use self::logging::LogFormat;

/// fleetmesh: multi-cluster mesh state synchronizer.
#[derive(Debug, Parser)]
#[command(name = "fleetmesh", version, about)]
pub struct Cli {
    /// Log filter (tracing's env-filter syntax, e.g. `info,fleetmesh=debug`). Defaults to
    /// `info`, and to `warn` for `bench`, whose own progress and results are the output.
    #[arg(long, global = true, env = "FLEETMESH_LOG")]
    pub log: Option<String>,
    /// How log lines look on stderr: `text` (coloured only on a terminal) or `json`
    /// (one object per line, for log pipelines).
    #[arg(long, global = true, env = "FLEETMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a member cluster's apiserver: export its state into the store.
    Apiserver(ApiserverArgs),
    /// Run an agent: connect to every peer in its remotes directory (one file per peer,
    /// named after the peer's cluster; watched for changes) and serve the query API.
    Agent(AgentArgs),
    /// Show every link of an agent: ready, connected, synced kinds, counts, reconnects
    /// and the last failure; with `--apiserver`, an apiserver's side instead.
    Status(StatusArgs),
    /// Show the global services, their backends per cluster and those selected now.
    Services(QueryArgs),
    /// Show which cluster, namespace, pod and identity (with labels) own an IP.
    Lookup(LookupArgs),
    /// Explain what the agent holds: `explain service NS/NAME` shows every backend of
    /// every cluster, whether it is selected now and why or why not; `explain ip IP`
    /// who holds an IP, conflicts, and its identity's labels with their origin.
    #[command(subcommand)]
    Explain(ExplainCommand),
    /// Create a CA and issue certificates for mesh members.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Turn a mesh profile (members, ids, topology) into every member's configuration
    /// files and certificates; a re-run says what changes first.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Start a three-cluster mesh in this process (loopback, mutual TLS, embedded
    /// stores), show the merged view, make a cluster's backends fail, show the failover.
    Demo(DemoArgs),
    /// Measure fleetmesh (real gRPC and mTLS on loopback, the production code paths),
    /// optionally side by side with agents watching etcd directly; checks every result.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's files (certificates, configs, manifests) in this directory
    /// instead of a temporary one.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Leave the three clusters running after the fail-back, printing the agent's URL and
    /// commands to try, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
}

#[derive(Debug, Args)]
pub struct ApiserverArgs {
    /// The apiserver's YAML configuration file.
    #[arg(long, env = "FLEETMESH_CONFIG")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's YAML configuration file.
    #[arg(long, env = "FLEETMESH_CONFIG")]
    pub config: PathBuf,
}

/// Where and how to ask an agent.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The agent's query API.
    #[arg(long, env = "FLEETMESH_AGENT", default_value = DEFAULT_AGENT_URL)]
    pub agent: String,
    /// `table` for people, `json` for programs.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Ask the apiserver at this health URL (`http://host:port`) instead of the agent:
    /// connected watchers (peer, since, resumed or full, frames sent, how far behind),
    /// the exporter's state, the canary, the store's epoch and revision.
    #[arg(long, env = "FLEETMESH_APISERVER")]
    pub apiserver: Option<String>,
    #[command(flatten)]
    pub query: QueryArgs,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// The IP address to look up.
    pub ip: IpAddr,
    #[command(flatten)]
    pub query: QueryArgs,
}

impl LookupArgs {
    /// The address to ask for: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a
    /// dual-stack socket reports an IPv4 peer) is that IPv4 address.
    pub fn address(&self) -> IpAddr {
        self.ip.to_canonical()
    }
}

#[derive(Debug, Subcommand)]
pub enum ExplainCommand {
    /// Every backend of the global service NS/NAME: selected or not, and why.
    Service(ExplainServiceArgs),
    /// Who holds IP, who else claims it and how that was resolved, and where its
    /// identity's labels come from.
    Ip(LookupArgs),
}

#[derive(Debug, Args)]
pub struct ExplainServiceArgs {
    /// The service, as `namespace/name`.
    pub service: crate::model::ServiceName,
    #[command(flatten)]
    pub query: QueryArgs,
}

/// How a query command prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Cli {
    /// Installs the logger this command line asks for.
    pub fn init_logging(&self) {
        let default = match self.command {
            Command::Bench(_) => "warn",
            _ => "info",
        };
        logging::init(
            self.log.as_deref().unwrap_or(default),
            default,
            self.log_format,
        );
    }
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Apiserver(args) => run_apiserver(args).await,
        Command::Agent(args) => run_agent(args).await,
        Command::Status(StatusArgs {
            apiserver: Some(url),
            query: q,
        }) => {
            let status = AgentClient::new(&url)?.apiserver_status().await?;
            let now = observe::unix_ms_now();
            print_answer(q.output, &status, || {
                crate::apiserver::apiserver_status_table(&status, now)
            })
        }
        Command::Status(StatusArgs { query: q, .. }) => {
            let report = AgentClient::new(&q.agent)?.status().await?;
            let now = observe::unix_ms_now();
            print_answer(q.output, &report, || observe::status_table(&report, now))
        }
        Command::Services(q) => {
            let services = AgentClient::new(&q.agent)?.services().await?;
            print_answer(q.output, &services, || observe::services_table(&services))
        }
        Command::Lookup(args) => {
            let ip = args.address();
            let q = args.query;
            let entry = AgentClient::new(&q.agent)?.lookup(ip).await?;
            print_answer(q.output, &entry, || observe::lookup_table(ip, &entry))
        }
        Command::Explain(ExplainCommand::Service(args)) => {
            let q = args.query;
            let answer = AgentClient::new(&q.agent)?
                .explain_service(&args.service)
                .await?;
            print_answer(q.output, &answer, || observe::explain_table(&answer))
        }
        Command::Explain(ExplainCommand::Ip(args)) => {
            let q = args.query;
            let answer = AgentClient::new(&q.agent)?.explain_ip(args.ip).await?;
            print_answer(q.output, &answer, || observe::explain_ip_table(&answer))
        }
        Command::Demo(args) => {
            let until = if args.keep_running {
                let mut stop = signal::Stop::listen()?;
                Some(async move {
                    stop.received().await;
                })
            } else {
                None
            };
            crate::demo::run(args.workdir, until).await
        }
        Command::Certs(command) => certs::run(command),
        Command::Fleet(command) => fleet::run(command),
        Command::Bench(command) => bench::run(command).await,
    }
}

async fn run_apiserver(args: ApiserverArgs) -> anyhow::Result<()> {
    let config = ApiserverConfig::load(&args.config)?;
    let mut stop = signal::Stop::listen()?;
    let mut apiserver = Apiserver::start(config).await?;
    tokio::select! {
        result = apiserver.wait() => result,
        name = stop.received() => {
            tracing::info!(signal = name, "stopping: no new connections; open watches are told to reconnect");
            apiserver.stop(signal::GRPC_GRACE).await;
            tracing::info!("stopped");
            Ok(())
        }
    }
}

async fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let config = AgentConfig::load(&args.config)?;
    let mut stop = signal::Stop::listen()?;
    let mut agent = Agent::start(config).await?;
    let failed = tokio::select! {
        result = agent.wait() => Some(result),
        name = stop.received() => {
            tracing::info!(signal = name, "stopping");
            None
        }
    };
    match failed {
        Some(result) => result,
        None => {
            agent.stop().await;
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Prints a query's answer as a table or as JSON.
fn print_answer<T: Serialize>(
    output: Output,
    answer: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Table => print!("{}", table()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(answer).context("cannot write the answer as JSON")?
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn lookup_of_an_ipv4_mapped_address_asks_for_the_ipv4_address() {
        let address = |ip: &str| match Cli::try_parse_from(["fleetmesh", "lookup", ip]) {
            Ok(Cli {
                command: Command::Lookup(args),
                ..
            }) => args.address().to_string(),
            other => panic!("not a lookup: {other:?}"),
        };
        assert_eq!(address("::ffff:10.2.0.1"), "10.2.0.1");
        assert_eq!(address("10.2.0.1"), "10.2.0.1");
        assert_eq!(address("fd00::1"), "fd00::1");
    }
}
