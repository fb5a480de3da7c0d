use std::net::SocketAddr;

use thiserror::Error;
use tonic::{Code, Status};

use super::AllowedPeers;
use crate::model::ClusterName;
use crate::proto::ProtoError;
use crate::tls::PeerIdentityError;

/// Why a call was refused or a stream ended. [`Status`] is made from it in one place
/// (the `From` impl below), so every code and message is chosen here.
#[derive(Debug, Error)]
pub enum GrpcError {
    #[error("no client certificate identity: mutual TLS is required")]
    NoPeerIdentity,
    #[error("the client certificate of {addr} names no cluster")]
    BadPeerIdentity {
        addr: SocketAddr,
        #[source]
        source: PeerIdentityError,
    },
    #[error("cluster {peer:?} may not {action} cluster {serving:?}: not in allowedPeers {allowed}")]
    NotAllowed {
        peer: ClusterName,
        action: &'static str,
        serving: ClusterName,
        allowed: AllowedPeers,
    },
    #[error("invalid request")]
    InvalidRequest {
        #[source]
        source: ProtoError,
    },
    #[error("watcher fell behind; resync")]
    Lagged,
    #[error("the store's history restarted; resync")]
    Restarted,
    #[error("the apiserver is stopping; reconnect")]
    Stopping,
}

impl From<GrpcError> for Status {
    fn from(err: GrpcError) -> Self {
        let code = match &err {
            GrpcError::NoPeerIdentity | GrpcError::BadPeerIdentity { .. } => Code::Unauthenticated,
            GrpcError::NotAllowed { .. } => Code::PermissionDenied,
            GrpcError::InvalidRequest { .. } => Code::InvalidArgument,
            // The watcher did nothing wrong: it reconnects and resumes, or re-reads.
            GrpcError::Lagged => Code::Aborted,
            GrpcError::Restarted | GrpcError::Stopping => Code::Unavailable,
        };
        Status::new(code, crate::report::error_chain(&err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_say_what_to_do() {
        let status = Status::from(GrpcError::Lagged);
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(status.message(), "watcher fell behind; resync");
        assert_eq!(Status::from(GrpcError::Restarted).code(), Code::Unavailable);
        let stopping = Status::from(GrpcError::Stopping);
        assert_eq!(stopping.code(), Code::Unavailable);
        assert_eq!(stopping.message(), "the apiserver is stopping; reconnect");
        let invalid = GrpcError::InvalidRequest {
            source: ProtoError::Value {
                field: "kinds",
                value: "9".into(),
                reason: "unknown kind",
            },
        };
        let status = Status::from(invalid);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid request: invalid kinds \"9\": unknown kind"
        );
    }
}
