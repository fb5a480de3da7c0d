//! Whether what an agent ended with is exactly what the source holds: every expected
//! object present with its value (else **lost**), nothing else (else **phantom**), each
//! object delivered once (else **duplicate**), in revision order (else **out of
//! order**), and the link never dropping after it was ready (**flaps**).

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::workload::Workload;
use crate::mesh::{Counts, MeshView};
use crate::model::{Resource, ResourceKey};

/// The correctness counters of a run, summed over its agents. `None`: what this side
/// cannot observe (a fleetmesh agent's listing goes into its view by key, so a
/// duplicate in it could not show; its final view is checked instead).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correctness {
    pub lost: u64,
    pub phantom: u64,
    pub duplicate: Option<u64>,
    pub out_of_order: Option<u64>,
    pub flaps: u64,
}

impl Correctness {
    /// Every counter that was observed is zero.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.phantom == 0
            && self.duplicate.unwrap_or(0) == 0
            && self.out_of_order.unwrap_or(0) == 0
            && self.flaps == 0
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Correctness) {
        let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        self.lost += other.lost;
        self.phantom += other.phantom;
        self.duplicate = sum(self.duplicate, other.duplicate);
        self.out_of_order = sum(self.out_of_order, other.out_of_order);
        self.flaps += other.flaps;
    }
}

/// Compares the part of `view` held from the workload's cluster with the workload:
/// every value is read back through the view's queries and compared with what was
/// written.
pub fn check_view(view: &MeshView, workload: &Workload) -> Correctness {
    let source = &workload.cluster.name;
    let now = Instant::now();
    let nodes: HashMap<String, crate::model::Node> = view
        .nodes()
        .into_iter()
        .filter(|(cluster, _)| cluster == source)
        .map(|(_, node)| (node.name().to_string(), node))
        .collect();
    let mut matched = Counts::default();
    let mut lost = 0;
    for resource in &workload.resources {
        let present = match resource {
            Resource::Endpoint(e) => view.lookup(e.prefix.addr()).is_some_and(|v| {
                v.cluster == *source
                    && v.prefix == e.prefix
                    && v.identity == e.identity
                    && v.host_ip == e.host_ip
                    && v.namespace == e.namespace
                    && v.pod == e.pod
                    && v.service_account == e.service_account
            }),
            Resource::Identity(i) => view
                .identity(i.id())
                .is_some_and(|(cluster, labels)| cluster == *source && labels == *i.labels()),
            Resource::Node(n) => nodes.get(n.name()) == Some(n),
            Resource::Service(s) => view.service(&s.name, now).is_some_and(|v| {
                v.clusters.iter().any(|c| {
                    c.cluster == *source
                        && c.backends.len() == s.backends.len()
                        && c.backends
                            .iter()
                            .all(|b| s.backends.get(&b.ip) == Some(&b.backend))
                })
            }),
            Resource::ServiceExport(e) => view
                .service_exports(source)
                .is_some_and(|held| held.get(&e.name) == Some(e)),
        };
        if !present {
            lost += 1;
            continue;
        }
        match resource {
            Resource::Endpoint(_) => matched.endpoints += 1,
            Resource::Identity(_) => matched.identities += 1,
            Resource::Node(_) => matched.nodes += 1,
            Resource::Service(_) => matched.services += 1,
            Resource::ServiceExport(_) => matched.service_exports += 1,
        }
    }
    let held = view.counts(source).unwrap_or_default();
    let phantom = held.endpoints.saturating_sub(matched.endpoints)
        + held.identities.saturating_sub(matched.identities)
        + held.nodes.saturating_sub(matched.nodes)
        + held.services.saturating_sub(matched.services)
        + held.service_exports.saturating_sub(matched.service_exports);
    Correctness {
        lost,
        phantom: phantom as u64,
        duplicate: None,
        out_of_order: None,
        flaps: 0,
    }
}

/// Compares what an etcd-direct agent decoded (by key) with the workload. Cilium's
/// service copy carries less than fleetmesh's (no backend conditions but ready), so a
/// service is compared by its backends' addresses.
pub fn check_decoded(held: &HashMap<ResourceKey, Resource>, workload: &Workload) -> Correctness {
    let mut lost = 0u64;
    let mut matched = 0usize;
    for resource in &workload.resources {
        let same = match (held.get(&resource.key()), resource) {
            (Some(Resource::Service(got)), Resource::Service(want)) => {
                got.backends.keys().eq(want.backends.keys())
            }
            (Some(got), want) => got == want,
            (None, _) => false,
        };
        if same {
            matched += 1;
        } else {
            lost += 1;
        }
    }
    Correctness {
        lost,
        phantom: held.len().saturating_sub(matched) as u64,
        duplicate: Some(0),
        out_of_order: Some(0),
        flaps: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::Sizes;
    use crate::mesh::StalePolicy;
    use crate::model::{Change, Cluster, ClusterId, ClusterName, IdMode};

    fn mk_cluster(name: &str, id: u32) -> Cluster {
        Cluster::new(
            ClusterName::new(name).unwrap(),
            ClusterId::new(id, IdMode::Normal).unwrap(),
            IdMode::Normal,
        )
    }

    fn mk_workload() -> Workload {
        let source = mk_cluster("source", 2);
        Workload::generate(&source, Sizes::for_endpoints(300, &source)).unwrap()
    }

    #[test]
    fn a_view_holding_exactly_the_workload_is_clean() {
        let w = mk_workload();
        let mut view = MeshView::new(mk_cluster("agent", 1), StalePolicy::default());
        let upserts: Vec<Change> = w.resources.iter().cloned().map(Change::Upsert).collect();
        view.apply(&w.cluster.name, &upserts);
        assert_eq!(check_view(&view, &w), Correctness::default());
    }

    #[test]
    fn missing_changed_and_extra_objects_are_counted() {
        let w = mk_workload();
        let mut view = MeshView::new(mk_cluster("agent", 1), StalePolicy::default());
        let mut held = w.resources.clone();
        // One endpoint missing, one with another pod name, one extra.
        let removed = held.pop().unwrap();
        let Some(Resource::Endpoint(mut changed)) = held.pop() else {
            panic!("the workload ends with endpoints")
        };
        changed.pod = Some("other".into());
        let mut extra = changed.clone();
        extra.prefix = crate::model::IpPrefix::host("192.168.0.1".parse().unwrap());
        held.push(Resource::Endpoint(changed));
        held.push(Resource::Endpoint(extra));
        view.apply(
            &w.cluster.name,
            &held.into_iter().map(Change::Upsert).collect::<Vec<_>>(),
        );
        let c = check_view(&view, &w);
        assert_eq!((c.lost, c.phantom), (2, 2), "{c:?}");
        view.apply(&w.cluster.name, &[Change::Upsert(removed)]);
        assert_eq!(check_view(&view, &w).lost, 1);
    }

    #[test]
    fn decoded_maps_are_compared_by_key_and_value() {
        let w = mk_workload();
        let mut held: HashMap<ResourceKey, Resource> =
            w.resources.iter().map(|r| (r.key(), r.clone())).collect();
        assert!(check_decoded(&held, &w).is_clean());
        let first = w.resources[0].key();
        held.remove(&first);
        let c = check_decoded(&held, &w);
        assert_eq!((c.lost, c.phantom), (1, 0));
    }
}
