//! An agent's observations: every change it applied, named by key number and version,
//! with the moment it was in the agent's view. The fleetmesh agents report through the
//! link's [`ApplyObserver`] hook; the etcd-direct agents call [`Recorder::record`]
//! themselves after applying an event. What is filed while the agents run is only what
//! the value itself says ([`Sighting`]); it is checked against the writes afterwards.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::keys::{Confirmer, KeySpace, Sighting};
use crate::model::{Change, ClusterName};
use crate::remote::ApplyObserver;

/// What an observation saw of its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The value of this version.
    Version(u32),
    Deleted,
    /// A value no version of the key has.
    Phantom,
}

/// One observation.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub key: u32,
    pub seen: Seen,
    pub at: Instant,
    /// It came with a listing the agent made again after its watch was canceled
    /// (what the listing passed over was never going to reach the agent).
    pub relisted: bool,
}

/// What the measured path files of a change, unchecked.
#[derive(Clone, Copy, Debug)]
enum Filed {
    Upsert(Sighting),
    /// An upsert that can be no write's ([`Sighting::of`] found none).
    NoWrite,
    Delete,
}

/// One agent's observations, in the order it applied them.
pub struct Recorder {
    space: Arc<KeySpace>,
    log: Mutex<Vec<(u32, Filed, Instant, bool)>>,
    /// Changes of keys outside the workload: phantoms with no key to file them under.
    unknown: AtomicUsize,
    /// Shared by every agent of a run: changes observed so far, for the progress line
    /// and to know when every write has arrived.
    observed: Arc<AtomicUsize>,
    /// Times the agent listed again during the run.
    relists: AtomicUsize,
}

impl Recorder {
    pub fn new(space: Arc<KeySpace>, observed: Arc<AtomicUsize>) -> Self {
        Self {
            space,
            log: Mutex::new(Vec::new()),
            unknown: AtomicUsize::new(0),
            observed,
            relists: AtomicUsize::new(0),
        }
    }

    /// `changes` are in the agent's view since `at`.
    pub fn record(&self, changes: &[Change], at: Instant) {
        self.file(changes, at, false);
    }

    /// The agent listed again (its watch was canceled with a compact revision, as etcd
    /// does to a watcher that fell behind its history): `changes` are how the listing
    /// differed from what it held, in its view since `at`.
    pub fn record_relist(&self, changes: &[Change], at: Instant) {
        self.relists.fetch_add(1, Ordering::Relaxed);
        self.file(changes, at, true);
    }

    /// Times the agent listed again.
    pub fn relists(&self) -> u64 {
        self.relists.load(Ordering::Relaxed) as u64
    }

    fn file(&self, changes: &[Change], at: Instant, relisted: bool) {
        let mut unknown = 0;
        let mut log = self.log.lock();
        for change in changes {
            let Some(key) = self.space.key_of(&change.key()) else {
                unknown += 1;
                continue;
            };
            let filed = match change {
                Change::Upsert(resource) => {
                    Sighting::of(resource).map_or(Filed::NoWrite, Filed::Upsert)
                }
                Change::Delete(_) => Filed::Delete,
            };
            log.push((key, filed, at, relisted));
        }
        drop(log);
        if unknown > 0 {
            self.unknown.fetch_add(unknown, Ordering::Relaxed);
        }
        self.observed.fetch_add(changes.len(), Ordering::Relaxed);
    }

    /// The observations so far, and how many changes were of unknown keys; the log
    /// starts over.
    pub fn take(&self, confirmer: &mut Confirmer) -> (Vec<Observation>, u64) {
        let log = std::mem::take(&mut *self.log.lock());
        let observations = log
            .into_iter()
            .map(|(key, filed, at, relisted)| {
                let seen = match filed {
                    Filed::Upsert(sighting) if confirmer.confirm(key, sighting) => {
                        Seen::Version(sighting.version)
                    }
                    Filed::Upsert(_) | Filed::NoWrite => Seen::Phantom,
                    Filed::Delete => Seen::Deleted,
                };
                Observation {
                    key,
                    seen,
                    at,
                    relisted,
                }
            })
            .collect();
        (observations, self.unknown.swap(0, Ordering::Relaxed) as u64)
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("observations", &self.log.lock().len())
            .finish_non_exhaustive()
    }
}

impl ApplyObserver for Recorder {
    fn applied(&self, _peer: &ClusterName, changes: &[Change], at: Instant) {
        self.record(changes, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::churn::keys::mk_space;
    use crate::model::{Endpoint, IpPrefix, Resource};

    #[test]
    fn changes_are_filed_by_key_and_version() {
        let space = Arc::new(mk_space(100));
        let observed = Arc::new(AtomicUsize::new(0));
        let recorder = Recorder::new(space.clone(), observed.clone());
        let key = space.len() as u32 - 1;
        let value = space.tagged(key, 42).unwrap();
        let stranger = Endpoint::new(
            IpPrefix::host("192.168.0.9".parse().unwrap()),
            crate::model::IdentityId::new(70_000).unwrap(),
        );
        let mut wrong = space.tagged(key, 43).unwrap();
        if let Resource::Endpoint(e) = &mut wrong {
            e.pod = None;
        }
        let at = Instant::now();
        recorder.record(
            &[
                Change::Upsert(value.clone()),
                Change::Delete(value.key()),
                Change::Upsert(wrong),
                Change::Upsert(Resource::Endpoint(stranger)),
            ],
            at,
        );
        let (log, unknown) = recorder.take(&mut Confirmer::new(&space));
        let seen: Vec<Seen> = log.iter().map(|o| o.seen).collect();
        assert_eq!(seen, [Seen::Version(42), Seen::Deleted, Seen::Phantom]);
        assert!(
            log.iter()
                .all(|o| o.key == key && o.at == at && !o.relisted)
        );
        assert_eq!(unknown, 1);
        assert_eq!(observed.load(Ordering::Relaxed), 4);
        assert!(recorder.take(&mut Confirmer::new(&space)).0.is_empty());

        recorder.record_relist(&[Change::Delete(value.key())], at);
        let (log, _) = recorder.take(&mut Confirmer::new(&space));
        assert!(log.len() == 1 && log[0].relisted && log[0].seen == Seen::Deleted);
        assert_eq!(recorder.relists(), 1);
    }
}
