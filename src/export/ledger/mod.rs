//! Where identity allocations are recorded: the one record that says which number names
//! which label set, shared by every replica that must agree and kept wherever the store
//! is not durable.
//!
//! - [`StoreLedger`]: keys under `fleetmesh/identities/` in the kvstore itself. Right for
//!   etcd, which is durable and shared by replicas.
//! - [`RedbLedger`]: an embedded database file in the apiserver's state directory, for the
//!   embedded store with the manifest source.
//! - [`KubeLedger`]: one ConfigMap per identity in the cluster, created with Kubernetes'
//!   create-if-absent semantics, for the embedded store with the kube source: the cluster
//!   is durable and every replica reads the same objects.
//!
//! Every ledger answers a claim the same way: a label set that holds a number keeps it,
//! a number held by another label set is refused, and only a number held by nothing is
//! granted — atomically, so two allocators never hand out one number twice.

mod configmaps;
mod redb_file;
mod store;

use async_trait::async_trait;
use thiserror::Error;

use crate::kvstore::StoreError;
use crate::model::{IdentityId, Labels};

pub use configmaps::KubeLedger;
pub use redb_file::RedbLedger;
pub use store::StoreLedger;

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("identity ledger in the store")]
    Store(#[from] StoreError),
    #[error("identity ledger {path}")]
    File {
        path: String,
        #[source]
        source: Box<redb::Error>,
    },
    #[error(
        "identity ledger {path} is held by another process (a second apiserver on one state directory?)"
    )]
    FileInUse { path: String },
    #[error("cannot create the identity state directory {path}")]
    StateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("identity ledger in the cluster: {what}")]
    Kube {
        what: String,
        #[source]
        source: ::kube::Error,
    },
    #[error("the identity ledger's worker stopped")]
    Worker(#[from] tokio::task::JoinError),
}

/// The answer to a claim of a number for a label set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The number was free and now names these labels (or already did).
    Granted,
    /// These labels already hold another number: use that one.
    LabelsHold(IdentityId),
    /// The number names other labels.
    IdTaken,
}

/// A durable record of identity allocations.
#[async_trait]
pub trait IdentityLedger: Send + Sync {
    /// Every allocation recorded. Records that cannot be read are logged and skipped (their
    /// numbers stay taken: see [`IdentityLedger::taken_ids`]).
    async fn allocations(&self) -> Result<Vec<(IdentityId, Labels)>, LedgerError>;

    /// Every number recorded as taken, readable or not.
    async fn taken_ids(&self) -> Result<Vec<u32>, LedgerError>;

    /// Claims `id` for `labels`.
    async fn claim(&self, id: IdentityId, labels: &Labels) -> Result<Claim, LedgerError>;

    /// Gives `id` back, if it still names `labels`.
    async fn release(&self, id: IdentityId, labels: &Labels) -> Result<(), LedgerError>;
}
