use k8s_openapi::ClusterResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::{AddressPair, EncryptionSpec};

/// A node as Cilium manages it (cluster-scoped; named like the Kubernetes node).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CiliumNode {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<CiliumNodeSpec>,
}

/// `spec` of a [`CiliumNode`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CiliumNodeSpec {
    /// Every address of the node: `InternalIP`, `ExternalIP`, `CiliumInternalIP`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<NodeAddress>>,
    /// The addresses of the node's cilium-health endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthAddressing>,
    /// The addresses of the node's Ingress listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<AddressPair>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamSpec>,
    /// The node's boot id, which changes on every reboot.
    #[serde(rename = "bootid", default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The numeric identity allocated for the node, if any (a uint64 in Cilium's schema).
    #[serde(
        rename = "nodeidentity",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub node_identity: Option<u64>,
}

/// One entry of `spec.addresses`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `spec.health`: Cilium's `HealthAddressingSpec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthAddressing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

/// `spec.ipam`: the pod CIDRs of the node, from cluster-pool or Kubernetes IPAM
/// (`podCIDRs`) or from multi-pool IPAM (`pools.allocated`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamSpec {
    #[serde(rename = "podCIDRs", default, skip_serializing_if = "Option::is_none")]
    pub pod_cidrs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools: Option<IpamPools>,
}

/// `spec.ipam.pools` (multi-pool IPAM).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamPools {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<Vec<AllocatedPool>>,
}

/// The CIDRs one pool allocated to the node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocatedPool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidrs: Option<Vec<String>>,
}

cilium_resource!(CiliumNode, kind: "CiliumNode", plural: "ciliumnodes", scope: ClusterResourceScope);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn a_node_reads_from_ciliums_json_ignoring_unknown_fields() {
        let node: CiliumNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNode",
            "metadata": {"name": "test-node-2"},
            "spec": {
                "addresses": [{"ip": "172.18.0.3", "type": "InternalIP"}],
                "bootid": "c1d2cda2-aca0-4033-abca-3843298860b9",
                "encryption": {"key": 7},
                "health": {"ipv4": "10.244.1.153"},
                "ingress": {"ipv6": "fd00::1"},
                "ipam": {
                    "podCIDRs": ["10.244.1.0/24"],
                    "pools": {"allocated": [{"pool": "default", "cidrs": ["10.10.0.0/24"]}]},
                    "min-allocate": 8
                },
                "nodeidentity": 7,
                "instance-id": "i-1"
            },
            "status": {"ipam": {}}
        }))
        .unwrap();
        let spec = node.spec.unwrap();
        let address = &spec.addresses.unwrap()[0];
        assert_eq!(
            (address.type_.as_deref(), address.ip.as_deref()),
            (Some("InternalIP"), Some("172.18.0.3"))
        );
        assert_eq!(
            spec.boot_id.as_deref(),
            Some("c1d2cda2-aca0-4033-abca-3843298860b9")
        );
        assert_eq!(spec.encryption.and_then(|e| e.key), Some(7));
        assert_eq!(
            spec.health.and_then(|h| h.ipv4).as_deref(),
            Some("10.244.1.153")
        );
        assert_eq!(
            spec.ingress.and_then(|i| i.ipv6).as_deref(),
            Some("fd00::1")
        );
        let ipam = spec.ipam.unwrap();
        assert_eq!(ipam.pod_cidrs.unwrap(), ["10.244.1.0/24"]);
        let pools = ipam.pools.and_then(|p| p.allocated).unwrap();
        assert_eq!(
            pools[0].cidrs.as_deref(),
            Some(&["10.10.0.0/24".to_string()][..])
        );
        assert_eq!(spec.node_identity, Some(7));
        assert_eq!(
            CiliumNode::url_path(&(), None),
            "/apis/cilium.io/v2/ciliumnodes"
        );
    }
}
