use thiserror::Error;

use crate::model::ModelError;

/// Why a peer's message was refused. Every variant names the field (as
/// `message.field`, e.g. `endpoint.host_ip`) so that the refusal can be logged and
/// counted with the peer's name and understood without a packet capture.
#[derive(Debug, Error)]
pub enum ProtoError {
    #[error("cannot decode {what}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{field} is missing")]
    Missing { field: &'static str },
    #[error("invalid {field}")]
    Model {
        field: &'static str,
        #[source]
        source: ModelError,
    },
    #[error("invalid {field} {value:?}: {reason}")]
    Value {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{field} is {found:?}, not the serving cluster's {expected:?}")]
    WrongCluster {
        field: &'static str,
        found: String,
        expected: String,
    },
}

impl ProtoError {
    /// Every [`ProtoError::reason`].
    pub const REASONS: [&'static str; 4] = [
        "undecodable",
        "missing_field",
        "invalid_value",
        "wrong_cluster",
    ];

    /// Why, in a word (a metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Decode { .. } => "undecodable",
            Self::Missing { .. } => "missing_field",
            Self::Model { .. } | Self::Value { .. } => "invalid_value",
            Self::WrongCluster { .. } => "wrong_cluster",
        }
    }

    /// Wraps a model constructor's refusal with the field it came from.
    pub(super) fn model(field: &'static str) -> impl FnOnce(ModelError) -> Self {
        move |source| Self::Model { field, source }
    }

    pub(super) fn value(field: &'static str, value: impl ToString, reason: &'static str) -> Self {
        Self::Value {
            field,
            value: value.to_string(),
            reason,
        }
    }
}
