//! Builders of Kubernetes objects for the conversion tests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeAddress, NodeSpec, NodeStatus, Pod, PodIP, PodSpec,
    PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::SERVICE_NAME_LABEL;
use crate::model::{Cluster, ClusterId, ClusterName, IdMode};

pub fn mk_cluster() -> Cluster {
    Cluster::new(
        ClusterName::new("cluster1").unwrap(),
        ClusterId::new(1, IdMode::Normal).unwrap(),
        IdMode::Normal,
    )
}

pub fn mk_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn mk_meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()).filter(|ns| !ns.is_empty()),
        ..ObjectMeta::default()
    }
}

/// A ClusterIP service with the given annotations and one port per `(name, port)`.
pub fn mk_service(
    namespace: &str,
    name: &str,
    annotations: &[(&str, &str)],
    ports: &[(&str, i32)],
) -> Service {
    let mut metadata = mk_meta(namespace, name);
    metadata.annotations = Some(mk_map(annotations));
    metadata.labels = Some(mk_map(&[("app", name)]));
    Service {
        metadata,
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.96.0.10".to_string()),
            cluster_ips: Some(vec!["10.96.0.10".to_string()]),
            selector: Some(mk_map(&[("app", name)])),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| ServicePort {
                        name: Some(n.to_string()).filter(|n| !n.is_empty()),
                        port: *p,
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// An IPv4 slice of `service` with one port per `(name, port)`.
pub fn mk_slice(
    namespace: &str,
    service: &str,
    name: &str,
    ports: &[(&str, i32)],
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let mut metadata = mk_meta(namespace, name);
    metadata.labels = Some(mk_map(&[(SERVICE_NAME_LABEL, service)]));
    EndpointSlice {
        metadata,
        address_type: "IPv4".to_string(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: Some(n.to_string()),
                    port: Some(*p),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
        endpoints: Some(endpoints),
    }
}

pub fn mk_endpoint(ip: &str, ready: Option<bool>) -> Endpoint {
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready,
            ..EndpointConditions::default()
        }),
        ..Endpoint::default()
    }
}

/// A running pod with the given labels and IPs, one container port named `http`.
pub fn mk_pod(namespace: &str, name: &str, labels: &[(&str, &str)], ips: &[&str]) -> Pod {
    let mut metadata = mk_meta(namespace, name);
    metadata.labels = Some(mk_map(labels));
    Pod {
        metadata,
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".to_string(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".to_string()),
                    container_port: 8080,
                    ..ContainerPort::default()
                }]),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_string()),
            host_ip: Some("172.18.0.2".to_string()),
            pod_ip: ips.first().map(|ip| ip.to_string()),
            pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
            ..PodStatus::default()
        }),
    }
}

/// A node with `(type, address)` addresses and pod CIDRs.
pub fn mk_node(name: &str, addresses: &[(&str, &str)], pod_cidrs: &[&str]) -> Node {
    let mut metadata = mk_meta("", name);
    metadata.labels = Some(mk_map(&[("kubernetes.io/hostname", name)]));
    Node {
        metadata,
        spec: Some(NodeSpec {
            pod_cidr: pod_cidrs.first().map(|c| c.to_string()),
            pod_cidrs: Some(pod_cidrs.iter().map(|c| c.to_string()).collect()),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            ..NodeStatus::default()
        }),
    }
}
