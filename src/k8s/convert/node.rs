use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;

use super::{ConvertProblem, Obj, list_or_single, string_map};
use crate::model::{self, Cluster, IpPrefix, NodeAddress};

/// Node address types peers can reach; `Hostname` and others are not IPs.
const IP_ADDRESS_TYPES: [&str; 2] = ["InternalIP", "ExternalIP"];
/// What the exported record says it was built from.
const SOURCE: &str = "kubernetes";

/// A Kubernetes Node as the mesh sees it: its reachable addresses and pod CIDRs. The
/// first CIDR of each family is the allocation CIDR, any further ones are secondary.
pub fn node_to_model(cluster: &Cluster, node: &Node) -> Result<model::Node, ConvertProblem> {
    let obj = Obj::cluster_scoped("Node", &node.metadata);
    obj.require_name()?;
    let mut out = model::Node::new(obj.name, cluster.name.clone(), cluster.id)
        .map_err(|e| obj.problem("metadata.name", e))?;

    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    for (i, address) in addresses.into_iter().flatten().enumerate() {
        if !IP_ADDRESS_TYPES.contains(&address.type_.as_str()) {
            continue;
        }
        let ip: IpAddr = address.address.parse().map_err(|_| {
            obj.problem(
                &format!("status.addresses[{i}]"),
                format!(
                    "{} {:?} is not an IP address",
                    address.type_, address.address
                ),
            )
        })?;
        out.addresses.push(NodeAddress {
            kind: address.type_.clone(),
            ip,
        });
    }

    let spec = node.spec.as_ref();
    let listed = spec
        .and_then(|s| s.pod_cidrs.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let single = spec.and_then(|s| s.pod_cidr.as_deref());
    for (field, cidr) in list_or_single(("spec.podCIDRs", listed), ("spec.podCIDR", single)) {
        let prefix: IpPrefix = cidr.parse().map_err(|e| obj.problem(&field, e))?;
        push_alloc_cidr(&mut out, prefix);
    }

    out.source = SOURCE.to_string();
    out.labels = string_map(node.metadata.labels.as_ref());
    Ok(out)
}

/// Adds a pod CIDR to `node`: the first of each address family is its allocation CIDR,
/// the others secondary ones, as Cilium's node type holds them.
pub(super) fn push_alloc_cidr(node: &mut model::Node, prefix: IpPrefix) {
    let (first, secondary) = match prefix.addr() {
        IpAddr::V4(_) => (
            &mut node.ipv4_alloc_cidr,
            &mut node.ipv4_secondary_alloc_cidrs,
        ),
        IpAddr::V6(_) => (
            &mut node.ipv6_alloc_cidr,
            &mut node.ipv6_secondary_alloc_cidrs,
        ),
    };
    if first.is_none() {
        *first = Some(prefix);
    } else {
        secondary.push(prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::convert::fixtures::{mk_cluster, mk_node};

    #[test]
    fn a_node_keeps_its_ip_addresses_and_pod_cidrs() {
        let node = mk_node(
            "worker-1",
            &[
                ("InternalIP", "172.18.0.2"),
                ("Hostname", "worker-1"),
                ("ExternalIP", "203.0.113.7"),
            ],
            &["10.244.1.0/24", "fd00:10:244:1::/64", "10.245.1.0/24"],
        );
        let n = node_to_model(&mk_cluster(), &node).unwrap();
        assert_eq!(n.name(), "worker-1");
        assert_eq!(n.cluster.as_str(), "cluster1");
        assert_eq!(n.cluster_id.get(), 1);
        let addresses: Vec<_> = n
            .addresses
            .iter()
            .map(|a| format!("{}={}", a.kind, a.ip))
            .collect();
        assert_eq!(
            addresses,
            ["InternalIP=172.18.0.2", "ExternalIP=203.0.113.7"]
        );
        assert_eq!(n.primary_ip().unwrap().to_string(), "172.18.0.2");
        assert_eq!(n.ipv4_alloc_cidr.unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(n.ipv6_alloc_cidr.unwrap().to_string(), "fd00:10:244:1::/64");
        assert_eq!(n.ipv4_secondary_alloc_cidrs.len(), 1);
        assert_eq!(n.labels["kubernetes.io/hostname"], "worker-1");
        assert!(n.annotations.is_empty());
        assert_eq!(n.source, "kubernetes");
    }

    #[test]
    fn pod_cidr_is_used_without_pod_cidrs() {
        let mut node = mk_node("worker-1", &[], &[]);
        if let Some(spec) = node.spec.as_mut() {
            spec.pod_cidr = Some("10.244.7.0/24".to_string());
        }
        let n = node_to_model(&mk_cluster(), &node).unwrap();
        assert_eq!(n.ipv4_alloc_cidr.unwrap().to_string(), "10.244.7.0/24");
        assert!(n.ipv6_alloc_cidr.is_none());
    }

    #[test]
    fn invalid_nodes_are_refused_naming_the_field() {
        let cluster = mk_cluster();
        let bad_ip = mk_node("worker-1", &[("InternalIP", "worker-1")], &[]);
        assert_eq!(
            node_to_model(&cluster, &bad_ip).unwrap_err().to_string(),
            "Node worker-1: status.addresses[0]: InternalIP \"worker-1\" is not an IP address"
        );
        let bad_cidr = mk_node("worker-1", &[], &["10.244.1.0/33"]);
        assert!(
            node_to_model(&cluster, &bad_cidr)
                .unwrap_err()
                .message
                .starts_with("spec.podCIDRs[0]: invalid IP address or prefix")
        );
        let bad_name = mk_node("Worker_1", &[], &[]);
        assert!(
            node_to_model(&cluster, &bad_name)
                .unwrap_err()
                .message
                .starts_with("metadata.name: invalid node name")
        );
    }
}
