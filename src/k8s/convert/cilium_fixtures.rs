//! Builders of Cilium objects for the conversion tests, shaped like the objects of
//! Cilium's own clustermesh-apiserver tests (cluster `cluster3`, id 3).

use k8s_openapi::api::core::v1::Namespace;

use super::fixtures::{mk_map, mk_meta};
use super::{GLOBAL_NAMESPACE_ANNOTATION, Namespaces};
use crate::k8s::cilium::{
    AddressPair, CiliumEndpoint, CiliumIdentity, CiliumNode, CiliumNodeSpec, EncryptionSpec,
    EndpointIdentity, EndpointNetworking, EndpointStatus, HealthAddressing, IpamSpec, NodeAddress,
};
use crate::model::{Cluster, ClusterId, ClusterName, IdMode};

pub fn mk_cluster3() -> Cluster {
    Cluster::new(
        ClusterName::new("cluster3").unwrap(),
        ClusterId::new(3, IdMode::Normal).unwrap(),
        IdMode::Normal,
    )
}

/// The namespaces of the tests (`foo`, `bar`, `shop`, `legacy`, `private`), all global
/// but the given ones, which are annotated non-global.
pub fn mk_namespaces(non_global: &[&str]) -> Namespaces {
    let objects: Vec<Namespace> = ["foo", "bar", "shop", "legacy", "private"]
        .iter()
        .map(|name| {
            let mut metadata = mk_meta("", name);
            if non_global.contains(name) {
                metadata.annotations = Some(mk_map(&[(GLOBAL_NAMESPACE_ANNOTATION, "false")]));
            }
            Namespace {
                metadata,
                ..Namespace::default()
            }
        })
        .collect();
    Namespaces::from_objects(&objects).0
}

/// A CiliumIdentity named `id` with the given `source:key` → value security labels
/// (none at all when empty).
pub fn mk_cilium_identity(id: &str, labels: &[(&str, &str)]) -> CiliumIdentity {
    CiliumIdentity {
        metadata: mk_meta("", id),
        security_labels: Some(mk_map(labels)).filter(|l| !l.is_empty()),
    }
}

/// A ready CiliumEndpoint with one address pair (empty strings leave a family out).
pub fn mk_cilium_endpoint(
    namespace: &str,
    name: &str,
    identity: i64,
    (ipv4, ipv6): (&str, &str),
    node: &str,
) -> CiliumEndpoint {
    let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    CiliumEndpoint {
        metadata: mk_meta(namespace, name),
        status: Some(EndpointStatus {
            identity: Some(EndpointIdentity { id: Some(identity) }),
            networking: Some(EndpointNetworking {
                addressing: Some(vec![AddressPair {
                    ipv4: some(ipv4),
                    ipv6: some(ipv6),
                }]),
                node_ip: some(node),
            }),
            encryption: None,
            named_ports: None,
            service_account: Some("default".to_string()),
        }),
    }
}

/// A CiliumNode with `(type, ip)` addresses, pod CIDRs and an IPv4 health address.
pub fn mk_cilium_node(
    name: &str,
    addresses: &[(&str, &str)],
    pod_cidrs: &[&str],
    health_ipv4: &str,
) -> CiliumNode {
    let mut metadata = mk_meta("", name);
    metadata.labels = Some(mk_map(&[("kubernetes.io/hostname", name)]));
    CiliumNode {
        metadata,
        spec: Some(CiliumNodeSpec {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(t, ip)| NodeAddress {
                        type_: Some(t.to_string()),
                        ip: Some(ip.to_string()),
                    })
                    .collect(),
            ),
            health: Some(HealthAddressing {
                ipv4: Some(health_ipv4.to_string()),
                ipv6: None,
            }),
            ingress: None,
            encryption: Some(EncryptionSpec { key: None }),
            ipam: Some(IpamSpec {
                pod_cidrs: Some(pod_cidrs.iter().map(|c| c.to_string()).collect()),
                pools: None,
            }),
            boot_id: Some("570d3fd1-93db-4862-ba99-6a3c2c10c38f".to_string()),
            node_identity: None,
        }),
    }
}
