use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{ClusterId, ClusterName, IpPrefix, ModelError};

/// One address of a node, typed as Kubernetes and Cilium type them (`InternalIP`,
/// `ExternalIP`, `CiliumInternalIP`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeAddress {
    pub kind: String,
    pub ip: IpAddr,
}

/// A node of a cluster, with what peers need to reach its pods.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    name: String,
    pub cluster: ClusterName,
    pub cluster_id: ClusterId,
    pub addresses: Vec<NodeAddress>,
    pub ipv4_alloc_cidr: Option<IpPrefix>,
    pub ipv6_alloc_cidr: Option<IpPrefix>,
    pub ipv4_secondary_alloc_cidrs: Vec<IpPrefix>,
    pub ipv6_secondary_alloc_cidrs: Vec<IpPrefix>,
    pub ipv4_health_ip: Option<IpAddr>,
    pub ipv6_health_ip: Option<IpAddr>,
    pub ipv4_ingress_ip: Option<IpAddr>,
    pub ipv6_ingress_ip: Option<IpAddr>,
    /// Where the record came from, e.g. `custom-resource` or `kubernetes`.
    pub source: String,
    pub encryption_key: u8,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub node_identity: u32,
    pub wireguard_pub_key: String,
    pub boot_id: String,
}

impl Node {
    /// A node with a valid name (a DNS subdomain, as Kubernetes requires) and nothing
    /// else known yet.
    pub fn new(
        name: &str,
        cluster: ClusterName,
        cluster_id: ClusterId,
    ) -> Result<Self, ModelError> {
        if !is_dns_subdomain(name) {
            return Err(ModelError::Field {
                what: "node name",
                value: name.to_string(),
                reason: "must be a DNS subdomain (lowercase alphanumerics, '-' and '.', at most 253)",
            });
        }
        Ok(Self {
            name: name.to_string(),
            cluster,
            cluster_id,
            addresses: Vec::new(),
            ipv4_alloc_cidr: None,
            ipv6_alloc_cidr: None,
            ipv4_secondary_alloc_cidrs: Vec::new(),
            ipv6_secondary_alloc_cidrs: Vec::new(),
            ipv4_health_ip: None,
            ipv6_health_ip: None,
            ipv4_ingress_ip: None,
            ipv6_ingress_ip: None,
            source: String::new(),
            encryption_key: 0,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            node_identity: 0,
            wireguard_pub_key: String::new(),
            boot_id: String::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address peers reach this node on: the first internal address, else any.
    pub fn primary_ip(&self) -> Option<IpAddr> {
        self.addresses
            .iter()
            .find(|a| a.kind == "InternalIP")
            .or_else(|| self.addresses.first())
            .map(|a| a.ip)
    }
}

/// RFC 1123 subdomain: what Kubernetes requires of object names such as nodes and pods.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdMode;

    #[test]
    fn node_names_are_dns_subdomains() {
        let c = ClusterName::new("c1").unwrap();
        let id = ClusterId::new(1, IdMode::Normal).unwrap();
        assert!(Node::new("kind-worker.example", c.clone(), id).is_ok());
        for bad in ["", "Node", "a/b", "-a", "a..b"] {
            assert!(Node::new(bad, c.clone(), id).is_err(), "{bad}");
        }
    }
}
