//! The current state of one kind: encoded upserts by key, with the marks of a relist
//! and a snapshot shared by the watchers that start while it is current.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use crate::model::ResourceKey;

/// One resource: its latest upsert, encoded (which embeds the revision that wrote it),
/// and the relist that last saw it. Nothing decoded is kept.
struct Entry {
    bytes: Bytes,
    generation: u32,
}

#[derive(Default)]
pub(super) struct KindState {
    entries: HashMap<ResourceKey, Entry>,
    /// Bumped by every change, so a snapshot knows whether it is current.
    version: u64,
    /// The last snapshot handed out, held weakly: shared while watchers still stream
    /// it and the state has not changed, freed with its last reader.
    snapshot: Option<(u64, Weak<[Bytes]>)>,
}

impl KindState {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn upsert(&mut self, key: ResourceKey, bytes: Bytes, generation: u32) {
        self.entries.insert(key, Entry { bytes, generation });
        self.version += 1;
    }

    /// Whether the key was held.
    pub(super) fn delete(&mut self, key: &ResourceKey) -> bool {
        let held = self.entries.remove(key).is_some();
        if held {
            self.version += 1;
        }
        held
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.version += 1;
    }

    /// Marks `key` as seen by relist `generation`; returns whether it holds exactly
    /// `bytes` (then the relist brings nothing new for it).
    pub(super) fn mark(&mut self, key: &ResourceKey, bytes: &Bytes, generation: u32) -> bool {
        match self.entries.get_mut(key) {
            Some(entry) => {
                entry.generation = generation;
                entry.bytes == *bytes
            }
            None => false,
        }
    }

    /// Makes `key` unseen by relist `generation`, so that the sweep deletes it.
    pub(super) fn unmark(&mut self, key: &ResourceKey, generation: u32) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.generation = generation.wrapping_sub(1);
        }
    }

    /// Removes every entry relist `generation` did not see; returns their keys.
    pub(super) fn sweep(&mut self, generation: u32) -> Vec<ResourceKey> {
        let mut gone = Vec::new();
        self.entries.retain(|key, entry| {
            let seen = entry.generation == generation;
            if !seen {
                gone.push(key.clone());
            }
            seen
        });
        if !gone.is_empty() {
            self.version += 1;
        }
        gone
    }

    /// Every entry's bytes, shared with other watchers while the state is unchanged.
    pub(super) fn snapshot(&mut self) -> Arc<[Bytes]> {
        if let Some((version, weak)) = &self.snapshot
            && *version == self.version
            && let Some(shared) = weak.upgrade()
        {
            return shared;
        }
        let snapshot: Arc<[Bytes]> = self.entries.values().map(|e| e.bytes.clone()).collect();
        self.snapshot = Some((self.version, Arc::downgrade(&snapshot)));
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> ResourceKey {
        ResourceKey::Node(n.to_string())
    }

    #[test]
    fn snapshots_are_shared_until_the_state_changes() {
        let mut state = KindState::default();
        state.upsert(key("a"), Bytes::from_static(b"a1"), 0);
        let first = state.snapshot();
        let again = state.snapshot();
        assert!(Arc::ptr_eq(&first, &again));

        state.upsert(key("b"), Bytes::from_static(b"b1"), 0);
        let changed = state.snapshot();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert_eq!(changed.len(), 2);

        // The cache does not keep a snapshot alive: it goes with its last reader.
        drop((first, again, changed));
        let (_, weak) = state.snapshot.as_ref().unwrap();
        assert!(weak.upgrade().is_none());
        assert_eq!(state.snapshot().len(), 2);
    }

    #[test]
    fn a_sweep_removes_what_the_relist_did_not_see() {
        let mut state = KindState::default();
        for n in ["a", "b", "c"] {
            state.upsert(key(n), Bytes::from(n.to_string()), 1);
        }
        assert!(state.mark(&key("a"), &Bytes::from_static(b"a"), 2));
        assert!(!state.mark(&key("b"), &Bytes::from_static(b"b2"), 2));
        assert!(!state.mark(&key("z"), &Bytes::from_static(b"z"), 2));
        state.unmark(&key("b"), 2);
        let mut gone = state.sweep(2);
        gone.sort();
        assert_eq!(gone, vec![key("b"), key("c")]);
        assert_eq!(state.len(), 1);
    }
}
