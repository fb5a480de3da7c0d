//! Node values (`cilium/state/nodes/v1/<cluster>/<node>`): Cilium's `Node` struct has no
//! JSON tags, so the keys are Go's capitalised field names.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    CodecError, decode_mask, encode_mask, from_json, optional_ip_string, parse_ip,
    parse_optional_ip, to_json_bytes,
};
use crate::model::{ClusterId, ClusterName, IdMode, IpPrefix, Node, NodeAddress};

/// The wire shape, in Cilium's field order. Missing fields read as Go's zero values, as
/// `encoding/json` reads them, so nodes written by older Cilium versions decode.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct NodeJson {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Cluster")]
    cluster: String,
    #[serde(rename = "IPAddresses")]
    ip_addresses: Option<Vec<AddressJson>>,
    #[serde(rename = "IPv4AllocCIDR")]
    ipv4_alloc_cidr: Option<CidrJson>,
    #[serde(rename = "IPv4SecondaryAllocCIDRs")]
    ipv4_secondary_alloc_cidrs: Option<Vec<CidrJson>>,
    #[serde(rename = "IPv6AllocCIDR")]
    ipv6_alloc_cidr: Option<CidrJson>,
    #[serde(rename = "IPv6SecondaryAllocCIDRs")]
    ipv6_secondary_alloc_cidrs: Option<Vec<CidrJson>>,
    #[serde(rename = "IPv4HealthIP")]
    ipv4_health_ip: String,
    #[serde(rename = "IPv6HealthIP")]
    ipv6_health_ip: String,
    #[serde(rename = "IPv4IngressIP")]
    ipv4_ingress_ip: String,
    #[serde(rename = "IPv6IngressIP")]
    ipv6_ingress_ip: String,
    #[serde(rename = "ClusterID")]
    cluster_id: u32,
    #[serde(rename = "Source")]
    source: String,
    #[serde(rename = "EncryptionKey")]
    encryption_key: u8,
    #[serde(rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Annotations")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "NodeIdentity")]
    node_identity: u32,
    #[serde(rename = "WireguardPubKey")]
    wireguard_pub_key: String,
    #[serde(rename = "BootID")]
    boot_id: String,
}

#[derive(Serialize, Deserialize)]
struct AddressJson {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "IP")]
    ip: String,
}

/// Go's `net.IPNet`: the address as text, the mask as base64 bytes.
#[derive(Serialize, Deserialize)]
struct CidrJson {
    #[serde(rename = "IP")]
    ip: String,
    #[serde(rename = "Mask")]
    mask: String,
}

impl CidrJson {
    fn from_prefix(prefix: IpPrefix) -> Self {
        Self {
            ip: prefix.addr().to_string(),
            mask: encode_mask(prefix),
        }
    }

    fn to_prefix(&self, what: &'static str) -> Result<IpPrefix, CodecError> {
        decode_mask(what, parse_ip(what, &self.ip)?, &self.mask)
    }
}

// Cilium builds these slices and maps by appending to nil ones, so an empty one is
// written as `null`; the encoder does the same.

fn cidrs(prefixes: &[IpPrefix]) -> Option<Vec<CidrJson>> {
    (!prefixes.is_empty()).then(|| prefixes.iter().map(|p| CidrJson::from_prefix(*p)).collect())
}

fn string_map(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.clone())
}

fn prefixes(what: &'static str, cidrs: Option<Vec<CidrJson>>) -> Result<Vec<IpPrefix>, CodecError> {
    cidrs
        .unwrap_or_default()
        .iter()
        .map(|c| c.to_prefix(what))
        .collect()
}

/// A node as Cilium's `Node` JSON.
pub fn encode_node(node: &Node) -> Bytes {
    let wire = NodeJson {
        name: node.name().to_string(),
        cluster: node.cluster.to_string(),
        ip_addresses: (!node.addresses.is_empty()).then(|| {
            node.addresses
                .iter()
                .map(|a| AddressJson {
                    kind: a.kind.clone(),
                    ip: a.ip.to_string(),
                })
                .collect()
        }),
        ipv4_alloc_cidr: node.ipv4_alloc_cidr.map(CidrJson::from_prefix),
        ipv4_secondary_alloc_cidrs: cidrs(&node.ipv4_secondary_alloc_cidrs),
        ipv6_alloc_cidr: node.ipv6_alloc_cidr.map(CidrJson::from_prefix),
        ipv6_secondary_alloc_cidrs: cidrs(&node.ipv6_secondary_alloc_cidrs),
        ipv4_health_ip: optional_ip_string(node.ipv4_health_ip),
        ipv6_health_ip: optional_ip_string(node.ipv6_health_ip),
        ipv4_ingress_ip: optional_ip_string(node.ipv4_ingress_ip),
        ipv6_ingress_ip: optional_ip_string(node.ipv6_ingress_ip),
        cluster_id: node.cluster_id.get(),
        source: node.source.clone(),
        encryption_key: node.encryption_key,
        labels: string_map(&node.labels),
        annotations: string_map(&node.annotations),
        node_identity: node.node_identity,
        wireguard_pub_key: node.wireguard_pub_key.clone(),
        boot_id: node.boot_id.clone(),
    };
    to_json_bytes(&wire)
}

/// Decodes Cilium's `Node` JSON; `mode` bounds the cluster id. Whether the name and
/// cluster match the key and the peer is the consumer's check.
pub fn decode_node(bytes: &[u8], mode: IdMode) -> Result<Node, CodecError> {
    let wire: NodeJson = from_json("node", bytes)?;
    let cluster = ClusterName::new(&wire.cluster).map_err(CodecError::model("node Cluster"))?;
    let cluster_id =
        ClusterId::new(wire.cluster_id, mode).map_err(CodecError::model("node ClusterID"))?;
    let mut node =
        Node::new(&wire.name, cluster, cluster_id).map_err(CodecError::model("node Name"))?;
    node.addresses = wire
        .ip_addresses
        .unwrap_or_default()
        .iter()
        .map(|a| {
            Ok(NodeAddress {
                kind: a.kind.clone(),
                ip: parse_ip("node IPAddresses", &a.ip)?,
            })
        })
        .collect::<Result<_, CodecError>>()?;
    node.ipv4_alloc_cidr = wire
        .ipv4_alloc_cidr
        .map(|c| c.to_prefix("node IPv4AllocCIDR"))
        .transpose()?;
    node.ipv6_alloc_cidr = wire
        .ipv6_alloc_cidr
        .map(|c| c.to_prefix("node IPv6AllocCIDR"))
        .transpose()?;
    node.ipv4_secondary_alloc_cidrs = prefixes(
        "node IPv4SecondaryAllocCIDRs",
        wire.ipv4_secondary_alloc_cidrs,
    )?;
    node.ipv6_secondary_alloc_cidrs = prefixes(
        "node IPv6SecondaryAllocCIDRs",
        wire.ipv6_secondary_alloc_cidrs,
    )?;
    node.ipv4_health_ip = parse_optional_ip("node IPv4HealthIP", &wire.ipv4_health_ip)?;
    node.ipv6_health_ip = parse_optional_ip("node IPv6HealthIP", &wire.ipv6_health_ip)?;
    node.ipv4_ingress_ip = parse_optional_ip("node IPv4IngressIP", &wire.ipv4_ingress_ip)?;
    node.ipv6_ingress_ip = parse_optional_ip("node IPv6IngressIP", &wire.ipv6_ingress_ip)?;
    node.source = wire.source;
    node.encryption_key = wire.encryption_key;
    node.labels = wire.labels.unwrap_or_default();
    node.annotations = wire.annotations.unwrap_or_default();
    node.node_identity = wire.node_identity;
    node.wireguard_pub_key = wire.wireguard_pub_key;
    node.boot_id = wire.boot_id;
    Ok(node)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::kvstore::codec::tests::assert_truncations_fail;

    /// The example of the reference, §1.2 (from Cilium's `ciliumnodes.txtar`).
    fn mk_reference_json() -> Value {
        json!({
          "Name": "test-node-1", "Cluster": "cluster3",
          "IPAddresses": [ {"Type": "InternalIP", "IP": "172.18.0.2"},
                           {"Type": "CiliumInternalIP", "IP": "10.244.0.10"} ],
          "IPv4AllocCIDR": {"IP": "10.244.0.0", "Mask": "////AA=="},
          "IPv4SecondaryAllocCIDRs": null, "IPv6AllocCIDR": null, "IPv6SecondaryAllocCIDRs": null,
          "IPv4HealthIP": "10.244.0.134", "IPv6HealthIP": "", "IPv4IngressIP": "", "IPv6IngressIP": "",
          "ClusterID": 3, "Source": "custom-resource", "EncryptionKey": 0,
          "Labels": {"kubernetes.io/hostname": "test-node-1"},
          "Annotations": {"network.cilium.io/wg-pub-key": "VRksOB6Z...="},
          "NodeIdentity": 0, "WireguardPubKey": "VRksOB6Z...=",
          "BootID": "570d3fd1-93db-4862-ba99-6a3c2c10c38f"
        })
    }

    fn decode_value(v: &Value) -> Result<Node, CodecError> {
        decode_node(v.to_string().as_bytes(), IdMode::Normal)
    }

    #[test]
    fn reference_node_decodes_and_re_encodes() {
        let reference = mk_reference_json();
        let node = decode_value(&reference).unwrap();
        assert_eq!(node.name(), "test-node-1");
        assert_eq!(node.cluster.as_str(), "cluster3");
        assert_eq!(node.cluster_id.get(), 3);
        assert_eq!(node.addresses.len(), 2);
        assert_eq!(node.primary_ip(), Some("172.18.0.2".parse().unwrap()));
        assert_eq!(node.addresses[1].kind, "CiliumInternalIP");
        assert_eq!(node.ipv4_alloc_cidr, Some("10.244.0.0/24".parse().unwrap()));
        assert_eq!(node.ipv6_alloc_cidr, None);
        assert!(node.ipv4_secondary_alloc_cidrs.is_empty());
        assert_eq!(node.ipv4_health_ip, Some("10.244.0.134".parse().unwrap()));
        assert_eq!(node.ipv6_health_ip, None);
        assert_eq!(node.source, "custom-resource");
        assert_eq!(node.labels["kubernetes.io/hostname"], "test-node-1");
        assert_eq!(node.wireguard_pub_key, "VRksOB6Z...=");
        assert_eq!(node.boot_id, "570d3fd1-93db-4862-ba99-6a3c2c10c38f");

        let encoded: Value = serde_json::from_slice(&encode_node(&node)).unwrap();
        assert_eq!(encoded, reference);
    }

    #[test]
    fn node_fields_are_written_in_ciliums_order() {
        let node = decode_value(&mk_reference_json()).unwrap();
        let text = String::from_utf8(encode_node(&node).to_vec()).unwrap();
        let order = [
            "Name",
            "Cluster",
            "IPAddresses",
            "IPv4AllocCIDR",
            "IPv4SecondaryAllocCIDRs",
            "IPv6AllocCIDR",
            "IPv6SecondaryAllocCIDRs",
            "IPv4HealthIP",
            "IPv6HealthIP",
            "IPv4IngressIP",
            "IPv6IngressIP",
            "ClusterID",
            "Source",
            "EncryptionKey",
            "Labels",
            "Annotations",
            "NodeIdentity",
            "WireguardPubKey",
            "BootID",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{text}");
    }

    #[test]
    fn a_full_node_round_trips() {
        let mut node = Node::new(
            "worker-2.example",
            ClusterName::new("east").unwrap(),
            ClusterId::new(400, IdMode::Extended).unwrap(),
        )
        .unwrap();
        node.addresses = vec![NodeAddress {
            kind: "InternalIP".into(),
            ip: "fd00::2".parse().unwrap(),
        }];
        node.ipv4_alloc_cidr = Some("10.1.0.0/16".parse().unwrap());
        node.ipv6_alloc_cidr = Some("fd00:10::/64".parse().unwrap());
        node.ipv4_secondary_alloc_cidrs = vec!["10.2.0.0/20".parse().unwrap()];
        node.ipv6_secondary_alloc_cidrs = vec!["fd00:20::/96".parse().unwrap()];
        node.ipv6_health_ip = Some("fd00:10::5".parse().unwrap());
        node.ipv4_ingress_ip = Some("10.1.0.7".parse().unwrap());
        node.ipv6_ingress_ip = Some("fd00:10::7".parse().unwrap());
        node.encryption_key = 7;
        node.annotations.insert("a".into(), "b".into());
        node.node_identity = 6;

        let bytes = encode_node(&node);
        assert_eq!(decode_node(&bytes, IdMode::Extended).unwrap(), node);
        // The same id is out of range for a normal-mode mesh.
        assert!(matches!(
            decode_node(&bytes, IdMode::Normal),
            Err(CodecError::Model {
                what: "node ClusterID",
                ..
            })
        ));
    }

    #[test]
    fn missing_fields_read_as_go_zero_values() {
        let old = br#"{"Name":"n1","Cluster":"c1","ClusterID":1}"#;
        let node = decode_node(old, IdMode::Normal).unwrap();
        assert!(node.addresses.is_empty());
        assert_eq!(node.ipv4_health_ip, None);
        assert_eq!(node.boot_id, "");
    }

    #[test]
    fn malformed_nodes_are_refused() {
        let with = |field: &str, value: Value| {
            let mut v = mk_reference_json();
            v[field] = value;
            decode_value(&v).unwrap_err()
        };
        assert!(matches!(
            decode_node(b"{not json", IdMode::Normal),
            Err(CodecError::Json { what: "node", .. })
        ));
        assert!(matches!(
            with("ClusterID", json!(0)),
            CodecError::Model {
                what: "node ClusterID",
                ..
            }
        ));
        assert!(matches!(
            with("Cluster", json!("Cluster_3")),
            CodecError::Model {
                what: "node Cluster",
                ..
            }
        ));
        assert!(matches!(
            with("Name", json!("")),
            CodecError::Model {
                what: "node Name",
                ..
            }
        ));
        assert!(matches!(
            with(
                "IPAddresses",
                json!([{"Type": "InternalIP", "IP": "172.18.0.300"}])
            ),
            CodecError::Address {
                what: "node IPAddresses",
                ..
            }
        ));
        assert!(matches!(
            with("IPv4HealthIP", json!("nope")),
            CodecError::Address {
                what: "node IPv4HealthIP",
                ..
            }
        ));
        assert!(matches!(
            with(
                "IPv4AllocCIDR",
                json!({"IP": "10.244.0.0", "Mask": "/wD/AA=="})
            ),
            CodecError::Model {
                what: "node IPv4AllocCIDR",
                ..
            }
        ));
        assert!(matches!(
            with("EncryptionKey", json!(256)),
            CodecError::Json { .. }
        ));
        assert_truncations_fail(
            &encode_node(&decode_value(&mk_reference_json()).unwrap()),
            |b| decode_node(b, IdMode::Normal),
        );
    }
}
