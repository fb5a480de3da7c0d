//! The stale policy on the cache keys: what the view withdraws from an unreachable
//! peer's services is withdrawn from their cache keys too (the key stays, with no
//! backends, so Cilium keeps the service's frontends and other clusters' backends).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;

use super::CacheKeys;
use crate::kvstore::codec;
use crate::mesh::MeshView;
use crate::model::{ClusterName, IdMode, ServiceName};

/// How often the view's verdict is read: a peer's grace period ends within a second of
/// being applied here.
const POLL: Duration = Duration::from_secs(1);

/// `value` (a `ClusterService`) with no backends; `None` if it does not decode.
pub(super) fn without_backends(value: &Bytes, mode: IdMode) -> Option<Bytes> {
    let mut svc = codec::decode_service(value, mode).ok()?;
    svc.backends.clear();
    Some(codec::encode_service(&svc))
}

/// The services whose backends `view` withdraws now, by peer.
fn withdrawn_now(view: &MeshView, now: Instant) -> BTreeMap<ClusterName, BTreeSet<ServiceName>> {
    let mut withdrawn: BTreeMap<ClusterName, BTreeSet<ServiceName>> = BTreeMap::new();
    for service in view.services(now) {
        for cluster in service.clusters.iter().filter(|c| c.withdrawn && !c.local) {
            withdrawn
                .entry(cluster.cluster.clone())
                .or_default()
                .insert(service.name.clone());
        }
    }
    withdrawn
}

/// Keeps `keys` in step with `view`'s stale policy, for as long as it runs.
pub async fn follow_stale_policy(keys: Arc<CacheKeys>, view: Arc<RwLock<MeshView>>) {
    loop {
        tokio::time::sleep(POLL).await;
        let withdrawn = withdrawn_now(&view.read(), Instant::now());
        keys.set_withdrawn(&withdrawn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::StalePolicy;
    use crate::model::{Change, Resource};
    use crate::proto::fixtures::{mk_cluster, mk_service};

    #[test]
    fn a_withdrawn_service_keeps_everything_but_its_backends() {
        let c2 = mk_cluster("c2", 2);
        let svc = mk_service(&c2, "shop", "cart");
        let emptied = without_backends(&codec::encode_service(&svc), c2.mode).unwrap();
        let back = codec::decode_service(&emptied, c2.mode).unwrap();
        assert!(back.backends.is_empty());
        assert_eq!((back.name, back.frontends), (svc.name, svc.frontends));
        assert_eq!(
            without_backends(&Bytes::from_static(b"{nope"), c2.mode),
            None
        );
    }

    #[test]
    fn only_a_stale_peer_s_services_are_withdrawn_and_never_the_last_backends() {
        let local = mk_cluster("local", 1);
        let grace = Duration::from_secs(10);
        let mut view = MeshView::new(local.clone(), StalePolicy { grace });
        let (c2, c3) = (mk_cluster("c2", 2), mk_cluster("c3", 3));
        for (c, reachable) in [(&local, true), (&c2, false), (&c3, true)] {
            let svc = Resource::Service(mk_service(c, "shop", "cart"));
            view.apply(&c.name, &[Change::Upsert(svc)]);
            view.set_reachable(&c.name, true, Instant::now());
            view.set_reachable(&c.name, reachable, Instant::now());
        }
        let t0 = Instant::now();
        assert!(
            withdrawn_now(&view, t0).is_empty(),
            "not before the grace period"
        );
        let later = withdrawn_now(&view, t0 + grace * 2);
        assert_eq!(later.keys().collect::<Vec<_>>(), [&c2.name]);
    }
}
