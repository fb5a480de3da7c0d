//! Kubernetes objects → model, as pure functions.
//!
//! [`desired_state`] turns one cluster's Services, EndpointSlices, Pods, Nodes and
//! Namespaces — or, where Cilium runs, its CiliumIdentities, CiliumEndpoints and
//! CiliumNodes in place of Pods and Nodes — into the [`DesiredState`] the exporter
//! writes. The kube watchers and the manifest directory feed it the same way, so both
//! sources export the same state for the same objects. An object that fails validation becomes a [`ConvertProblem`] naming it
//! and the field; every other object is still converted.

mod cilium_endpoint;
mod cilium_endpoint_slice;
#[cfg(test)]
mod cilium_fixtures;
mod cilium_identity;
mod cilium_node;
mod endpoint_slice;
#[cfg(test)]
mod fixtures;
mod namespace;
mod node;
mod pod;
mod service;
mod service_export;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::k8s::cilium::{CiliumEndpoint, CiliumEndpointSlice, CiliumIdentity, CiliumNode};
use crate::k8s::mcs::ServiceExport;
use crate::model::{
    Cluster, DesiredState, Endpoint, Identity, IdentityId, IpPrefix, L4Addr, Protocol, Workload,
};

pub use cilium_endpoint::cilium_endpoint_to_model;
pub use cilium_endpoint_slice::{cilium_endpoint_slice_to_model, slice_namespace};
pub use cilium_identity::{NAMESPACE_SECURITY_LABEL, cilium_identity_to_model};
pub use cilium_node::cilium_node_to_model;
pub use endpoint_slice::{SERVICE_NAME_LABEL, backend_conditions, slice_backends};
pub use namespace::{GLOBAL_NAMESPACE_ANNOTATION, NamespaceInfo, Namespaces, namespace_info};
pub use node::node_to_model;
pub use pod::{is_identity_label, pod_to_workload};
pub use service::{is_global, service_to_model};
pub use service_export::service_export_to_model;

/// The namespace of a namespaced object that names none, as `kubectl apply` would place it.
const DEFAULT_NAMESPACE: &str = "default";

/// The Kubernetes objects of one cluster that fleetmesh reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub namespaces: Vec<Namespace>,
    /// MCS-API ServiceExports; each is exported once its Service exists.
    pub service_exports: Vec<ServiceExport>,
    /// `Some` when Cilium runs in the cluster: identities, ipcache entries and nodes then
    /// come from Cilium's resources, and `pods` and `nodes` are not used.
    pub cilium: Option<CiliumObjects>,
}

/// Cilium's resources of one cluster, read as Cilium's clustermesh-apiserver reads them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CiliumObjects {
    pub identities: Vec<CiliumIdentity>,
    pub endpoints: Vec<CiliumEndpoint>,
    /// `Some` when the cluster publishes its endpoints in CiliumEndpointSlices: ipcache
    /// entries then come from the slices, and `endpoints` is not used (as Cilium's
    /// apiserver reads one or the other, by `--enable-cilium-endpoint-slice`).
    pub endpoint_slices: Option<Vec<CiliumEndpointSlice>>,
    pub nodes: Vec<CiliumNode>,
}

/// How a cluster's objects are read, beyond the objects themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Whether a namespace without the `clustermesh.cilium.io/global` annotation is
    /// global (Cilium's `--clustermesh-default-global-namespace`, default true).
    pub default_global_namespace: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            default_global_namespace: true,
        }
    }
}

/// Why one object (or part of it) was not converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertProblem {
    /// The object, as `Kind namespace/name` (`Kind name` for cluster-scoped kinds).
    pub object: String,
    /// What is wrong, starting with the field when one is at fault.
    pub message: String,
}

impl ConvertProblem {
    pub fn new(object: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            object: object.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConvertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

impl std::error::Error for ConvertProblem {}

/// Converts everything one cluster holds into what it exports, with the default
/// [`ConvertOptions`] (see [`desired_state_with`]).
pub fn desired_state(cluster: &Cluster, objects: &Objects) -> (DesiredState, Vec<ConvertProblem>) {
    desired_state_with(cluster, objects, &ConvertOptions::default())
}

/// Converts everything one cluster holds into what it exports.
///
/// Services are read from Services and EndpointSlices. Without Cilium
/// ([`Objects::cilium`] is `None`) nodes come from Nodes and workloads (whose identities
/// the exporter allocates) from Pods. With Cilium, nodes come from CiliumNodes,
/// identities from CiliumIdentities and ipcache entries from CiliumEndpoints (or
/// CiliumEndpointSlices, where the cluster uses them), and Pods and Nodes are not used,
/// as Cilium's clustermesh-apiserver does. ServiceExports are read whatever the mode.
///
/// A namespace is global when annotated `clustermesh.cilium.io/global: "true"` (any
/// case), not global with any other value, and as `options` say without the annotation.
/// Services of non-global namespaces are left out (a namespace with no Namespace object
/// follows the default); pods, identities, CiliumEndpoints and CiliumEndpointSlices are
/// exported only once their Namespace is known and global.
/// Each output vector is sorted by its key (node name, service namespace/name, pod
/// namespace/name, identity id, IP); an object defined twice keeps its first definition
/// and the second is reported. An address claimed by two CiliumEndpoints is not a
/// problem (it happens whenever a pod is replaced): the older endpoint keeps it, as in
/// Cilium.
pub fn desired_state_with(
    cluster: &Cluster,
    objects: &Objects,
    options: &ConvertOptions,
) -> (DesiredState, Vec<ConvertProblem>) {
    let (namespaces, mut problems) =
        Namespaces::with_default(&objects.namespaces, options.default_global_namespace);

    let nodes = match &objects.cilium {
        None => convert_each(&objects.nodes, &mut problems, |n| node_to_model(cluster, n)),
        Some(cilium) => {
            let mut nodes = Vec::with_capacity(cilium.nodes.len());
            for node in &cilium.nodes {
                let (converted, found) = cilium_node_to_model(cluster, node);
                nodes.extend(converted);
                problems.extend(found);
            }
            nodes
        }
    };

    let slices = endpoint_slice::by_service(&objects.endpoint_slices);
    let mut services = Vec::new();
    for svc in &objects.services {
        let obj = Obj::namespaced("Service", &svc.metadata);
        if !namespaces.is_global(obj.namespace) {
            continue;
        }
        let own = slices
            .get(&(obj.namespace, obj.name))
            .map_or(&[][..], Vec::as_slice);
        let (converted, found) = service_to_model(cluster, svc, own);
        services.extend(converted);
        problems.extend(found);
    }

    let (workloads, identities, endpoints) = match &objects.cilium {
        None => {
            let workloads = workloads(cluster, &objects.pods, &namespaces, &mut problems);
            (workloads, Vec::new(), Vec::new())
        }
        Some(cilium) => {
            let (identities, endpoints) =
                cilium_identities_and_endpoints(cluster, cilium, &namespaces, &mut problems);
            (Vec::new(), identities, endpoints)
        }
    };

    let service_exports = service_exports(
        cluster,
        &objects.services,
        &objects.service_exports,
        &mut problems,
    );

    let state = DesiredState {
        nodes: sort_unique(
            nodes,
            &mut problems,
            |n| n.name().to_string(),
            |k| format!("Node {k}"),
        ),
        services: sort_unique(
            services,
            &mut problems,
            |s| s.name.clone(),
            |k| format!("Service {k}"),
        ),
        workloads: sort_unique(
            workloads,
            &mut problems,
            |w| (w.namespace.clone(), w.pod.clone()),
            |(ns, pod)| format!("Pod {ns}/{pod}"),
        ),
        identities: sort_unique(identities, &mut problems, Identity::id, |id| {
            format!("CiliumIdentity {id}")
        }),
        endpoints: sort_unique(
            endpoints,
            &mut problems,
            |e| e.prefix,
            |ip| format!("CiliumEndpoint address {ip}"),
        ),
        service_exports: sort_unique(
            service_exports,
            &mut problems,
            |e| e.name.clone(),
            |name| format!("ServiceExport {name}"),
        ),
    };
    (state, problems)
}

/// Converts every object, keeping the problems of those that fail.
fn convert_each<T, U>(
    objects: &[T],
    problems: &mut Vec<ConvertProblem>,
    convert: impl Fn(&T) -> Result<U, ConvertProblem>,
) -> Vec<U> {
    let mut out = Vec::with_capacity(objects.len());
    for object in objects {
        match convert(object) {
            Ok(converted) => out.push(converted),
            Err(p) => problems.push(p),
        }
    }
    out
}

/// The workloads of the pods of namespaces known to be global: a pod's identity carries
/// its namespace's labels, so it waits for the Namespace like Cilium's identities do.
fn workloads(
    cluster: &Cluster,
    pods: &[Pod],
    namespaces: &Namespaces,
    problems: &mut Vec<ConvertProblem>,
) -> Vec<Workload> {
    let mut workloads = Vec::new();
    for pod in pods {
        let namespace = Obj::namespaced("Pod", &pod.metadata).namespace;
        if !namespaces.is_known_global(namespace) {
            continue;
        }
        match pod_to_workload(cluster, pod, namespaces.labels(namespace)) {
            Ok(w) => workloads.extend(w),
            Err(p) => problems.push(p),
        }
    }
    workloads
}

/// The identities and ipcache entries of Cilium's resources, without those of non-global
/// namespaces.
fn cilium_identities_and_endpoints(
    cluster: &Cluster,
    cilium: &CiliumObjects,
    namespaces: &Namespaces,
    problems: &mut Vec<ConvertProblem>,
) -> (Vec<Identity>, Vec<Endpoint>) {
    let identities = convert_each(&cilium.identities, problems, |i| {
        cilium_identity_to_model(cluster, i, namespaces)
    });
    let mut endpoints: BTreeMap<IpPrefix, Endpoint> = BTreeMap::new();
    match &cilium.endpoint_slices {
        None => {
            for cep in by_age(&cilium.endpoints, |cep| &cep.metadata) {
                let namespace = Obj::namespaced("CiliumEndpoint", &cep.metadata).namespace;
                if !namespaces.is_known_global(namespace) {
                    continue;
                }
                let (entries, found) = cilium_endpoint_to_model(cluster, cep);
                problems.extend(found);
                for entry in entries {
                    claim_address(&mut endpoints, entry);
                }
            }
        }
        Some(slices) => {
            for slice in by_age(slices, |ces| &ces.metadata) {
                // A slice without a namespace is reported by its conversion.
                if slice_namespace(slice).is_some_and(|ns| !namespaces.is_known_global(ns)) {
                    continue;
                }
                let (entries, found) = cilium_endpoint_slice_to_model(cluster, slice);
                problems.extend(found);
                for entry in entries {
                    claim_address(&mut endpoints, entry);
                }
            }
        }
    }
    (
        identities.into_iter().flatten().collect(),
        endpoints.into_values().collect(),
    )
}

/// The exports of the ServiceExports whose Service exists.
fn service_exports(
    cluster: &Cluster,
    services: &[Service],
    exports: &[ServiceExport],
    problems: &mut Vec<ConvertProblem>,
) -> Vec<crate::model::ServiceExport> {
    let by_name: BTreeMap<(&str, &str), &Service> = services
        .iter()
        .map(|svc| {
            let obj = Obj::namespaced("Service", &svc.metadata);
            ((obj.namespace, obj.name), svc)
        })
        .collect();
    let mut out = Vec::new();
    for export in exports {
        let obj = Obj::namespaced("ServiceExport", &export.metadata);
        let service = by_name.get(&(obj.namespace, obj.name)).copied();
        match service_export_to_model(cluster, export, service) {
            Ok(converted) => out.extend(converted),
            Err(p) => problems.push(p),
        }
    }
    out
}

/// Objects oldest first (creation time, then namespace and name), the order in which
/// their endpoints claim addresses.
fn by_age<T>(objects: &[T], meta: impl Fn(&T) -> &ObjectMeta) -> Vec<&T> {
    let mut sorted: Vec<&T> = objects.iter().collect();
    sorted.sort_by_key(|object| {
        let meta = meta(object);
        (
            meta.creation_timestamp.as_ref().map(|t| t.0),
            meta.namespace.clone(),
            meta.name.clone(),
        )
    });
    sorted
}

/// Adds an ipcache entry unless an older endpoint already holds its address.
///
/// Two CiliumEndpoints share an address during normal churn (a terminating pod's and its
/// replacement's, while the first is deleted), so this is no problem to report. The
/// older one keeps it, as Cilium's apiserver keeps the first claimant
/// (`CachedConverter` in `converters.go`) until it is deleted; the newer one's entry
/// follows then.
fn claim_address(endpoints: &mut BTreeMap<IpPrefix, Endpoint>, entry: Endpoint) {
    match endpoints.entry(entry.prefix) {
        std::collections::btree_map::Entry::Vacant(vacant) => {
            vacant.insert(entry);
        }
        std::collections::btree_map::Entry::Occupied(held) => tracing::debug!(
            address = %entry.prefix,
            held_by = ?held.get().pod,
            claimed_by = ?entry.pod,
            "address claimed by two CiliumEndpoints; the older one keeps it"
        ),
    }
}

/// Sorts by key, keeping the first of equal keys (the sort is stable) and reporting the
/// others: two definitions of one object can't both be exported.
fn sort_unique<T, K: Ord>(
    mut items: Vec<T>,
    problems: &mut Vec<ConvertProblem>,
    key: impl Fn(&T) -> K,
    describe: impl Fn(&K) -> String,
) -> Vec<T> {
    items.sort_by_key(|item| key(item));
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        let k = key(&item);
        if out.last().is_some_and(|last| key(last) == k) {
            problems.push(ConvertProblem::new(
                describe(&k),
                "defined more than once; the first definition is used",
            ));
        } else {
            out.push(item);
        }
    }
    out
}

/// The value, or `None` with its problem reported: for a value left out of an object
/// that is still converted.
fn keep_ok<T>(parsed: Result<T, ConvertProblem>, problems: &mut Vec<ConvertProblem>) -> Option<T> {
    parsed.map_err(|p| problems.push(p)).ok()
}

/// One object as problems name it.
struct Obj<'a> {
    name: &'a str,
    /// Empty for cluster-scoped kinds.
    namespace: &'a str,
    /// `Kind namespace/name` or `Kind name`.
    what: String,
}

impl<'a> Obj<'a> {
    fn namespaced(kind: &str, meta: &'a ObjectMeta) -> Self {
        let name = meta.name.as_deref().unwrap_or_default();
        let namespace = meta
            .namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE);
        Self {
            name,
            namespace,
            what: format!("{kind} {namespace}/{}", display_name(name)),
        }
    }

    fn cluster_scoped(kind: &str, meta: &'a ObjectMeta) -> Self {
        let name = meta.name.as_deref().unwrap_or_default();
        Self {
            name,
            namespace: "",
            what: format!("{kind} {}", display_name(name)),
        }
    }

    /// A problem with one field of this object.
    fn problem(&self, field: &str, message: impl fmt::Display) -> ConvertProblem {
        ConvertProblem::new(self.what.clone(), format!("{field}: {message}"))
    }

    /// An IP address read from `field`.
    fn parse_ip(&self, field: &str, ip: &str) -> Result<IpAddr, ConvertProblem> {
        ip.parse()
            .map_err(|_| self.problem(field, format!("{ip:?} is not an IP address")))
    }

    /// Refuses an identity outside the cluster's range: every consumer (Cilium's agents,
    /// fleetmesh's peers) would refuse it as a remote cluster's identity.
    fn require_in_range(
        &self,
        field: &str,
        cluster: &Cluster,
        id: IdentityId,
    ) -> Result<(), ConvertProblem> {
        let range = cluster.identity_range();
        if range.contains(id) {
            return Ok(());
        }
        Err(self.problem(
            field,
            format!(
                "identity {id} is outside cluster {}'s range {range}",
                cluster.id.get()
            ),
        ))
    }

    /// Refuses an object without a name: nothing could refer to it.
    fn require_name(&self) -> Result<(), ConvertProblem> {
        if self.name.is_empty() {
            return Err(self.problem("metadata.name", "missing"));
        }
        Ok(())
    }
}

fn display_name(name: &str) -> &str {
    if name.is_empty() { "<unnamed>" } else { name }
}

/// A Kubernetes port and protocol as a model `L4Addr`; Kubernetes' default protocol is TCP.
fn l4_addr(protocol: Option<&str>, port: i32) -> Result<L4Addr, String> {
    let protocol = match protocol {
        None | Some("") => Protocol::Tcp,
        Some(p) => p.parse().map_err(|e| format!("{e}"))?,
    };
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {port} is outside 1..=65535"))?;
    Ok(L4Addr { protocol, port })
}

/// The values of a list field that Kubernetes also keeps in an older single-value field
/// (`clusterIPs`/`clusterIP`, `podIPs`/`podIP`, `podCIDRs`/`podCIDR`), each with its field
/// path for problems: the list when it has values, else the single value. Empty values
/// are left out.
fn list_or_single<'a>(
    list: (&str, Vec<&'a str>),
    single: (&str, Option<&'a str>),
) -> Vec<(String, &'a str)> {
    let (list_field, values) = list;
    let values: Vec<(String, &str)> = if values.is_empty() {
        single
            .1
            .map(|v| (single.0.to_string(), v))
            .into_iter()
            .collect()
    } else {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("{list_field}[{i}]"), v))
            .collect()
    };
    values.into_iter().filter(|(_, v)| !v.is_empty()).collect()
}

/// Labels or annotations of an object (absent maps are empty).
fn string_map(map: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    map.cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fixtures::{
        mk_cluster, mk_endpoint, mk_map, mk_meta, mk_node, mk_pod, mk_service, mk_slice,
    };

    const GLOBAL_TRUE: (&str, &str) = ("service.cilium.io/global", "true");

    fn mk_namespace(name: &str, annotations: &[(&str, &str)]) -> Namespace {
        let mut metadata = mk_meta("", name);
        metadata.annotations = Some(mk_map(annotations));
        metadata.labels = Some(mk_map(&[("team", name)]));
        Namespace {
            metadata,
            ..Namespace::default()
        }
    }

    fn mk_objects() -> Objects {
        Objects {
            services: vec![
                mk_service("shop", "web", &[GLOBAL_TRUE], &[("http", 80)]),
                mk_service("shop", "checkout", &[GLOBAL_TRUE], &[("http", 80)]),
                mk_service("shop", "internal", &[], &[("http", 80)]),
                mk_service("legacy", "old", &[GLOBAL_TRUE], &[("http", 80)]),
            ],
            endpoint_slices: vec![
                mk_slice(
                    "shop",
                    "checkout",
                    "checkout-b",
                    &[("http", 8080)],
                    vec![mk_endpoint("10.244.1.11", Some(false))],
                ),
                mk_slice(
                    "shop",
                    "checkout",
                    "checkout-a",
                    &[("http", 8080)],
                    vec![mk_endpoint("10.244.1.10", None)],
                ),
                mk_slice(
                    "shop",
                    "internal",
                    "internal-a",
                    &[("http", 8080)],
                    vec![mk_endpoint("bogus", None)],
                ),
                mk_slice(
                    "legacy",
                    "old",
                    "old-a",
                    &[("http", 8080)],
                    vec![mk_endpoint("10.244.2.10", None)],
                ),
            ],
            pods: vec![
                mk_pod("shop", "web-1", &[("app", "web")], &["10.244.1.12"]),
                mk_pod(
                    "shop",
                    "checkout-1",
                    &[("app", "checkout")],
                    &["10.244.1.10"],
                ),
                mk_pod("legacy", "old-1", &[("app", "old")], &["10.244.2.10"]),
            ],
            nodes: vec![
                mk_node(
                    "worker-2",
                    &[("InternalIP", "172.18.0.3")],
                    &["10.244.2.0/24"],
                ),
                mk_node(
                    "worker-1",
                    &[("InternalIP", "172.18.0.2")],
                    &["10.244.1.0/24"],
                ),
            ],
            namespaces: vec![
                mk_namespace("shop", &[]),
                mk_namespace("legacy", &[(GLOBAL_NAMESPACE_ANNOTATION, "false")]),
            ],
            service_exports: vec![],
            cilium: None,
        }
    }

    #[test]
    fn a_cluster_converts_sorted_without_non_global_namespaces() {
        let (state, problems) = desired_state(&mk_cluster(), &mk_objects());
        assert!(problems.is_empty(), "{problems:?}");

        let nodes: Vec<_> = state.nodes.iter().map(|n| n.name()).collect();
        assert_eq!(nodes, ["worker-1", "worker-2"]);

        let services: Vec<_> = state.services.iter().map(|s| s.name.to_string()).collect();
        assert_eq!(services, ["shop/checkout", "shop/web"]);
        let checkout = &state.services[0];
        let ready: Vec<_> = checkout
            .backends
            .iter()
            .map(|(ip, b)| (ip.to_string(), b.conditions.ready))
            .collect();
        assert_eq!(
            ready,
            [
                ("10.244.1.10".to_string(), true),
                ("10.244.1.11".to_string(), false)
            ]
        );
        assert!(state.services[1].backends.is_empty());

        let pods: Vec<_> = state.workloads.iter().map(|w| w.pod.as_str()).collect();
        assert_eq!(pods, ["checkout-1", "web-1"]);
        let ns_label = state.workloads[0]
            .labels
            .get("io.cilium.k8s.namespace.labels.team")
            .map(|l| l.value.as_str());
        assert_eq!(ns_label, Some("shop"));
        assert!(state.identities.is_empty() && state.endpoints.is_empty());
    }

    #[test]
    fn workloads_wait_for_their_namespace_and_follow_the_default() {
        let mut objects = mk_objects();
        objects.pods.push(mk_pod(
            "undeclared",
            "ghost-1",
            &[("app", "ghost")],
            &["10.244.3.1"],
        ));
        objects.services.push(mk_service(
            "undeclared",
            "ghost",
            &[GLOBAL_TRUE],
            &[("http", 80)],
        ));
        let pods = |state: &DesiredState| -> Vec<String> {
            state.workloads.iter().map(|w| w.pod.clone()).collect()
        };
        let services = |state: &DesiredState| -> Vec<String> {
            state.services.iter().map(|s| s.name.to_string()).collect()
        };
        // The pod waits for its Namespace; the service follows the default (global).
        let (state, _) = desired_state(&mk_cluster(), &objects);
        assert_eq!(pods(&state), ["checkout-1", "web-1"]);
        assert_eq!(
            services(&state),
            ["shop/checkout", "shop/web", "undeclared/ghost"]
        );

        // With the default off, only namespaces annotated global export anything.
        let off = ConvertOptions {
            default_global_namespace: false,
        };
        let (state, _) = desired_state_with(&mk_cluster(), &objects, &off);
        assert!(pods(&state).is_empty() && services(&state).is_empty());
        objects.namespaces[0] = mk_namespace("shop", &[(GLOBAL_NAMESPACE_ANNOTATION, "True")]);
        objects.namespaces.push(mk_namespace("undeclared", &[]));
        let (state, _) = desired_state_with(&mk_cluster(), &objects, &off);
        assert_eq!(pods(&state), ["checkout-1", "web-1"]);
        assert_eq!(services(&state), ["shop/checkout", "shop/web"]);
    }

    #[test]
    fn bad_objects_are_reported_and_the_rest_converted() {
        let mut objects = mk_objects();
        objects
            .nodes
            .push(mk_node("worker-3", &[("InternalIP", "x")], &[]));
        objects.nodes.push(mk_node("worker-1", &[], &[]));
        objects
            .pods
            .push(mk_pod("shop", "bad", &[("app", "a;b")], &["10.244.1.13"]));
        objects.services.push(mk_service(
            "shop",
            "checkout",
            &[GLOBAL_TRUE],
            &[("http", 80)],
        ));
        let (state, problems) = desired_state(&mk_cluster(), &objects);
        let objects: Vec<_> = problems.iter().map(|p| p.object.as_str()).collect();
        assert_eq!(
            objects,
            [
                "Node worker-3",
                "Pod shop/bad",
                "Node worker-1",
                "Service shop/checkout"
            ]
        );
        assert_eq!(state.nodes.len(), 2);
        // The first definition of a duplicated node is kept.
        assert!(state.nodes[0].ipv4_alloc_cidr.is_some());
        assert_eq!(state.services.len(), 2);
        assert_eq!(state.services[0].backends.len(), 2);
        assert_eq!(state.workloads.len(), 2);
    }

    #[test]
    fn with_cilium_its_resources_replace_pods_and_nodes() {
        use cilium_fixtures::{mk_cilium_endpoint, mk_cilium_identity, mk_cilium_node};
        let ns_label = |ns| ("k8s:io.kubernetes.pod.namespace", ns);
        let cluster_label = ("k8s:io.cilium.k8s.policy.cluster", "cluster1");
        let mut objects = mk_objects();
        objects.cilium = Some(CiliumObjects {
            identities: vec![
                mk_cilium_identity("65540", &[ns_label("shop"), cluster_label]),
                mk_cilium_identity("65537", &[ns_label("shop"), cluster_label]),
                mk_cilium_identity("65538", &[ns_label("legacy"), cluster_label]),
                mk_cilium_identity("5", &[ns_label("shop"), cluster_label]),
            ],
            endpoints: vec![
                mk_cilium_endpoint("shop", "b", 65537, ("10.244.1.20", ""), "172.18.0.2"),
                mk_cilium_endpoint("shop", "a", 65540, ("10.244.1.10", "fd00::a"), ""),
                mk_cilium_endpoint("legacy", "c", 65538, ("10.244.2.10", ""), ""),
                mk_cilium_endpoint("shop", "dup", 65537, ("10.244.1.10", ""), ""),
            ],
            endpoint_slices: None,
            nodes: vec![mk_cilium_node(
                "cilium-1",
                &[("InternalIP", "172.18.0.2")],
                &[],
                "",
            )],
        });
        let (state, problems) = desired_state(&mk_cluster(), &objects);
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "CiliumIdentity 5: metadata.name: identity 5 is outside cluster 1's range 65536..=131071",
            ]
        );

        let nodes: Vec<_> = state.nodes.iter().map(|n| n.name()).collect();
        assert_eq!(nodes, ["cilium-1"]);
        assert_eq!(state.nodes[0].source, "custom-resource");
        assert!(state.workloads.is_empty());
        let ids: Vec<u32> = state.identities.iter().map(|i| i.id().get()).collect();
        assert_eq!(ids, [65537, 65540]);
        let entries: Vec<_> = state
            .endpoints
            .iter()
            .map(|e| (e.prefix.to_string(), e.pod.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            entries,
            [
                ("10.244.1.10".to_string(), "a".to_string()),
                ("10.244.1.20".to_string(), "b".to_string()),
                ("fd00::a".to_string(), "a".to_string()),
            ]
        );
        // Services are read the same way in both modes.
        assert_eq!(state.services.len(), 2);
    }

    #[test]
    fn a_shared_address_goes_to_the_older_endpoint_without_a_problem() {
        use cilium_fixtures::mk_cilium_endpoint;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let created = |mut cep: CiliumEndpoint, at: &str| {
            cep.metadata.creation_timestamp = Some(Time(at.parse().unwrap()));
            cep
        };
        // The replacement sorts first by name, but the terminating pod is older.
        let new = mk_cilium_endpoint("shop", "a-new", 65537, ("10.244.1.10", ""), "");
        let old = mk_cilium_endpoint("shop", "z-old", 65540, ("10.244.1.10", ""), "");
        let mut objects = mk_objects();
        for endpoints in [
            vec![
                created(new.clone(), "2026-01-02T00:00:00Z"),
                created(old.clone(), "2026-01-01T00:00:00Z"),
            ],
            vec![
                created(old, "2026-01-01T00:00:00Z"),
                created(new, "2026-01-02T00:00:00Z"),
            ],
        ] {
            objects.cilium = Some(CiliumObjects {
                endpoints,
                ..CiliumObjects::default()
            });
            let (state, problems) = desired_state(&mk_cluster(), &objects);
            assert_eq!(problems, vec![]);
            let owners: Vec<_> = state.endpoints.iter().map(|e| e.pod.as_deref()).collect();
            assert_eq!(owners, [Some("z-old")]);
        }
    }

    #[test]
    fn list_fields_fall_back_to_their_single_form() {
        let listed = list_or_single(
            ("spec.clusterIPs", vec!["a", "", "b"]),
            ("spec.clusterIP", Some("c")),
        );
        assert_eq!(
            listed,
            [
                ("spec.clusterIPs[0]".to_string(), "a"),
                ("spec.clusterIPs[2]".to_string(), "b")
            ]
        );
        let single = list_or_single(("spec.clusterIPs", vec![]), ("spec.clusterIP", Some("c")));
        assert_eq!(single, [("spec.clusterIP".to_string(), "c")]);
        assert!(list_or_single(("l", vec![]), ("s", Some(""))).is_empty());
        assert!(list_or_single(("l", vec![]), ("s", None)).is_empty());
    }

    #[test]
    fn conversion_problems_name_the_object() {
        let p = ConvertProblem::new(
            "Service test/echo",
            "spec.ports[0]: port 0 is outside 1..=65535",
        );
        assert_eq!(
            p.to_string(),
            "Service test/echo: spec.ports[0]: port 0 is outside 1..=65535"
        );
        let meta = ObjectMeta::default();
        let unnamed = Obj::namespaced("Pod", &meta);
        assert_eq!(unnamed.what, "Pod default/<unnamed>");
        assert_eq!(
            unnamed.require_name().unwrap_err().to_string(),
            "Pod default/<unnamed>: metadata.name: missing"
        );
    }
}
