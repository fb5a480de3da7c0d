//! Why a link is down, said precisely: the status shows these messages verbatim, so a
//! peer that cannot be reached must never read like a peer that is misconfigured
//! (Cilium #29161: "remote cluster configuration required but not found" for what was a
//! connection failure).

use std::error::Error as StdError;
use std::time::Duration;

use thiserror::Error;
use tonic::{Code, ConnectError, Status};

use super::ValidationError;
use crate::model::ClusterName;
use crate::proto::ProtoError;
use crate::tls::TlsError;
use crate::tls::client::ServerIdentityError;

/// rustls' words for a fatal alert from the other side. In TLS 1.3 the client finishes
/// its handshake before the server has checked the client's certificate, so a refused
/// certificate arrives as an alert on the first read — inside an h2 error, which keeps
/// the rustls error out of the source chain: its text is all that is left of it.
const TLS_ALERT: &str = "received fatal alert: ";

/// Why one attempt of a link ended.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error("TLS files of peer {peer:?} do not load")]
    TlsFiles {
        peer: ClusterName,
        #[source]
        source: TlsError,
    },
    #[error("cannot dial peer {peer:?}")]
    Dial {
        peer: ClusterName,
        #[source]
        source: TlsError,
    },
    #[error("connect failed: {address}: {cause}")]
    Connect { address: String, cause: String },
    #[error("TLS handshake failed: {address}: {cause}")]
    Handshake { address: String, cause: String },
    #[error("TLS handshake failed: {address}")]
    WrongServer {
        address: String,
        // Boxed: it is much larger than the other variants.
        #[source]
        source: Box<ServerIdentityError>,
    },
    #[error("permission denied by {peer}: {message}")]
    PermissionDenied { peer: ClusterName, message: String },
    #[error("{peer} did not accept this agent's certificate: {message}")]
    Unauthenticated { peer: ClusterName, message: String },
    #[error("{call} to {peer} got no answer within {after:?}")]
    Timeout {
        peer: ClusterName,
        call: &'static str,
        after: Duration,
    },
    #[error("connection to {peer} lost during {call}: {cause}")]
    Lost {
        peer: ClusterName,
        call: &'static str,
        cause: String,
    },
    #[error("{call} refused by {peer}: {code:?}: {message}")]
    Refused {
        peer: ClusterName,
        call: &'static str,
        code: Code,
        message: String,
    },
    #[error("invalid Info answer from {peer}")]
    Info {
        peer: ClusterName,
        #[source]
        source: ProtoError,
    },
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("{peer} closed the watch stream")]
    StreamEnded { peer: ClusterName },
    #[error("{peer} ended the watch stream because this agent fell behind: {message}")]
    FellBehind { peer: ClusterName, message: String },
    /// The peer ended the stream on purpose and expects this agent back: it is stopping
    /// (a rolling update, a drain) or its store's history restarted.
    #[error("{peer} asked this agent to reconnect: {message}")]
    Reconnect { peer: ClusterName, message: String },
}

impl LinkError {
    /// Whether the attempt failed, as opposed to ending because the peer asked for a
    /// reconnect: only failures are the link's `last_failure`.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Self::Reconnect { .. })
    }

    /// Sorts a failed call's status into what actually happened: the connection could
    /// not be made (TCP, TLS, wrong server), it broke, or the peer answered with an
    /// error of its own.
    pub(super) fn from_status(
        status: Status,
        peer: &ClusterName,
        address: &str,
        call: &'static str,
    ) -> Self {
        if let Some(local) = status.source() {
            if let Some(wrong) = find::<ServerIdentityError>(local) {
                return Self::WrongServer {
                    address: address.to_string(),
                    source: Box::new(wrong.clone()),
                };
            }
            if let Some(tls) = find::<rustls::Error>(local) {
                return Self::Handshake {
                    address: address.to_string(),
                    cause: tls.to_string(),
                };
            }
            let text = causes(local);
            if let Some(at) = text.find(TLS_ALERT) {
                return Self::Handshake {
                    address: address.to_string(),
                    cause: format!("the peer ended the TLS session: {}", &text[at..]),
                };
            }
            if find::<ConnectError>(local).is_some() {
                return Self::Connect {
                    address: address.to_string(),
                    cause: causes(local),
                };
            }
            if !matches!(
                status.code(),
                Code::PermissionDenied | Code::Unauthenticated | Code::Aborted
            ) {
                return Self::Lost {
                    peer: peer.clone(),
                    call,
                    cause: causes(local),
                };
            }
        }
        let message = status.message().to_string();
        match status.code() {
            Code::PermissionDenied => Self::PermissionDenied {
                peer: peer.clone(),
                message,
            },
            Code::Unauthenticated => Self::Unauthenticated {
                peer: peer.clone(),
                message,
            },
            Code::Aborted => Self::FellBehind {
                peer: peer.clone(),
                message,
            },
            // Sent by the peer itself (a local transport error carries its cause and was
            // sorted above): it is stopping, or its store's history restarted.
            Code::Unavailable => Self::Reconnect {
                peer: peer.clone(),
                message,
            },
            code => Self::Refused {
                peer: peer.clone(),
                call,
                code,
                message,
            },
        }
    }
}

/// The first error of type `T` in `err`'s chain, looking inside `io::Error`s too (their
/// `source()` skips the error they wrap).
fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if let Some(found) = inner.and_then(|inner| find::<T>(inner)) {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// The messages of `err`'s chain on one line, each said once: wrappers that repeat
/// their source's message (tonic's `ConnectError`, a custom `io::Error`) add nothing.
fn causes(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn c1() -> ClusterName {
        ClusterName::new("c1").unwrap()
    }

    /// A status as tonic builds it from a failed connection attempt.
    fn mk_connect_status(inner: io::Error) -> Status {
        Status::from_error(Box::new(ConnectError(Box::new(inner))))
    }

    #[test]
    fn a_refused_connection_reads_as_a_connect_failure() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let err = LinkError::from_status(mk_connect_status(refused), &c1(), "h:1", "Info");
        assert_eq!(
            crate::report::error_chain(&err),
            "connect failed: h:1: connection refused"
        );
    }

    #[test]
    fn a_rustls_error_reads_as_a_handshake_failure() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let status = mk_connect_status(io::Error::new(io::ErrorKind::InvalidData, tls));
        let err = LinkError::from_status(status, &c1(), "h:1", "Info");
        assert!(matches!(err, LinkError::Handshake { .. }), "{err:?}");
        assert!(
            crate::report::error_chain(&err)
                .starts_with("TLS handshake failed: h:1: invalid peer certificate")
        );
    }

    #[test]
    fn a_tls_alert_after_the_handshake_reads_as_a_handshake_failure() {
        // What tonic reports when the server refused this agent's certificate.
        let alert = io::Error::other("connection error: received fatal alert: UnknownCA");
        let status = Status::from_error(Box::new(alert));
        let err = LinkError::from_status(status, &c1(), "h:1", "Info");
        assert_eq!(
            crate::report::error_chain(&err),
            "TLS handshake failed: h:1: the peer ended the TLS session: \
             received fatal alert: UnknownCA"
        );
    }

    #[test]
    fn the_wrong_server_names_both_clusters() {
        let wrong = ServerIdentityError::WrongCluster {
            expected: c1(),
            found: ClusterName::new("c9").unwrap(),
        };
        let status = mk_connect_status(io::Error::other(wrong));
        let err = LinkError::from_status(status, &c1(), "h:1", "Info");
        assert_eq!(
            crate::report::error_chain(&err),
            "TLS handshake failed: h:1: the server's certificate names cluster \"c9\", not \"c1\""
        );
    }

    #[test]
    fn the_peers_own_answers_keep_their_meaning() {
        for (code, expected) in [
            (
                Code::PermissionDenied,
                "permission denied by c1: peer c2 may not see c1",
            ),
            (
                Code::Unauthenticated,
                "c1 did not accept this agent's certificate: peer c2 may not see c1",
            ),
            (
                Code::Aborted,
                "c1 ended the watch stream because this agent fell behind: peer c2 may not see c1",
            ),
            (
                Code::Unavailable,
                "c1 asked this agent to reconnect: peer c2 may not see c1",
            ),
            (
                Code::Internal,
                "Watch refused by c1: Internal: peer c2 may not see c1",
            ),
        ] {
            let status = Status::new(code, "peer c2 may not see c1");
            let err = LinkError::from_status(status, &c1(), "h:1", "Watch");
            assert_eq!(crate::report::error_chain(&err), expected);
        }
    }

    #[test]
    fn a_broken_connection_is_reported_as_lost() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "connection reset");
        let status = Status::from_error(Box::new(reset));
        let err = LinkError::from_status(status, &c1(), "h:1", "Watch");
        assert!(
            matches!(err, LinkError::Lost { call: "Watch", .. }),
            "{err:?}"
        );
    }
}
