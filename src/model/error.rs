use thiserror::Error;

/// Why a value was refused. Each variant names the offending value so that the caller
/// can add where it came from (file, field, peer) and report it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    #[error("invalid cluster name {name:?}: {reason}")]
    ClusterName { name: String, reason: &'static str },
    #[error("invalid cluster id {id}: must be in 1..={max}")]
    ClusterId { id: u32, max: u32 },
    #[error("invalid max-connected-clusters {0}: must be 255 or 511")]
    MaxConnectedClusters(u32),
    #[error("identity {id} is outside cluster {cluster}'s range {range}")]
    IdentityOutOfRange {
        id: u32,
        cluster: u32,
        range: String,
    },
    #[error("invalid identity id {0:?}")]
    IdentityId(String),
    #[error("invalid label {label:?}: {reason}")]
    Label { label: String, reason: &'static str },
    #[error("identity {id} has no label {expected:?}")]
    MissingClusterLabel { id: u32, expected: String },
    #[error("identity {id} is labelled for cluster {found:?}, not {expected:?}")]
    WrongClusterLabel {
        id: u32,
        found: String,
        expected: String,
    },
    #[error("invalid IP address or prefix {0:?}")]
    IpPrefix(String),
    #[error("invalid {what} {value:?}: {reason}")]
    Field {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
}
