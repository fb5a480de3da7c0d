//! Test builders shared by the mesh module's unit tests.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{
    Affinity, Backend, BackendConditions, CLUSTER_LABEL, Cluster, ClusterId, ClusterName, Endpoint,
    IdMode, Identity, IdentityId, IpPrefix, L4Addr, Label, Labels, Node, PortMap, Protocol,
    Resource, Service, ServiceName,
};

use super::{MeshView, StalePolicy};

/// A backend that is neither ready nor serving.
pub const NOT_READY: BackendConditions = BackendConditions {
    ready: false,
    serving: false,
    terminating: false,
};

/// A terminating backend still serving its last requests.
pub const TERMINATING: BackendConditions = BackendConditions {
    ready: false,
    serving: true,
    terminating: true,
};

pub fn mk_name(s: &str) -> ClusterName {
    ClusterName::new(s).unwrap()
}

pub fn mk_cluster(name: &str, id: u32) -> Cluster {
    Cluster::new(
        mk_name(name),
        ClusterId::new(id, IdMode::Normal).unwrap(),
        IdMode::Normal,
    )
}

/// A view for cluster `local` (id 1) with the default stale policy.
pub fn mk_view() -> (MeshView, Cluster) {
    let local = mk_cluster("local", 1);
    (MeshView::new(local.clone(), StalePolicy::default()), local)
}

pub fn mk_node(cluster: &Cluster, name: &str) -> Node {
    Node::new(name, cluster.name.clone(), cluster.id).unwrap()
}

/// A pod's entry in namespace `test`, service account `default`, on node 172.18.0.2.
pub fn mk_endpoint(ip: &str, identity: u32) -> Endpoint {
    let mut e = Endpoint::new(
        IpPrefix::host(ip.parse().unwrap()),
        IdentityId::new(identity).unwrap(),
    );
    e.host_ip = Some("172.18.0.2".parse().unwrap());
    e.namespace = Some("test".into());
    e.pod = Some(format!("pod-{ip}"));
    e.service_account = Some("default".into());
    e
}

/// The first non-reserved identity of `cluster`'s range, labelled `app=echo`.
pub fn mk_identity(cluster: &Cluster) -> Identity {
    let labels: Labels = [
        Label::k8s("app", "echo").unwrap(),
        Label::k8s(CLUSTER_LABEL, cluster.name.as_str()).unwrap(),
    ]
    .into_iter()
    .collect();
    let id = IdentityId::new(cluster.identity_range().first() + 1).unwrap();
    Identity::new(cluster, id, labels).unwrap()
}

pub fn mk_service_name() -> ServiceName {
    "test/echo".parse().unwrap()
}

/// Backends at the given IPs, each serving `http` on TCP 8080.
pub fn mk_backends(backends: &[(&str, BackendConditions)]) -> BTreeMap<IpAddr, Backend> {
    let ports: PortMap = [(
        "http".to_string(),
        L4Addr {
            protocol: Protocol::Tcp,
            port: 8080,
        },
    )]
    .into();
    backends
        .iter()
        .map(|(ip, conditions)| {
            let backend = Backend {
                ports: ports.clone(),
                conditions: *conditions,
                ..Backend::default()
            };
            (ip.parse().unwrap(), backend)
        })
        .collect()
}

/// `cluster`'s copy of the global, shared service `test/echo` with affinity `none`.
pub fn mk_service(cluster: &Cluster, backends: &[(&str, BackendConditions)]) -> Service {
    Service {
        cluster: cluster.name.clone(),
        cluster_id: cluster.id,
        name: mk_service_name(),
        frontends: BTreeMap::new(),
        backends: mk_backends(backends),
        labels: BTreeMap::new(),
        selector: BTreeMap::new(),
        include_external: true,
        shared: true,
        affinity: Affinity::None,
    }
}

/// A cluster's complete state: one node, `test/echo` with one ready backend
/// (`10.<id>.0.0`), one identity, then `endpoints` pod entries `10.<id>.0.<i>`.
pub fn mk_full_state(cluster: &Cluster, endpoints: u32) -> Vec<Resource> {
    let identity = mk_identity(cluster);
    let net = cluster.id.get();
    let mut full = vec![
        Resource::Node(mk_node(cluster, "node-1")),
        Resource::Service(mk_service(
            cluster,
            &[(&format!("10.{net}.0.0"), BackendConditions::READY)],
        )),
        Resource::Identity(identity.clone()),
    ];
    full.extend(
        (0..endpoints).map(|i| {
            Resource::Endpoint(mk_endpoint(&format!("10.{net}.0.{i}"), identity.id().get()))
        }),
    );
    full
}
