//! CiliumNode → the node record, as Cilium's clustermesh-apiserver writes it
//! (`ParseCiliumNode` in `pkg/node/types/node.go`).
//!
//! Like Cilium, a value that does not parse (an address, a pod CIDR, a health or
//! ingress address, or one of the wrong family) is left out and the rest of the node is
//! still written; unlike Cilium, which drops it silently, it is reported as a problem
//! naming the field. An IPsec key outside 0..=255 or a node identity outside 32 bits
//! refuses the node: Cilium truncates them, and a truncated key or identity names
//! another one.

use std::net::IpAddr;

use super::node::push_alloc_cidr;
use super::{ConvertProblem, Obj, keep_ok, string_map};
use crate::k8s::cilium::CiliumNode;
use crate::model::{self, Cluster, IpPrefix, NodeAddress};

/// What the exported record says it was built from (Cilium's `source.CustomResource`).
const SOURCE: &str = "custom-resource";
/// Annotation holding the node's WireGuard public key, and its older alias.
const WIREGUARD_KEY_ANNOTATIONS: [&str; 2] = [
    "network.cilium.io/wg-pub-key",
    "io.cilium.network.wg-pub-key",
];

/// A CiliumNode as the mesh sees it, field for field as Cilium's `ParseCiliumNode` reads
/// it: every address, the first pod CIDR of each family as the allocation CIDR (from
/// `spec.ipam.podCIDRs`, then multi-pool `spec.ipam.pools.allocated`) and the others as
/// secondary ones, health and ingress addresses, IPsec key, labels, annotations, node
/// identity, WireGuard key and boot id. `None` when the node is refused; the problems
/// name what was left out or why it was refused (see the module doc).
pub fn cilium_node_to_model(
    cluster: &Cluster,
    node: &CiliumNode,
) -> (Option<model::Node>, Vec<ConvertProblem>) {
    let obj = Obj::cluster_scoped("CiliumNode", &node.metadata);
    let mut problems = Vec::new();
    let converted = convert(cluster, node, &obj, &mut problems)
        .map_err(|p| problems.push(p))
        .ok();
    (converted, problems)
}

/// The node, reporting the values left out in `problems`; `Err` refuses it.
fn convert(
    cluster: &Cluster,
    node: &CiliumNode,
    obj: &Obj<'_>,
    problems: &mut Vec<ConvertProblem>,
) -> Result<model::Node, ConvertProblem> {
    obj.require_name()?;
    let mut out = model::Node::new(obj.name, cluster.name.clone(), cluster.id)
        .map_err(|e| obj.problem("metadata.name", e))?;
    let spec = node.spec.clone().unwrap_or_default();

    let raw_key = spec.encryption.as_ref().and_then(|e| e.key).unwrap_or(0);
    out.encryption_key = u8::try_from(raw_key).map_err(|_| {
        obj.problem(
            "spec.encryption.key",
            format!("{raw_key} is outside 0..=255"),
        )
    })?;
    let raw_identity = spec.node_identity.unwrap_or(0);
    out.node_identity = u32::try_from(raw_identity).map_err(|_| {
        obj.problem(
            "spec.nodeidentity",
            format!("{raw_identity} is outside the 32-bit range"),
        )
    })?;

    for (i, address) in spec.addresses.iter().flatten().enumerate() {
        let field = format!("spec.addresses[{i}].ip");
        let ip = address.ip.as_deref().unwrap_or_default();
        if let Some(ip) = keep_ok(obj.parse_ip(&field, ip), problems) {
            out.addresses.push(NodeAddress {
                kind: address.type_.clone().unwrap_or_default(),
                ip,
            });
        }
    }

    let ipam = spec.ipam.unwrap_or_default();
    let listed = ipam
        .pod_cidrs
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (format!("spec.ipam.podCIDRs[{i}]"), c));
    let pooled = ipam
        .pools
        .iter()
        .flat_map(|p| p.allocated.iter().flatten().enumerate())
        .flat_map(|(p, pool)| {
            pool.cidrs
                .iter()
                .flatten()
                .enumerate()
                .map(move |(i, c)| (format!("spec.ipam.pools.allocated[{p}].cidrs[{i}]"), c))
        });
    for (field, cidr) in listed.chain(pooled) {
        let parsed = cidr.parse::<IpPrefix>().map_err(|e| obj.problem(&field, e));
        let Some(prefix) = keep_ok(parsed, problems) else {
            continue;
        };
        push_alloc_cidr(&mut out, prefix);
    }

    let health = spec.health.unwrap_or_default();
    let ingress = spec.ingress.unwrap_or_default();
    let mut optional_ip = |field, ip: Option<String>, v6| {
        keep_ok(family_ip(obj, field, ip.as_deref(), v6), problems).flatten()
    };
    out.ipv4_health_ip = optional_ip("spec.health.ipv4", health.ipv4, false);
    out.ipv6_health_ip = optional_ip("spec.health.ipv6", health.ipv6, true);
    out.ipv4_ingress_ip = optional_ip("spec.ingress.ipv4", ingress.ipv4, false);
    out.ipv6_ingress_ip = optional_ip("spec.ingress.ipv6", ingress.ipv6, true);

    out.source = SOURCE.to_string();
    out.labels = string_map(node.metadata.labels.as_ref());
    out.annotations = string_map(node.metadata.annotations.as_ref());
    out.wireguard_pub_key = WIREGUARD_KEY_ANNOTATIONS
        .iter()
        .find_map(|a| out.annotations.get(*a))
        .cloned()
        .unwrap_or_default();
    out.boot_id = spec.boot_id.unwrap_or_default();
    Ok(out)
}

/// An optional address of one family: empty is none, the other family is refused.
fn family_ip(
    obj: &Obj<'_>,
    field: &str,
    ip: Option<&str>,
    v6: bool,
) -> Result<Option<IpAddr>, ConvertProblem> {
    let Some(text) = ip.filter(|ip| !ip.is_empty()) else {
        return Ok(None);
    };
    let ip = obj.parse_ip(field, text)?;
    if ip.is_ipv6() != v6 {
        let family = if v6 { "IPv6" } else { "IPv4" };
        return Err(obj.problem(field, format!("{text:?} is not an {family} address")));
    }
    Ok(Some(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::cilium::{AllocatedPool, IpamPools};
    use crate::k8s::convert::cilium_fixtures::{mk_cilium_node, mk_cluster3};

    fn mk_node_1() -> CiliumNode {
        let mut node = mk_cilium_node(
            "test-node-1",
            &[
                ("InternalIP", "172.18.0.2"),
                ("InternalIP", "fc00:c111::2"),
                ("CiliumInternalIP", "10.244.0.10"),
            ],
            &["10.244.0.0/24", "fd00:10:244::/64"],
            "10.244.0.134",
        );
        node.metadata.annotations = Some(
            [(
                "network.cilium.io/wg-pub-key".to_string(),
                "VRksOB6Z=".to_string(),
            )]
            .into(),
        );
        node
    }

    /// A node that converts without a problem.
    fn convert_ok(node: &CiliumNode) -> model::Node {
        let (node, problems) = cilium_node_to_model(&mk_cluster3(), node);
        assert_eq!(problems, vec![]);
        node.unwrap()
    }

    /// A node and its problems, as text.
    fn convert_with_problems(node: &CiliumNode) -> (Option<model::Node>, Vec<String>) {
        let (node, problems) = cilium_node_to_model(&mk_cluster3(), node);
        (node, problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_cilium_node_converts_as_cilium_parses_it() {
        let node = convert_ok(&mk_node_1());
        assert_eq!(node.name(), "test-node-1");
        assert_eq!(node.cluster.as_str(), "cluster3");
        assert_eq!(node.cluster_id.get(), 3);
        let addresses: Vec<_> = node
            .addresses
            .iter()
            .map(|a| format!("{} {}", a.kind, a.ip))
            .collect();
        assert_eq!(
            addresses,
            [
                "InternalIP 172.18.0.2",
                "InternalIP fc00:c111::2",
                "CiliumInternalIP 10.244.0.10"
            ]
        );
        assert_eq!(node.ipv4_alloc_cidr.unwrap().to_string(), "10.244.0.0/24");
        assert_eq!(
            node.ipv6_alloc_cidr.unwrap().to_string(),
            "fd00:10:244::/64"
        );
        assert!(node.ipv4_secondary_alloc_cidrs.is_empty());
        assert_eq!(node.ipv4_health_ip, Some("10.244.0.134".parse().unwrap()));
        assert_eq!(node.ipv6_health_ip, None);
        assert_eq!(node.source, "custom-resource");
        assert_eq!(node.encryption_key, 0);
        assert_eq!(
            node.labels
                .get("kubernetes.io/hostname")
                .map(String::as_str),
            Some("test-node-1")
        );
        assert_eq!(node.wireguard_pub_key, "VRksOB6Z=");
        assert_eq!(node.annotations.len(), 1);
        assert_eq!(node.boot_id, "570d3fd1-93db-4862-ba99-6a3c2c10c38f");
    }

    #[test]
    fn pool_cidrs_follow_pod_cidrs_and_extra_ones_are_secondary() {
        let mut node = mk_node_1();
        if let Some(ipam) = node.spec.as_mut().and_then(|s| s.ipam.as_mut()) {
            ipam.pools = Some(IpamPools {
                allocated: Some(vec![AllocatedPool {
                    pool: Some("extra".to_string()),
                    cidrs: Some(vec!["10.10.0.0/24".to_string()]),
                }]),
            });
        }
        if let Some(spec) = node.spec.as_mut() {
            spec.ingress = Some(crate::k8s::cilium::AddressPair {
                ipv4: Some("10.244.0.5".to_string()),
                ipv6: Some(String::new()),
            });
            spec.node_identity = Some(42);
            spec.encryption = Some(crate::k8s::cilium::EncryptionSpec { key: Some(7) });
        }
        let node = convert_ok(&node);
        assert_eq!(node.ipv4_alloc_cidr.unwrap().to_string(), "10.244.0.0/24");
        let secondary: Vec<_> = node
            .ipv4_secondary_alloc_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(secondary, ["10.10.0.0/24"]);
        assert_eq!(node.ipv4_ingress_ip, Some("10.244.0.5".parse().unwrap()));
        assert_eq!(node.ipv6_ingress_ip, None);
        assert_eq!((node.node_identity, node.encryption_key), (42, 7));
    }

    #[test]
    fn a_node_with_only_a_name_converts() {
        let node = CiliumNode {
            metadata: crate::k8s::convert::fixtures::mk_meta("", "bare"),
            spec: None,
        };
        let node = convert_ok(&node);
        assert!(node.addresses.is_empty() && node.ipv4_alloc_cidr.is_none());
        assert!(node.labels.is_empty() && node.annotations.is_empty());
        assert_eq!(node.wireguard_pub_key, "");
    }

    #[test]
    fn bad_values_are_left_out_naming_the_field_and_the_rest_converted() {
        let mut node = mk_cilium_node(
            "n",
            &[("InternalIP", "n"), ("InternalIP", "172.18.0.2")],
            &["10.0.0.0/24", "10.0.1.0/33", "10.0.2.0/24"],
            "fd00::1",
        );
        if let Some(spec) = node.spec.as_mut() {
            spec.ingress = Some(crate::k8s::cilium::AddressPair {
                ipv4: Some("10.0.0.5".to_string()),
                ipv6: Some("ingress".to_string()),
            });
        }
        let (node, problems) = convert_with_problems(&node);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert_eq!(
            problems[0],
            "CiliumNode n: spec.addresses[0].ip: \"n\" is not an IP address"
        );
        assert!(
            problems[1].starts_with("CiliumNode n: spec.ipam.podCIDRs[1]: invalid IP"),
            "{}",
            problems[1]
        );
        assert_eq!(
            problems[2],
            "CiliumNode n: spec.health.ipv4: \"fd00::1\" is not an IPv4 address"
        );
        assert_eq!(
            problems[3],
            "CiliumNode n: spec.ingress.ipv6: \"ingress\" is not an IP address"
        );

        let node = node.unwrap();
        let addresses: Vec<String> = node.addresses.iter().map(|a| a.ip.to_string()).collect();
        assert_eq!(addresses, ["172.18.0.2"]);
        assert_eq!(node.ipv4_alloc_cidr.unwrap().to_string(), "10.0.0.0/24");
        let secondary: Vec<String> = node
            .ipv4_secondary_alloc_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(secondary, ["10.0.2.0/24"]);
        assert_eq!(node.ipv4_health_ip, None);
        assert_eq!(node.ipv4_ingress_ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(node.ipv6_ingress_ip, None);
    }

    #[test]
    fn nodes_whose_key_identity_or_name_cannot_be_written_are_refused() {
        let refuse = |node: &CiliumNode| {
            let (node, problems) = convert_with_problems(node);
            assert!(node.is_none());
            assert_eq!(problems.len(), 1, "{problems:?}");
            problems[0].clone()
        };
        let mut bad_key = mk_cilium_node("n", &[], &[], "");
        if let Some(spec) = bad_key.spec.as_mut() {
            spec.encryption = Some(crate::k8s::cilium::EncryptionSpec { key: Some(-1) });
        }
        assert_eq!(
            refuse(&bad_key),
            "CiliumNode n: spec.encryption.key: -1 is outside 0..=255"
        );
        let mut bad_identity = mk_cilium_node("n", &[], &[], "");
        if let Some(spec) = bad_identity.spec.as_mut() {
            spec.node_identity = Some(1 << 32);
        }
        assert_eq!(
            refuse(&bad_identity),
            "CiliumNode n: spec.nodeidentity: 4294967296 is outside the 32-bit range"
        );
        let bad_name = mk_cilium_node("Node_1", &[], &[], "");
        assert!(
            refuse(&bad_name).starts_with("CiliumNode Node_1: metadata.name: invalid node name")
        );
    }
}
