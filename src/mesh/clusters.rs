//! The clusters the view holds data for: one slot per cluster name, addressed by a
//! small index so that the many per-endpoint entries never repeat a cluster's name.

use std::collections::{BTreeMap, HashMap};

use crate::model::{ClusterName, IdentityId, Node, Service, ServiceExport, ServiceName};

use super::labels::CompactLabels;
use super::stale::Reachability;

/// A cluster's slot in the [`ClusterTable`]. A slot is never reused for another name
/// (a drained cluster keeps its slot), so an index held anywhere always means the same
/// cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct ClusterIdx(u32);

/// The local cluster takes the first slot when the table is made.
pub(super) const LOCAL: ClusterIdx = ClusterIdx(0);

/// Everything one cluster contributed except its ipcache entries, which live in the
/// shared [`IpCache`](super::ipcache::IpCache) to stay compact.
pub(super) struct ClusterSlot {
    pub name: ClusterName,
    /// Seen (data or link state) and not drained since.
    pub present: bool,
    pub reachability: Reachability,
    pub nodes: BTreeMap<String, Node>,
    pub identities: BTreeMap<IdentityId, CompactLabels>,
    pub services: BTreeMap<ServiceName, Service>,
    /// The MCS-API service exports the cluster offers.
    pub service_exports: BTreeMap<ServiceName, ServiceExport>,
    /// How many ipcache entries this cluster holds.
    pub endpoints: usize,
}

impl ClusterSlot {
    fn new(name: ClusterName) -> Self {
        Self {
            name,
            present: true,
            reachability: Reachability::default(),
            nodes: BTreeMap::new(),
            identities: BTreeMap::new(),
            services: BTreeMap::new(),
            service_exports: BTreeMap::new(),
            endpoints: 0,
        }
    }
}

/// Every cluster slot, local first.
pub(super) struct ClusterTable {
    slots: Vec<ClusterSlot>,
    by_name: HashMap<ClusterName, ClusterIdx>,
}

impl ClusterTable {
    pub fn new(local: ClusterName) -> Self {
        let mut table = Self {
            slots: Vec::new(),
            by_name: HashMap::new(),
        };
        table.enter(&local);
        table
    }

    pub fn find(&self, name: &ClusterName) -> Option<ClusterIdx> {
        self.by_name.get(name).copied()
    }

    /// The slot of `name`, made if new, and marked present.
    pub fn enter(&mut self, name: &ClusterName) -> ClusterIdx {
        let idx = match self.find(name) {
            Some(idx) => idx,
            None => {
                // A slot is far larger than 4 bytes: 2^32 of them cannot exist.
                let idx =
                    ClusterIdx(u32::try_from(self.slots.len()).expect("fewer than 2^32 clusters"));
                self.slots.push(ClusterSlot::new(name.clone()));
                self.by_name.insert(name.clone(), idx);
                idx
            }
        };
        self.get_mut(idx).present = true;
        idx
    }

    pub fn get(&self, idx: ClusterIdx) -> &ClusterSlot {
        // Indices are only made by `enter`, and slots are never removed.
        &self.slots[idx.0 as usize]
    }

    pub fn get_mut(&mut self, idx: ClusterIdx) -> &mut ClusterSlot {
        &mut self.slots[idx.0 as usize]
    }

    pub fn name(&self, idx: ClusterIdx) -> &ClusterName {
        &self.get(idx).name
    }

    /// The order every listing uses: the local cluster first, then by name.
    pub fn rank(&self, idx: ClusterIdx) -> (bool, &ClusterName) {
        (idx != LOCAL, self.name(idx))
    }

    /// Present clusters in [`rank`](Self::rank) order.
    pub fn ordered(&self) -> Vec<ClusterIdx> {
        let mut present: Vec<ClusterIdx> = self
            .by_name
            .values()
            .copied()
            .filter(|idx| self.get(*idx).present)
            .collect();
        present.sort_by(|a, b| self.rank(*a).cmp(&self.rank(*b)));
        present
    }

    /// Present clusters other than the local one.
    pub fn peers(&self) -> impl Iterator<Item = (ClusterIdx, &ClusterSlot)> {
        self.by_name
            .values()
            .filter(|idx| **idx != LOCAL)
            .map(|idx| (*idx, self.get(*idx)))
            .filter(|(_, slot)| slot.present)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_name(s: &str) -> ClusterName {
        ClusterName::new(s).unwrap()
    }

    #[test]
    fn local_comes_first_then_names_and_slots_are_stable() {
        let mut t = ClusterTable::new(mk_name("m-local"));
        let b = t.enter(&mk_name("b"));
        let a = t.enter(&mk_name("a"));
        assert_eq!(t.ordered(), vec![LOCAL, a, b]);
        assert_eq!(t.enter(&mk_name("b")), b);

        t.get_mut(a).present = false;
        assert_eq!(t.ordered(), vec![LOCAL, b]);
        let peers: Vec<ClusterIdx> = t.peers().map(|(i, _)| i).collect();
        assert_eq!(peers, vec![b]);
        assert_eq!(
            t.enter(&mk_name("a")),
            a,
            "a returning cluster gets its slot back"
        );
    }
}
