use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use thiserror::Error;

use crate::model::Revision;

/// A lease: keys attached to it disappear when it expires or is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

/// Identifies one history of a store. It changes whenever that history restarts (a new
/// embedded store, a new etcd cluster), so a revision is only meaningful with its epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Epoch(pub String);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One key as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    pub lease: Option<LeaseId>,
}

/// Every key under a prefix, as of one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub revision: Revision,
    pub kvs: Vec<KeyValue>,
}

/// The condition of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key does not exist.
    Absent,
    /// The key exists and was last written at this revision.
    ModRevision(Revision),
    /// The key exists and holds this value.
    Value(Bytes),
}

/// What a compare-and-swap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The condition held and the write happened at this revision.
    Swapped(Revision),
    /// The condition failed; this is what the key holds now.
    Failed(Option<KeyValue>),
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchStart {
    /// List every key under the prefix, then follow changes.
    List,
    /// Follow changes made after this revision. If that point is no longer in the
    /// store's history (compacted), the watch falls back to a list.
    After(Revision),
}

/// What a watch delivers. A list is `ListStart`, one `Put` per key, then `ListDone`:
/// whatever the consumer held under the prefix and did not see again between the two
/// is gone. After `ListDone` come deltas in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    ListStart,
    Put(KeyValue),
    Delete {
        key: String,
        revision: Revision,
    },
    /// The list is complete as of `revision`.
    ListDone {
        revision: Revision,
    },
}

/// A watch's events. The stream ends with an error when the store becomes unreachable or
/// its epoch changes; the consumer starts a new watch.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("lease {0:?} not found or expired")]
    LeaseNotFound(LeaseId),
    #[error("store history restarted: epoch {old} is now {new}")]
    EpochChanged { old: Epoch, new: Epoch },
    #[error("store is closed")]
    Closed,
    #[error("etcd request {op} failed")]
    Etcd {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd {op}: {reason}")]
    EtcdProtocol { op: &'static str, reason: String },
}

impl StoreError {
    /// etcd shed the request under load ("etcdserver: too many requests", sent while its
    /// applied index lags far behind its committed one): the same request is expected
    /// to succeed a little later.
    pub fn is_overloaded(&self) -> bool {
        match self {
            Self::Etcd {
                source: etcd_client::Error::GRpcStatus(status),
                ..
            } => status.message().contains("too many requests"),
            _ => false,
        }
    }
}

/// An etcd-like key-value store with one global revision counter, leases and watches.
///
/// Keys are UTF-8 strings; prefixes are plain string prefixes, so callers end them with
/// `/` where `foo` must not match `foobar`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The store's epoch as last checked.
    fn epoch(&self) -> Epoch;

    /// Asks the store whether its history restarted since the last check (a wiped or
    /// replaced etcd, one restored from a backup) and returns the epoch it is in now,
    /// which [`epoch`](Self::epoch) answers from then on. A store whose history cannot
    /// restart under it keeps its epoch. No default: a wrapper that forgot to forward it
    /// would hide every restart from the exporter.
    async fn check_epoch(&self) -> Result<Epoch, StoreError>;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key under `prefix`, sorted by key, at one revision.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;

    /// Writes `value`, attached to `lease` if given. Returns the write's revision.
    async fn put(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key`; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Writes `value` (or deletes the key when `value` is `None`) only if `expect` holds.
    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Option<Bytes>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError>;

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews a lease once; `LeaseNotFound` once it has expired.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Ends a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Watches every key under `prefix`.
    async fn watch(&self, prefix: &str, start: WatchStart) -> Result<WatchStream, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_etcds_load_shedding_counts_as_overloaded() {
        let etcd = |status| StoreError::Etcd {
            op: "put",
            source: etcd_client::Error::GRpcStatus(status),
        };
        let shed = etcd(tonic::Status::unknown("etcdserver: too many requests"));
        assert!(shed.is_overloaded());
        let other = etcd(tonic::Status::unknown("etcdserver: request timed out"));
        assert!(!other.is_overloaded());
        assert!(!StoreError::Closed.is_overloaded());
    }
}
