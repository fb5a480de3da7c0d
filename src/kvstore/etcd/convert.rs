//! Conversions between etcd's types and the store's: the key namespace, key-values,
//! revisions, the epoch pinned from response headers, and errors.

use std::sync::Arc;

use bytes::Bytes;
use etcd_client::ResponseHeader;
use parking_lot::RwLock;
use tonic::Code;

use crate::kvstore::{Epoch, KeyValue, LeaseId, StoreError};
use crate::model::Revision;

/// etcd's answer, as a gRPC status message, to a request naming an unknown lease.
const LEASE_NOT_FOUND: &str = "requested lease not found";

/// etcd-client's error text when a keep-alive is answered with TTL 0 (the lease is gone).
const KEEP_ALIVE_NOT_FOUND: &str = "lease not found";

/// A prefix prepended to every key on the way in and stripped on the way out, so several
/// stores (tests, tenants) share one etcd without seeing each other.
#[derive(Clone, Debug)]
pub(super) struct Namespace(String);

impl Namespace {
    pub(super) fn new(prefix: String) -> Self {
        Namespace(prefix)
    }

    pub(super) fn key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.0.len() + key.len());
        full.extend_from_slice(self.0.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// The store's key for an etcd key, or `None` for a key outside the namespace or not
    /// UTF-8 (written by someone else; the store's keys are strings).
    pub(super) fn strip(&self, key: Vec<u8>) -> Option<String> {
        if !key.starts_with(self.0.as_bytes()) {
            return None;
        }
        let mut key = String::from_utf8(key).ok()?;
        key.drain(..self.0.len());
        Some(key)
    }

    /// The etcd range `[start, end)` holding every key under `prefix`.
    pub(super) fn range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.key(prefix);
        let end = prefix_end(&start);
        // etcd refuses an empty key; "\0" is the smallest key there is.
        let start = if start.is_empty() { vec![0] } else { start };
        (start, end)
    }

    /// Converts an etcd key-value, or `None` when its key is not one of ours.
    pub(super) fn kv(&self, kv: etcd_client::KeyValue) -> Option<KeyValue> {
        let (create_revision, mod_revision, lease) =
            (kv.create_revision(), kv.mod_revision(), kv.lease());
        let (key, value) = kv.into_key_value();
        let Some(key) = self.strip(key) else {
            tracing::warn!("skipping an etcd key that is not UTF-8");
            return None;
        };
        Some(KeyValue {
            key,
            value: Bytes::from(value),
            create_revision: revision(create_revision),
            mod_revision: revision(mod_revision),
            lease: (lease != 0).then_some(LeaseId(lease)),
        })
    }
}

/// The smallest key greater than every key starting with `prefix` ("\0" for no bound),
/// as etcd's clients compute it.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A revision from etcd; they are never negative.
pub(super) fn revision(rev: i64) -> Revision {
    Revision::try_from(rev).unwrap_or(0)
}

/// A revision for etcd.
pub(super) fn etcd_revision(rev: Revision, op: &'static str) -> Result<i64, StoreError> {
    i64::try_from(rev).map_err(|_| StoreError::EtcdProtocol {
        op,
        reason: format!("revision {rev} is beyond etcd's range"),
    })
}

/// The history the store reads: the etcd cluster it talks to and the epoch marker found
/// there (see [`super::epoch`]). A response from any other cluster means the history
/// restarted under us; the next epoch check pins the new one. Shared by the clones of a
/// store.
#[derive(Clone, Debug)]
pub(super) struct ClusterPin {
    pinned: Arc<RwLock<Pinned>>,
}

#[derive(Debug)]
struct Pinned {
    cluster_id: u64,
    epoch: Epoch,
}

impl ClusterPin {
    /// Pins `cluster_id`, its marker not read yet.
    pub(super) fn new(cluster_id: u64) -> Self {
        ClusterPin {
            pinned: Arc::new(RwLock::new(Pinned {
                cluster_id,
                epoch: epoch_of(cluster_id, None),
            })),
        }
    }

    pub(super) fn epoch(&self) -> Epoch {
        self.pinned.read().epoch.clone()
    }

    pub(super) fn cluster_id(&self) -> u64 {
        self.pinned.read().cluster_id
    }

    /// Accepts answers of `cluster_id` while its marker is being settled; the epoch
    /// stays as it was until [`repin`](Self::repin).
    pub(super) fn accept_cluster(&self, cluster_id: u64) {
        self.pinned.write().cluster_id = cluster_id;
    }

    /// Pins `cluster_id` with its marker; returns the epoch they make.
    pub(super) fn repin(&self, cluster_id: u64, marker: &str) -> Epoch {
        let epoch = epoch_of(cluster_id, Some(marker));
        let mut pinned = self.pinned.write();
        pinned.cluster_id = cluster_id;
        pinned.epoch = epoch.clone();
        epoch
    }

    /// Checks that a response came from the pinned cluster; returns its revision.
    pub(super) fn check(
        &self,
        header: Option<&ResponseHeader>,
        op: &'static str,
    ) -> Result<Revision, StoreError> {
        let header = header.ok_or_else(|| StoreError::EtcdProtocol {
            op,
            reason: "response without a header".to_owned(),
        })?;
        self.check_cluster(header.cluster_id())?;
        Ok(revision(header.revision()))
    }

    fn check_cluster(&self, cluster_id: u64) -> Result<(), StoreError> {
        let pinned = self.pinned.read();
        if cluster_id == pinned.cluster_id {
            Ok(())
        } else {
            Err(StoreError::EpochChanged {
                old: pinned.epoch.clone(),
                new: epoch_of(cluster_id, None),
            })
        }
    }
}

/// The epoch of etcd cluster `cluster_id` holding `marker` (none yet read).
pub(super) fn epoch_of(cluster_id: u64, marker: Option<&str>) -> Epoch {
    match marker {
        Some(marker) => Epoch(format!("{cluster_id:016x}-{marker}")),
        None => Epoch(format!("{cluster_id:016x}")),
    }
}

/// Wraps an etcd-client error with the operation that failed.
pub(super) fn etcd_error(op: &'static str) -> impl FnOnce(etcd_client::Error) -> StoreError {
    move |source| StoreError::Etcd { op, source }
}

/// Like [`etcd_error`], but etcd's "lease not found" becomes [`StoreError::LeaseNotFound`].
pub(super) fn lease_error(
    op: &'static str,
    lease: LeaseId,
) -> impl FnOnce(etcd_client::Error) -> StoreError {
    move |source| match &source {
        etcd_client::Error::GRpcStatus(status)
            if status.code() == Code::NotFound && status.message().contains(LEASE_NOT_FOUND) =>
        {
            StoreError::LeaseNotFound(lease)
        }
        etcd_client::Error::LeaseKeepAliveError(message) if message == KEEP_ALIVE_NOT_FOUND => {
            StoreError::LeaseNotFound(lease)
        }
        _ => StoreError::Etcd { op, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_added_and_stripped() {
        let ns = Namespace::new("t-1/".to_owned());
        assert_eq!(ns.key("a/b"), b"t-1/a/b");
        assert_eq!(ns.strip(b"t-1/a/b".to_vec()).as_deref(), Some("a/b"));
        assert_eq!(ns.strip(b"t-2/a/b".to_vec()), None);
        assert_eq!(ns.strip(b"t-1/\xff".to_vec()), None);
    }

    #[test]
    fn ranges_cover_exactly_the_prefix() {
        let ns = Namespace::new("t/".to_owned());
        assert_eq!(ns.range("a/"), (b"t/a/".to_vec(), b"t/a0".to_vec()));
        assert_eq!(ns.range(""), (b"t/".to_vec(), b"t0".to_vec()));
        let root = Namespace::new(String::new());
        assert_eq!(root.range(""), (vec![0], vec![0]));
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn a_header_from_another_cluster_is_an_epoch_change() {
        let pin = ClusterPin::new(0xabc);
        assert_eq!(pin.epoch().0, "0000000000000abc");
        assert!(pin.check_cluster(0xabc).is_ok());
        assert_eq!(pin.repin(0xabc, "m1").0, "0000000000000abc-m1");
        match pin.check_cluster(0xdef) {
            Err(StoreError::EpochChanged { old, new }) => {
                assert_eq!(
                    (old.0.as_str(), new.0.as_str()),
                    ("0000000000000abc-m1", "0000000000000def")
                );
            }
            other => panic!("expected an epoch change, got {other:?}"),
        }
        // Once accepted, the other cluster's answers pass; the epoch waits for its marker.
        pin.accept_cluster(0xdef);
        assert!(pin.check_cluster(0xdef).is_ok());
        assert_eq!(pin.epoch().0, "0000000000000abc-m1");
        assert!(matches!(
            pin.check(None, "get"),
            Err(StoreError::EtcdProtocol { op: "get", .. })
        ));
    }

    #[test]
    fn lease_not_found_is_recognised() {
        let status = etcd_client::Error::GRpcStatus(tonic::Status::not_found(
            "etcdserver: requested lease not found",
        ));
        assert!(matches!(
            lease_error("put", LeaseId(7))(status),
            StoreError::LeaseNotFound(LeaseId(7))
        ));
        let other = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("no leader"));
        assert!(matches!(
            lease_error("put", LeaseId(7))(other),
            StoreError::Etcd { op: "put", .. }
        ));
    }
}
