//! The wire protocol: the types generated from `proto/fleetmesh/v1/mesh.proto` and the
//! model ⇄ wire conversions. This is the only module that uses prost.
//!
//! - **Model → wire** is `From<&T> for v1::T` and [`encode_event`].
//! - **Wire → model** checks everything, because it is a peer's data: `*_from_wire`
//!   functions take the peer's [`Cluster`](crate::model::Cluster) and refuse, with a
//!   [`ProtoError`] naming the field, a node or service that names another cluster, an
//!   identity outside the peer's range or without its cluster label, an ipcache entry
//!   claiming another cluster's identity, and malformed addresses, prefixes and ports.
//!   Consumers decode straight into model types; no prost struct outlives a message.
//!
//! # Encode once
//!
//! The server encodes each event once ([`encode_event`]) and sends the same bytes to
//! every watcher: a Watch response is a [`WatchFrame`], whose `events` are pre-encoded
//! `v1::Event`s and which is wire-identical to the `.proto`'s `WatchResponse` (a
//! `bytes` field and an embedded message share the length-delimited encoding).
//! `build.rs` maps `WatchResponse` to [`WatchFrame`], so the generated client yields
//! frames too: decode each element with [`decode_event`].

mod error;
mod event;
#[cfg(test)]
pub(crate) mod fixtures;
mod frame;
mod identity;
mod info;
mod node;
mod service;
mod service_export;
mod wire;

/// The generated messages, client (`mesh_client`) and server (`mesh_server`).
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("fleetmesh.v1");
}

pub use error::ProtoError;
pub use event::{
    decode_event, encode_event, event_from_wire, kind_from_wire, kind_to_wire,
    resource_key_from_wire,
};
pub use frame::WatchFrame;
pub use identity::{endpoint_from_wire, identity_from_wire};
pub use info::{ServerInfo, server_info_from_wire};
pub use node::node_from_wire;
pub use service::service_from_wire;
pub use service_export::service_export_from_wire;

/// The protocol version `Info` reports; a consumer refuses a server speaking another.
pub const PROTOCOL_VERSION: u32 = 1;

/// A watcher may resume from a revision and get only what it missed.
pub const CAP_RESUME: &str = "resume";
/// Services carry every backend with its EndpointSlice conditions, not only ready ones.
pub const CAP_BACKEND_CONDITIONS: &str = "backend-conditions";
/// A watcher may ask for some kinds only.
pub const CAP_KIND_FILTER: &str = "kind-filter";
/// The server serves `KIND_SERVICE_EXPORT` to a watcher that names it.
pub const CAP_SERVICE_EXPORTS: &str = "service-exports";
