//! The current state of each kind: encoded upserts by key, with the marks of a relist
//! and a snapshot shared by the watchers that start while it is current.
//!
//! Built to be small, since it holds every resource of a cluster: each kind has its own
//! map keyed by its bare key (an endpoint's slot holds an `IpPrefix`, not a
//! `ResourceKey` sized for a service name), and the encoded upserts lie one after
//! another in an arena per kind ([`Arena`]). A snapshot freezes the arena and hands out
//! slices of it: no copy of the bytes, and nothing allocated per entry but its handle.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use super::arena::Arena;
use crate::model::{IdentityId, IpPrefix, Kind, ResourceKey, ServiceName};

/// The key of one kind, as its map holds it.
pub(super) trait KindKey: Clone + Eq + Hash {
    fn into_resource_key(self) -> ResourceKey;
}

impl KindKey for String {
    fn into_resource_key(self) -> ResourceKey {
        ResourceKey::Node(self)
    }
}

impl KindKey for ServiceName {
    fn into_resource_key(self) -> ResourceKey {
        ResourceKey::Service(self)
    }
}

impl KindKey for IdentityId {
    fn into_resource_key(self) -> ResourceKey {
        ResourceKey::Identity(self)
    }
}

impl KindKey for IpPrefix {
    fn into_resource_key(self) -> ResourceKey {
        ResourceKey::Endpoint(self)
    }
}

/// Service exports are few: their state is keyed by the whole resource key.
impl KindKey for ResourceKey {
    fn into_resource_key(self) -> ResourceKey {
        self
    }
}

/// Arena bytes no entry points at that a compaction waits for: below this, rewriting
/// the arena costs more than the garbage does.
const COMPACT_MIN: usize = 64 * 1024;

/// Bytes of an arena offset or length: 48 bits, as many as an address has on the
/// machines this runs on, so every offset of an allocation fits.
const OFFSET_BYTES: usize = 6;

/// One resource: where its latest upsert is in its kind's arena, encoded (which embeds
/// the revision that wrote it), and the relist that last saw it. Nothing decoded is
/// kept. Byte arrays, not integers, so that it packs next to its key without padding:
/// an endpoint's map slot (key included) is 34 bytes.
#[derive(Clone, Copy)]
struct Entry {
    generation: [u8; 4],
    at: [u8; OFFSET_BYTES],
    len: [u8; OFFSET_BYTES],
}

fn pack(n: usize) -> [u8; OFFSET_BYTES] {
    let mut packed = [0; OFFSET_BYTES];
    packed.copy_from_slice(&(n as u64).to_le_bytes()[..OFFSET_BYTES]);
    packed
}

fn unpack(packed: [u8; OFFSET_BYTES]) -> usize {
    let mut bytes = [0; 8];
    bytes[..OFFSET_BYTES].copy_from_slice(&packed);
    // At most 48 bits: fits a `usize` of 64.
    u64::from_le_bytes(bytes) as usize
}

impl Entry {
    fn new(generation: u32, at: usize, len: usize) -> Self {
        Self {
            generation: generation.to_le_bytes(),
            at: pack(at),
            len: pack(len),
        }
    }

    fn generation(self) -> u32 {
        u32::from_le_bytes(self.generation)
    }

    fn len(self) -> usize {
        unpack(self.len)
    }

    fn range(self) -> std::ops::Range<usize> {
        let at = unpack(self.at);
        at..at + self.len()
    }
}

/// One kind's resources: a map from key to where the bytes are, and the bytes one
/// after another in one arena (no allocation, header or pointer per resource).
/// Replaced and deleted resources leave garbage in the arena, compacted away once it
/// outweighs what is live, so the arena holds at most twice the live bytes.
pub(super) struct KindState<K> {
    entries: HashMap<K, Entry>,
    arena: Arena,
    /// Bytes of the arena no entry points at.
    garbage: usize,
    /// Bumped by every change, so a snapshot knows whether it is current.
    version: u64,
    /// The last snapshot handed out, held weakly: shared while watchers still stream
    /// it and the state has not changed, freed with its last reader.
    snapshot: Option<(u64, Weak<[Bytes]>)>,
}

impl<K> Default for KindState<K> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            arena: Arena::default(),
            garbage: 0,
            version: 0,
            snapshot: None,
        }
    }
}

impl<K: KindKey> KindState<K> {
    fn upsert(&mut self, key: K, bytes: &[u8], generation: u32) {
        let entry = Entry::new(generation, self.arena.push(bytes), bytes.len());
        if let Some(old) = self.entries.insert(key, entry) {
            self.garbage += old.len();
        }
        self.changed();
    }

    /// Whether the key was held.
    fn delete(&mut self, key: &K) -> bool {
        let Some(old) = self.entries.remove(key) else {
            return false;
        };
        self.garbage += old.len();
        self.changed();
        true
    }

    /// Marks `key` as seen by relist `generation`; returns whether it holds exactly
    /// `bytes` (then the relist brings nothing new for it).
    fn mark(&mut self, key: &K, bytes: &[u8], generation: u32) -> bool {
        match self.entries.get_mut(key) {
            Some(entry) => {
                entry.generation = generation.to_le_bytes();
                self.arena.get(entry.range()) == bytes
            }
            None => false,
        }
    }

    /// Makes `key` unseen by relist `generation`, so that the sweep deletes it.
    fn unmark(&mut self, key: &K, generation: u32) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.generation = generation.wrapping_sub(1).to_le_bytes();
        }
    }

    fn changed(&mut self) {
        self.version += 1;
        if self.garbage > COMPACT_MIN && self.garbage > self.arena.len() - self.garbage {
            self.compact();
        }
    }

    /// Rewrites the arena with the live bytes only.
    fn compact(&mut self) {
        let mut arena = Arena::with_capacity(self.arena.len() - self.garbage);
        for entry in self.entries.values_mut() {
            let bytes = self.arena.get(entry.range());
            *entry = Entry::new(entry.generation(), arena.push(bytes), bytes.len());
        }
        self.arena = arena;
        self.garbage = 0;
    }
}

/// What every kind's state does, whatever its key.
pub(super) trait AnyKindState {
    fn len(&self) -> usize;
    fn clear(&mut self);
    /// Removes every entry relist `generation` did not see; returns their keys.
    fn sweep(&mut self, generation: u32) -> Vec<ResourceKey>;
    /// Every entry's bytes, shared with other watchers while the state is unchanged.
    fn snapshot(&mut self) -> Arc<[Bytes]>;
}

impl<K: KindKey> AnyKindState for KindState<K> {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn clear(&mut self) {
        self.entries = HashMap::new();
        self.arena = Arena::default();
        self.garbage = 0;
        self.version += 1;
    }

    fn sweep(&mut self, generation: u32) -> Vec<ResourceKey> {
        let mut gone = Vec::new();
        let mut garbage = 0;
        self.entries.retain(|key, entry| {
            let seen = entry.generation() == generation;
            if !seen {
                garbage += entry.len();
                gone.push(key.clone().into_resource_key());
            }
            seen
        });
        if !gone.is_empty() {
            self.garbage += garbage;
            self.changed();
        }
        gone
    }

    fn snapshot(&mut self) -> Arc<[Bytes]> {
        if let Some((version, weak)) = &self.snapshot
            && *version == self.version
            && let Some(shared) = weak.upgrade()
        {
            return shared;
        }
        // Slices of the frozen arena: a snapshot of a changed state copies no bytes
        // (what it holds stays alive while it is read, compaction or not).
        self.arena.freeze();
        let snapshot: Arc<[Bytes]> = self
            .entries
            .values()
            .map(|entry| self.arena.shared(entry.range()))
            .collect();
        self.snapshot = Some((self.version, Arc::downgrade(&snapshot)));
        snapshot
    }
}

/// Every kind's state.
#[derive(Default)]
pub(super) struct States {
    nodes: KindState<String>,
    services: KindState<ServiceName>,
    identities: KindState<IdentityId>,
    endpoints: KindState<IpPrefix>,
    service_exports: KindState<ResourceKey>,
}

/// Runs `$body` on the state of `$key`'s kind, with `$k` bound to the bare key.
macro_rules! by_key {
    ($states:expr, $key:expr, |$state:ident, $k:ident| $body:expr) => {
        match $key {
            ResourceKey::Node($k) => {
                let $state = &mut $states.nodes;
                $body
            }
            ResourceKey::Service($k) => {
                let $state = &mut $states.services;
                $body
            }
            ResourceKey::Identity($k) => {
                let $state = &mut $states.identities;
                $body
            }
            ResourceKey::Endpoint($k) => {
                let $state = &mut $states.endpoints;
                $body
            }
            $k @ ResourceKey::ServiceExport(_) => {
                let $state = &mut $states.service_exports;
                $body
            }
        }
    };
}

impl States {
    pub(super) fn of(&mut self, kind: Kind) -> &mut dyn AnyKindState {
        match kind {
            Kind::Node => &mut self.nodes,
            Kind::Service => &mut self.services,
            Kind::Identity => &mut self.identities,
            Kind::Endpoint => &mut self.endpoints,
            Kind::ServiceExport => &mut self.service_exports,
        }
    }

    pub(super) fn len(&self, kind: Kind) -> usize {
        match kind {
            Kind::Node => self.nodes.len(),
            Kind::Service => self.services.len(),
            Kind::Identity => self.identities.len(),
            Kind::Endpoint => self.endpoints.len(),
            Kind::ServiceExport => self.service_exports.len(),
        }
    }

    pub(super) fn upsert(&mut self, key: ResourceKey, bytes: &[u8], generation: u32) {
        by_key!(self, key, |state, k| state.upsert(k, bytes, generation))
    }

    /// Whether the key was held.
    pub(super) fn delete(&mut self, key: &ResourceKey) -> bool {
        by_key!(self, key, |state, k| state.delete(k))
    }

    /// See [`KindState::mark`].
    pub(super) fn mark(&mut self, key: &ResourceKey, bytes: &[u8], generation: u32) -> bool {
        by_key!(self, key, |state, k| state.mark(k, bytes, generation))
    }

    /// See [`KindState::unmark`].
    pub(super) fn unmark(&mut self, key: &ResourceKey, generation: u32) {
        by_key!(self, key, |state, k| state.unmark(k, generation))
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
        let mut states = States::default();
        states.upsert(key("a"), b"a1", 0);
        let first = states.of(Kind::Node).snapshot();
        let again = states.of(Kind::Node).snapshot();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(&first[..], [Bytes::from_static(b"a1")]);

        states.upsert(key("b"), b"b22", 0);
        let changed = states.of(Kind::Node).snapshot();
        assert!(!Arc::ptr_eq(&first, &changed));
        let mut parts: Vec<&[u8]> = changed.iter().map(|b| &b[..]).collect();
        parts.sort();
        assert_eq!(parts, [&b"a1"[..], &b"b22"[..]]);
        // The unchanged entry's bytes are shared by both snapshots, not copied.
        let a1 = changed.iter().find(|b| &b[..] == b"a1").unwrap();
        assert_eq!(a1.as_ptr(), first[0].as_ptr());

        // The cache does not keep a snapshot alive: it goes with its last reader.
        drop((first, again, changed));
        let (_, weak) = states.nodes.snapshot.as_ref().unwrap();
        assert!(weak.upgrade().is_none());
        assert_eq!(states.of(Kind::Node).snapshot().len(), 2);
        assert_eq!(states.of(Kind::Endpoint).snapshot().len(), 0);
    }

    #[test]
    fn a_sweep_removes_what_the_relist_did_not_see() {
        let mut states = States::default();
        for n in ["a", "b", "c"] {
            states.upsert(key(n), n.as_bytes(), 1);
        }
        assert!(states.mark(&key("a"), b"a", 2));
        assert!(!states.mark(&key("b"), b"b2", 2));
        assert!(!states.mark(&key("z"), b"z", 2));
        states.unmark(&key("b"), 2);
        let mut gone = states.of(Kind::Node).sweep(2);
        gone.sort();
        assert_eq!(gone, vec![key("b"), key("c")]);
        assert_eq!(states.len(Kind::Node), 1);
    }

    #[test]
    fn replaced_and_deleted_bytes_are_compacted_away() {
        let mut state = KindState::<String>::default();
        let big = |n: u8| vec![n; 1000];
        for round in 0..=200u8 {
            for k in ["a", "b", "c"] {
                state.upsert(k.to_string(), &big(round), 1);
            }
        }
        assert!(state.delete(&"c".to_string()));
        // Never more garbage than live bytes, once past the minimum.
        let live = 2 * 1000;
        assert!(
            state.arena.len() <= 2 * 3000 + COMPACT_MIN,
            "{}",
            state.arena.len()
        );
        assert_eq!(state.arena.len() - state.garbage, live);
        assert!(state.mark(&"a".to_string(), &big(200), 2));
        assert!(!state.mark(&"b".to_string(), &big(199), 2));
        let snapshot = state.snapshot();
        assert_eq!(snapshot.len(), 2);
        assert!(snapshot.iter().all(|part| part[..] == big(200)[..]));
        state.compact();
        assert_eq!((state.arena.len(), state.garbage), (live, 0));
        assert!(state.mark(&"b".to_string(), &big(200), 2));
        assert_eq!(state.sweep(2), vec![]);
    }

    #[test]
    fn each_kind_keeps_its_own_keys() {
        let mut states = States::default();
        let endpoint = ResourceKey::Endpoint("10.0.0.1/32".parse().unwrap());
        states.upsert(endpoint.clone(), b"e", 0);
        states.upsert(key("n"), b"n", 0);
        assert_eq!((states.len(Kind::Endpoint), states.len(Kind::Node)), (1, 1));
        assert!(states.delete(&endpoint));
        assert!(!states.delete(&endpoint));
        assert_eq!(states.len(Kind::Endpoint), 0);
        assert_eq!(states.of(Kind::Endpoint).sweep(1), vec![]);
        assert_eq!(states.of(Kind::Node).sweep(1), vec![key("n")]);
    }
}
