//! Which cluster ids are taken, shared by every link of one agent: two peers claiming
//! the same id would mix their identities (an identity's cluster is its high bits), so
//! the second one is refused until the conflict is fixed.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use thiserror::Error;

use crate::model::{Cluster, ClusterId, ClusterName};

/// Why a peer may not use a cluster id.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum IdConflict {
    #[error("cluster id {id} is the local cluster's ({local:?})")]
    Local { id: ClusterId, local: ClusterName },
    #[error("cluster id {id} is already used by peer {holder:?}")]
    Taken { id: ClusterId, holder: ClusterName },
}

/// The cluster ids in use by this agent's links, and the local cluster's own. Cheap to
/// clone; clones share the registry.
#[derive(Clone, Debug)]
pub struct IdRegistry {
    local: Cluster,
    held: Arc<Mutex<HashMap<ClusterId, ClusterName>>>,
}

impl IdRegistry {
    /// A registry in which only `local`'s id is taken.
    pub fn new(local: &Cluster) -> Self {
        Self {
            local: local.clone(),
            held: Arc::default(),
        }
    }

    /// Reserves `id` for `peer`. Reserving an id the peer already holds succeeds.
    pub fn reserve(&self, id: ClusterId, peer: &ClusterName) -> Result<(), IdConflict> {
        if id == self.local.id {
            return Err(IdConflict::Local {
                id,
                local: self.local.name.clone(),
            });
        }
        let mut held = self.held.lock();
        match held.get(&id) {
            Some(holder) if holder != peer => Err(IdConflict::Taken {
                id,
                holder: holder.clone(),
            }),
            Some(_) => Ok(()),
            None => {
                held.insert(id, peer.clone());
                Ok(())
            }
        }
    }

    /// Releases `id` if `peer` holds it; another peer's reservation is left alone.
    pub fn release(&self, id: ClusterId, peer: &ClusterName) {
        let mut held = self.held.lock();
        if held.get(&id) == Some(peer) {
            held.remove(&id);
        }
    }

    /// The peer holding `id`, if any (the local cluster's id is not held by a peer).
    pub fn holder(&self, id: ClusterId) -> Option<ClusterName> {
        self.held.lock().get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdMode;

    fn mk_name(s: &str) -> ClusterName {
        ClusterName::new(s).unwrap()
    }

    fn mk_id(id: u32) -> ClusterId {
        ClusterId::new(id, IdMode::Normal).unwrap()
    }

    fn mk_registry() -> IdRegistry {
        IdRegistry::new(&Cluster::new(mk_name("local"), mk_id(1), IdMode::Normal))
    }

    #[test]
    fn the_local_id_is_never_reserved_for_a_peer() {
        let ids = mk_registry();
        let err = ids.reserve(mk_id(1), &mk_name("c2")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cluster id 1 is the local cluster's (\"local\")"
        );
        assert_eq!(ids.holder(mk_id(1)), None);
    }

    #[test]
    fn an_id_held_by_one_peer_is_refused_to_another() {
        let ids = mk_registry();
        let (c2, c3) = (mk_name("c2"), mk_name("c3"));
        ids.reserve(mk_id(2), &c2).unwrap();
        ids.reserve(mk_id(2), &c2).unwrap();
        let err = ids.reserve(mk_id(2), &c3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cluster id 2 is already used by peer \"c2\""
        );
        assert_eq!(ids.holder(mk_id(2)), Some(c2));
    }

    #[test]
    fn release_frees_only_the_holders_reservation() {
        let ids = mk_registry();
        let (c2, c3) = (mk_name("c2"), mk_name("c3"));
        ids.reserve(mk_id(2), &c2).unwrap();
        ids.release(mk_id(2), &c3);
        assert_eq!(ids.holder(mk_id(2)), Some(c2.clone()));
        ids.release(mk_id(2), &c2);
        assert_eq!(ids.holder(mk_id(2)), None);
        ids.reserve(mk_id(2), &c3).unwrap();
    }

    #[test]
    fn clones_share_the_reservations() {
        let ids = mk_registry();
        let other = ids.clone();
        ids.reserve(mk_id(7), &mk_name("c7")).unwrap();
        assert!(other.reserve(mk_id(7), &mk_name("c8")).is_err());
    }
}
