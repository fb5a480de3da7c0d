//! The embedded store's state: keys, the bounded event history and leases. It is plain
//! data changed synchronously under the store's lock, which is never held across an
//! `.await`, so it can be tested without a runtime.
//!
//! Every write is one immutable [`Record`], held by the key's slot and by the history
//! alike: the history costs a pointer per event, not a copy of the key and value.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::record::{Keyed, Record};
use crate::kvstore::{CasOutcome, Expect, KeyValue, LeaseId, StoreError};
use crate::model::Revision;

/// The revision of an empty store; the first write is revision 2, as in etcd.
const INITIAL_REVISION: Revision = 1;

/// Keys, history and leases of one embedded store.
pub(super) struct State {
    revision: Revision,
    /// Each key's latest put. A hash set, not a tree: a third less memory per key. The
    /// price is that a listing scans every key under the lock, whatever its prefix (at
    /// 100k keys, a few milliseconds during which writers wait); listings are rare — a
    /// watch's start or re-list, the exporter's adoption at start.
    kvs: HashSet<Keyed>,
    history: History,
    leases: HashMap<LeaseId, Lease>,
    next_lease: i64,
}

/// The most recent events, oldest first. Every event has a sequence number (its position
/// since the store began) so a watcher's cursor is an index, and resuming mid-revision
/// (after a bounded read) is exact. An event is its record: the revision is the record's.
struct History {
    events: VecDeque<Record>,
    capacity: usize,
    /// Sequence number of `events[0]`.
    first_seq: u64,
    /// Revision of the newest event evicted so far: a resume point below it has lost events.
    evicted_through: Revision,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// What a watcher finds after its cursor.
pub(super) enum Read {
    /// The cursor fell out of the history: the watcher must list again.
    Lost,
    /// The events scanned (only those under the prefix were kept) and the next cursor.
    Events { next: u64 },
}

impl State {
    /// An empty store keeping at most `history` events for resuming watchers.
    pub(super) fn new(history: usize, first_lease: i64) -> Self {
        State {
            revision: INITIAL_REVISION,
            kvs: HashSet::new(),
            history: History {
                events: VecDeque::new(),
                capacity: history.max(1),
                first_seq: 0,
                evicted_through: 0,
            },
            leases: HashMap::new(),
            next_lease: first_lease,
        }
    }

    pub(super) fn revision(&self) -> Revision {
        self.revision
    }

    pub(super) fn get(&self, key: &str) -> Option<KeyValue> {
        self.record(key).map(Record::to_key_value)
    }

    fn record(&self, key: &str) -> Option<&Record> {
        self.kvs
            .get(&Keyed(Record::probe(key)))
            .map(|keyed| &keyed.0)
    }

    /// The records of every key under `prefix`, in no order: a consistent listing, since
    /// records never change. The caller sorts it (`record::sort_by_key`) once it has
    /// let go of the lock.
    pub(super) fn listed(&self, prefix: &str) -> Vec<Record> {
        self.kvs
            .iter()
            .filter(|keyed| keyed.0.key_starts_with(prefix.as_bytes()))
            .map(|keyed| keyed.0.clone())
            .collect()
    }

    pub(super) fn put(
        &mut self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
        now: Instant,
    ) -> Result<Revision, StoreError> {
        if let Some(id) = lease {
            self.live_lease(id, now)?;
        }
        let revision = self.bump();
        self.apply_put(revision, key, value, lease);
        Ok(revision)
    }

    pub(super) fn delete(&mut self, key: &str) -> bool {
        if !self.kvs.contains(&Keyed(Record::probe(key))) {
            return false;
        }
        let revision = self.bump();
        self.apply_delete(revision, key);
        true
    }

    pub(super) fn compare_and_swap(
        &mut self,
        key: &str,
        expect: &Expect,
        value: Option<Bytes>,
        lease: Option<LeaseId>,
        now: Instant,
    ) -> Result<CasOutcome, StoreError> {
        let current = self.record(key);
        let holds = match (expect, current) {
            (Expect::Absent, current) => current.is_none(),
            (Expect::ModRevision(rev), Some(record)) => record.mod_revision() == *rev,
            (Expect::Value(v), Some(record)) => record.value_eq(v),
            (Expect::ModRevision(_) | Expect::Value(_), None) => false,
        };
        if !holds {
            return Ok(CasOutcome::Failed(current.map(Record::to_key_value)));
        }
        match value {
            Some(value) => self.put(key, value, lease, now).map(CasOutcome::Swapped),
            // Deleting an absent key writes nothing, so the revision stays (as in etcd).
            None if current.is_none() => Ok(CasOutcome::Swapped(self.revision)),
            None => {
                let revision = self.bump();
                self.apply_delete(revision, key);
                Ok(CasOutcome::Swapped(revision))
            }
        }
    }

    pub(super) fn grant_lease(&mut self, ttl: Duration, now: Instant) -> LeaseId {
        let id = LeaseId(self.next_lease);
        self.next_lease = self.next_lease.wrapping_add(1).max(1);
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline: now + ttl,
                keys: BTreeSet::new(),
            },
        );
        id
    }

    pub(super) fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<(), StoreError> {
        let lease = self.live_lease(id, now)?;
        lease.deadline = now + lease.ttl;
        Ok(())
    }

    pub(super) fn revoke_lease(&mut self, id: LeaseId) -> Result<(), StoreError> {
        if self.end_lease(id) {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(id))
        }
    }

    /// Ends every lease whose deadline has passed; returns the earliest deadline left.
    /// A linear scan: there are few leases (one per thousand keys at most), not many keys.
    pub(super) fn expire_leases(&mut self, now: Instant) -> Option<Instant> {
        let due: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.end_lease(id);
        }
        self.leases.values().map(|lease| lease.deadline).min()
    }

    /// The sequence number the next event will get.
    pub(super) fn next_seq(&self) -> u64 {
        self.history.first_seq + self.history.events.len() as u64
    }

    /// Where a watcher resuming after `revision` starts, or `None` when events after it
    /// have been evicted.
    pub(super) fn seq_after(&self, revision: Revision) -> Option<u64> {
        if revision < self.history.evicted_through {
            return None;
        }
        let skipped = self
            .history
            .events
            .partition_point(|record| record.mod_revision() <= revision);
        Some(self.history.first_seq + skipped as u64)
    }

    /// Appends to `out` the events under `prefix` from sequence `from` on, scanning at most
    /// `max_scan` events so the lock is held briefly.
    pub(super) fn read(
        &self,
        from: u64,
        prefix: &str,
        max_scan: usize,
        out: &mut VecDeque<Record>,
    ) -> Read {
        let Some(start) = from.checked_sub(self.history.first_seq) else {
            return Read::Lost;
        };
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        let mut next = from;
        for record in self.history.events.iter().skip(start).take(max_scan) {
            next += 1;
            if record.key_starts_with(prefix.as_bytes()) {
                out.push_back(record.clone());
            }
        }
        Read::Events { next }
    }

    fn bump(&mut self) -> Revision {
        self.revision += 1;
        self.revision
    }

    /// The lease if it is still alive. One found past its deadline (the expiry task has
    /// not run yet) is ended now, so no write can attach to an expired lease.
    fn live_lease(&mut self, id: LeaseId, now: Instant) -> Result<&mut Lease, StoreError> {
        let expired = match self.leases.get(&id) {
            None => return Err(StoreError::LeaseNotFound(id)),
            Some(lease) => lease.deadline <= now,
        };
        if expired {
            self.end_lease(id);
        }
        self.leases
            .get_mut(&id)
            .ok_or(StoreError::LeaseNotFound(id))
    }

    /// Removes a lease and deletes its keys in one revision, as etcd does. Returns whether
    /// the lease existed.
    fn end_lease(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        if !lease.keys.is_empty() {
            let revision = self.bump();
            for key in &lease.keys {
                self.apply_delete(revision, key);
            }
        }
        true
    }

    fn apply_put(&mut self, revision: Revision, key: &str, value: Bytes, lease: Option<LeaseId>) {
        let create_revision = match self.record(key) {
            Some(old) => {
                let (old_lease, create) = (old.lease(), old.create_revision());
                if old_lease != lease {
                    self.detach(old_lease, key);
                }
                create
            }
            None => revision,
        };
        if let Some(lease) = lease.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.insert(key.to_owned());
        }
        // The value is copied into the record: the caller's `Bytes` may be a slice of a
        // larger buffer, which holding would keep whole.
        let record = Record::put(key, &value, create_revision, revision, lease);
        self.kvs.replace(Keyed(record.clone()));
        self.remember(record);
    }

    fn apply_delete(&mut self, revision: Revision, key: &str) {
        if let Some(Keyed(old)) = self.kvs.take(&Keyed(Record::probe(key))) {
            self.detach(old.lease(), key);
            self.remember(Record::tombstone(key, revision));
        }
    }

    fn detach(&mut self, lease: Option<LeaseId>, key: &str) {
        if let Some(lease) = lease.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.remove(key);
        }
    }

    /// Appends a write to the history, evicting the oldest beyond its capacity.
    fn remember(&mut self, record: Record) {
        let history = &mut self.history;
        history.events.push_back(record);
        while history.events.len() > history.capacity {
            if let Some(evicted) = history.events.pop_front() {
                history.evicted_through = evicted.mod_revision();
                history.first_seq += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(100, 7)
    }

    fn put(st: &mut State, key: &str, value: &'static str) -> Revision {
        st.put(
            key,
            Bytes::from_static(value.as_bytes()),
            None,
            Instant::now(),
        )
        .unwrap()
    }

    #[test]
    fn revisions_start_like_etcd_and_track_create_and_mod() {
        let mut st = state();
        assert_eq!(st.revision(), 1);
        assert_eq!(put(&mut st, "a", "1"), 2);
        assert_eq!(put(&mut st, "a", "2"), 3);
        let kv = st.get("a").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (2, 3));
        assert!(st.delete("a"));
        assert!(!st.delete("a"));
        assert_eq!(st.revision(), 4);
        assert_eq!(put(&mut st, "a", "3"), 5);
        assert_eq!(st.get("a").unwrap().create_revision, 5);
    }

    #[test]
    fn list_takes_only_the_prefix() {
        let mut st = state();
        for key in ["a/2", "ab/1", "a/1", "b"] {
            put(&mut st, key, "v");
        }
        let keys_under = |prefix: &str| {
            let mut records = st.listed(prefix);
            super::super::record::sort_by_key(&mut records);
            records.iter().map(Record::key_string).collect::<Vec<_>>()
        };
        let keys = keys_under("a/");
        assert_eq!(keys, ["a/1", "a/2"]);
        assert_eq!(keys_under("").len(), 4);
    }

    #[test]
    fn history_eviction_loses_old_resume_points_only() {
        let mut st = State::new(3, 1);
        let revs: Vec<Revision> = (0..5)
            .map(|i| put(&mut st, &format!("k{i}"), "v"))
            .collect();
        // Events of revisions 4, 5, 6 remain; revision 3 was the last evicted.
        assert_eq!(st.seq_after(revs[0]), None);
        assert_eq!(st.seq_after(revs[1]), Some(2));
        assert_eq!(st.seq_after(revs[4]), Some(st.next_seq()));
        let mut out = VecDeque::new();
        assert!(matches!(st.read(1, "", 10, &mut out), Read::Lost));
        let Read::Events { next } = st.read(3, "", 10, &mut out) else {
            panic!("seq 3 is in the history");
        };
        assert_eq!(next, 5);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn read_scans_at_most_max_scan_and_filters_by_prefix() {
        let mut st = state();
        for key in ["a/1", "b/1", "a/2", "b/2", "a/3"] {
            put(&mut st, key, "v");
        }
        let mut out = VecDeque::new();
        let Read::Events { next } = st.read(0, "a/", 3, &mut out) else {
            panic!("nothing evicted");
        };
        assert_eq!(next, 3);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn lease_end_deletes_its_keys_in_one_revision() {
        let mut st = state();
        let now = Instant::now();
        let lease = st.grant_lease(Duration::from_secs(10), now);
        for key in ["a", "b"] {
            st.put(key, Bytes::new(), Some(lease), now).unwrap();
        }
        put(&mut st, "c", "v");
        let before = st.revision();
        assert_eq!(st.expire_leases(now + Duration::from_secs(11)), None);
        assert_eq!(st.revision(), before + 1);
        assert!(st.get("a").is_none() && st.get("b").is_none());
        assert!(st.get("c").is_some());
        assert!(matches!(
            st.keep_alive(lease, now),
            Err(StoreError::LeaseNotFound(id)) if id == lease
        ));
    }

    #[test]
    fn expired_lease_is_refused_before_the_expiry_task_runs() {
        let mut st = state();
        let now = Instant::now();
        let lease = st.grant_lease(Duration::from_secs(1), now);
        st.put("a", Bytes::new(), Some(lease), now).unwrap();
        let later = now + Duration::from_secs(2);
        assert!(matches!(
            st.put("b", Bytes::new(), Some(lease), later),
            Err(StoreError::LeaseNotFound(_))
        ));
        assert!(st.get("a").is_none());
        assert!(st.get("b").is_none());
    }

    #[test]
    fn rewriting_a_key_without_its_lease_detaches_it() {
        let mut st = state();
        let now = Instant::now();
        let lease = st.grant_lease(Duration::from_secs(10), now);
        st.put("a", Bytes::new(), Some(lease), now).unwrap();
        put(&mut st, "a", "kept");
        st.revoke_lease(lease).unwrap();
        assert_eq!(st.get("a").unwrap().value, Bytes::from_static(b"kept"));
    }

    #[test]
    fn cas_delete_of_an_absent_key_writes_nothing() {
        let mut st = state();
        let now = Instant::now();
        let outcome = st
            .compare_and_swap("a", &Expect::Absent, None, None, now)
            .unwrap();
        assert_eq!(outcome, CasOutcome::Swapped(1));
        assert_eq!(st.next_seq(), 0);
    }
}
