//! `fleetmesh fleet`: turn a mesh profile into every member's files.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::certs::files::write_atomic;
use crate::fleet::{self, FileOp};

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Validate a mesh profile and write, per member, apiserver.yaml, agent.yaml,
    /// remotes/<peer>.yaml and certificates into --out. A re-run first prints what
    /// changes (members, links, ids, certificates, files).
    Plan(PlanArgs),
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The mesh profile (YAML).
    pub profile: PathBuf,
    /// The output directory; it also holds the CA and the lock file of earlier runs.
    #[arg(long, env = "FLEETMESH_FLEET_OUT")]
    pub out: PathBuf,
    /// Print what would change and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow members to leave: their files are deleted and their peers stop seeing them.
    #[arg(long)]
    pub allow_removal: bool,
}

pub fn run(command: FleetCommand) -> anyhow::Result<()> {
    match command {
        FleetCommand::Plan(args) => plan(args),
    }
}

fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.profile)
        .with_context(|| format!("cannot read the profile {}", args.profile.display()))?;
    let plan = fleet::plan(&text, &args.out)
        .with_context(|| format!("cannot plan {}", args.profile.display()))?;
    print!("{}", plan.what_if());
    if args.dry_run || plan.what_if().is_empty() {
        return Ok(());
    }
    let ops = plan.materialize(args.allow_removal)?;
    for op in &ops {
        apply(op)?;
    }
    println!("wrote {}", args.out.display());
    Ok(())
}

fn apply(op: &FileOp) -> anyhow::Result<()> {
    match op {
        FileOp::CreateDir(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
        }
        FileOp::Write {
            path,
            contents,
            mode,
        } => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            Ok(write_atomic(path, contents.as_bytes(), *mode)?)
        }
        FileOp::Remove(path) => {
            std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
        }
    }
}
