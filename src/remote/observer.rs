//! A hook that sees every change a link applies to the mesh view, as it is applied: for
//! benchmarks and tests that must know *when* each change reached an agent's view, not
//! only what the view holds in the end. It is handed what arrived, including what the
//! view already held (so a duplicate delivery shows), after the view took it; the view
//! keeps compact copies, so nothing is copied for it. Production links have none.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::SharedView;
use crate::model::{Change, ClusterName, ResourceKey};

/// Told about the changes a link applied to the view, right after they were applied.
pub trait ApplyObserver: Send + Sync + fmt::Debug {
    /// `changes` from `peer` are in the view since `at`: each change of a frame as it is
    /// applied, one at a time and in the order they came (a full listing's as it
    /// arrives), or the deletions of the sweep at a listing's synced marker, together.
    fn applied(&self, peer: &ClusterName, changes: &[Change], at: Instant);
}

/// A shared observer, as [`LinkSettings`](super::LinkSettings) holds it.
pub type SharedObserver = Arc<dyn ApplyObserver>;

/// Applies `change` to `view`, then tells `observer`.
pub(super) fn apply_observed(
    view: &SharedView,
    peer: &ClusterName,
    change: &Change,
    observer: Option<&dyn ApplyObserver>,
) {
    view.write().apply_change(peer, change);
    if let Some(observer) = observer {
        observer.applied(peer, std::slice::from_ref(change), Instant::now());
    }
}

/// Sweeps from `view` what `peer` holds and `is_listed` does not name (the end of a
/// full listing, see [`MeshView::sweep`](crate::mesh::MeshView::sweep)), then tells
/// `observer` the deletions it made, if it made any.
pub(super) fn sweep_observed(
    view: &SharedView,
    peer: &ClusterName,
    is_listed: impl Fn(&ResourceKey) -> bool,
    observer: Option<&dyn ApplyObserver>,
) {
    let swept = view.write().sweep(peer, is_listed);
    if let Some(observer) = observer
        && !swept.is_empty()
    {
        observer.applied(peer, &swept, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::{Mutex, RwLock};

    use super::*;
    use crate::mesh::{MeshView, StalePolicy};
    use crate::model::Resource;
    use crate::proto::fixtures::{mk_cluster, mk_endpoint};

    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<(String, Vec<Change>)>>);

    impl ApplyObserver for Seen {
        fn applied(&self, peer: &ClusterName, changes: &[Change], _at: Instant) {
            self.0.lock().push((peer.to_string(), changes.to_vec()));
        }
    }

    #[test]
    fn the_observer_sees_changes_once_they_are_in_the_view() {
        let view: SharedView = Arc::new(RwLock::new(MeshView::new(
            mk_cluster("local", 1),
            StalePolicy::default(),
        )));
        let c2 = mk_cluster("c2", 2);
        let seen = Seen::default();
        let e1 = Resource::Endpoint(mk_endpoint(&c2, "10.2.0.1"));
        let e2 = Resource::Endpoint(mk_endpoint(&c2, "10.2.0.2"));
        let upserts = [Change::Upsert(e1.clone()), Change::Upsert(e2.clone())];
        for upsert in &upserts {
            apply_observed(&view, &c2.name, upsert, Some(&seen));
        }
        // A sweep that deletes nothing tells nothing; one that does tells its deletions.
        sweep_observed(&view, &c2.name, |_| true, Some(&seen));
        sweep_observed(&view, &c2.name, |k| *k == e1.key(), Some(&seen));
        // Without an observer, the view still changes.
        apply_observed(&view, &c2.name, &Change::Delete(e1.key()), None);
        assert_eq!(
            *seen.0.lock(),
            [
                ("c2".to_string(), vec![upserts[0].clone()]),
                ("c2".to_string(), vec![upserts[1].clone()]),
                ("c2".to_string(), vec![Change::Delete(e2.key())]),
            ]
        );
        assert_eq!(view.read().counts(&c2.name).unwrap().endpoints, 0);
    }
}
