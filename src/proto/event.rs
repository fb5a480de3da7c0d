//! Events, resource keys and kinds ⇄ wire; the encoding the server does once per event
//! and the decoding a consumer does per event.

use bytes::Bytes;
use prost::Message;

use super::identity::{endpoint_from_wire, identity_from_wire};
use super::node::node_from_wire;
use super::service::service_from_wire;
use super::service_export::service_export_from_wire;
use super::{ProtoError, v1};
use crate::model::{Change, Cluster, Event, Kind, Resource, ResourceKey};

pub fn kind_to_wire(kind: Kind) -> v1::Kind {
    match kind {
        Kind::Node => v1::Kind::Node,
        Kind::Service => v1::Kind::Service,
        Kind::Identity => v1::Kind::Identity,
        Kind::Endpoint => v1::Kind::Endpoint,
        Kind::ServiceExport => v1::Kind::ServiceExport,
    }
}

/// A kind from its wire number; `KIND_UNSPECIFIED` and unknown numbers are refused.
pub fn kind_from_wire(field: &'static str, value: i32) -> Result<Kind, ProtoError> {
    match v1::Kind::try_from(value) {
        Ok(v1::Kind::Node) => Ok(Kind::Node),
        Ok(v1::Kind::Service) => Ok(Kind::Service),
        Ok(v1::Kind::Identity) => Ok(Kind::Identity),
        Ok(v1::Kind::Endpoint) => Ok(Kind::Endpoint),
        Ok(v1::Kind::ServiceExport) => Ok(Kind::ServiceExport),
        Ok(v1::Kind::Unspecified) => Err(ProtoError::value(field, value, "kind unspecified")),
        Err(_) => Err(ProtoError::value(field, value, "unknown kind")),
    }
}

impl From<&ResourceKey> for v1::ResourceKey {
    fn from(key: &ResourceKey) -> Self {
        let name = match key {
            ResourceKey::Node(name) => name.clone(),
            ResourceKey::Service(name) | ResourceKey::ServiceExport(name) => name.to_string(),
            ResourceKey::Identity(id) => id.to_string(),
            ResourceKey::Endpoint(prefix) => prefix.to_string(),
        };
        v1::ResourceKey {
            kind: kind_to_wire(key.kind()).into(),
            name,
        }
    }
}

/// The key of a deleted resource. A node name is checked as a node's would be.
pub fn resource_key_from_wire(
    wire: v1::ResourceKey,
    peer: &Cluster,
) -> Result<ResourceKey, ProtoError> {
    const FIELD: &str = "deleted.name";
    let name = wire.name;
    Ok(match kind_from_wire("deleted.kind", wire.kind)? {
        Kind::Node => {
            crate::model::Node::new(&name, peer.name.clone(), peer.id)
                .map_err(ProtoError::model(FIELD))?;
            ResourceKey::Node(name)
        }
        Kind::Service => ResourceKey::Service(name.parse().map_err(ProtoError::model(FIELD))?),
        Kind::Identity => ResourceKey::Identity(name.parse().map_err(ProtoError::model(FIELD))?),
        Kind::Endpoint => ResourceKey::Endpoint(name.parse().map_err(ProtoError::model(FIELD))?),
        Kind::ServiceExport => {
            ResourceKey::ServiceExport(name.parse().map_err(ProtoError::model(FIELD))?)
        }
    })
}

impl From<&Event> for v1::Event {
    fn from(event: &Event) -> Self {
        let change = match &event.change {
            Change::Upsert(Resource::Node(n)) => v1::event::Change::Node(n.into()),
            Change::Upsert(Resource::Service(s)) => v1::event::Change::Service(s.into()),
            Change::Upsert(Resource::Identity(i)) => v1::event::Change::Identity(i.into()),
            Change::Upsert(Resource::Endpoint(e)) => v1::event::Change::Endpoint(e.into()),
            Change::Upsert(Resource::ServiceExport(e)) => {
                v1::event::Change::ServiceExport(e.into())
            }
            Change::Delete(key) => v1::event::Change::Deleted(key.into()),
        };
        v1::Event {
            revision: event.revision,
            change: Some(change),
        }
    }
}

/// A peer's event, every resource checked against the peer's cluster.
pub fn event_from_wire(wire: v1::Event, peer: &Cluster) -> Result<Event, ProtoError> {
    use v1::event::Change as Wire;
    let change = match wire.change.ok_or(ProtoError::Missing {
        field: "event.change",
    })? {
        Wire::Node(n) => Change::Upsert(Resource::Node(node_from_wire(n, peer)?)),
        Wire::Service(s) => Change::Upsert(Resource::Service(service_from_wire(s, peer)?)),
        Wire::Identity(i) => Change::Upsert(Resource::Identity(identity_from_wire(i, peer)?)),
        Wire::Endpoint(e) => Change::Upsert(Resource::Endpoint(endpoint_from_wire(e, peer)?)),
        Wire::ServiceExport(e) => {
            Change::Upsert(Resource::ServiceExport(service_export_from_wire(e, peer)?))
        }
        Wire::Deleted(k) => Change::Delete(resource_key_from_wire(k, peer)?),
    };
    Ok(Event {
        revision: wire.revision,
        change,
    })
}

/// An event as the bytes of one `v1::Event`: what the server computes once per event
/// and sends to every watcher (see [`super::WatchFrame`]).
pub fn encode_event(event: &Event) -> Bytes {
    Bytes::from(v1::Event::from(event).encode_to_vec())
}

/// One element of a [`super::WatchFrame`]'s `events`, decoded and checked against the
/// peer's cluster. Given the frame's `Bytes` (a cheap clone), the addresses in it are
/// decoded as slices of the frame instead of copies.
pub fn decode_event(bytes: impl bytes::Buf, peer: &Cluster) -> Result<Event, ProtoError> {
    let wire = v1::Event::decode(bytes).map_err(|source| ProtoError::Decode {
        what: "event",
        source,
    })?;
    event_from_wire(wire, peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IdentityId, ServiceName};
    use crate::proto::fixtures::{
        mk_cluster, mk_endpoint, mk_identity, mk_node, mk_service, mk_service_export,
    };

    fn mk_events(peer: &Cluster) -> Vec<Event> {
        let upserts = [
            Resource::Node(mk_node(peer, "worker-1")),
            Resource::Service(mk_service(peer, "shop", "cart")),
            Resource::Identity(mk_identity(peer, 307)),
            Resource::Endpoint(mk_endpoint(peer, "10.0.0.0/16")),
            Resource::ServiceExport(mk_service_export(peer, "shop", "cart")),
        ];
        let deletes = [
            ResourceKey::Node("worker-2".into()),
            ResourceKey::Service(ServiceName::new("shop", "old").unwrap()),
            ResourceKey::Identity(IdentityId::new(196_999).unwrap()),
            ResourceKey::Endpoint("10.0.0.9".parse().unwrap()),
            ResourceKey::Endpoint("fd00::/64".parse().unwrap()),
            ResourceKey::ServiceExport(ServiceName::new("shop", "gone").unwrap()),
        ];
        let changes = upserts
            .into_iter()
            .map(Change::Upsert)
            .chain(deletes.into_iter().map(Change::Delete));
        changes
            .zip(10..)
            .map(|(change, revision)| Event { revision, change })
            .collect()
    }

    #[test]
    fn every_kind_of_event_round_trips_through_bytes() {
        let c3 = mk_cluster("cluster3", 3);
        for event in mk_events(&c3) {
            let bytes = encode_event(&event);
            assert_eq!(decode_event(bytes, &c3).unwrap(), event);
        }
    }

    #[test]
    fn kinds_round_trip_and_unknown_ones_are_refused() {
        for kind in Kind::ALL {
            let wire = i32::from(kind_to_wire(kind));
            assert_eq!(kind_from_wire("kinds", wire).unwrap(), kind);
        }
        for bad in [0, 6, -1] {
            assert!(matches!(
                kind_from_wire("kinds", bad),
                Err(ProtoError::Value { field: "kinds", .. })
            ));
        }
    }

    #[test]
    fn bad_events_are_refused_with_the_field() {
        let c3 = mk_cluster("cluster3", 3);
        let err = decode_event(&[0xff, 0xff][..], &c3).unwrap_err();
        assert!(matches!(err, ProtoError::Decode { what: "event", .. }));

        let empty = v1::Event {
            revision: 3,
            change: None,
        };
        let err = decode_event(&empty.encode_to_vec()[..], &c3).unwrap_err();
        assert_eq!(err.to_string(), "event.change is missing");

        for (kind, name) in [
            (v1::Kind::Node, "Bad_Node"),
            (v1::Kind::Service, "no-slash"),
            (v1::Kind::Identity, "x"),
            (v1::Kind::Endpoint, "10.0.0.0/99"),
            (v1::Kind::Unspecified, "a"),
        ] {
            let wire = v1::Event {
                revision: 3,
                change: Some(v1::event::Change::Deleted(v1::ResourceKey {
                    kind: kind.into(),
                    name: name.into(),
                })),
            };
            let err = event_from_wire(wire, &c3).unwrap_err().to_string();
            assert!(err.contains("deleted."), "{name}: {err}");
        }
    }
}
