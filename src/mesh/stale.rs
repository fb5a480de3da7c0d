//! What the view does with a peer it cannot reach (DESIGN.md §6 rule 5).
//!
//! Its nodes, ipcache entries and identities stay: removing them would break policy and
//! established flows for pods that are most likely still running. Its service backends
//! are withdrawn once it has been unreachable for the grace period — but not where that
//! would leave a service with nothing to select (decided per service, in
//! [`services`](super::services)), and not at all while more than half of the peers (at
//! least two) are unreachable at once: then the partition is most likely on our side,
//! and withdrawing would move all traffic onto whatever little we can still see.
//!
//! Everything here is computed from the `now` the caller passes in; nothing reads the
//! clock, so the rules are tested with made-up instants.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::clusters::{ClusterIdx, ClusterTable};

/// Long enough to ride out an apiserver rollout or a short partition without moving
/// traffic, short enough that a dead cluster stops receiving it within minutes.
const DEFAULT_GRACE: Duration = Duration::from_secs(5 * 60);

/// One unreachable peer says nothing about where the fault is; from two on, if they
/// are more than half of the peers, the fault is most likely ours.
const MIN_UNREACHABLE_FOR_ISOLATION: usize = 2;

/// How long an unreachable peer's service backends stay in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StalePolicy {
    /// A peer unreachable for at least this long is stale: its backends are withdrawn
    /// (subject to the exceptions above).
    pub grace: Duration,
}

impl Default for StalePolicy {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
        }
    }
}

/// Whether a peer's link is up, and since when it has been down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Reachability {
    unreachable_since: Option<Instant>,
}

impl Reachability {
    /// Records the link's state; a link already down keeps the instant it went down.
    pub fn set(&mut self, reachable: bool, now: Instant) {
        if reachable {
            self.unreachable_since = None;
        } else if self.unreachable_since.is_none() {
            self.unreachable_since = Some(now);
        }
    }

    pub fn is_reachable(&self) -> bool {
        self.unreachable_since.is_none()
    }

    /// When this peer becomes (or became) stale, if it is unreachable.
    pub fn stale_from(&self, grace: Duration) -> Option<Instant> {
        self.unreachable_since.map(|since| since + grace)
    }

    pub fn is_stale(&self, grace: Duration, now: Instant) -> bool {
        self.stale_from(grace).is_some_and(|from| now >= from)
    }
}

/// The stale peers at one instant, and whether withdrawing is suspended because this
/// cluster looks isolated.
#[derive(Debug)]
pub(super) struct Withdrawal {
    stale: BTreeSet<ClusterIdx>,
    suspended: bool,
}

impl Withdrawal {
    pub fn at(clusters: &ClusterTable, policy: StalePolicy, now: Instant) -> Self {
        let mut peers = 0;
        let mut unreachable = 0;
        let mut stale = BTreeSet::new();
        for (idx, slot) in clusters.peers() {
            peers += 1;
            if !slot.reachability.is_reachable() {
                unreachable += 1;
            }
            if slot.reachability.is_stale(policy.grace, now) {
                stale.insert(idx);
            }
        }
        Self {
            stale,
            suspended: unreachable >= MIN_UNREACHABLE_FOR_ISOLATION && unreachable * 2 > peers,
        }
    }

    /// The peer has been unreachable for the grace period (a fact, whatever is done
    /// about it).
    pub fn is_stale(&self, idx: ClusterIdx) -> bool {
        self.stale.contains(&idx)
    }

    /// The peer is stale and withdrawing is not suspended; whether a given service's
    /// backends are withdrawn also depends on what else that service has.
    pub fn may_withdraw(&self, idx: ClusterIdx) -> bool {
        !self.suspended && self.is_stale(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_that_stays_down_keeps_its_first_instant() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        let mut r = Reachability::default();
        assert!(r.is_reachable());
        assert_eq!(r.stale_from(grace), None);

        r.set(false, t0);
        r.set(false, t0 + Duration::from_secs(30));
        assert!(!r.is_reachable());
        assert_eq!(r.stale_from(grace), Some(t0 + grace));
        assert!(!r.is_stale(grace, t0 + Duration::from_secs(59)));
        assert!(r.is_stale(grace, t0 + grace));

        r.set(true, t0 + Duration::from_secs(90));
        assert!(r.is_reachable());
        assert!(!r.is_stale(grace, t0 + Duration::from_secs(90)));
    }

    #[test]
    fn default_grace_is_five_minutes() {
        assert_eq!(StalePolicy::default().grace, Duration::from_secs(300));
    }
}

#[cfg(test)]
mod view_tests {
    use std::time::{Duration, Instant};

    use crate::mesh::fixtures::*;
    use crate::mesh::{MeshView, SelectionReason, StalePolicy};
    use crate::model::{BackendConditions, Change, Cluster, Resource};

    const GRACE: Duration = Duration::from_secs(60);
    const READY: BackendConditions = BackendConditions::READY;

    /// A view of `local` with peers `c2`..`c<1+peers>`, each (local included) backing
    /// `test/echo` with one ready backend `10.<id>.0.1`.
    fn mk_mesh(peers: u32) -> (MeshView, Vec<Cluster>) {
        let local = mk_cluster("local", 1);
        let mut view = MeshView::new(local.clone(), StalePolicy { grace: GRACE });
        let mut clusters = vec![local];
        clusters.extend((2..2 + peers).map(|id| mk_cluster(&format!("c{id}"), id)));
        for c in &clusters {
            let s = mk_service(c, &[(&format!("10.{}.0.1", c.id), READY)]);
            view.apply(&c.name, &[Change::Upsert(Resource::Service(s))]);
        }
        (view, clusters)
    }

    fn selected_clusters(view: &MeshView, now: Instant) -> Vec<String> {
        let svc = view.service(&mk_service_name(), now).unwrap();
        svc.selected.iter().map(|s| s.cluster.to_string()).collect()
    }

    #[test]
    fn backends_are_withdrawn_after_the_grace_period_not_before() {
        let (mut view, c) = mk_mesh(2);
        let t0 = Instant::now();
        view.set_reachable(&c[1].name, false, t0);
        assert_eq!(
            selected_clusters(&view, t0 + GRACE - Duration::from_secs(1)),
            vec!["local", "c2", "c3"]
        );
        let later = t0 + GRACE;
        assert_eq!(selected_clusters(&view, later), vec!["local", "c3"]);
        let svc = view.service(&mk_service_name(), later).unwrap();
        let c2 = &svc.clusters[1];
        assert!(c2.stale && c2.withdrawn);
        assert_eq!(c2.backends.len(), 1, "withdrawn backends are still shown");

        // Its other state stays while it is unreachable.
        assert_eq!(view.counts(&c[1].name).unwrap().services, 1);

        view.set_reachable(&c[1].name, true, later);
        assert_eq!(selected_clusters(&view, later), vec!["local", "c2", "c3"]);
    }

    #[test]
    fn the_last_backends_of_a_service_are_never_withdrawn() {
        let (mut view, c) = mk_mesh(1);
        let unready = mk_service(&c[0], &[("10.1.0.1", NOT_READY)]);
        view.apply(&c[0].name, &[Change::Upsert(Resource::Service(unready))]);
        let t0 = Instant::now();
        view.set_reachable(&c[1].name, false, t0);
        let later = t0 + GRACE * 10;
        assert_eq!(selected_clusters(&view, later), vec!["c2"]);
        let svc = view.service(&mk_service_name(), later).unwrap();
        assert!(svc.clusters[1].stale && !svc.clusters[1].withdrawn);
        assert_eq!(svc.reason, SelectionReason::AllReady);
    }

    #[test]
    fn nothing_is_withdrawn_while_most_peers_are_unreachable() {
        let (mut view, c) = mk_mesh(3);
        let t0 = Instant::now();
        view.set_reachable(&c[1].name, false, t0);
        view.set_reachable(&c[2].name, false, t0);
        let later = t0 + GRACE * 10;
        // Two of three peers are gone: we are probably the isolated one.
        assert_eq!(
            selected_clusters(&view, later),
            vec!["local", "c2", "c3", "c4"]
        );
        let svc = view.service(&mk_service_name(), later).unwrap();
        assert!(svc.clusters[1].stale && !svc.clusters[1].withdrawn);

        // One of three is a peer's problem: withdrawn.
        view.set_reachable(&c[2].name, true, later);
        assert_eq!(selected_clusters(&view, later), vec!["local", "c3", "c4"]);
    }

    #[test]
    fn a_single_unreachable_peer_of_two_is_withdrawn() {
        let (mut view, c) = mk_mesh(2);
        let t0 = Instant::now();
        view.set_reachable(&c[2].name, false, t0);
        assert_eq!(selected_clusters(&view, t0 + GRACE), vec!["local", "c2"]);
    }

    #[test]
    fn the_local_cluster_is_never_stale() {
        let (mut view, c) = mk_mesh(1);
        let t0 = Instant::now();
        view.set_reachable(&c[0].name, false, t0);
        assert_eq!(
            selected_clusters(&view, t0 + GRACE * 10),
            vec!["local", "c2"]
        );
        assert_eq!(view.next_stale_deadline(t0), None);
    }

    #[test]
    fn the_next_deadline_is_the_earliest_future_one() {
        let (mut view, c) = mk_mesh(3);
        let t0 = Instant::now();
        assert_eq!(view.next_stale_deadline(t0), None);
        view.set_reachable(&c[1].name, false, t0);
        view.set_reachable(&c[2].name, false, t0 + Duration::from_secs(10));
        assert_eq!(view.next_stale_deadline(t0), Some(t0 + GRACE));
        assert_eq!(
            view.next_stale_deadline(t0 + GRACE),
            Some(t0 + GRACE + Duration::from_secs(10))
        );
        assert_eq!(view.next_stale_deadline(t0 + GRACE * 2), None);
    }

    #[test]
    fn a_drained_peer_no_longer_counts() {
        let (mut view, c) = mk_mesh(3);
        let t0 = Instant::now();
        view.set_reachable(&c[1].name, false, t0);
        view.set_reachable(&c[2].name, false, t0);
        view.drain(&c[2].name);
        // One of two remaining peers is unreachable: not isolated, c2 is withdrawn.
        assert_eq!(selected_clusters(&view, t0 + GRACE), vec!["local", "c4"]);
    }
}
