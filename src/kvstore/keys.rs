//! The key schema: Cilium's clustermesh layout, so that `etcdctl get --prefix
//! cilium/state/` on a fleetmesh store reads like a clustermesh-apiserver's and a stock
//! Cilium agent could consume it, plus fleetmesh's own keys under `fleetmesh/`.
//!
//! | key | value |
//! | --- | --- |
//! | `cilium/state/nodes/v1/<cluster>/<node>` | node JSON (Go field names) |
//! | `cilium/state/services/v1/<cluster>/<ns>/<name>` | `ClusterService` JSON; global and shared services only |
//! | `cilium/state/identities/v1/id/<id>` | label string `source:key=value;…` |
//! | `cilium/state/ip/v1/default/<ip>` or `…/<ip>/<len>` | `IPIdentityPair` JSON |
//! | `cilium/state/serviceexports/v1/<cluster>/<ns>/<name>` | `MCSAPIServiceSpec` JSON; only with MCS-API exports on |
//! | `cilium/cluster-config/<cluster>` | `CiliumClusterConfig` JSON |
//! | `cilium/synced/<cluster>/<base prefix>` | RFC 3339 time: the prefix is fully written |
//! | `cilium/.heartbeat` | RFC 3339 time, rewritten every minute |
//! | `fleetmesh/state/services/v1/<cluster>/<ns>/<name>` | every global service, with backend conditions and affinity |
//! | `fleetmesh/identities/v1/id/<id>` | label string: the id is allocated to these labels |
//! | `fleetmesh/identities/v1/value/<label string>` | decimal id: these labels have this id |
//! | `fleetmesh/epoch` | a random name of the store's history: gone with a wiped store |
//!
//! Identity and ipcache keys carry no cluster segment: a store holds one cluster's data.
//! The `fleetmesh/` keys never change what a `cilium/` key means.

use crate::model::{ClusterName, IdentityId, IpPrefix, Kind, Labels, ServiceName};

pub const NODES_PREFIX: &str = "cilium/state/nodes/v1/";
pub const SERVICES_PREFIX: &str = "cilium/state/services/v1/";
pub const IDENTITIES_ID_PREFIX: &str = "cilium/state/identities/v1/id/";
pub const IP_PREFIX: &str = "cilium/state/ip/v1/default/";
pub const SERVICE_EXPORTS_PREFIX: &str = "cilium/state/serviceexports/v1/";
pub const CLUSTER_CONFIG_PREFIX: &str = "cilium/cluster-config/";
pub const SYNCED_PREFIX: &str = "cilium/synced/";
pub const HEARTBEAT: &str = "cilium/.heartbeat";

pub const FLEETMESH_SERVICES_PREFIX: &str = "fleetmesh/state/services/v1/";
pub const ALLOC_ID_PREFIX: &str = "fleetmesh/identities/v1/id/";
pub const ALLOC_VALUE_PREFIX: &str = "fleetmesh/identities/v1/value/";
/// Names the store's history (see `Store::check_epoch`); written once, without a lease.
pub const EPOCH_MARKER: &str = "fleetmesh/epoch";

/// The base prefixes that sync canaries name, without their trailing `/` (Cilium names
/// identities and ipcache by their base, not by the deeper prefix written).
const NODES_BASE: &str = "cilium/state/nodes/v1";
const SERVICES_BASE: &str = "cilium/state/services/v1";
const IDENTITIES_BASE: &str = "cilium/state/identities/v1";
const IP_BASE: &str = "cilium/state/ip/v1";
const SERVICE_EXPORTS_BASE: &str = "cilium/state/serviceexports/v1";

pub fn node(cluster: &ClusterName, node: &str) -> String {
    format!("{NODES_PREFIX}{cluster}/{node}")
}

/// The prefix of one cluster's nodes.
pub fn nodes_of(cluster: &ClusterName) -> String {
    format!("{NODES_PREFIX}{cluster}/")
}

pub fn service(cluster: &ClusterName, name: &ServiceName) -> String {
    format!(
        "{SERVICES_PREFIX}{cluster}/{}/{}",
        name.namespace(),
        name.name()
    )
}

pub fn services_of(cluster: &ClusterName) -> String {
    format!("{SERVICES_PREFIX}{cluster}/")
}

pub fn fleetmesh_service(cluster: &ClusterName, name: &ServiceName) -> String {
    format!(
        "{FLEETMESH_SERVICES_PREFIX}{cluster}/{}/{}",
        name.namespace(),
        name.name()
    )
}

pub fn fleetmesh_services_of(cluster: &ClusterName) -> String {
    format!("{FLEETMESH_SERVICES_PREFIX}{cluster}/")
}

pub fn service_export(cluster: &ClusterName, name: &ServiceName) -> String {
    format!(
        "{SERVICE_EXPORTS_PREFIX}{cluster}/{}/{}",
        name.namespace(),
        name.name()
    )
}

pub fn service_exports_of(cluster: &ClusterName) -> String {
    format!("{SERVICE_EXPORTS_PREFIX}{cluster}/")
}

pub fn identity(id: IdentityId) -> String {
    format!("{IDENTITIES_ID_PREFIX}{id}")
}

pub fn ip(prefix: IpPrefix) -> String {
    format!("{IP_PREFIX}{prefix}")
}

pub fn cluster_config(cluster: &ClusterName) -> String {
    format!("{CLUSTER_CONFIG_PREFIX}{cluster}")
}

/// The sync canary of one kind of one cluster's data.
pub fn synced_canary(cluster: &ClusterName, kind: Kind) -> String {
    let base = match kind {
        Kind::Node => NODES_BASE,
        Kind::Service => SERVICES_BASE,
        Kind::Identity => IDENTITIES_BASE,
        Kind::Endpoint => IP_BASE,
        Kind::ServiceExport => SERVICE_EXPORTS_BASE,
    };
    format!("{SYNCED_PREFIX}{cluster}/{base}")
}

/// The prefix of one cluster's sync canaries.
pub fn synced_of(cluster: &ClusterName) -> String {
    format!("{SYNCED_PREFIX}{cluster}/")
}

pub fn alloc_id(id: IdentityId) -> String {
    format!("{ALLOC_ID_PREFIX}{id}")
}

pub fn alloc_value(labels: &Labels) -> String {
    format!("{ALLOC_VALUE_PREFIX}{}", labels.to_kvstore_string())
}

/// A key of one cluster's exported state, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateKey {
    Node { cluster: String, name: String },
    Service { cluster: String, name: ServiceName },
    FleetmeshService { cluster: String, name: ServiceName },
    ServiceExport { cluster: String, name: ServiceName },
    Identity(IdentityId),
    Endpoint(IpPrefix),
}

impl StateKey {
    /// Parses an exported-state key; `None` for anything else (other prefixes, or a key
    /// with the right prefix whose segments are malformed).
    pub fn parse(key: &str) -> Option<Self> {
        if let Some(rest) = key.strip_prefix(NODES_PREFIX) {
            let (cluster, name) = rest.split_once('/')?;
            if cluster.is_empty() || name.is_empty() || name.contains('/') {
                return None;
            }
            return Some(Self::Node {
                cluster: cluster.to_string(),
                name: name.to_string(),
            });
        }
        if let Some(rest) = key.strip_prefix(SERVICES_PREFIX) {
            let (cluster, name) = split_service(rest)?;
            return Some(Self::Service { cluster, name });
        }
        if let Some(rest) = key.strip_prefix(FLEETMESH_SERVICES_PREFIX) {
            let (cluster, name) = split_service(rest)?;
            return Some(Self::FleetmeshService { cluster, name });
        }
        if let Some(rest) = key.strip_prefix(SERVICE_EXPORTS_PREFIX) {
            let (cluster, name) = split_service(rest)?;
            return Some(Self::ServiceExport { cluster, name });
        }
        if let Some(rest) = key.strip_prefix(IDENTITIES_ID_PREFIX) {
            return rest.parse().ok().map(Self::Identity);
        }
        if let Some(rest) = key.strip_prefix(IP_PREFIX) {
            return rest.parse().ok().map(Self::Endpoint);
        }
        None
    }

    /// The kind of data the key holds (fleetmesh's service copy is a service).
    pub fn kind(&self) -> Kind {
        match self {
            Self::Node { .. } => Kind::Node,
            Self::Service { .. } | Self::FleetmeshService { .. } => Kind::Service,
            Self::ServiceExport { .. } => Kind::ServiceExport,
            Self::Identity(_) => Kind::Identity,
            Self::Endpoint(_) => Kind::Endpoint,
        }
    }

    /// The key this parsed form came from.
    pub fn to_key(&self) -> String {
        match self {
            Self::Node { cluster, name } => format!("{NODES_PREFIX}{cluster}/{name}"),
            Self::Service { cluster, name } => {
                format!(
                    "{SERVICES_PREFIX}{cluster}/{}/{}",
                    name.namespace(),
                    name.name()
                )
            }
            Self::FleetmeshService { cluster, name } => format!(
                "{FLEETMESH_SERVICES_PREFIX}{cluster}/{}/{}",
                name.namespace(),
                name.name()
            ),
            Self::ServiceExport { cluster, name } => format!(
                "{SERVICE_EXPORTS_PREFIX}{cluster}/{}/{}",
                name.namespace(),
                name.name()
            ),
            Self::Identity(id) => identity(*id),
            Self::Endpoint(p) => ip(*p),
        }
    }
}

fn split_service(rest: &str) -> Option<(String, ServiceName)> {
    let (cluster, ns_name) = rest.split_once('/')?;
    if cluster.is_empty() {
        return None;
    }
    Some((cluster.to_string(), ns_name.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_name(s: &str) -> ClusterName {
        ClusterName::new(s).unwrap()
    }

    #[test]
    fn keys_match_ciliums_layout() {
        let c = mk_name("cluster3");
        let svc: ServiceName = "test/echo".parse().unwrap();
        assert_eq!(
            node(&c, "test-node-1"),
            "cilium/state/nodes/v1/cluster3/test-node-1"
        );
        assert_eq!(
            service(&c, &svc),
            "cilium/state/services/v1/cluster3/test/echo"
        );
        assert_eq!(
            identity(IdentityId::new(196_915).unwrap()),
            "cilium/state/identities/v1/id/196915"
        );
        assert_eq!(
            ip("10.244.2.74".parse().unwrap()),
            "cilium/state/ip/v1/default/10.244.2.74"
        );
        assert_eq!(
            ip("10.0.0.0/8".parse().unwrap()),
            "cilium/state/ip/v1/default/10.0.0.0/8"
        );
        assert_eq!(cluster_config(&c), "cilium/cluster-config/cluster3");
        assert_eq!(
            synced_canary(&c, Kind::Identity),
            "cilium/synced/cluster3/cilium/state/identities/v1"
        );
        assert_eq!(
            synced_canary(&c, Kind::Endpoint),
            "cilium/synced/cluster3/cilium/state/ip/v1"
        );
        assert_eq!(
            synced_canary(&c, Kind::Node),
            "cilium/synced/cluster3/cilium/state/nodes/v1"
        );
        assert_eq!(
            service_export(&c, &svc),
            "cilium/state/serviceexports/v1/cluster3/test/echo"
        );
        assert_eq!(
            synced_canary(&c, Kind::ServiceExport),
            "cilium/synced/cluster3/cilium/state/serviceexports/v1"
        );
    }

    #[test]
    fn state_keys_round_trip() {
        let c = mk_name("c1");
        let svc: ServiceName = "ns/web".parse().unwrap();
        for key in [
            node(&c, "n1"),
            service(&c, &svc),
            fleetmesh_service(&c, &svc),
            service_export(&c, &svc),
            identity(IdentityId::new(65_600).unwrap()),
            ip("10.0.0.1".parse().unwrap()),
            ip("fd00::/64".parse().unwrap()),
        ] {
            let parsed = StateKey::parse(&key).unwrap_or_else(|| panic!("{key}"));
            assert_eq!(parsed.to_key(), key);
        }
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for key in [
            "cilium/state/nodes/v1/c1",
            "cilium/state/nodes/v1/c1/a/b",
            "cilium/state/services/v1/c1/web",
            "cilium/state/identities/v1/id/abc",
            "cilium/state/ip/v1/default/300.0.0.1",
            "cilium/cluster-config/c1",
        ] {
            assert_eq!(StateKey::parse(key), None, "{key}");
        }
    }
}
