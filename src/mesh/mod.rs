//! The agent's merged cross-cluster view: every cluster's nodes, identities, ipcache
//! entries and global services, merged into one state with affinity and failover,
//! a stale-state policy and conflict reports.
//!
//! [`MeshView`] is a plain synchronous struct: the agent wraps it in a lock that is never
//! held across `.await`, feeds it what each peer's remote task received (already
//! validated: DESIGN.md §6 rule 3), and reads it for its sinks and the query API.
//!
//! - **Per-cluster state.** Everything is held per source cluster. A cluster's changes
//!   touch only what that cluster contributed. A resync applies its listing as it
//!   comes and ends with [`MeshView::sweep`] (DESIGN.md §6 rule 1: nothing is deleted
//!   because a peer went away, only what a complete new listing no longer has), and
//!   [`MeshView::drain`] removes a cluster whose peer file was removed.
//! - **Changes are minimal.** Every update returns the [`Change`]s it made (the
//!   caller named the cluster, so they are not labelled with it again); writing
//!   what is already held changes nothing and returns nothing.
//! - **Time comes from the caller.** Staleness (module `stale`) is decided at query time from
//!   the `now` passed in; the view has no timers and never reads the clock. Because
//!   withdrawal depends on time, a consumer of [`MeshView::services`] re-reads after
//!   [`MeshView::set_reachable`] and at [`MeshView::next_stale_deadline`].
//! - **Compact.** Ipcache entries, the bulk of the state, are stored compactly
//!   (module `ipcache`) and turned back into model values only when read.

mod clusters;
#[cfg(test)]
mod fixtures;
mod host;
mod intern;
mod ipcache;
mod json;
mod labels;
mod pod;
mod prefixmap;
mod select;
mod services;
mod stale;
mod status;

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::model::{
    Change, Cluster, ClusterName, IdentityId, Labels, Node, Resource, ResourceKey, ServiceExport,
    ServiceName,
};

use self::clusters::{ClusterIdx, ClusterTable, LOCAL};
use self::ipcache::{IpCache, Upserted};
use self::labels::CompactLabels;
use self::stale::Withdrawal;

pub use self::ipcache::{IpConflict, IpcacheEntryView};
pub use self::select::{SelectedBackend, SelectionReason};
pub use self::services::{BackendEntry, ClusterBackends, ServiceView};
pub use self::stale::StalePolicy;
pub use self::status::{CacheStatus, Failure, PeerStatus, SyncedKinds};

/// How much the view holds from one cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub nodes: usize,
    pub endpoints: usize,
    pub identities: usize,
    /// Every service held from the cluster, shared or not.
    pub services: usize,
    /// MCS-API service exports held from the cluster.
    #[serde(default)]
    pub service_exports: usize,
}

/// The merged view of every cluster this agent sees, its own included.
pub struct MeshView {
    local: Cluster,
    policy: StalePolicy,
    clusters: ClusterTable,
    ipcache: IpCache,
    /// Bumped whenever [`services`](Self::services) may answer differently at the same
    /// `now`; see [`services_version`](Self::services_version).
    services_version: u64,
}

impl MeshView {
    /// An empty view for the agent of `local`.
    pub fn new(local: Cluster, policy: StalePolicy) -> Self {
        Self {
            clusters: ClusterTable::new(local.name.clone()),
            local,
            policy,
            ipcache: IpCache::default(),
            services_version: 0,
        }
    }

    /// A number that changes whenever [`services`](Self::services) may answer
    /// differently for the same `now`: a service upserted or deleted, a peer's
    /// reachability changed, a cluster drained. Sinks poll it (a read under the lock)
    /// instead of recomputing every service; the passage of time is theirs to follow
    /// through [`next_stale_deadline`](Self::next_stale_deadline).
    pub fn services_version(&self) -> u64 {
        self.services_version
    }

    /// The cluster this view is the agent's of.
    pub fn local(&self) -> &Cluster {
        &self.local
    }

    /// Applies deltas from `cluster`; returns those that changed the view. Tests feed
    /// the view with it; a link applies each change as it decodes it
    /// ([`apply_change`](Self::apply_change)).
    #[cfg(test)]
    pub fn apply<'c>(&mut self, cluster: &ClusterName, changes: &'c [Change]) -> Vec<&'c Change> {
        let idx = self.clusters.enter(cluster);
        changes
            .iter()
            .filter(|change| self.apply_one(idx, change))
            .collect()
    }

    /// Applies one delta from `cluster`; whether it changed the view. The view keeps
    /// compact copies, so the caller keeps `change` (to tell an observer what arrived,
    /// say) at no cost.
    pub fn apply_change(&mut self, cluster: &ClusterName, change: &Change) -> bool {
        let idx = self.clusters.enter(cluster);
        self.apply_one(idx, change)
    }

    /// Ends a resync of `cluster`: deletes every entry it holds that `is_listed` does
    /// not name, and returns those deletions. The new listing's entries were already
    /// applied as upserts as they came (equal ones changed nothing), so what the peer
    /// still has is never removed, not even for a moment; call this only at the synced
    /// marker of a complete listing. Covers every kind: `is_listed` must name them all.
    pub fn sweep(
        &mut self,
        cluster: &ClusterName,
        is_listed: impl Fn(&ResourceKey) -> bool,
    ) -> Vec<Change> {
        let idx = self.clusters.enter(cluster);
        // Only the keys to delete are collected: a listing mostly names what is held.
        let gone: Vec<ResourceKey> = self.held_keys(idx).filter(|k| !is_listed(k)).collect();
        gone.into_iter()
            .map(Change::Delete)
            .filter(|change| self.apply_one(idx, change))
            .collect()
    }

    /// When `cluster` becomes (or became) stale, if its link is down: the time its
    /// service backends may be withdrawn from (for `explain`).
    pub fn stale_from(&self, cluster: &ClusterName) -> Option<Instant> {
        let idx = self.clusters.find(cluster)?;
        self.clusters
            .get(idx)
            .reachability
            .stale_from(self.policy.grace)
    }

    /// Records that the link to `cluster` went down or came back at `now`. The local
    /// cluster is never stale, so it is not affected.
    pub fn set_reachable(&mut self, cluster: &ClusterName, reachable: bool, now: Instant) {
        if *cluster == self.local.name {
            return;
        }
        let idx = self.clusters.enter(cluster);
        let reachability = &mut self.clusters.get_mut(idx).reachability;
        let before = *reachability;
        reachability.set(reachable, now);
        if *reachability != before {
            self.services_version += 1;
        }
    }

    /// Removes everything `cluster` contributed (its peer file was removed); it is no
    /// longer a peer afterwards.
    pub fn drain(&mut self, cluster: &ClusterName) -> Vec<Change> {
        let Some(idx) = self.clusters.find(cluster) else {
            return Vec::new();
        };
        let held: Vec<ResourceKey> = self.held_keys(idx).collect();
        let changes = held
            .into_iter()
            .map(Change::Delete)
            .filter(|change| self.apply_one(idx, change))
            .collect();
        let slot = self.clusters.get_mut(idx);
        slot.present = idx == LOCAL;
        slot.reachability = Default::default();
        // One peer fewer changes whether too many are unreachable to withdraw any.
        self.services_version += 1;
        changes
    }

    /// The clusters the view holds, local first then by name.
    pub fn clusters(&self) -> Vec<ClusterName> {
        self.clusters
            .ordered()
            .into_iter()
            .map(|idx| self.clusters.name(idx).clone())
            .collect()
    }

    /// What the view holds from `cluster`; `None` for a cluster never seen or drained.
    pub fn counts(&self, cluster: &ClusterName) -> Option<Counts> {
        let slot = self.clusters.get(self.clusters.find(cluster)?);
        slot.present.then_some(Counts {
            nodes: slot.nodes.len(),
            endpoints: slot.endpoints,
            identities: slot.identities.len(),
            services: slot.services.len(),
            service_exports: slot.service_exports.len(),
        })
    }

    /// The MCS-API service exports `cluster` offers, by namespace and name; `None` for a
    /// cluster never seen or drained.
    pub fn service_exports(
        &self,
        cluster: &ClusterName,
    ) -> Option<&BTreeMap<ServiceName, ServiceExport>> {
        let slot = self.clusters.get(self.clusters.find(cluster)?);
        slot.present.then_some(&slot.service_exports)
    }

    /// The global service `name` as selected at `now`; `None` if no cluster
    /// contributes to it (a remote non-shared copy does not).
    pub fn service(&self, name: &ServiceName, now: Instant) -> Option<ServiceView> {
        let withdrawal = Withdrawal::at(&self.clusters, self.policy, now);
        services::view(&self.clusters, &withdrawal, name)
    }

    /// Every global service as selected at `now`, sorted by name.
    pub fn services(&self, now: Instant) -> Vec<ServiceView> {
        let withdrawal = Withdrawal::at(&self.clusters, self.policy, now);
        services::names(&self.clusters)
            .iter()
            .filter_map(|name| services::view(&self.clusters, &withdrawal, name))
            .collect()
    }

    /// The next instant after `now` at which an unreachable peer becomes stale, so that
    /// a consumer knows when to re-read the services without polling.
    pub fn next_stale_deadline(&self, now: Instant) -> Option<Instant> {
        self.clusters
            .peers()
            .filter_map(|(_, slot)| slot.reachability.stale_from(self.policy.grace))
            .filter(|at| *at > now)
            .min()
    }

    /// Who owns `ip`: its host entry, else the longest prefix containing it. An entry
    /// claimed by several clusters answers with the local one, else the lowest name
    /// (see [`conflicts`](Self::conflicts)).
    pub fn lookup(&self, ip: IpAddr) -> Option<IpcacheEntryView> {
        let prefix = self.ipcache.find(ip)?;
        let idx = self
            .ipcache
            .claimants(prefix)
            .into_iter()
            .min_by(|a, b| self.clusters.rank(*a).cmp(&self.clusters.rank(*b)))?;
        let entry = self.ipcache.get(idx, prefix)?;
        // The owning cluster's identity first: reserved ids exist in every cluster.
        let labels = self
            .clusters
            .get(idx)
            .identities
            .get(&entry.identity)
            .and_then(CompactLabels::labels)
            .or_else(|| self.identity(entry.identity).map(|(_, l)| l));
        Some(IpcacheEntryView::new(
            self.clusters.name(idx).clone(),
            entry,
            labels,
        ))
    }

    /// Every prefix claimed by more than one cluster, sorted by prefix.
    pub fn conflicts(&self) -> Vec<IpConflict> {
        self.ipcache
            .conflicted()
            .into_iter()
            .map(|prefix| {
                let mut claimants = self.ipcache.claimants(prefix);
                claimants.sort_by(|a, b| self.clusters.rank(*a).cmp(&self.clusters.rank(*b)));
                IpConflict {
                    prefix,
                    clusters: claimants
                        .into_iter()
                        .map(|idx| self.clusters.name(idx).clone())
                        .collect(),
                }
            })
            .collect()
    }

    /// The labels of identity `id` and the cluster that holds it (the local cluster
    /// first, then by name: reserved ids may be held by several).
    pub fn identity(&self, id: IdentityId) -> Option<(ClusterName, Labels)> {
        self.clusters.ordered().into_iter().find_map(|idx| {
            let slot = self.clusters.get(idx);
            let labels = slot.identities.get(&id)?.labels()?;
            Some((slot.name.clone(), labels))
        })
    }

    /// Every node of every cluster, local first then by cluster and node name.
    pub fn nodes(&self) -> Vec<(ClusterName, Node)> {
        self.clusters
            .ordered()
            .into_iter()
            .flat_map(|idx| {
                let slot = self.clusters.get(idx);
                slot.nodes.values().map(|n| (slot.name.clone(), n.clone()))
            })
            .collect()
    }

    /// Every key `idx` holds, sorted by kind then key.
    fn held_keys(&self, idx: ClusterIdx) -> impl Iterator<Item = ResourceKey> + '_ {
        let slot = self.clusters.get(idx);
        let nodes = slot.nodes.keys().cloned().map(ResourceKey::Node);
        let services = slot.services.keys().cloned().map(ResourceKey::Service);
        let identities = slot.identities.keys().copied().map(ResourceKey::Identity);
        let exports = slot
            .service_exports
            .keys()
            .cloned()
            .map(ResourceKey::ServiceExport);
        let endpoints = self
            .ipcache
            .prefixes_of(idx)
            .into_iter()
            .map(ResourceKey::Endpoint);
        nodes
            .chain(services)
            .chain(identities)
            .chain(endpoints)
            .chain(exports)
    }

    fn apply_one(&mut self, idx: ClusterIdx, change: &Change) -> bool {
        let changed = match change {
            Change::Upsert(resource) => self.upsert(idx, resource),
            Change::Delete(key) => self.delete(idx, key),
        };
        if changed
            && matches!(
                change,
                Change::Upsert(Resource::Service(_)) | Change::Delete(ResourceKey::Service(_))
            )
        {
            self.services_version += 1;
        }
        changed
    }

    /// Stores `resource`; whether that changed anything.
    fn upsert(&mut self, idx: ClusterIdx, resource: &Resource) -> bool {
        let slot = self.clusters.get_mut(idx);
        match resource {
            Resource::Node(n) => put(&mut slot.nodes, n.name(), || n.name().to_string(), n),
            Resource::Service(s) => put(&mut slot.services, &s.name, || s.name.clone(), s),
            Resource::Identity(i) => put(
                &mut slot.identities,
                &i.id(),
                || i.id(),
                &CompactLabels::new(i.labels()),
            ),
            Resource::ServiceExport(e) => {
                put(&mut slot.service_exports, &e.name, || e.name.clone(), e)
            }
            Resource::Endpoint(e) => match self.ipcache.upsert(idx, e) {
                Upserted::Unchanged => false,
                Upserted::Replaced => true,
                Upserted::Inserted => {
                    slot.endpoints += 1;
                    true
                }
            },
        }
    }

    /// Removes what `key` names; whether something was held.
    fn delete(&mut self, idx: ClusterIdx, key: &ResourceKey) -> bool {
        let slot = self.clusters.get_mut(idx);
        match key {
            ResourceKey::Node(name) => slot.nodes.remove(name).is_some(),
            ResourceKey::Service(name) => slot.services.remove(name).is_some(),
            ResourceKey::Identity(id) => slot.identities.remove(id).is_some(),
            ResourceKey::ServiceExport(name) => slot.service_exports.remove(name).is_some(),
            ResourceKey::Endpoint(prefix) => {
                let removed = self.ipcache.delete(idx, *prefix);
                if removed {
                    slot.endpoints -= 1;
                }
                removed
            }
        }
    }
}

/// Stores `value` under `key` unless an equal one is held; `true` if the map changed.
/// A held entry is found in one search and overwritten where it is (the model's
/// derived `clone_from` is a fresh clone: this saves the second search, not the
/// allocations); the owned key is made (`make_key`) only for a new entry.
fn put<K, Q, V>(map: &mut BTreeMap<K, V>, key: &Q, make_key: impl FnOnce() -> K, value: &V) -> bool
where
    K: Ord + Borrow<Q>,
    Q: Ord + ?Sized,
    V: Clone + PartialEq,
{
    match map.get_mut(key) {
        Some(held) if held == value => false,
        Some(held) => {
            held.clone_from(value);
            true
        }
        None => {
            map.insert(make_key(), value.clone());
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::mesh::fixtures::*;
    use crate::model::{BackendConditions, Identity, Label};

    fn upserts(full: Vec<Resource>) -> Vec<Change> {
        full.into_iter().map(Change::Upsert).collect()
    }

    fn keys(changes: &[&Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let verb = match c {
                    Change::Upsert(_) => "upsert",
                    Change::Delete(_) => "delete",
                };
                format!("{verb} {}", c.key())
            })
            .collect()
    }

    #[test]
    fn apply_reports_only_real_changes() {
        let (mut view, _) = mk_view();
        let c1 = mk_cluster("c1", 2);
        let node = mk_node(&c1, "n1");
        let upsert = [Change::Upsert(Resource::Node(node.clone()))];
        assert_eq!(view.apply(&c1.name, &upsert), [&upsert[0]]);
        assert!(
            view.apply(&c1.name, &[Change::Upsert(Resource::Node(node))])
                .is_empty()
        );
        let gone = ResourceKey::Node("n9".into());
        assert!(view.apply(&c1.name, &[Change::Delete(gone)]).is_empty());
        assert_eq!(view.nodes().len(), 1);
    }

    #[test]
    fn a_changed_node_service_or_identity_replaces_the_one_held() {
        let (mut view, _) = mk_view();
        let c1 = mk_cluster("c1", 2);
        let node = mk_node(&c1, "n1");
        let service = mk_service(&c1, &[("10.2.0.1", BackendConditions::READY)]);
        let identity = mk_identity(&c1);
        let first = upserts(vec![
            Resource::Node(node.clone()),
            Resource::Service(service.clone()),
            Resource::Identity(identity.clone()),
        ]);
        assert_eq!(view.apply(&c1.name, &first).len(), 3);

        let mut rebooted = node;
        rebooted.boot_id = "rebooted".into();
        let mut grown = service;
        grown.backends = mk_backends(&[
            ("10.2.0.1", BackendConditions::READY),
            ("10.2.0.2", BackendConditions::READY),
        ]);
        let mut labels = identity.labels().clone();
        labels.insert(Label::k8s("tier", "web").unwrap());
        let relabelled = Identity::new(&c1, identity.id(), labels.clone()).unwrap();
        let second = upserts(vec![
            Resource::Node(rebooted.clone()),
            Resource::Service(grown),
            Resource::Identity(relabelled),
        ]);
        assert_eq!(view.apply(&c1.name, &second).len(), 3, "each one changed");

        assert_eq!(view.nodes(), [(c1.name.clone(), rebooted)]);
        let held = view.service(&mk_service_name(), Instant::now()).unwrap();
        let backends: Vec<usize> = held.clusters.iter().map(|c| c.backends.len()).collect();
        assert_eq!(backends, [2]);
        assert_eq!(
            view.identity(identity.id()),
            Some((c1.name.clone(), labels))
        );
        assert_eq!(view.counts(&c1.name).map(|c| c.services), Some(1));
    }

    #[test]
    fn a_resync_of_an_identical_state_changes_nothing() {
        let (mut view, _) = mk_view();
        let c1 = mk_cluster("c1", 2);
        let full = mk_full_state(&c1, 3);
        assert_eq!(
            view.apply(&c1.name, &upserts(full.clone())).len(),
            full.len()
        );
        let listed: HashSet<ResourceKey> = full.iter().map(Resource::key).collect();
        assert!(view.apply(&c1.name, &upserts(full)).is_empty());
        assert!(view.sweep(&c1.name, |k| listed.contains(k)).is_empty());
        assert_eq!(
            view.counts(&c1.name),
            Some(Counts {
                nodes: 1,
                endpoints: 3,
                identities: 1,
                services: 1,
                service_exports: 0,
            })
        );
    }

    #[test]
    fn a_sweep_after_a_peer_lost_one_entry_deletes_exactly_it() {
        let (mut view, _) = mk_view();
        let c1 = mk_cluster("c1", 2);
        let mut full = mk_full_state(&c1, 3);
        view.apply(&c1.name, &upserts(full.clone()));
        let lost = full.pop().unwrap();
        let listed: HashSet<ResourceKey> = full.iter().map(Resource::key).collect();
        let changes = view.sweep(&c1.name, |k| listed.contains(k));
        assert_eq!(changes, vec![Change::Delete(lost.key())]);
        assert_eq!(view.counts(&c1.name).unwrap().endpoints, 2);
    }

    #[test]
    fn a_resync_upserts_changed_entries_and_the_sweep_keeps_them() {
        let (mut view, _) = mk_view();
        let c1 = mk_cluster("c1", 2);
        let mut full = mk_full_state(&c1, 2);
        view.apply(&c1.name, &upserts(full.clone()));
        let Some(Resource::Endpoint(e)) = full.last_mut() else {
            panic!("the full state ends with endpoints");
        };
        e.pod = Some("moved".into());
        let listed: HashSet<ResourceKey> = full.iter().map(Resource::key).collect();
        let resync = upserts(full);
        assert_eq!(
            keys(&view.apply(&c1.name, &resync)),
            vec!["upsert endpoint 10.2.0.1"]
        );
        assert!(view.sweep(&c1.name, |k| listed.contains(k)).is_empty());
        let moved = view.lookup("10.2.0.1".parse().unwrap()).unwrap();
        assert_eq!(moved.pod.as_deref(), Some("moved"));
    }

    #[test]
    fn sweeping_after_an_empty_listing_empties_the_peer_but_keeps_it_known() {
        let (mut view, _) = mk_view();
        let c1 = mk_cluster("c1", 2);
        let full = mk_full_state(&c1, 2);
        view.apply(&c1.name, &upserts(full.clone()));
        assert_eq!(view.sweep(&c1.name, |_| false).len(), full.len());
        assert_eq!(view.counts(&c1.name), Some(Counts::default()));
        let c2 = mk_cluster("c2", 3);
        assert!(view.sweep(&c2.name, |_| false).is_empty());
        assert_eq!(view.counts(&c2.name), Some(Counts::default()));
    }

    #[test]
    fn drain_removes_everything_of_that_cluster_only() {
        let (mut view, local) = mk_view();
        let c1 = mk_cluster("c1", 2);
        let c2 = mk_cluster("c2", 3);
        view.apply(&local.name, &upserts(mk_full_state(&local, 2)));
        view.apply(&c1.name, &upserts(mk_full_state(&c1, 2)));
        view.apply(&c2.name, &upserts(mk_full_state(&c2, 2)));

        let changes = view.drain(&c1.name);
        assert_eq!(changes.len(), 5);
        assert!(changes.iter().all(|c| matches!(c, Change::Delete(_))));
        assert_eq!(view.counts(&c1.name), None);
        assert_eq!(view.clusters(), vec![local.name.clone(), c2.name.clone()]);
        assert_eq!(view.counts(&c2.name).unwrap().endpoints, 2);
        assert!(view.lookup("10.2.0.0".parse().unwrap()).is_none());
        assert!(view.lookup("10.3.0.0".parse().unwrap()).is_some());
        let svc = view.service(&mk_service_name(), Instant::now()).unwrap();
        let contributors: Vec<_> = svc.clusters.iter().map(|c| c.cluster.as_str()).collect();
        assert_eq!(contributors, vec!["local", "c2"]);
        assert!(view.drain(&c1.name).is_empty());
    }

    #[test]
    fn services_version_moves_with_services_reachability_and_drains_only() {
        let (mut view, _) = mk_view();
        let c1 = mk_cluster("c1", 2);
        let v0 = view.services_version();
        view.apply(&c1.name, &upserts(mk_full_state(&c1, 2)));
        let v1 = view.services_version();
        assert!(v1 > v0, "a service arrived");
        view.apply(&c1.name, &upserts(mk_full_state(&c1, 3)));
        assert_eq!(view.services_version(), v1, "only an endpoint changed");

        let now = Instant::now();
        view.set_reachable(&c1.name, false, now);
        let v2 = view.services_version();
        assert!(v2 > v1, "the peer went down");
        view.set_reachable(&c1.name, false, now);
        assert_eq!(view.services_version(), v2, "still down");
        view.set_reachable(&c1.name, true, now);
        let v3 = view.services_version();
        assert!(v3 > v2, "the peer came back");

        view.drain(&c1.name);
        assert!(view.services_version() > v3);
    }

    #[test]
    fn lookup_names_cluster_pod_and_identity_labels() {
        let (mut view, _) = mk_view();
        let c1 = mk_cluster("c1", 2);
        view.apply(&c1.name, &upserts(mk_full_state(&c1, 2)));
        let found = view.lookup("10.2.0.1".parse().unwrap()).unwrap();
        assert_eq!(found.cluster, c1.name);
        assert_eq!(found.namespace.as_deref(), Some("test"));
        assert_eq!(found.pod.as_deref(), Some("pod-10.2.0.1"));
        let labels = found.labels.unwrap();
        assert_eq!(labels.cluster(), Some("c1"));
        assert_eq!(view.identity(found.identity).unwrap().0, c1.name);
        assert!(view.lookup("10.9.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn an_ip_claimed_twice_prefers_local_then_lowest_name_and_is_reported() {
        let (mut view, local) = mk_view();
        let b = mk_cluster("b", 2);
        let a = mk_cluster("a", 3);
        let ip = "10.7.0.1";
        for c in [&b, &a] {
            let e = mk_endpoint(ip, c.identity_range().first() + 1);
            view.apply(&c.name, &[Change::Upsert(Resource::Endpoint(e))]);
        }
        let addr: IpAddr = ip.parse().unwrap();
        assert_eq!(view.lookup(addr).unwrap().cluster, a.name);
        let e = mk_endpoint(ip, local.identity_range().first() + 1);
        view.apply(&local.name, &[Change::Upsert(Resource::Endpoint(e))]);
        assert_eq!(view.lookup(addr).unwrap().cluster, local.name);
        assert_eq!(
            view.conflicts(),
            vec![IpConflict {
                prefix: crate::model::IpPrefix::host(addr),
                clusters: vec![local.name.clone(), a.name.clone(), b.name.clone()],
            }]
        );

        view.drain(&a.name);
        view.drain(&local.name);
        assert_eq!(view.lookup(addr).unwrap().cluster, b.name);
        assert!(view.conflicts().is_empty());
    }

    #[test]
    fn views_serialize_for_the_query_api() {
        let (mut view, local) = mk_view();
        view.apply(&local.name, &upserts(mk_full_state(&local, 1)));
        let svc = view.service(&mk_service_name(), Instant::now()).unwrap();
        let json = serde_json::to_value(&svc).unwrap();
        assert_eq!(json["name"], "test/echo");
        assert_eq!(json["reason"], "all-ready");
        assert_eq!(
            json["selected"][0]["ports"]["http"],
            serde_json::json!({"protocol": "TCP", "port": 8080})
        );
        let back: ServiceView = serde_json::from_value(json).unwrap();
        assert_eq!(back, svc);

        let found = view.lookup("10.1.0.0".parse().unwrap()).unwrap();
        let json = serde_json::to_value(&found).unwrap();
        assert_eq!(json["prefix"], "10.1.0.0");
        assert!(json["labels"][0].as_str().unwrap().starts_with("k8s:"));
        let back: IpcacheEntryView = serde_json::from_value(json).unwrap();
        assert_eq!(back, found);
    }
}
