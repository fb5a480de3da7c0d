//! Why a call was refused, and the etcd error each reason is sent as. Every `Status`
//! of the etcd API is made here: codes and messages are etcd's own, because etcd's
//! clients recognise errors by their message (clientv3's `rpctypes`).

use thiserror::Error;
use tonic::{Code, Status};

use super::key_cache::CacheError;
use crate::model::ClusterName;
use crate::tls::PeerIdentityError;

/// etcd's message for a refused permission.
pub const PERMISSION_DENIED: &str = "etcdserver: permission denied";
/// etcd's message for a revision older than its history.
pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// etcd's message for a revision it has not reached.
pub const FUTURE_REVISION: &str = "etcdserver: mvcc: required revision is a future revision";
/// How etcd words a watch refused for permission, in `WatchResponse.cancel_reason`.
pub const WATCH_PERMISSION_DENIED: &str =
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied";

#[derive(Debug, Error)]
pub enum EtcdApiError {
    #[error("no client certificate identity: mutual TLS is required")]
    NoPeerIdentity,
    #[error("the client certificate names no cluster")]
    BadPeerIdentity(#[source] PeerIdentityError),
    #[error("cluster {peer:?} is not in allowedPeers")]
    PeerNotAllowed { peer: ClusterName },
    #[error("cluster {peer:?} may not read {range}")]
    ReadNotAllowed { peer: ClusterName, range: String },
    #[error("cluster {peer:?} may not {method}: the etcd API is read-only")]
    WriteNotAllowed {
        peer: ClusterName,
        method: &'static str,
    },
    #[error("key cache")]
    Cache(#[from] CacheError),
}

impl From<EtcdApiError> for Status {
    fn from(err: EtcdApiError) -> Self {
        match err {
            EtcdApiError::NoPeerIdentity
            | EtcdApiError::BadPeerIdentity(_)
            | EtcdApiError::PeerNotAllowed { .. }
            | EtcdApiError::ReadNotAllowed { .. }
            | EtcdApiError::WriteNotAllowed { .. } => {
                Status::new(Code::PermissionDenied, PERMISSION_DENIED)
            }
            EtcdApiError::Cache(CacheError::Compacted { .. } | CacheError::Restarted { .. }) => {
                Status::new(Code::OutOfRange, COMPACTED)
            }
            EtcdApiError::Cache(CacheError::FutureRevision { .. }) => {
                Status::new(Code::OutOfRange, FUTURE_REVISION)
            }
            // Retried by etcd's clients, as for a member that has no leader yet.
            EtcdApiError::Cache(CacheError::NotReady) => Status::new(
                Code::Unavailable,
                "etcdserver: fleetmesh has not read its store yet",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_etcds_permission_denied() {
        let peer = ClusterName::new("c2").unwrap();
        let write = Status::from(EtcdApiError::WriteNotAllowed {
            peer,
            method: "Put",
        });
        assert_eq!(write.code(), Code::PermissionDenied);
        assert_eq!(write.message(), "etcdserver: permission denied");
        let none = Status::from(EtcdApiError::NoPeerIdentity);
        assert_eq!(none.message(), PERMISSION_DENIED);
    }

    #[test]
    fn revisions_out_of_reach_are_etcds_errors() {
        let compacted = Status::from(EtcdApiError::Cache(CacheError::Compacted {
            requested: 1,
            compact_revision: 5,
        }));
        assert_eq!(compacted.code(), Code::OutOfRange);
        assert_eq!(
            compacted.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let future = Status::from(EtcdApiError::Cache(CacheError::FutureRevision {
            requested: 9,
            current: 5,
        }));
        assert_eq!(future.code(), Code::OutOfRange);
        assert_eq!(
            future.message(),
            "etcdserver: mvcc: required revision is a future revision"
        );
    }
}
