//! The slices that should exist, computed from the view's global services alone (pure:
//! no API, no clock), so that what the slices say is exactly what the mesh selects.
//!
//! For each global service of the local cluster, the backends that affinity selects
//! from *other* clusters, one set of slices per source cluster, split by IP family and
//! by port map (a slice's endpoints share one address type and one port list), at most
//! [`MAX_ENDPOINTS_PER_SLICE`] endpoints each. The local cluster's own backends are
//! never written: its own EndpointSlice controller already publishes them.
//!
//! A source cluster with no selected backend gets no slice at all rather than one empty
//! slice: the local controller's slices already tell consumers that the service exists,
//! an empty slice would route nothing, and "no slice from c2" is the plainest way to say
//! c2 takes no traffic (after a failover back to local backends, or while it is drained).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::mesh::{SelectedBackend, ServiceView};
use crate::model::{ClusterName, PortMap};

use super::names::{Family, SliceIdentity, slice_name};
use super::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, SOURCE_CLUSTER_LABEL};

/// The Kubernetes EndpointSlice controller's default `--max-endpoints-per-slice`: what
/// kube-proxy and every CNI are tuned for.
pub(super) const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Where a slice lives: its namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct SliceKey {
    pub namespace: String,
    pub name: String,
}

impl SliceKey {
    /// The key of a slice read from the API; `None` for one without a name or namespace
    /// (an EndpointSlice always has both).
    pub fn of(slice: &EndpointSlice) -> Option<Self> {
        Some(Self {
            namespace: slice.metadata.namespace.clone()?,
            name: slice.metadata.name.clone()?,
        })
    }
}

impl fmt::Display for SliceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Every slice that should exist, by key.
pub(super) type Desired = BTreeMap<SliceKey, EndpointSlice>;

/// The slices for `services` (as [`MeshView::services`](crate::mesh::MeshView::services)
/// returns them).
pub(super) fn desired_slices(services: &[ServiceView]) -> Desired {
    let mut desired = Desired::new();
    for service in services.iter().filter(|s| s.local_global) {
        add_service(&mut desired, service);
    }
    desired
}

/// One group of a service's slices: the backends of one cluster, family and port map.
type Groups<'a> = BTreeMap<(&'a ClusterName, Family, &'a PortMap), Vec<&'a SelectedBackend>>;

fn add_service(desired: &mut Desired, service: &ServiceView) {
    let mut groups = Groups::new();
    let remote = |b: &&SelectedBackend| {
        service
            .clusters
            .iter()
            .any(|c| !c.local && c.cluster == b.cluster)
    };
    for backend in service.selected.iter().filter(remote) {
        let family = match backend.ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        };
        groups
            .entry((&backend.cluster, family, &backend.ports))
            .or_default()
            .push(backend);
    }
    let zones: HashMap<(&ClusterName, IpAddr), &str> = service
        .clusters
        .iter()
        .flat_map(|c| {
            c.backends.iter().filter_map(|b| {
                let zone = b.backend.zone.as_deref()?;
                Some(((&c.cluster, b.ip), zone))
            })
        })
        .collect();

    for ((cluster, family, ports), mut backends) in groups {
        backends.sort_by_key(|b| b.ip);
        for (index, chunk) in backends.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
            let name = slice_name(&SliceIdentity {
                service: &service.name,
                cluster,
                family,
                ports,
                index,
            });
            let key = SliceKey {
                namespace: service.name.namespace().to_string(),
                name,
            };
            let endpoints = chunk
                .iter()
                .map(|b| endpoint(b, zones.get(&(cluster, b.ip)).copied()))
                .collect();
            let slice = mk_slice(&key, service, cluster, family, ports, endpoints);
            desired.insert(key, slice);
        }
    }
}

fn endpoint(backend: &SelectedBackend, zone: Option<&str>) -> Endpoint {
    let c = backend.conditions;
    Endpoint {
        addresses: vec![backend.ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(c.ready),
            serving: Some(c.serving),
            terminating: Some(c.terminating),
        }),
        // The pod's hostname is left out on purpose: a headless service's DNS would get
        // the same name from two clusters (a StatefulSet's pod-0 exists in each). Zone
        // hints are too: they describe the source cluster's traffic, not ours.
        zone: zone.map(str::to_string),
        ..Endpoint::default()
    }
}

fn mk_slice(
    key: &SliceKey,
    service: &ServiceView,
    cluster: &ClusterName,
    family: Family,
    ports: &PortMap,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let labels = [
        (SERVICE_NAME_LABEL, service.name.name()),
        (MANAGED_BY_LABEL, MANAGED_BY),
        (SOURCE_CLUSTER_LABEL, cluster.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        address_type: family.address_type().to_string(),
        endpoints: Some(endpoints),
        ports: Some(
            ports
                .iter()
                .map(|(name, l4)| EndpointPort {
                    // Kept even when empty, as the Kubernetes controller writes an
                    // unnamed service port: kube-proxy matches ports by name.
                    name: Some(name.clone()),
                    port: Some(i32::from(l4.port)),
                    protocol: Some(l4.protocol.as_str().to_string()),
                    app_protocol: None,
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use super::*;
    use crate::mesh::{MeshView, StalePolicy};
    use crate::model::{
        Affinity, Backend, BackendConditions, Change, Cluster, ClusterId, IdMode, L4Addr, Protocol,
        Resource, Service, ServiceName,
    };

    const READY: BackendConditions = BackendConditions::READY;
    const NOT_READY: BackendConditions = BackendConditions {
        ready: false,
        serving: false,
        terminating: false,
    };
    const TERMINATING: BackendConditions = BackendConditions {
        ready: false,
        serving: true,
        terminating: true,
    };

    fn mk_cluster(name: &str, id: u32) -> Cluster {
        Cluster::new(
            ClusterName::new(name).unwrap(),
            ClusterId::new(id, IdMode::Normal).unwrap(),
            IdMode::Normal,
        )
    }

    fn http() -> PortMap {
        [(
            "http".to_string(),
            L4Addr {
                protocol: Protocol::Tcp,
                port: 8080,
            },
        )]
        .into()
    }

    fn mk_service(
        cluster: &Cluster,
        affinity: Affinity,
        backends: &[(&str, BackendConditions)],
    ) -> Service {
        Service {
            cluster: cluster.name.clone(),
            cluster_id: cluster.id,
            name: "web/echo".parse().unwrap(),
            frontends: BTreeMap::new(),
            backends: backends
                .iter()
                .map(|(ip, conditions)| {
                    let backend = Backend {
                        ports: http(),
                        conditions: *conditions,
                        zone: Some(format!("zone-{}", cluster.name)),
                        ..Backend::default()
                    };
                    (ip.parse().unwrap(), backend)
                })
                .collect(),
            labels: BTreeMap::new(),
            selector: BTreeMap::new(),
            include_external: false,
            shared: true,
            affinity,
        }
    }

    struct Mesh {
        view: MeshView,
        local: Cluster,
        c2: Cluster,
        c3: Cluster,
    }

    impl Mesh {
        fn new() -> Self {
            let local = mk_cluster("local", 1);
            Self {
                view: MeshView::new(local.clone(), StalePolicy::default()),
                local,
                c2: mk_cluster("c2", 2),
                c3: mk_cluster("c3", 3),
            }
        }

        fn put(&mut self, service: Service) {
            let cluster = service.cluster.clone();
            self.view
                .apply(&cluster, &[Change::Upsert(Resource::Service(service))]);
        }

        fn desired(&self) -> Desired {
            desired_slices(&self.view.services(Instant::now()))
        }
    }

    fn eps(slice: &EndpointSlice) -> &[Endpoint] {
        slice.endpoints.as_deref().unwrap()
    }

    /// (source cluster, address type, addresses) of every slice, sorted.
    fn summary(desired: &Desired) -> Vec<(String, String, Vec<String>)> {
        let mut out: Vec<_> = desired
            .values()
            .map(|s| {
                let labels = s.metadata.labels.as_ref().unwrap();
                (
                    labels[SOURCE_CLUSTER_LABEL].clone(),
                    s.address_type.clone(),
                    eps(s)
                        .iter()
                        .map(|e| e.addresses.join(","))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn row(cluster: &str, family: &str, ips: &[&str]) -> (String, String, Vec<String>) {
        (
            cluster.to_string(),
            family.to_string(),
            ips.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn a_slice_per_source_cluster_with_labels_ports_and_conditions() {
        let mut m = Mesh::new();
        m.put(mk_service(&m.local, Affinity::None, &[("10.1.0.1", READY)]));
        m.put(mk_service(
            &m.c2,
            Affinity::None,
            &[("10.2.0.2", READY), ("10.2.0.1", READY)],
        ));
        m.put(mk_service(&m.c3, Affinity::None, &[("10.3.0.1", READY)]));
        let desired = m.desired();
        assert_eq!(
            summary(&desired),
            [
                row("c2", "IPv4", &["10.2.0.1", "10.2.0.2"]),
                row("c3", "IPv4", &["10.3.0.1"]),
            ]
        );
        let (key, slice) = desired.iter().next().unwrap();
        assert_eq!(key.namespace, "web");
        assert_eq!(slice.metadata.namespace.as_deref(), Some("web"));
        assert_eq!(slice.metadata.name.as_deref(), Some(key.name.as_str()));
        let labels = slice.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "echo");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(labels.len(), 3);
        assert_eq!(
            slice.ports,
            Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                app_protocol: None,
            }])
        );
        let e = &eps(slice)[0];
        assert_eq!(
            e.conditions,
            Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            })
        );
        assert!(e.zone.as_deref().unwrap().starts_with("zone-c"));
        assert_eq!(e.hostname, None);
    }

    #[test]
    fn affinity_local_writes_nothing_until_failover_and_back() {
        let mut m = Mesh::new();
        m.put(mk_service(
            &m.local,
            Affinity::Local,
            &[("10.1.0.1", READY)],
        ));
        m.put(mk_service(&m.c2, Affinity::None, &[("10.2.0.1", READY)]));
        assert!(m.desired().is_empty());

        m.put(mk_service(
            &m.local,
            Affinity::Local,
            &[("10.1.0.1", NOT_READY)],
        ));
        let failover = m.desired();
        assert_eq!(summary(&failover), [row("c2", "IPv4", &["10.2.0.1"])]);

        m.put(mk_service(
            &m.local,
            Affinity::Local,
            &[("10.1.0.1", READY)],
        ));
        assert!(m.desired().is_empty());
        // Failing over again names the same slice.
        m.put(mk_service(&m.local, Affinity::Local, &[]));
        assert_eq!(
            m.desired().keys().collect::<Vec<_>>(),
            failover.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn affinity_remote_writes_remote_backends_and_nothing_on_failover_to_local() {
        let mut m = Mesh::new();
        m.put(mk_service(
            &m.local,
            Affinity::Remote,
            &[("10.1.0.1", READY)],
        ));
        m.put(mk_service(&m.c2, Affinity::None, &[("10.2.0.1", READY)]));
        assert_eq!(summary(&m.desired()), [row("c2", "IPv4", &["10.2.0.1"])]);
        m.put(mk_service(
            &m.c2,
            Affinity::None,
            &[("10.2.0.1", NOT_READY)],
        ));
        assert!(
            m.desired().is_empty(),
            "failover to local: only local backends"
        );
    }

    #[test]
    fn affinity_none_writes_only_ready_remote_backends_with_their_conditions() {
        let mut m = Mesh::new();
        m.put(mk_service(&m.local, Affinity::None, &[("10.1.0.1", READY)]));
        m.put(mk_service(
            &m.c2,
            Affinity::None,
            &[
                ("10.2.0.1", READY),
                ("10.2.0.2", NOT_READY),
                ("10.2.0.3", TERMINATING),
            ],
        ));
        assert_eq!(summary(&m.desired()), [row("c2", "IPv4", &["10.2.0.1"])]);

        // Nothing ready anywhere: the serving fallback is written as it is, not ready.
        m.put(mk_service(&m.local, Affinity::None, &[]));
        m.put(mk_service(
            &m.c2,
            Affinity::None,
            &[("10.2.0.3", TERMINATING)],
        ));
        let desired = m.desired();
        let slice = desired.values().next().unwrap();
        assert_eq!(
            eps(slice)[0].conditions,
            Some(EndpointConditions {
                ready: Some(false),
                serving: Some(true),
                terminating: Some(true),
            })
        );
    }

    #[test]
    fn a_service_not_global_here_or_not_shared_there_gets_nothing() {
        let mut m = Mesh::new();
        // Remote backends wait for the local global service.
        m.put(mk_service(&m.c2, Affinity::None, &[("10.2.0.1", READY)]));
        assert!(m.desired().is_empty());
        let mut not_shared = mk_service(&m.c3, Affinity::None, &[("10.3.0.1", READY)]);
        not_shared.shared = false;
        m.put(not_shared);
        m.put(mk_service(&m.local, Affinity::None, &[]));
        assert_eq!(summary(&m.desired()), [row("c2", "IPv4", &["10.2.0.1"])]);
    }

    #[test]
    fn more_than_a_hundred_backends_are_split_with_distinct_stable_names() {
        let mut m = Mesh::new();
        m.put(mk_service(&m.local, Affinity::None, &[]));
        let ips: Vec<String> = (0..250)
            .map(|i| format!("10.2.{}.{}", i / 200, i % 200 + 1))
            .collect();
        let backends: Vec<(&str, BackendConditions)> =
            ips.iter().map(|ip| (ip.as_str(), READY)).collect();
        m.put(mk_service(&m.c2, Affinity::None, &backends));
        let desired = m.desired();
        let sizes: Vec<usize> = desired.values().map(|s| eps(s).len()).collect();
        let mut sorted = sizes.clone();
        sorted.sort();
        assert_eq!(sorted, [50, 100, 100]);
        let mut all: Vec<&str> = desired
            .values()
            .flat_map(|s| eps(s).iter().map(|e| e.addresses[0].as_str()))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 250, "every backend exactly once");
        assert!(
            desired
                .keys()
                .all(|k| k.name.len() <= super::super::names::MAX_NAME_LEN)
        );
        assert_eq!(
            desired.keys().collect::<Vec<_>>(),
            m.desired().keys().collect::<Vec<_>>()
        );

        // One backend fewer: the same three slices, updated.
        m.put(mk_service(&m.c2, Affinity::None, &backends[1..]));
        assert_eq!(
            m.desired().keys().collect::<Vec<_>>(),
            desired.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn ipv6_backends_get_their_own_slice() {
        let mut m = Mesh::new();
        m.put(mk_service(&m.local, Affinity::None, &[]));
        m.put(mk_service(
            &m.c2,
            Affinity::None,
            &[("10.2.0.1", READY), ("fd00:2::0:1", READY)],
        ));
        assert_eq!(
            summary(&m.desired()),
            [
                row("c2", "IPv4", &["10.2.0.1"]),
                row("c2", "IPv6", &["fd00:2::1"])
            ]
        );
    }

    #[test]
    fn backends_with_different_ports_get_different_slices() {
        let mut m = Mesh::new();
        m.put(mk_service(&m.local, Affinity::None, &[]));
        let mut service = mk_service(
            &m.c2,
            Affinity::None,
            &[("10.2.0.1", READY), ("10.2.0.2", READY)],
        );
        let other = service.backends.values_mut().next().unwrap();
        other.ports.insert(
            String::new(),
            L4Addr {
                protocol: Protocol::Udp,
                port: 53,
            },
        );
        m.put(service);
        let desired = m.desired();
        assert_eq!(desired.len(), 2);
        let with_unnamed = desired
            .values()
            .find(|s| s.ports.as_ref().unwrap().len() == 2)
            .unwrap();
        assert_eq!(eps(with_unnamed)[0].addresses, ["10.2.0.1"]);
        let unnamed = &with_unnamed.ports.as_ref().unwrap()[0];
        assert_eq!(
            (unnamed.name.as_deref(), unnamed.protocol.as_deref()),
            (Some(""), Some("UDP"))
        );
    }

    #[test]
    fn the_service_name_label_and_namespace_follow_the_service() {
        let mut m = Mesh::new();
        let name: ServiceName = "shop/cart".parse().unwrap();
        let mut local = mk_service(&m.local, Affinity::None, &[]);
        local.name = name.clone();
        let mut remote = mk_service(&m.c2, Affinity::None, &[("10.2.0.1", READY)]);
        remote.name = name;
        m.put(local);
        m.put(remote);
        let desired = m.desired();
        let (key, slice) = desired.iter().next().unwrap();
        assert_eq!(key.namespace, "shop");
        assert!(key.name.starts_with("cart-c2-"), "{key}");
        assert_eq!(
            slice.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL],
            "cart"
        );
    }
}
