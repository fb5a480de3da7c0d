//! Cilium's kvstore value formats: model ⇄ bytes.
//!
//! | value | format | file |
//! | --- | --- | --- |
//! | node | Go-style JSON (`Name`, `Cluster`, `IPAddresses`, …) | `node.rs` |
//! | global service | Cilium `ClusterService` JSON (ready or serving backends only) | `service.rs` |
//! | global service, fleetmesh's own | richer JSON with every backend and its conditions | `fleetmesh_service.rs` |
//! | identity | label string `source:key=value;` sorted by key | `identity.rs` |
//! | ipcache entry | `IPIdentityPair` JSON | `ipcache.rs` |
//! | MCS-API service export | Cilium `MCSAPIServiceSpec` JSON | `service_export.rs` |
//! | cluster config | `CiliumClusterConfig` JSON | `config.rs` |
//! | sync canary, heartbeat | RFC 3339 timestamp | `time.rs` |
//!
//! The wire shapes are private serde structs that mirror Cilium's JSON field for field;
//! decoding converts them through the model's constructors, so a decoded value is a
//! valid one. Encoding is deterministic (ordered structs and `BTreeMap`s): the exporter
//! compares bytes to skip unchanged writes.

mod config;
mod fleetmesh_service;
mod identity;
mod ipcache;
mod node;
mod service;
mod service_export;
mod time;

use std::net::{AddrParseError, IpAddr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::model::{IpPrefix, ModelError};

pub use config::{decode_cluster_config, encode_cluster_config};
pub use fleetmesh_service::{decode_fleetmesh_service, encode_fleetmesh_service};
pub use identity::{decode_identity, encode_identity};
pub use ipcache::{decode_endpoint, encode_endpoint};
pub use node::{decode_node, encode_node};
pub use service::{decode_service, encode_service};
pub use service_export::{decode_service_export, encode_service_export};
pub use time::{decode_timestamp, encode_timestamp};

/// Why a stored value could not be decoded. `what` names the value or field that failed
/// (e.g. `node ClusterID`); the source says why.
#[derive(Debug, Error)]
pub enum CodecError {
    /// Not JSON, or JSON of the wrong shape (missing field, wrong type, out-of-range number).
    #[error("invalid {what} JSON")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Well-formed, but refused by the model (bad name, id out of range, bad label, ...).
    #[error("invalid {what}")]
    Model {
        what: &'static str,
        #[source]
        source: ModelError,
    },
    /// An IP address that does not parse.
    #[error("invalid {what} address {value:?}")]
    Address {
        what: &'static str,
        value: String,
        #[source]
        source: AddrParseError,
    },
    /// A netmask that is not base64.
    #[error("invalid {what} mask {value:?}")]
    Mask {
        what: &'static str,
        value: String,
        #[source]
        source: base64::DecodeError,
    },
    /// A text value (label string, timestamp) that is not UTF-8.
    #[error("{what} is not UTF-8")]
    Utf8 {
        what: &'static str,
        #[source]
        source: std::str::Utf8Error,
    },
    /// A required field that is absent (or Go's zero value).
    #[error("{what} is missing")]
    Missing { what: &'static str },
    /// A number outside the range its field allows.
    #[error("invalid {what} {value}")]
    OutOfRange { what: &'static str, value: i64 },
    /// A timestamp that is not RFC 3339.
    #[error("invalid {what} timestamp {value:?}")]
    Timestamp {
        what: &'static str,
        value: String,
        #[source]
        source: ::time::error::Parse,
    },
}

impl CodecError {
    fn model(what: &'static str) -> impl FnOnce(ModelError) -> Self {
        move |source| Self::Model { what, source }
    }
}

/// Serializes a wire struct. Serializing to a `Vec` fails only for maps with non-string
/// keys or a failing `Serialize` impl; the private wire structs have neither.
fn to_json_bytes<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("codec wire structs always serialize"))
}

fn from_json<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    serde_json::from_slice(bytes).map_err(|source| CodecError::Json { what, source })
}

fn parse_ip(what: &'static str, value: &str) -> Result<IpAddr, CodecError> {
    value.parse().map_err(|source| CodecError::Address {
        what,
        value: value.to_string(),
        source,
    })
}

/// Go writes a nil `net.IP` as `""`.
fn parse_optional_ip(what: &'static str, value: &str) -> Result<Option<IpAddr>, CodecError> {
    if value.is_empty() {
        return Ok(None);
    }
    parse_ip(what, value).map(Some)
}

fn optional_ip_string(ip: Option<IpAddr>) -> String {
    ip.map(|ip| ip.to_string()).unwrap_or_default()
}

/// A Go `net.IPMask` as JSON: the mask bytes in standard base64.
fn encode_mask(prefix: IpPrefix) -> String {
    BASE64.encode(prefix.mask_bytes())
}

/// The prefix of `addr` under a base64 Go `net.IPMask`.
fn decode_mask(what: &'static str, addr: IpAddr, mask: &str) -> Result<IpPrefix, CodecError> {
    let bytes = BASE64.decode(mask).map_err(|source| CodecError::Mask {
        what,
        value: mask.to_string(),
        source,
    })?;
    IpPrefix::from_mask(addr, &bytes).map_err(CodecError::model(what))
}

/// Go's `encoding/json` writes a nil slice or map as `null` and reads a missing field as
/// the zero value; this reads both `null` and absence as the default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, BackendConditions, L4Addr, Protocol};

    /// Every strict prefix of a JSON object is invalid JSON: each must be refused with an
    /// error (and never a panic).
    pub(super) fn assert_truncations_fail<T: std::fmt::Debug>(
        bytes: &[u8],
        decode: impl Fn(&[u8]) -> Result<T, CodecError>,
    ) {
        for end in 0..bytes.len() {
            let cut = &bytes[..end];
            assert!(
                decode(cut).is_err(),
                "{:?} decoded",
                String::from_utf8_lossy(cut)
            );
        }
    }

    /// A backend with one `http` TCP port, a hostname and zone hints.
    pub(super) fn mk_backend(port: u16, conditions: BackendConditions, hostname: &str) -> Backend {
        Backend {
            ports: [(
                "http".to_string(),
                L4Addr {
                    protocol: Protocol::Tcp,
                    port,
                },
            )]
            .into(),
            conditions,
            hostname: Some(hostname.to_string()),
            zone: Some("eu-1b".to_string()),
            for_zones: vec!["eu-1b".to_string(), "eu-1c".to_string()],
        }
    }

    #[test]
    fn masks_are_base64_go_ip_masks() {
        let p: IpPrefix = "10.244.0.0/24".parse().unwrap();
        assert_eq!(encode_mask(p), "////AA==");
        assert_eq!(decode_mask("test", p.addr(), "////AA==").unwrap(), p);
        assert!(matches!(
            decode_mask("test", p.addr(), "not base64!"),
            Err(CodecError::Mask { what: "test", .. })
        ));
        // Valid base64, but a v6-sized mask for a v4 address.
        let v6_mask = encode_mask("fd00::/64".parse().unwrap());
        assert!(matches!(
            decode_mask("test", p.addr(), &v6_mask),
            Err(CodecError::Model { what: "test", .. })
        ));
    }

    #[test]
    fn errors_name_what_failed() {
        let err = parse_ip("node IPv4HealthIP", "10.0.0.300").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid node IPv4HealthIP address \"10.0.0.300\""
        );
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(parse_optional_ip("x", "").unwrap(), None);
    }
}
