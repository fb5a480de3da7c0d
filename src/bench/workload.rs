//! The source cluster's state for a bench — N endpoints, N/10 identities, N/100 nodes and
//! N/100 global services — and writing it into a store directly with the exporter's key
//! layout and value formats (both service copies: fleetmesh's for the apiserver,
//! Cilium's for agents reading etcd directly).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures::TryStreamExt;

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
        Self::generate_at(cluster, sizes, 0)
    }

    /// `cluster`'s state of `sizes`, its endpoint and node addresses in the `slot`-th
    /// block of `sizes`' size: workloads of distinct slots share no address, so one
    /// agent can merge many clusters without an ipcache conflict.
    pub fn generate_at(cluster: &Cluster, sizes: Sizes, slot: u32) -> anyhow::Result<Self> {
        let resources = generated(cluster, sizes, slot).collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            cluster: cluster.clone(),
            resources,
        })
    }

    /// Writes the workload `generate_at(cluster, sizes, slot)` would hold into `store`,
    /// generating each resource as it is written: nothing of it stays allocated, so a
    /// process measuring its own memory holds only what the store keeps.
    pub async fn write_generated(
        cluster: &Cluster,
        sizes: Sizes,
        slot: u32,
        store: &Arc<dyn Store>,
    ) -> anyhow::Result<()> {
        let writes = generated(cluster, sizes, slot).map(|r| Ok(encode(cluster, &r?)));
        put_all(store, writes).await
    }

    /// Writes every resource into `store`, several writes in flight.
    pub async fn write(&self, store: &Arc<dyn Store>) -> anyhow::Result<()> {
        let writes = self.resources.iter().map(|r| Ok(encode(&self.cluster, r)));
        put_all(store, writes).await
    }
}

/// Puts every key and value of `writes` (one batch per resource, produced as they are
/// written) into `store`, several writes in flight; stops at the first failure.
async fn put_all(
    store: &Arc<dyn Store>,
    writes: impl Iterator<Item = anyhow::Result<Vec<(String, Bytes)>>>,
) -> anyhow::Result<()> {
    let batches = futures::stream::iter(writes);
    batches
        .map_ok(|batch| futures::stream::iter(batch.into_iter().map(Ok)))
        .try_flatten()
        .map_ok(|(key, value)| {
            let store = store.clone();
            async move {
                store
                    .put(&key, value, None)
                    .await
                    .with_context(|| format!("cannot write {key}"))
            }
        })
        .try_buffer_unordered(WRITES_IN_FLIGHT)
        .try_for_each(|_| async { Ok(()) })
        .await
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
        Resource::ServiceExport(e) => vec![(
            keys::service_export(&cluster.name, &e.name),
            codec::encode_service_export(e),
        )],
    }
}

/// Every resource of the workload of `sizes` in `slot`, in the order nodes, identities,
/// services, endpoints.
fn generated(
    cluster: &Cluster,
    sizes: Sizes,
    slot: u32,
) -> impl Iterator<Item = anyhow::Result<Resource>> + '_ {
    let block = Block::new(sizes, slot);
    let nodes = (0..sizes.nodes).map(move |n| Ok(Resource::Node(node(cluster, n, block)?)));
    let identities =
        (0..sizes.identities).map(move |i| Ok(Resource::Identity(identity(cluster, i)?)));
    let services = (0..sizes.services).map(move |s| {
        Ok(Resource::Service(service(
            cluster,
            s,
            sizes.endpoints,
            block,
        )?))
    });
    let endpoints = (0..sizes.endpoints)
        .map(move |e| Ok(Resource::Endpoint(endpoint(cluster, e, &sizes, block)?)));
    nodes.chain(identities).chain(services).chain(endpoints)
}

/// Where a slot's addresses start: slot k's endpoints follow slot k−1's (wrapping past
/// 10/8 into the next networks, never into another slot's).
#[derive(Clone, Copy)]
struct Block {
    endpoints: u32,
    nodes: u32,
}

impl Block {
    fn new(sizes: Sizes, slot: u32) -> Self {
        Self {
            endpoints: ENDPOINT_BASE.wrapping_add(slot.wrapping_mul(sizes.endpoints)),
            nodes: NODE_BASE.wrapping_add(slot.wrapping_mul(sizes.nodes)),
        }
    }
}

fn node_ip(n: u32, block: Block) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(block.nodes.wrapping_add(n)))
}

fn endpoint_ip(e: u32, block: Block) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(block.endpoints.wrapping_add(e)))
}

fn node(cluster: &Cluster, n: u32, block: Block) -> anyhow::Result<Node> {
    let mut node = Node::new(&format!("node-{n}"), cluster.name.clone(), cluster.id)?;
    node.addresses.push(NodeAddress {
        kind: "InternalIP".into(),
        ip: node_ip(n, block),
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

fn endpoint(cluster: &Cluster, e: u32, sizes: &Sizes, block: Block) -> anyhow::Result<Endpoint> {
    let identity = IdentityId::new(cluster.identity_range().first() + 1 + e % sizes.identities)?;
    let mut endpoint = Endpoint::new(IpPrefix::host(endpoint_ip(e, block)), identity);
    endpoint.host_ip = Some(node_ip(e % sizes.nodes, block));
    endpoint.namespace = Some("bench".into());
    endpoint.pod = Some(format!("pod-{e}"));
    endpoint.service_account = Some("default".into());
    Ok(endpoint)
}

/// Service `s` with one ready backend: an endpoint of the workload.
fn service(cluster: &Cluster, s: u32, endpoints: u32, block: Block) -> anyhow::Result<Service> {
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
    let ip = endpoint_ip((s * ENDPOINTS_PER_NODE) % endpoints.max(1), block);
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

    #[test]
    fn workloads_of_distinct_slots_share_no_address() {
        let c = mk_cluster();
        let sizes = Sizes::for_endpoints(1_000, &c);
        let addresses = |slot| {
            let w = Workload::generate_at(&c, sizes, slot).unwrap();
            w.resources
                .into_iter()
                .filter_map(|r| match r {
                    Resource::Endpoint(e) => Some(e.prefix.addr()),
                    Resource::Node(n) => n.addresses.first().map(|a| a.ip),
                    _ => None,
                })
                .collect::<std::collections::HashSet<_>>()
        };
        let (a, b) = (addresses(0), addresses(1));
        assert_eq!(a.len() as u32, sizes.endpoints + sizes.nodes);
        assert!(a.is_disjoint(&b));
    }

    #[tokio::test]
    async fn writing_as_generated_writes_what_the_workload_holds() {
        let c = mk_cluster();
        let sizes = Sizes::for_endpoints(500, &c);
        let (held, streamed): (Arc<dyn Store>, Arc<dyn Store>) = (
            crate::kvstore::memory::MemoryStore::new(),
            crate::kvstore::memory::MemoryStore::new(),
        );
        Workload::generate_at(&c, sizes, 3)
            .unwrap()
            .write(&held)
            .await
            .unwrap();
        Workload::write_generated(&c, sizes, 3, &streamed)
            .await
            .unwrap();
        let list = |store: Arc<dyn Store>| async move {
            let mut kvs: Vec<(String, Bytes)> = store
                .list("")
                .await
                .unwrap()
                .kvs
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect();
            kvs.sort();
            kvs
        };
        let expected = list(held).await;
        assert!(expected.len() as u64 > sizes.total());
        assert_eq!(list(streamed).await, expected);
    }
}
