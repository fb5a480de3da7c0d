//! The keys KVStoreMesh writes into a member's own etcd for its Cilium agents, one set
//! per peer, with values byte for byte as the peer's apiserver writes them under
//! `cilium/state/` (the same `kvstore::codec` encodes both):
//!
//! | key | value |
//! | --- | --- |
//! | `cilium/cache/nodes/v1/<peer>/<node>` | node JSON |
//! | `cilium/cache/services/v1/<peer>/<ns>/<name>` | `ClusterService` JSON; shared services only |
//! | `cilium/cache/identities/v1/<peer>/id/<id>` | label string |
//! | `cilium/cache/ip/v1/<peer>/<ip>` or `…/<ip>/<len>` | `IPIdentityPair` JSON |
//! | `cilium/cluster-config/<peer>` | the peer's `CiliumClusterConfig` with `cached: true` |
//! | `cilium/synced/<peer>/cilium/cache/<res>/v1` | RFC 3339 time: the peer's `<res>` is complete |
//! | `cilium/.heartbeat` | RFC 3339 time, rewritten every minute |
//!
//! A peer's MCS-API service exports are cached too, under
//! `cilium/cache/serviceexports/v1/<peer>/<ns>/<name>`, but their canary is not written and
//! the cached config does not announce `serviceExportsEnabled`: Cilium's operator does not
//! read them from a cache yet.

use bytes::Bytes;

use crate::kvstore::{codec, keys};
use crate::model::{
    Capabilities, Cluster, ClusterConfig, ClusterName, Kind, Resource, ResourceKey,
};

pub const CACHE_PREFIX: &str = "cilium/cache/";

/// The resource segment of each kind's cache prefix, as Cilium names it.
fn resource(kind: Kind) -> &'static str {
    match kind {
        Kind::Node => "nodes",
        Kind::Service => "services",
        Kind::Identity => "identities",
        Kind::Endpoint => "ip",
        Kind::ServiceExport => "serviceexports",
    }
}

/// The kinds whose sync canary a cache writes: every kind but the service exports, whose
/// canary Cilium's KVStoreMesh writes only when exports are enabled.
pub const CANARY_KINDS: [Kind; 4] = [Kind::Node, Kind::Service, Kind::Identity, Kind::Endpoint];

/// Every cache key of `kind` from `peer` starts with this.
pub fn prefix_of(peer: &ClusterName, kind: Kind) -> String {
    format!("{CACHE_PREFIX}{}/v1/{peer}/", resource(kind))
}

/// The cache key of `key` from `peer`.
pub fn cache_key(peer: &ClusterName, key: &ResourceKey) -> String {
    let prefix = prefix_of(peer, key.kind());
    match key {
        ResourceKey::Node(name) => format!("{prefix}{name}"),
        ResourceKey::Service(name) => format!("{prefix}{}/{}", name.namespace(), name.name()),
        ResourceKey::Identity(id) => format!("{prefix}id/{id}"),
        ResourceKey::Endpoint(ip) => format!("{prefix}{ip}"),
        ResourceKey::ServiceExport(name) => {
            format!("{prefix}{}/{}", name.namespace(), name.name())
        }
    }
}

/// The value the peer's apiserver writes for `resource` under `cilium/state/`; `None`
/// for what it does not write there (a service it does not share).
pub fn cache_value(resource: &Resource) -> Option<Bytes> {
    Some(match resource {
        Resource::Node(node) => codec::encode_node(node),
        Resource::Service(svc) if svc.shared => codec::encode_service(svc),
        Resource::Service(_) => return None,
        Resource::Identity(identity) => codec::encode_identity(identity),
        Resource::Endpoint(ep) => codec::encode_endpoint(ep),
        Resource::ServiceExport(export) => codec::encode_service_export(export),
    })
}

/// The sync canary of `peer`'s `kind`.
pub fn canary(peer: &ClusterName, kind: Kind) -> String {
    format!(
        "{}{peer}/{CACHE_PREFIX}{}/v1",
        keys::SYNCED_PREFIX,
        resource(kind)
    )
}

/// `peer`'s cluster config as a cache announces it: the peer's id and mode, with
/// `cached` set (which switches Cilium's agents to the `cilium/cache/` prefixes) and
/// `serviceExportsEnabled` absent: Cilium reads a cached peer's exports, and waits for
/// their canary, whenever the field is there, even `false` — and the cache writes no
/// such canary.
pub fn cluster_config(peer: &Cluster) -> Bytes {
    codec::encode_cluster_config(&ClusterConfig {
        id: peer.id,
        capabilities: Capabilities {
            cached: true,
            service_exports_enabled: None,
            ..Capabilities::fleetmesh(peer.mode)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fixtures::{mk_cluster, mk_endpoint, mk_identity, mk_node, mk_service};

    #[test]
    fn cache_keys_follow_kvstoremesh_s_layout() {
        let c2 = mk_cluster("c2", 2);
        let node = Resource::Node(mk_node(&c2, "n1"));
        let svc = Resource::Service(mk_service(&c2, "shop", "cart"));
        let ep = Resource::Endpoint(mk_endpoint(&c2, "10.2.0.1"));
        let identity = mk_identity(&c2, 1);
        let identity_key = format!("cilium/cache/identities/v1/c2/id/{}", identity.id());
        let identity = Resource::Identity(identity);
        let export = ResourceKey::ServiceExport("shop/cart".parse().unwrap());
        let keys: Vec<String> = [&node, &svc, &ep, &identity]
            .iter()
            .map(|r| cache_key(&c2.name, &r.key()))
            .chain([cache_key(&c2.name, &export)])
            .collect();
        assert_eq!(
            keys,
            [
                "cilium/cache/nodes/v1/c2/n1",
                "cilium/cache/services/v1/c2/shop/cart",
                "cilium/cache/ip/v1/c2/10.2.0.1",
                identity_key.as_str(),
                "cilium/cache/serviceexports/v1/c2/shop/cart",
            ]
        );
        assert_eq!(
            canary(&c2.name, Kind::Endpoint),
            "cilium/synced/c2/cilium/cache/ip/v1"
        );
        assert_eq!(
            canary(&c2.name, Kind::Identity),
            "cilium/synced/c2/cilium/cache/identities/v1"
        );
        for kind in Kind::ALL {
            assert!(
                keys.iter()
                    .any(|k| k.starts_with(&prefix_of(&c2.name, kind)))
            );
        }
    }

    #[test]
    fn values_are_the_state_values_and_the_config_says_cached() {
        let c2 = mk_cluster("c2", 2);
        let ep = mk_endpoint(&c2, "10.2.0.1");
        assert_eq!(
            cache_value(&Resource::Endpoint(ep.clone())),
            Some(codec::encode_endpoint(&ep))
        );
        let mut svc = mk_service(&c2, "shop", "cart");
        svc.shared = false;
        assert_eq!(cache_value(&Resource::Service(svc)), None);
        let config = codec::decode_cluster_config(&cluster_config(&c2)).unwrap();
        assert_eq!(config.id, c2.id);
        assert!(config.capabilities.cached && config.capabilities.synced_canaries);
        let text = String::from_utf8(cluster_config(&c2).to_vec()).unwrap();
        assert!(text.contains("\"cached\":true"), "{text}");
        assert!(!text.contains("serviceExportsEnabled"), "{text}");
    }
}
