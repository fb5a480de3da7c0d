//! Every kind's store → one [`Snapshot`]: gathered once all initial lists are complete,
//! then again after each burst of changes.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::Discovered;
use super::store::{KindSnapshot, KindStore};
use crate::k8s::Snapshot;
use crate::k8s::cilium::{CiliumEndpoint, CiliumEndpointSlice, CiliumIdentity, CiliumNode};
use crate::k8s::convert::{self, CiliumObjects, ConvertOptions, Objects};
use crate::k8s::mcs::ServiceExport;
use crate::model::Cluster;

/// How long changes are gathered before a snapshot is assembled. A rollout changes a
/// pod, its EndpointSlice and its CiliumEndpoint within milliseconds of each other: one
/// snapshot for the burst saves converting the cluster once per event, and 100 ms is
/// small next to the time the change takes to reach a peer.
pub const COALESCE: Duration = Duration::from_millis(100);

/// The objects of every kind the source watches. Only the kinds of one of the two
/// workload sources are watched (Pods and Nodes, or Cilium's three); the others stay
/// empty and are not waited for.
#[derive(Debug, Default)]
pub(super) struct Stores {
    /// What is watched.
    pub found: Discovered,
    pub services: KindStore<Service>,
    pub endpoint_slices: KindStore<EndpointSlice>,
    pub namespaces: KindStore<Namespace>,
    pub pods: KindStore<Pod>,
    pub nodes: KindStore<Node>,
    pub cilium_identities: KindStore<CiliumIdentity>,
    pub cilium_endpoints: KindStore<CiliumEndpoint>,
    pub cilium_endpoint_slices: KindStore<CiliumEndpointSlice>,
    pub cilium_nodes: KindStore<CiliumNode>,
    pub service_exports: KindStore<ServiceExport>,
}

impl Stores {
    pub(super) fn new(found: Discovered) -> Self {
        Self {
            found,
            ..Self::default()
        }
    }

    /// Whether every watched kind has completed its initial list.
    fn synced(&self) -> bool {
        let common =
            self.services.synced() && self.endpoint_slices.synced() && self.namespaces.synced();
        let found = &self.found;
        let workloads = if found.cilium {
            let endpoints = if found.endpoint_slices {
                self.cilium_endpoint_slices.synced()
            } else {
                self.cilium_endpoints.synced()
            };
            self.cilium_identities.synced() && endpoints && self.cilium_nodes.synced()
        } else {
            self.pods.synced() && self.nodes.synced()
        };
        let exports = !found.service_exports || self.service_exports.synced();
        common && workloads && exports
    }

    /// What every watched store holds, as pointers: taken under the lock, so it copies
    /// no object.
    fn snapshot(&self) -> StoresSnapshot {
        let found = &self.found;
        let cilium = found.cilium.then(|| CiliumSnapshot {
            identities: self.cilium_identities.snapshot(),
            endpoints: self.cilium_endpoints.snapshot(),
            endpoint_slices: found
                .endpoint_slices
                .then(|| self.cilium_endpoint_slices.snapshot()),
            nodes: self.cilium_nodes.snapshot(),
        });
        let kube = (!found.cilium).then(|| (self.pods.snapshot(), self.nodes.snapshot()));
        StoresSnapshot {
            services: self.services.snapshot(),
            endpoint_slices: self.endpoint_slices.snapshot(),
            namespaces: self.namespaces.snapshot(),
            service_exports: self.service_exports.snapshot(),
            kube,
            cilium,
        }
    }
}

/// What the watched stores held at one moment (see [`Stores::snapshot`]).
struct StoresSnapshot {
    services: KindSnapshot<Service>,
    endpoint_slices: KindSnapshot<EndpointSlice>,
    namespaces: KindSnapshot<Namespace>,
    service_exports: KindSnapshot<ServiceExport>,
    /// Pods and Nodes, without Cilium.
    kube: Option<(KindSnapshot<Pod>, KindSnapshot<Node>)>,
    cilium: Option<CiliumSnapshot>,
}

/// Cilium's kinds in a [`StoresSnapshot`].
struct CiliumSnapshot {
    identities: KindSnapshot<CiliumIdentity>,
    endpoints: KindSnapshot<CiliumEndpoint>,
    /// Where the cluster uses them.
    endpoint_slices: Option<KindSnapshot<CiliumEndpointSlice>>,
    nodes: KindSnapshot<CiliumNode>,
}

impl StoresSnapshot {
    /// The objects to convert, and a problem line for each object that could not be read.
    fn into_objects(self) -> (Objects, Vec<String>) {
        let mut problems = Vec::new();
        let mut objects = Objects {
            services: self.services.into_objects(&mut problems),
            endpoint_slices: self.endpoint_slices.into_objects(&mut problems),
            namespaces: self.namespaces.into_objects(&mut problems),
            service_exports: self.service_exports.into_objects(&mut problems),
            ..Objects::default()
        };
        if let Some((pods, nodes)) = self.kube {
            objects.pods = pods.into_objects(&mut problems);
            objects.nodes = nodes.into_objects(&mut problems);
        }
        objects.cilium = self.cilium.map(|cilium| CiliumObjects {
            identities: cilium.identities.into_objects(&mut problems),
            endpoints: cilium.endpoints.into_objects(&mut problems),
            endpoint_slices: cilium
                .endpoint_slices
                .map(|slices| slices.into_objects(&mut problems)),
            nodes: cilium.nodes.into_objects(&mut problems),
        });
        (objects, problems)
    }
}

/// Publishes the stores' state on `tx`: nothing until every watched kind is listed, then
/// a snapshot after each burst of changes (woken by `changed`) that differs from the last
/// one. Runs until every receiver is dropped.
///
/// Each snapshot converts the whole cluster again rather than the objects that changed:
/// the conversion is a pure function of all objects (a namespace's annotation decides
/// about every service and pod in it, a slice belongs to its service), so recomputing it
/// is the simplest way to be right, and at one run per [`COALESCE`] window its cost stays
/// bounded. Incremental conversion is for when a profile says it matters.
pub(super) async fn publish(
    cluster: Cluster,
    options: ConvertOptions,
    stores: Arc<Mutex<Stores>>,
    changed: Arc<Notify>,
    tx: watch::Sender<Option<Snapshot>>,
) {
    let cluster = Arc::new(cluster);
    loop {
        tokio::select! {
            () = changed.notified() => {}
            () = tx.closed() => return,
        }
        tokio::time::sleep(COALESCE).await;
        let (cluster, stores) = (Arc::clone(&cluster), Arc::clone(&stores));
        // Copying and converting every object is CPU work proportional to the cluster:
        // kept off the async workers, and (but for pointer copies) outside the lock the
        // watchers take.
        let assembled =
            tokio::task::spawn_blocking(move || assemble(&cluster, &options, &stores)).await;
        let snapshot = match assembled {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, "snapshot assembly failed");
                continue;
            }
        };
        if tx.borrow().as_ref() == Some(&snapshot) {
            continue;
        }
        for problem in &snapshot.problems {
            tracing::warn!(%problem, "kubernetes object problem");
        }
        let state = &snapshot.state;
        tracing::info!(
            nodes = state.nodes.len(),
            services = state.services.len(),
            workloads = state.workloads.len(),
            identities = state.identities.len(),
            endpoints = state.endpoints.len(),
            service_exports = state.service_exports.len(),
            problems = snapshot.problems.len(),
            "kubernetes state converted"
        );
        tx.send_replace(Some(snapshot));
    }
}

/// The snapshot of what the stores hold, or `None` while some kind is not listed yet.
fn assemble(
    cluster: &Cluster,
    options: &ConvertOptions,
    stores: &Mutex<Stores>,
) -> Option<Snapshot> {
    let snapshot = {
        let stores = stores.lock();
        if !stores.synced() {
            return None;
        }
        stores.snapshot()
    };
    let (objects, mut problems) = snapshot.into_objects();
    let (state, convert_problems) = convert::desired_state_with(cluster, &objects, options);
    problems.extend(convert_problems.iter().map(ToString::to_string));
    Some(Snapshot { state, problems })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::kube::store::read;
    use crate::model::{ClusterId, ClusterName, IdMode};
    use ::kube::api::DynamicObject;
    use ::kube::runtime::watcher::Event;
    use serde_json::{Value, json};

    fn mk_cluster() -> Cluster {
        Cluster::new(
            ClusterName::new("cluster1").unwrap(),
            ClusterId::new(1, IdMode::Normal).unwrap(),
            IdMode::Normal,
        )
    }

    fn mk_cilium() -> Discovered {
        Discovered {
            cilium: true,
            ..Discovered::default()
        }
    }

    fn mk_object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn list<K>(store: &mut KindStore<K>, objects: Vec<Value>)
    where
        K: ::kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Clone,
    {
        store.apply(read(Event::Init));
        for object in objects {
            store.apply(read(Event::InitApply(mk_object(object))));
        }
        store.apply(read(Event::InitDone));
    }

    fn mk_node(name: &str) -> Value {
        json!({"metadata": {"name": name},
               "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}})
    }

    #[test]
    fn nothing_is_assembled_until_every_watched_kind_is_listed() {
        let stores = Mutex::new(Stores::new(Discovered::default()));
        {
            let mut s = stores.lock();
            list(&mut s.services, vec![]);
            list(&mut s.endpoint_slices, vec![]);
            list(&mut s.namespaces, vec![]);
            list(&mut s.pods, vec![]);
        }
        assert_eq!(
            assemble(&mk_cluster(), &ConvertOptions::default(), &stores),
            None
        );
        list(&mut stores.lock().nodes, vec![mk_node("worker")]);
        let snapshot = assemble(&mk_cluster(), &ConvertOptions::default(), &stores).unwrap();
        assert_eq!(snapshot.state.nodes.len(), 1);
        assert_eq!(snapshot.problems, Vec::<String>::new());
    }

    #[test]
    fn with_cilium_pods_and_nodes_are_neither_waited_for_nor_read() {
        let stores = Mutex::new(Stores::new(mk_cilium()));
        {
            let mut s = stores.lock();
            list(&mut s.services, vec![]);
            list(&mut s.endpoint_slices, vec![]);
            list(&mut s.namespaces, vec![]);
            list(&mut s.cilium_identities, vec![]);
            list(&mut s.cilium_endpoints, vec![]);
            // Never watched with Cilium; filled here to show they are not read.
            list(&mut s.nodes, vec![mk_node("worker")]);
        }
        assert_eq!(
            assemble(&mk_cluster(), &ConvertOptions::default(), &stores),
            None
        );
        list(&mut stores.lock().cilium_nodes, vec![]);
        let (objects, _) = stores.lock().snapshot().into_objects();
        assert!(objects.nodes.is_empty());
        assert_eq!(objects.cilium, Some(CiliumObjects::default()));
        let snapshot = assemble(&mk_cluster(), &ConvertOptions::default(), &stores).unwrap();
        assert!(snapshot.state.nodes.is_empty());
    }

    #[test]
    fn unreadable_objects_come_before_conversion_problems() {
        let stores = Mutex::new(Stores::new(Discovered::default()));
        {
            let mut s = stores.lock();
            list(
                &mut s.services,
                vec![json!({"metadata": {"name": "web", "namespace": "shop",
                    "annotations": {"service.cilium.io/global": "true",
                                    "service.cilium.io/affinity": "nearest"}},
                    "spec": {"ports": [{"name": "http", "port": 80}]}})],
            );
            list(&mut s.endpoint_slices, vec![]);
            list(&mut s.namespaces, vec![]);
            list(
                &mut s.pods,
                vec![json!({"metadata": {"name": "bad", "namespace": "shop"},
                            "spec": {"containers": 3}})],
            );
            list(&mut s.nodes, vec![]);
        }
        let snapshot = assemble(&mk_cluster(), &ConvertOptions::default(), &stores).unwrap();
        assert_eq!(snapshot.problems.len(), 2, "{:?}", snapshot.problems);
        assert!(snapshot.problems[0].starts_with("Pod shop/bad: "));
        assert!(
            snapshot.problems[1].starts_with("Service shop/web: "),
            "{}",
            snapshot.problems[1]
        );
    }
}
