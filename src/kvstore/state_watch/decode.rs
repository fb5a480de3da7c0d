//! Store keys and values → model events, for one cluster's exported state.

use thiserror::Error;

use crate::kvstore::KeyValue;
use crate::kvstore::codec::{
    CodecError, decode_endpoint, decode_fleetmesh_service, decode_identity, decode_node,
    decode_service_export,
};
use crate::kvstore::keys::StateKey;
use crate::model::{Change, Cluster, Event, Resource, ResourceKey, Revision};

/// Why a stored value was skipped.
#[derive(Debug, Error)]
pub(super) enum ValueError {
    #[error("cannot decode the value of {key}")]
    Codec {
        key: String,
        #[source]
        source: CodecError,
    },
    #[error("the value of {key} has {what} {found}, but the key says {expected}")]
    Mismatch {
        key: String,
        what: &'static str,
        found: String,
        expected: String,
    },
}

/// The resource a key holds, if it is part of `cluster`'s exported state. Services come
/// from fleetmesh's own keys (with every backend's conditions), never from Cilium's.
pub(super) fn resource_key(key: &str, cluster: &Cluster) -> Option<ResourceKey> {
    let ours = |c: &str| c == cluster.name.as_str();
    match StateKey::parse(key)? {
        StateKey::Node { cluster: c, name } if ours(&c) => Some(ResourceKey::Node(name)),
        StateKey::FleetmeshService { cluster: c, name } if ours(&c) => {
            Some(ResourceKey::Service(name))
        }
        StateKey::ServiceExport { cluster: c, name } if ours(&c) => {
            Some(ResourceKey::ServiceExport(name))
        }
        StateKey::Identity(id) => Some(ResourceKey::Identity(id)),
        StateKey::Endpoint(prefix) => Some(ResourceKey::Endpoint(prefix)),
        StateKey::Node { .. }
        | StateKey::FleetmeshService { .. }
        | StateKey::Service { .. }
        | StateKey::ServiceExport { .. } => None,
    }
}

/// The upsert a stored key-value makes, or why its value is refused; `None` for a key
/// outside the cluster's exported state.
pub(super) fn decode_put(kv: &KeyValue, cluster: &Cluster) -> Option<Result<Event, ValueError>> {
    let key = resource_key(&kv.key, cluster)?;
    Some(
        decode_value(&kv.key, key, &kv.value, cluster).map(|resource| Event {
            revision: kv.mod_revision,
            change: Change::Upsert(resource),
        }),
    )
}

/// The delete a deleted key makes; `None` for a key outside the exported state.
pub(super) fn decode_delete(key: &str, revision: Revision, cluster: &Cluster) -> Option<Event> {
    resource_key(key, cluster).map(|key| Event {
        revision,
        change: Change::Delete(key),
    })
}

fn decode_value(
    raw_key: &str,
    key: ResourceKey,
    value: &[u8],
    cluster: &Cluster,
) -> Result<Resource, ValueError> {
    let codec = |source| ValueError::Codec {
        key: raw_key.to_string(),
        source,
    };
    let mismatch = |what, found: &dyn ToString, expected: &dyn ToString| ValueError::Mismatch {
        key: raw_key.to_string(),
        what,
        found: found.to_string(),
        expected: expected.to_string(),
    };
    match key {
        ResourceKey::Node(name) => {
            let node = decode_node(value, cluster.mode).map_err(codec)?;
            if node.name() != name {
                return Err(mismatch("node name", &node.name(), &name));
            }
            if node.cluster != cluster.name {
                return Err(mismatch("node cluster", &node.cluster, &cluster.name));
            }
            if node.cluster_id != cluster.id {
                return Err(mismatch("node cluster id", &node.cluster_id, &cluster.id));
            }
            Ok(Resource::Node(node))
        }
        ResourceKey::Service(name) => {
            let svc = decode_fleetmesh_service(value, cluster.mode).map_err(codec)?;
            if svc.name != name {
                return Err(mismatch("service", &svc.name, &name));
            }
            if svc.cluster != cluster.name {
                return Err(mismatch("service cluster", &svc.cluster, &cluster.name));
            }
            if svc.cluster_id != cluster.id {
                return Err(mismatch("service cluster id", &svc.cluster_id, &cluster.id));
            }
            Ok(Resource::Service(svc))
        }
        ResourceKey::Identity(id) => decode_identity(id, value, cluster)
            .map(Resource::Identity)
            .map_err(codec),
        ResourceKey::ServiceExport(name) => {
            let export = decode_service_export(value).map_err(codec)?;
            if export.name != name {
                return Err(mismatch("service export", &export.name, &name));
            }
            if export.cluster != cluster.name {
                return Err(mismatch(
                    "service export cluster",
                    &export.cluster,
                    &cluster.name,
                ));
            }
            Ok(Resource::ServiceExport(export))
        }
        ResourceKey::Endpoint(prefix) => {
            let ep = decode_endpoint(value).map_err(codec)?;
            if ep.prefix != prefix {
                return Err(mismatch("ipcache prefix", &ep.prefix, &prefix));
            }
            Ok(Resource::Endpoint(ep))
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::kvstore::codec::{encode_endpoint, encode_fleetmesh_service, encode_node};
    use crate::kvstore::keys;
    use crate::proto::fixtures::{mk_cluster, mk_endpoint, mk_node, mk_service};

    fn mk_kv(key: String, value: Bytes) -> KeyValue {
        KeyValue {
            key,
            value,
            create_revision: 4,
            mod_revision: 5,
            lease: None,
        }
    }

    #[test]
    fn only_the_clusters_exported_keys_count() {
        let c1 = mk_cluster("c1", 1);
        let c2 = mk_cluster("c2", 2);
        let svc = mk_service(&c1, "shop", "cart");
        for key in [
            keys::nodes_of(&c2.name) + "n1",
            keys::service(&c1.name, &svc.name),
            keys::cluster_config(&c1.name),
            keys::HEARTBEAT.to_string(),
            keys::synced_of(&c1.name) + "cilium/state/nodes/v1",
        ] {
            assert_eq!(resource_key(&key, &c1), None, "{key}");
        }
        assert_eq!(
            resource_key(&keys::fleetmesh_service(&c1.name, &svc.name), &c1),
            Some(ResourceKey::Service(svc.name.clone()))
        );
    }

    #[test]
    fn values_that_contradict_their_key_are_refused() {
        let c1 = mk_cluster("c1", 1);
        let node = mk_node(&c1, "n1");
        let kv = mk_kv(keys::node(&c1.name, "n2"), encode_node(&node));
        let err = decode_put(&kv, &c1).unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the value of cilium/state/nodes/v1/c1/n2 has node name n1, but the key says n2"
        );

        let other = mk_cluster("c1", 9);
        let kv = mk_kv(
            keys::node(&c1.name, "n1"),
            encode_node(&mk_node(&other, "n1")),
        );
        assert!(matches!(
            decode_put(&kv, &c1).unwrap(),
            Err(ValueError::Mismatch {
                what: "node cluster id",
                ..
            })
        ));

        let svc = mk_service(&c1, "shop", "cart");
        let elsewhere = svc.name.clone();
        let mut moved = svc.clone();
        moved.name = "shop/other".parse().unwrap();
        let kv = mk_kv(
            keys::fleetmesh_service(&c1.name, &elsewhere),
            encode_fleetmesh_service(&moved),
        );
        assert!(matches!(
            decode_put(&kv, &c1).unwrap(),
            Err(ValueError::Mismatch {
                what: "service",
                ..
            })
        ));

        let ep = mk_endpoint(&c1, "10.0.0.1");
        let kv = mk_kv(keys::ip("10.0.0.2".parse().unwrap()), encode_endpoint(&ep));
        assert!(matches!(
            decode_put(&kv, &c1).unwrap(),
            Err(ValueError::Mismatch {
                what: "ipcache prefix",
                ..
            })
        ));

        let kv = mk_kv(keys::ip(ep.prefix), Bytes::from_static(b"{not json"));
        assert!(matches!(
            decode_put(&kv, &c1).unwrap(),
            Err(ValueError::Codec { .. })
        ));
    }

    #[test]
    fn puts_carry_the_mod_revision_and_deletes_the_key() {
        let c1 = mk_cluster("c1", 1);
        let ep = mk_endpoint(&c1, "10.0.0.0/24");
        let kv = mk_kv(keys::ip(ep.prefix), encode_endpoint(&ep));
        let event = decode_put(&kv, &c1).unwrap().unwrap();
        assert_eq!(event.revision, 5);
        assert_eq!(event.change, Change::Upsert(Resource::Endpoint(ep.clone())));

        let event = decode_delete(&keys::ip(ep.prefix), 9, &c1).unwrap();
        assert_eq!(
            event.change,
            Change::Delete(ResourceKey::Endpoint(ep.prefix))
        );
        assert_eq!(decode_delete(keys::HEARTBEAT, 9, &c1), None);
    }
}
