//! `fleetmesh certs`: a CA and leaf certificates for mesh members, as files, and their
//! lifecycle (renewal, CA rollover, inspection). The logic lives in [`crate::certs`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::certs::Ca;
use crate::certs::files::{CA_CERT_FILE, load_ca, write_ca, write_pem_files};
use crate::certs::rotate::{
    RenewPolicy, RolloverOptions, RotateReport, retire_ca, rotate_ca, rotate_leaves,
};
use crate::certs::{inspect, rotate};
use crate::model::ClusterName;

use super::Output;

const DAY: u64 = 24 * 3600;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a CA in a directory (ca.crt, ca.key). An existing CA is kept unless
    /// --force is given, so the command is safe to re-run.
    Ca(CaArgs),
    /// Issue a server (apiserver) or client (agent) certificate for a cluster, signed by
    /// the CA in --ca-dir; written as <out>/<role>-<cluster>.crt and .key.
    Issue(IssueArgs),
    /// Renew every leaf certificate under --dir that expires within --within-days (or
    /// that the previous CA signed during a rollover), keeping its role, cluster and
    /// names. Safe to re-run; prints "nothing to do" when nothing is due.
    Rotate(RotateArgs),
    /// Start a CA rollover: keep the current CA in <ca-dir>/previous/, create a new one,
    /// write the bundle old + new to every ca.crt under --dir and re-issue every leaf.
    /// Re-running continues the same rollover.
    RotateCa(RotateCaArgs),
    /// Finish a CA rollover once every member uses the new certificates: every ca.crt
    /// under --dir trusts the new CA only, and <ca-dir>/previous/ is deleted.
    RetireCa(RetireCaArgs),
    /// Show each certificate of the given files or directories: subject, cluster, SANs,
    /// issuer, expiry and which bundle in its directory trusts it.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Directory of member certificates, searched recursively.
    #[arg(long, env = "FLEETMESH_CERTS_DIR")]
    pub dir: PathBuf,
    /// Directory holding the CA (ca.crt, ca.key).
    #[arg(long, env = "FLEETMESH_CA_DIR")]
    pub ca_dir: PathBuf,
    /// Renew leaves that expire within this many days.
    #[arg(long, default_value_t = 30)]
    pub within_days: u64,
    /// Validity of renewed leaves in days, 1 to 36500 (default: the lifetime the old leaf
    /// had).
    #[arg(long, value_parser = validity_days)]
    pub days: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RotateCaArgs {
    /// Directory holding the CA; the old one is kept in its previous/ subdirectory.
    #[arg(long, env = "FLEETMESH_CA_DIR")]
    pub ca_dir: PathBuf,
    /// Directory of member certificates and bundles, searched recursively.
    #[arg(long, env = "FLEETMESH_CERTS_DIR")]
    pub dir: PathBuf,
    /// The new CA's common name (a date is appended to tell CAs apart).
    #[arg(long, default_value = "fleetmesh CA")]
    pub name: String,
    /// The new CA's validity in days (1 to 36500).
    #[arg(long, default_value_t = 3650, value_parser = validity_days)]
    pub ca_days: u64,
    /// Validity of the re-issued leaves in days, 1 to 36500 (default: the lifetime the old
    /// leaf had).
    #[arg(long, value_parser = validity_days)]
    pub days: Option<u64>,
    /// Only write the bundles; re-issue the leaves later with `certs rotate` (once every
    /// member reloaded the bundle).
    #[arg(long)]
    pub bundles_only: bool,
}

#[derive(Debug, Args)]
pub struct RetireCaArgs {
    /// Directory holding the CA and its previous/ subdirectory.
    #[arg(long, env = "FLEETMESH_CA_DIR")]
    pub ca_dir: PathBuf,
    /// Directory of member certificates and bundles, searched recursively.
    #[arg(long, env = "FLEETMESH_CERTS_DIR")]
    pub dir: PathBuf,
    /// Retire even though some leaves are still signed by the old CA (their members are
    /// cut off).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Certificate files or directories (searched recursively for *.crt).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// `table` for people, `json` for programs.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct CaArgs {
    /// Directory for ca.crt and ca.key.
    #[arg(long)]
    pub out: PathBuf,
    /// The CA's common name.
    #[arg(long, default_value = "fleetmesh CA")]
    pub name: String,
    /// Validity in days (1 to 36500).
    #[arg(long, default_value_t = 3650, value_parser = validity_days)]
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
    /// Validity in days (1 to 36500).
    #[arg(long, default_value_t = 365, value_parser = validity_days)]
    pub days: u64,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// The longest validity accepted, in days: a hundred years, far past any sane
/// certificate and far from overflowing the arithmetic on it.
const MAX_VALIDITY_DAYS: u64 = 36_500;

/// A validity in days: at least one (a certificate valid for 0 days has expired when it is
/// written), at most [`MAX_VALIDITY_DAYS`].
fn validity_days(text: &str) -> Result<u64, String> {
    let days: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of days"))?;
    match days {
        0 => Err(
            "must be at least 1: a certificate valid for 0 days is expired when \
                  written"
                .to_string(),
        ),
        d if d > MAX_VALIDITY_DAYS => Err(format!("must be at most {MAX_VALIDITY_DAYS}")),
        d => Ok(d),
    }
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
        CertsCommand::Rotate(args) => {
            let ca = load_ca(&args.ca_dir)
                .with_context(|| format!("cannot load the CA from {}", args.ca_dir.display()))?;
            let policy = RenewPolicy {
                within: Duration::from_secs(args.within_days * DAY),
                lifetime: args.days.map(|d| Duration::from_secs(d * DAY)),
            };
            let report = rotate_leaves(&args.dir, &ca, policy, time::OffsetDateTime::now_utc())?;
            print_rotation(&report)?;
        }
        CertsCommand::RotateCa(args) => {
            let options = RolloverOptions {
                ca_name: format!("{} {}", args.name, time::OffsetDateTime::now_utc().date()),
                ca_lifetime: Duration::from_secs(args.ca_days * DAY),
                leaves: RenewPolicy {
                    lifetime: args.days.map(|d| Duration::from_secs(d * DAY)),
                    ..RenewPolicy::default()
                },
                bundles_only: args.bundles_only,
            };
            let report = rotate_ca(&args.ca_dir, &args.dir, &options)?;
            if report.new_ca {
                println!(
                    "new CA in {}; the old one is kept in {}",
                    args.ca_dir.display(),
                    args.ca_dir.join(rotate::PREVIOUS_CA_DIR).display()
                );
            } else {
                println!("continuing the CA rollover already under way");
            }
            for bundle in &report.bundles_written {
                println!("bundle (old + new CA): {}", bundle.display());
            }
            match &report.leaves {
                Some(leaves) => print_rotation(leaves)?,
                None => println!(
                    "leaves not re-issued (--bundles-only): run `fleetmesh certs rotate` once \
                     every member reloaded the bundle"
                ),
            }
        }
        CertsCommand::RetireCa(args) => {
            let report = retire_ca(&args.ca_dir, &args.dir, args.force)?;
            if report.bundles_written.is_empty() && !report.previous_removed {
                println!("nothing to do: no CA is being retired");
            }
            for bundle in &report.bundles_written {
                println!("bundle (current CA only): {}", bundle.display());
            }
            if report.previous_removed {
                println!(
                    "deleted the old CA in {}",
                    args.ca_dir.join(rotate::PREVIOUS_CA_DIR).display()
                );
            }
        }
        CertsCommand::Inspect(args) => {
            let certs = inspect::inspect(&args.paths)?;
            super::print_answer(args.output, &certs, || {
                inspect::render(&certs, time::OffsetDateTime::now_utc())
            })?;
        }
    }
    Ok(())
}

/// Prints what a rotation did; files it could not handle make the command fail, so a
/// CronJob shows them.
fn print_rotation(report: &RotateReport) -> anyhow::Result<()> {
    for r in &report.renewed {
        println!(
            "renewed {} ({}, {}): valid until {}",
            r.cert.display(),
            r.cluster,
            r.reason,
            r.not_after
        );
    }
    if report.renewed.is_empty() {
        println!(
            "nothing to do: {} leaf certificate(s) are current",
            report.kept.len()
        );
    }
    for (path, why) in &report.skipped {
        eprintln!("skipped {}: {why}", path.display());
    }
    anyhow::ensure!(
        report.skipped.is_empty(),
        "{} certificate file(s) could not be renewed",
        report.skipped.len()
    );
    Ok(())
}
