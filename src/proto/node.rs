//! Node ⇄ wire.

use super::wire::{
    check_cluster, ip_from_wire, ip_to_wire, narrow, optional_text, prefix_from_wire,
    prefix_to_wire, prefixes_from_wire, text_ip_from_wire,
};
use super::{ProtoError, v1};
use crate::model::{Cluster, Node, NodeAddress};

impl From<&Node> for v1::Node {
    fn from(node: &Node) -> Self {
        v1::Node {
            name: node.name().to_string(),
            addresses: node
                .addresses
                .iter()
                .map(|a| v1::NodeAddress {
                    r#type: a.kind.clone(),
                    ip: ip_to_wire(a.ip),
                })
                .collect(),
            ipv4_alloc_cidr: optional_text(node.ipv4_alloc_cidr.map(prefix_to_wire)),
            ipv6_alloc_cidr: optional_text(node.ipv6_alloc_cidr.map(prefix_to_wire)),
            ipv4_health_ip: optional_text(node.ipv4_health_ip),
            ipv6_health_ip: optional_text(node.ipv6_health_ip),
            encryption_key: u32::from(node.encryption_key),
            labels: node.labels.clone(),
            wireguard_pub_key: node.wireguard_pub_key.clone(),
            boot_id: node.boot_id.clone(),
            cluster: node.cluster.to_string(),
            cluster_id: node.cluster_id.get(),
            ipv4_secondary_alloc_cidrs: node
                .ipv4_secondary_alloc_cidrs
                .iter()
                .map(|p| prefix_to_wire(*p))
                .collect(),
            ipv6_secondary_alloc_cidrs: node
                .ipv6_secondary_alloc_cidrs
                .iter()
                .map(|p| prefix_to_wire(*p))
                .collect(),
            ipv4_ingress_ip: optional_text(node.ipv4_ingress_ip),
            ipv6_ingress_ip: optional_text(node.ipv6_ingress_ip),
            source: node.source.clone(),
            annotations: node.annotations.clone(),
            node_identity: node.node_identity,
        }
    }
}

/// A peer's node: it must name the peer's cluster (name and id) and have a valid name.
pub fn node_from_wire(wire: v1::Node, peer: &Cluster) -> Result<Node, ProtoError> {
    let (cluster, cluster_id) = check_cluster(
        ("node.cluster", &wire.cluster),
        ("node.cluster_id", wire.cluster_id),
        peer,
    )?;
    let mut node =
        Node::new(&wire.name, cluster, cluster_id).map_err(ProtoError::model("node.name"))?;
    node.addresses = wire
        .addresses
        .into_iter()
        .map(|a| {
            Ok(NodeAddress {
                kind: a.r#type,
                ip: ip_from_wire("node.addresses.ip", &a.ip)?,
            })
        })
        .collect::<Result<_, ProtoError>>()?;
    node.ipv4_alloc_cidr = prefix_from_wire("node.ipv4_alloc_cidr", &wire.ipv4_alloc_cidr)?;
    node.ipv6_alloc_cidr = prefix_from_wire("node.ipv6_alloc_cidr", &wire.ipv6_alloc_cidr)?;
    node.ipv4_secondary_alloc_cidrs = prefixes_from_wire(
        "node.ipv4_secondary_alloc_cidrs",
        &wire.ipv4_secondary_alloc_cidrs,
    )?;
    node.ipv6_secondary_alloc_cidrs = prefixes_from_wire(
        "node.ipv6_secondary_alloc_cidrs",
        &wire.ipv6_secondary_alloc_cidrs,
    )?;
    node.ipv4_health_ip = text_ip_from_wire("node.ipv4_health_ip", &wire.ipv4_health_ip)?;
    node.ipv6_health_ip = text_ip_from_wire("node.ipv6_health_ip", &wire.ipv6_health_ip)?;
    node.ipv4_ingress_ip = text_ip_from_wire("node.ipv4_ingress_ip", &wire.ipv4_ingress_ip)?;
    node.ipv6_ingress_ip = text_ip_from_wire("node.ipv6_ingress_ip", &wire.ipv6_ingress_ip)?;
    node.source = wire.source;
    node.encryption_key = narrow("node.encryption_key", wire.encryption_key)?;
    node.labels = wire.labels;
    node.annotations = wire.annotations;
    node.node_identity = wire.node_identity;
    node.wireguard_pub_key = wire.wireguard_pub_key;
    node.boot_id = wire.boot_id;
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fixtures::{Corruption, mk_cluster, mk_node};

    #[test]
    fn a_full_node_round_trips() {
        let c1 = mk_cluster("c1", 1);
        let node = mk_node(&c1, "worker-1");
        let wire = v1::Node::from(&node);
        assert_eq!(wire.ipv4_alloc_cidr, "10.244.1.0/24");
        assert_eq!(node_from_wire(wire, &c1).unwrap(), node);

        let bare = Node::new("bare", c1.name.clone(), c1.id).unwrap();
        assert_eq!(node_from_wire(v1::Node::from(&bare), &c1).unwrap(), bare);
    }

    #[test]
    fn nodes_must_name_the_peer_cluster() {
        let c1 = mk_cluster("c1", 1);
        let wire = v1::Node::from(&mk_node(&c1, "worker-1"));

        let err = node_from_wire(wire.clone(), &mk_cluster("c2", 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node.cluster is \"c1\", not the serving cluster's \"c2\""
        );
        let err = node_from_wire(wire, &mk_cluster("c1", 7)).unwrap_err();
        assert!(matches!(
            err,
            ProtoError::WrongCluster {
                field: "node.cluster_id",
                ..
            }
        ));
    }

    #[test]
    fn invalid_node_fields_are_named() {
        let c1 = mk_cluster("c1", 1);
        let good = v1::Node::from(&mk_node(&c1, "worker-1"));
        let cases: [Corruption<v1::Node>; 5] = [
            ("node.name", |n| n.name = "Worker_1".into()),
            ("node.addresses.ip", |n| {
                n.addresses[0].ip = vec![1, 2].into()
            }),
            ("node.ipv6_alloc_cidr", |n| {
                n.ipv6_alloc_cidr = "fd00::/200".into()
            }),
            ("node.ipv4_health_ip", |n| {
                n.ipv4_health_ip = "10.0.0".into()
            }),
            ("node.encryption_key", |n| n.encryption_key = 256),
        ];
        for (field, corrupt) in cases {
            let mut wire = good.clone();
            corrupt(&mut wire);
            let err = node_from_wire(wire, &c1).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
