use std::fmt;

use super::{Endpoint, Identity, IdentityId, IpPrefix, Node, Service, ServiceExport, ServiceName};

/// A position in a store's history: every write gets the next one (like etcd's revision).
pub type Revision = u64;

/// The kinds of state a cluster exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Node,
    Service,
    Identity,
    Endpoint,
    /// MCS-API service exports: only where the exporter has them on, and sent only to
    /// watchers that ask for them (peers before them do not know the kind).
    ServiceExport,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Node,
        Kind::Service,
        Kind::Identity,
        Kind::Endpoint,
        Kind::ServiceExport,
    ];
    /// The kinds of protocol version 1 as first released: what a watcher that names no
    /// kind gets.
    pub const ORIGINAL: [Kind; 4] = [Kind::Node, Kind::Service, Kind::Identity, Kind::Endpoint];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "nodes",
            Self::Service => "services",
            Self::Identity => "identities",
            Self::Endpoint => "endpoints",
            Self::ServiceExport => "serviceexports",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What names one resource inside one cluster's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKey {
    Node(String),
    Service(ServiceName),
    Identity(IdentityId),
    Endpoint(IpPrefix),
    ServiceExport(ServiceName),
}

impl ResourceKey {
    pub fn kind(&self) -> Kind {
        match self {
            Self::Node(_) => Kind::Node,
            Self::Service(_) => Kind::Service,
            Self::Identity(_) => Kind::Identity,
            Self::Endpoint(_) => Kind::Endpoint,
            Self::ServiceExport(_) => Kind::ServiceExport,
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Node(n) => write!(f, "node {n}"),
            Self::Service(s) => write!(f, "service {s}"),
            Self::Identity(i) => write!(f, "identity {i}"),
            Self::Endpoint(p) => write!(f, "endpoint {p}"),
            Self::ServiceExport(s) => write!(f, "service export {s}"),
        }
    }
}

/// One resource of a cluster's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Node(Node),
    Service(Service),
    Identity(Identity),
    Endpoint(Endpoint),
    ServiceExport(ServiceExport),
}

impl Resource {
    pub fn key(&self) -> ResourceKey {
        match self {
            Self::Node(n) => ResourceKey::Node(n.name().to_string()),
            Self::Service(s) => ResourceKey::Service(s.name.clone()),
            Self::Identity(i) => ResourceKey::Identity(i.id()),
            Self::Endpoint(e) => ResourceKey::Endpoint(e.prefix),
            Self::ServiceExport(e) => ResourceKey::ServiceExport(e.name.clone()),
        }
    }

    pub fn kind(&self) -> Kind {
        self.key().kind()
    }
}

/// A change to a cluster's state.
// Nearly every change is an upsert, so boxing the large variant would cost an allocation
// per event to save space on the rare delete.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Upsert(Resource),
    Delete(ResourceKey),
}

impl Change {
    pub fn key(&self) -> ResourceKey {
        match self {
            Self::Upsert(r) => r.key(),
            Self::Delete(k) => k.clone(),
        }
    }
}

/// A change and the store revision that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub revision: Revision,
    pub change: Change,
}
