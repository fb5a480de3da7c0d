use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

use super::Problem;
use crate::certs::CertError;
use crate::model::ClusterName;

/// Every problem a profile has, one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "the profile has {n} problem{}; nothing was written:",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// Why a plan could not be made or turned into files.
#[derive(Debug, Error)]
pub enum FleetError {
    #[error("the profile is not a valid mesh profile")]
    Profile(#[source] serde_yaml::Error),
    #[error("{0}")]
    Invalid(Problems),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a fleet lock file", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("cannot render the lock file")]
    RenderLock(#[source] serde_yaml::Error),
    #[error("the CA in {} cannot be used", path.display())]
    Ca {
        path: PathBuf,
        #[source]
        source: CertError,
    },
    #[error("cannot create the mesh CA")]
    NewCa(#[source] CertError),
    #[error("cannot issue the {role} certificate of {cluster}")]
    Issue {
        role: &'static str,
        cluster: ClusterName,
        #[source]
        source: CertError,
    },
    #[error(
        "the profile removes {members}: re-run with --allow-removal to delete their files \
         (their agents and peers stop seeing them)"
    )]
    Removal { members: String },
}
