//! Global services merged across clusters (reference §5.2), and what this cluster
//! selects from them (§5.3, with the fixes described in [`select`](super::select)).
//!
//! Each cluster's [`Service`] is held as that cluster last sent it, so an update
//! replaces exactly that cluster's backends and a delete drops exactly them. Which
//! clusters a consumer may use:
//!
//! - the local cluster's own service: always, shared or not (`shared: false` only
//!   means "do not export my backends"), and its affinity is the service's affinity;
//! - a remote cluster's service: only if shared; a non-shared remote copy is that
//!   cluster's business and is treated as absent here;
//! - remote backends are kept even while the local cluster has no such service, and
//!   apply as soon as it has one; until then selection uses affinity `none`;
//! - a stale peer's backends are withdrawn unless that would leave nothing selectable
//!   (see [`stale`](super::stale)).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Affinity, Backend, ClusterName, Service, ServiceName};

use super::clusters::{ClusterIdx, ClusterTable, LOCAL};
use super::json;
use super::select::{Candidate, SelectedBackend, SelectionReason, is_selectable, select};
use super::stale::Withdrawal;

/// A global service as this cluster sees it now, for sinks and the query API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    #[serde(with = "json::as_string")]
    pub name: ServiceName,
    /// The local cluster has this global service (else remote backends are held for
    /// when it does, and selection uses affinity `none`).
    pub local_global: bool,
    /// The local service's affinity (remote clusters' affinity is theirs to use).
    pub affinity: Affinity,
    /// Every contributing cluster, local first then by name.
    pub clusters: Vec<ClusterBackends>,
    /// The backends that receive traffic now.
    pub selected: Vec<SelectedBackend>,
    pub reason: SelectionReason,
}

/// One cluster's backends of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterBackends {
    pub cluster: ClusterName,
    pub local: bool,
    /// The cluster exports its backends (always true for a remote contributor).
    pub shared: bool,
    /// The peer has been unreachable for longer than the grace period.
    pub stale: bool,
    /// Its backends are out of selection because it is stale. A stale cluster that is
    /// not withdrawn is kept on purpose: its backends are the last ones of the service,
    /// or too many peers are unreachable to blame them.
    pub withdrawn: bool,
    pub backends: Vec<BackendEntry>,
}

/// One backend address and what its cluster says about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendEntry {
    pub ip: IpAddr,
    #[serde(with = "json::backend")]
    pub backend: Backend,
}

/// The view of `name`, or `None` if no cluster contributes to it.
pub(super) fn view(
    clusters: &ClusterTable,
    withdrawal: &Withdrawal,
    name: &ServiceName,
) -> Option<ServiceView> {
    let contributors: Vec<(ClusterIdx, &Service)> = clusters
        .ordered()
        .into_iter()
        .filter_map(|idx| {
            let service = clusters.get(idx).services.get(name)?;
            (idx == LOCAL || service.shared).then_some((idx, service))
        })
        .collect();
    if contributors.is_empty() {
        return None;
    }
    let local_service = contributors
        .iter()
        .find(|(idx, _)| *idx == LOCAL)
        .map(|(_, s)| *s);

    // Withdrawing stale peers must leave something to select, else they all stay.
    let fresh_has_backends = contributors
        .iter()
        .filter(|(idx, _)| !withdrawal.may_withdraw(*idx))
        .any(|(_, s)| s.backends.values().any(|b| is_selectable(&b.conditions)));
    let withdrawn = |idx: ClusterIdx| fresh_has_backends && withdrawal.may_withdraw(idx);

    let affinity = local_service.map_or(Affinity::None, |s| s.affinity);
    let candidates: Vec<Candidate<'_>> = contributors
        .iter()
        .filter(|(idx, _)| !withdrawn(*idx))
        .map(|(idx, s)| Candidate {
            cluster: clusters.name(*idx),
            local: *idx == LOCAL,
            backends: &s.backends,
        })
        .collect();
    let (selected, reason) = select(affinity, &candidates);

    let cluster_views = contributors
        .iter()
        .map(|(idx, s)| ClusterBackends {
            cluster: clusters.name(*idx).clone(),
            local: *idx == LOCAL,
            shared: s.shared,
            stale: withdrawal.is_stale(*idx),
            withdrawn: withdrawn(*idx),
            backends: s
                .backends
                .iter()
                .map(|(ip, b)| BackendEntry {
                    ip: *ip,
                    backend: b.clone(),
                })
                .collect(),
        })
        .collect();

    Some(ServiceView {
        name: name.clone(),
        local_global: local_service.is_some(),
        affinity,
        clusters: cluster_views,
        selected,
        reason,
    })
}

/// Every service some cluster contributes to, sorted by name.
pub(super) fn names(clusters: &ClusterTable) -> Vec<ServiceName> {
    let mut names: Vec<ServiceName> = clusters
        .ordered()
        .into_iter()
        .flat_map(|idx| {
            clusters
                .get(idx)
                .services
                .values()
                .filter(move |s| idx == LOCAL || s.shared)
                .map(|s| s.name.clone())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::mesh::MeshView;
    use crate::mesh::fixtures::*;
    use crate::model::{
        Affinity, BackendConditions, Change, Cluster, Resource, ResourceKey, Service,
    };

    use super::*;

    const READY: BackendConditions = BackendConditions::READY;

    fn put(view: &mut MeshView, service: Service) {
        let cluster = service.cluster.clone();
        view.apply(&cluster, &[Change::Upsert(Resource::Service(service))]);
    }

    fn selected(view: &MeshView) -> (Vec<String>, SelectionReason) {
        let svc = view.service(&mk_service_name(), Instant::now()).unwrap();
        let ips = svc
            .selected
            .iter()
            .map(|s| format!("{}/{}", s.cluster, s.ip))
            .collect();
        (ips, svc.reason)
    }

    fn with_affinity(cluster: &Cluster, affinity: Affinity, ready: bool) -> Service {
        let conditions = if ready { READY } else { NOT_READY };
        let net = cluster.id.get();
        let mut s = mk_service(cluster, &[(&format!("10.{net}.0.1"), conditions)]);
        s.affinity = affinity;
        s
    }

    #[test]
    fn two_and_three_clusters_merge() {
        let (mut view, local) = mk_view();
        let c2 = mk_cluster("c2", 2);
        let c3 = mk_cluster("c3", 3);
        put(&mut view, mk_service(&local, &[("10.1.0.1", READY)]));
        put(
            &mut view,
            mk_service(&c2, &[("10.2.0.1", READY), ("10.2.0.2", READY)]),
        );
        assert_eq!(
            selected(&view).0,
            vec!["local/10.1.0.1", "c2/10.2.0.1", "c2/10.2.0.2"]
        );
        put(&mut view, mk_service(&c3, &[("10.3.0.1", READY)]));
        let svc = view.service(&mk_service_name(), Instant::now()).unwrap();
        assert!(svc.local_global);
        let clusters: Vec<&str> = svc.clusters.iter().map(|c| c.cluster.as_str()).collect();
        assert_eq!(clusters, vec!["local", "c2", "c3"]);
        assert_eq!(
            selected(&view),
            (
                vec![
                    "local/10.1.0.1".to_string(),
                    "c2/10.2.0.1".into(),
                    "c2/10.2.0.2".into(),
                    "c3/10.3.0.1".into()
                ],
                SelectionReason::AllReady
            )
        );
        assert_eq!(view.services(Instant::now()), vec![svc]);
    }

    #[test]
    fn an_update_replaces_only_that_clusters_backends() {
        let (mut view, local) = mk_view();
        let c2 = mk_cluster("c2", 2);
        put(&mut view, mk_service(&local, &[("10.1.0.1", READY)]));
        put(
            &mut view,
            mk_service(&c2, &[("10.2.0.1", READY), ("10.2.0.2", READY)]),
        );
        put(&mut view, mk_service(&c2, &[("10.2.0.3", READY)]));
        assert_eq!(selected(&view).0, vec!["local/10.1.0.1", "c2/10.2.0.3"]);
    }

    #[test]
    fn deleting_one_clusters_service_drops_only_its_backends() {
        let (mut view, local) = mk_view();
        let c2 = mk_cluster("c2", 2);
        let c3 = mk_cluster("c3", 3);
        put(&mut view, mk_service(&local, &[("10.1.0.1", READY)]));
        put(&mut view, mk_service(&c2, &[("10.2.0.1", READY)]));
        put(&mut view, mk_service(&c3, &[("10.3.0.1", READY)]));
        let key = ResourceKey::Service(mk_service_name());
        assert_eq!(view.apply(&c2.name, &[Change::Delete(key)]).len(), 1);
        assert_eq!(selected(&view).0, vec!["local/10.1.0.1", "c3/10.3.0.1"]);
    }

    #[test]
    fn a_remote_non_shared_service_contributes_nothing() {
        let (mut view, local) = mk_view();
        let c2 = mk_cluster("c2", 2);
        let mut remote = mk_service(&c2, &[("10.2.0.1", READY)]);
        remote.shared = false;
        put(&mut view, remote);
        assert_eq!(view.service(&mk_service_name(), Instant::now()), None);
        assert!(view.services(Instant::now()).is_empty());
        // It is still held: it is that cluster's state.
        assert_eq!(view.counts(&c2.name).unwrap().services, 1);

        put(&mut view, mk_service(&local, &[("10.1.0.1", READY)]));
        assert_eq!(selected(&view).0, vec!["local/10.1.0.1"]);
    }

    #[test]
    fn a_local_non_shared_service_still_consumes_remote_backends() {
        let (mut view, local) = mk_view();
        let c2 = mk_cluster("c2", 2);
        let mut own = mk_service(&local, &[("10.1.0.1", READY)]);
        own.shared = false;
        put(&mut view, own);
        put(&mut view, mk_service(&c2, &[("10.2.0.1", READY)]));
        let svc = view.service(&mk_service_name(), Instant::now()).unwrap();
        assert!(svc.local_global);
        assert!(!svc.clusters[0].shared);
        assert_eq!(selected(&view).0, vec!["local/10.1.0.1", "c2/10.2.0.1"]);
    }

    #[test]
    fn a_service_without_local_backends_gets_remote_ones() {
        let (mut view, local) = mk_view();
        let c2 = mk_cluster("c2", 2);
        let mut own = mk_service(&local, &[]);
        own.affinity = Affinity::Local;
        put(&mut view, own);
        put(&mut view, mk_service(&c2, &[("10.2.0.1", READY)]));
        assert_eq!(
            selected(&view),
            (
                vec!["c2/10.2.0.1".into()],
                SelectionReason::FailoverToRemote
            )
        );
    }

    #[test]
    fn remote_backends_wait_for_the_local_service_and_then_follow_its_affinity() {
        let (mut view, local) = mk_view();
        let c2 = mk_cluster("c2", 2);
        // The remote's own affinity is its business, not ours.
        put(&mut view, with_affinity(&c2, Affinity::Remote, true));
        let svc = view.service(&mk_service_name(), Instant::now()).unwrap();
        assert!(!svc.local_global);
        assert_eq!(svc.affinity, Affinity::None);
        assert_eq!(selected(&view).0, vec!["c2/10.2.0.1"]);

        put(&mut view, with_affinity(&local, Affinity::Local, true));
        let svc = view.service(&mk_service_name(), Instant::now()).unwrap();
        assert!(svc.local_global);
        assert_eq!(svc.affinity, Affinity::Local);
        assert_eq!(
            selected(&view),
            (vec!["local/10.1.0.1".into()], SelectionReason::LocalReady)
        );
    }

    #[test]
    fn affinity_local_fails_over_and_back() {
        let (mut view, local) = mk_view();
        let c2 = mk_cluster("c2", 2);
        put(&mut view, with_affinity(&local, Affinity::Local, true));
        put(&mut view, mk_service(&c2, &[("10.2.0.1", READY)]));
        let local_only = (vec!["local/10.1.0.1".into()], SelectionReason::LocalReady);
        assert_eq!(selected(&view), local_only);

        put(&mut view, with_affinity(&local, Affinity::Local, false));
        assert_eq!(
            selected(&view),
            (
                vec!["c2/10.2.0.1".into()],
                SelectionReason::FailoverToRemote
            )
        );

        put(&mut view, with_affinity(&local, Affinity::Local, true));
        assert_eq!(selected(&view), local_only);
    }

    #[test]
    fn affinity_remote_fails_over_and_back() {
        let (mut view, local) = mk_view();
        let c2 = mk_cluster("c2", 2);
        put(&mut view, with_affinity(&local, Affinity::Remote, true));
        put(&mut view, with_affinity(&c2, Affinity::None, true));
        let remote_only = (vec!["c2/10.2.0.1".into()], SelectionReason::RemoteReady);
        assert_eq!(selected(&view), remote_only);

        put(&mut view, with_affinity(&c2, Affinity::None, false));
        assert_eq!(
            selected(&view),
            (
                vec!["local/10.1.0.1".into()],
                SelectionReason::FailoverToLocal
            )
        );

        put(&mut view, with_affinity(&c2, Affinity::None, true));
        assert_eq!(selected(&view), remote_only);
    }

    #[test]
    fn affinity_none_uses_every_cluster() {
        // Cilium #46623: the documented "none" dropped every remote backend.
        let (mut view, local) = mk_view();
        let c2 = mk_cluster("c2", 2);
        put(&mut view, with_affinity(&local, Affinity::None, true));
        put(&mut view, with_affinity(&c2, Affinity::Local, true));
        assert_eq!(
            selected(&view),
            (
                vec!["local/10.1.0.1".into(), "c2/10.2.0.1".into()],
                SelectionReason::AllReady
            )
        );
    }

    #[test]
    fn serving_backends_are_the_fallback() {
        let (mut view, local) = mk_view();
        let c2 = mk_cluster("c2", 2);
        put(&mut view, mk_service(&local, &[("10.1.0.1", NOT_READY)]));
        put(&mut view, mk_service(&c2, &[("10.2.0.1", TERMINATING)]));
        let (ips, reason) = selected(&view);
        assert_eq!(ips, vec!["c2/10.2.0.1"]);
        assert_eq!(reason, SelectionReason::FallbackServing);
        let svc = view.service(&mk_service_name(), Instant::now()).unwrap();
        assert!(!svc.selected[0].conditions.ready);
    }
}
