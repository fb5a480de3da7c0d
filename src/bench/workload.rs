//! The source cluster's state for a bench — N endpoints, N/10 identities, N/100 nodes and
//! N/100 global services — and writing it into a store directly with the exporter's key
//! layout and value formats (both service copies: fleetmesh's for the apiserver,
//! Cilium's for agents reading etcd directly).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::kvstore::{Store, codec, keys};
use crate::model::{
    Affinity, Backend, BackendConditions, CLUSTER_LABEL, Cluster, Endpoint, Identity, IdentityId,
    IpPrefix, L4Addr, Label, Labels, Node, NodeAddress, Protocol, Resource, Service, ServiceName,
};

/// Writes in flight: etcd reaches its throughput with a few hundred (performance.md),
/// the embedded store does not care.
const WRITES_IN_FLIGHT: usize = 256;
/// Endpoint addresses start at 10.0.0.1 and count up (16 M before leaving 10/8).
const ENDPOINT_BASE: u32 = 0x0A00_0001;
/// Node addresses start at 172.16.0.1.
const NODE_BASE: u32 = 0xAC10_0001;
/// Identities per endpoint: one per ten, as in a cluster of ten-pod deployments.
const ENDPOINTS_PER_IDENTITY: u32 = 10;
/// Nodes and services per endpoint: one per hundred.
const ENDPOINTS_PER_NODE: u32 = 100;

/// A cluster's complete exported state.
#[derive(Clone, Debug)]
pub struct Workload {
    pub cluster: Cluster,
    pub resources: Vec<Resource>,
}

/// How many of each kind a workload holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sizes {
    pub endpoints: u32,
    pub identities: u32,
    pub nodes: u32,
    pub services: u32,
}

impl Sizes {
    /// The sizes for `endpoints` endpoints; at least one of every other kind, and no more
    /// identities than the cluster's range holds.
    pub fn for_endpoints(endpoints: u32, cluster: &Cluster) -> Self {
        let range = cluster.identity_range();
        // The first id of a range is skipped (it would be the reserved 0 for cluster 0).
        let room = range.last() - range.first();
        Self {
            endpoints,
            identities: (endpoints / ENDPOINTS_PER_IDENTITY).clamp(1, room),
            nodes: (endpoints / ENDPOINTS_PER_NODE).max(1),
            services: (endpoints / ENDPOINTS_PER_NODE).max(1),
        }
    }

    /// Every object of the workload.
    pub fn total(&self) -> u64 {
        u64::from(self.endpoints)
            + u64::from(self.identities)
            + u64::from(self.nodes)
            + u64::from(self.services)
    }
}

impl Workload {
    /// `cluster`'s state of `sizes`.
    pub fn generate(cluster: &Cluster, sizes: Sizes) -> anyhow::Result<Self> {
        let mut resources = Vec::with_capacity(sizes.total() as usize);
        for n in 0..sizes.nodes {
            resources.push(Resource::Node(node(cluster, n)?));
        }
        for i in 0..sizes.identities {
            resources.push(Resource::Identity(identity(cluster, i)?));
        }
        for s in 0..sizes.services {
            resources.push(Resource::Service(service(cluster, s, sizes.endpoints)?));
        }
        for e in 0..sizes.endpoints {
            resources.push(Resource::Endpoint(endpoint(cluster, e, &sizes)?));
        }
        Ok(Self {
            cluster: cluster.clone(),
            resources,
        })
    }

    /// Writes every resource into `store`, several writes in flight.
    pub async fn write(&self, store: &Arc<dyn Store>) -> anyhow::Result<()> {
        let writes = self
            .resources
            .iter()
            .flat_map(|r| encode(&self.cluster, r))
            .map(|(key, value)| {
                let store = store.clone();
                async move {
                    store
                        .put(&key, value, None)
                        .await
                        .with_context(|| format!("cannot write {key}"))
                }
            });
        futures::stream::iter(writes)
            .buffer_unordered(WRITES_IN_FLIGHT)
            .try_for_each(|_| async { Ok(()) })
            .await
    }
}

/// The keys and values the exporter writes for `resource` of `cluster`.
pub fn encode(cluster: &Cluster, resource: &Resource) -> Vec<(String, Bytes)> {
    match resource {
        Resource::Node(n) => vec![(keys::node(&cluster.name, n.name()), codec::encode_node(n))],
        Resource::Service(s) => vec![
            (
                keys::fleetmesh_service(&cluster.name, &s.name),
                codec::encode_fleetmesh_service(s),
            ),
            (
                keys::service(&cluster.name, &s.name),
                codec::encode_service(s),
            ),
        ],
        Resource::Identity(i) => vec![(keys::identity(i.id()), codec::encode_identity(i))],
        Resource::Endpoint(e) => vec![(keys::ip(e.prefix), codec::encode_endpoint(e))],
    }
}

fn node_ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(NODE_BASE + n))
}

fn endpoint_ip(e: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(ENDPOINT_BASE + e))
}

fn node(cluster: &Cluster, n: u32) -> anyhow::Result<Node> {
    let mut node = Node::new(&format!("node-{n}"), cluster.name.clone(), cluster.id)?;
    node.addresses.push(NodeAddress {
        kind: "InternalIP".into(),
        ip: node_ip(n),
    });
    Ok(node)
}

fn identity(cluster: &Cluster, i: u32) -> anyhow::Result<Identity> {
    let id = IdentityId::new(cluster.identity_range().first() + 1 + i)?;
    let labels: Labels = [
        Label::k8s("app", &format!("app-{i}"))?,
        Label::k8s("io.kubernetes.pod.namespace", "bench")?,
        Label::k8s(CLUSTER_LABEL, cluster.name.as_str())?,
    ]
    .into_iter()
    .collect();
    Ok(Identity::new(cluster, id, labels)?)
}

fn endpoint(cluster: &Cluster, e: u32, sizes: &Sizes) -> anyhow::Result<Endpoint> {
    let identity = IdentityId::new(cluster.identity_range().first() + 1 + e % sizes.identities)?;
    let mut endpoint = Endpoint::new(IpPrefix::host(endpoint_ip(e)), identity);
    endpoint.host_ip = Some(node_ip(e % sizes.nodes));
    endpoint.namespace = Some("bench".into());
    endpoint.pod = Some(format!("pod-{e}"));
    endpoint.service_account = Some("default".into());
    Ok(endpoint)
}

/// Service `s` with one ready backend: an endpoint of the workload.
fn service(cluster: &Cluster, s: u32, endpoints: u32) -> anyhow::Result<Service> {
    let ports = [(
        "http".to_string(),
        L4Addr {
            protocol: Protocol::Tcp,
            port: 8080,
        },
    )]
    .into();
    let backend = Backend {
        ports,
        conditions: BackendConditions::READY,
        ..Backend::default()
    };
    let ip = endpoint_ip((s * ENDPOINTS_PER_NODE) % endpoints.max(1));
    Ok(Service {
        cluster: cluster.name.clone(),
        cluster_id: cluster.id,
        name: ServiceName::new("bench", &format!("svc-{s}"))?,
        frontends: BTreeMap::new(),
        backends: [(ip, backend)].into(),
        labels: BTreeMap::new(),
        selector: BTreeMap::new(),
        include_external: false,
        shared: true,
        affinity: Affinity::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterId, ClusterName, IdMode};

    fn mk_cluster() -> Cluster {
        Cluster::new(
            ClusterName::new("source").unwrap(),
            ClusterId::new(2, IdMode::Normal).unwrap(),
            IdMode::Normal,
        )
    }

    #[test]
    fn sizes_follow_the_endpoints_and_fit_the_identity_range() {
        let c = mk_cluster();
        let s = Sizes::for_endpoints(1_000, &c);
        assert_eq!((s.identities, s.nodes, s.services), (100, 10, 10));
        let tiny = Sizes::for_endpoints(5, &c);
        assert_eq!((tiny.identities, tiny.nodes, tiny.services), (1, 1, 1));
        let huge = Sizes::for_endpoints(10_000_000, &c);
        assert_eq!(huge.identities, 65_535);
    }

    #[test]
    fn a_workload_holds_every_object_once() {
        let c = mk_cluster();
        let sizes = Sizes::for_endpoints(1_000, &c);
        let w = Workload::generate(&c, sizes).unwrap();
        let keys: std::collections::HashSet<_> = w.resources.iter().map(Resource::key).collect();
        assert_eq!(keys.len() as u64, sizes.total());
    }
}
