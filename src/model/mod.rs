//! The domain model: typed, validated values that know nothing of Kubernetes, protobuf
//! or etcd. A value of one of these types that exists is a valid value: every
//! constructor that takes outside input checks it and says what is wrong.
//!
//! Conversions live at the edges: `k8s::convert` (Kubernetes objects → model),
//! `kvstore::codec` (model ⇄ Cilium's kvstore values) and `proto` (model ⇄ wire).

mod cluster;
mod config;
mod desired;
mod endpoint;
mod error;
mod event;
mod identity;
mod node;
mod service;
mod service_export;

pub use cluster::{Cluster, ClusterId, ClusterName, IdMode};
pub use config::{Capabilities, ClusterConfig};
pub use desired::{DesiredState, Workload};
pub use endpoint::{Endpoint, IpPrefix, NamedPort};
pub use error::ModelError;
pub use event::{Change, Event, Kind, Resource, ResourceKey, Revision};
pub use identity::{
    CLUSTER_LABEL, Identity, IdentityId, IdentityRange, Label, Labels, RESERVED_IDENTITY_MAX,
};
pub use node::{Node, NodeAddress};
pub use service::{
    Affinity, Backend, BackendConditions, L4Addr, PortMap, Protocol, Service, ServiceName,
};
pub use service_export::{
    ExportPort, ExportType, InternalTrafficPolicy, IpFamily, ServiceExport, SessionAffinity,
    TrafficDistribution,
};
