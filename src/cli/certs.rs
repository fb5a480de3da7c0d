//! `fleetmesh certs`: a CA and leaf certificates for mesh members, as files.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::certs::Ca;
use crate::certs::files::{CA_CERT_FILE, load_ca, write_ca, write_pem_files};
use crate::model::ClusterName;

const DAY: u64 = 24 * 3600;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a CA in a directory (ca.crt, ca.key). An existing CA is kept unless
    /// --force is given, so the command is safe to re-run.
    Ca(CaArgs),
    /// Issue a server (apiserver) or client (agent) certificate for a cluster, signed by
    /// the CA in --ca-dir; written as <out>/<role>-<cluster>.crt and .key.
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub struct CaArgs {
    /// Directory for ca.crt and ca.key.
    #[arg(long)]
    pub out: PathBuf,
    /// The CA's common name.
    #[arg(long, default_value = "fleetmesh CA")]
    pub name: String,
    /// Validity in days.
    #[arg(long, default_value_t = 3650)]
    pub days: u64,
    /// Replace an existing CA (every certificate it signed stops being trusted).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// An apiserver's certificate: needs --dns or --ip, the names peers dial.
    Server,
    /// An agent's certificate, naming the cluster it dials from.
    Client,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Directory holding the CA (ca.crt, ca.key).
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// The cluster the certificate names.
    #[arg(long)]
    pub cluster: ClusterName,
    #[arg(long, value_enum)]
    pub role: Role,
    /// DNS names peers dial (server certificates; repeatable).
    #[arg(long)]
    pub dns: Vec<String>,
    /// IP addresses peers dial (server certificates; repeatable).
    #[arg(long)]
    pub ip: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u64,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Ca(args) => {
            if args.out.join(CA_CERT_FILE).exists() && !args.force {
                load_ca(&args.out).with_context(|| {
                    format!("{} holds a CA that cannot be used", args.out.display())
                })?;
                println!("kept the existing CA in {}", args.out.display());
                return Ok(());
            }
            let ca = Ca::generate(&args.name, Duration::from_secs(args.days * DAY))?;
            let files = write_ca(&args.out, &ca)?;
            println!("wrote {} and {}", files.cert.display(), files.key.display());
        }
        CertsCommand::Issue(args) => {
            let ca = load_ca(&args.ca_dir)
                .with_context(|| format!("cannot load the CA from {}", args.ca_dir.display()))?;
            let validity = Duration::from_secs(args.days * DAY);
            let (issued, prefix) = match args.role {
                Role::Server => (
                    ca.issue_server(&args.cluster, &args.dns, &args.ip, validity)?,
                    "server",
                ),
                Role::Client => (ca.issue_client(&args.cluster, validity)?, "client"),
            };
            let files = write_pem_files(&args.out, &format!("{prefix}-{}", args.cluster), &issued)?;
            println!(
                "wrote {} and {} (valid until {})",
                files.cert.display(),
                files.key.display(),
                issued.not_after
            );
        }
    }
    Ok(())
}
