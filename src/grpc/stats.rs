use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// The server's counters; cheap to clone, shared with every call (for metrics and
/// tests).
#[derive(Clone, Debug, Default)]
pub struct GrpcStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    unauthenticated: AtomicU64,
    permission_denied: AtomicU64,
    invalid_requests: AtomicU64,
    watches: AtomicU64,
    active_watches: AtomicU64,
    lagged: AtomicU64,
    stalled: AtomicU64,
    resumed_watches: AtomicU64,
    full_watches: AtomicU64,
    frames_sent: AtomicU64,
    events_sent: AtomicU64,
    bytes_sent: AtomicU64,
    /// `PERMISSION_DENIED` answers per peer cluster.
    denied_peers: Mutex<BTreeMap<String, u64>>,
    /// The watches streaming now, by the id [`GrpcStats::watch_started`] gave them.
    open: Mutex<BTreeMap<u64, Arc<Watcher>>>,
    next_id: AtomicU64,
}

/// One open watch as it shows in metrics and the apiserver's status.
#[derive(Debug)]
struct Watcher {
    peer: String,
    kinds: String,
    since_unix_ms: u64,
    /// Known once the subscription was made: whether it resumed from a revision.
    resumed: AtomicBool,
    started: AtomicBool,
    frames: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    /// The revision the last frame brought the watcher to.
    revision: AtomicU64,
}

/// What [`GrpcStats::watchers`] reports of one open watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherSnapshot {
    pub peer: String,
    /// The kinds it watches, as the cache names the set.
    pub kinds: String,
    pub since_unix_ms: u64,
    /// `None` while it waits for the cache to sync.
    pub resumed: Option<bool>,
    pub frames: u64,
    pub events: u64,
    pub bytes: u64,
    pub revision: u64,
}

impl GrpcStats {
    /// Calls refused for want of a usable client certificate identity.
    pub fn unauthenticated(&self) -> u64 {
        self.0.unauthenticated.load(Ordering::Relaxed)
    }

    /// Calls refused because the peer may not see this cluster.
    pub fn permission_denied(&self) -> u64 {
        self.0.permission_denied.load(Ordering::Relaxed)
    }

    /// [`GrpcStats::permission_denied`] per peer cluster.
    pub fn permission_denied_by_peer(&self) -> Vec<(String, u64)> {
        let denied = self.0.denied_peers.lock();
        denied.iter().map(|(p, n)| (p.clone(), *n)).collect()
    }

    /// Calls refused as malformed (an unknown kind, say).
    pub fn invalid_requests(&self) -> u64 {
        self.0.invalid_requests.load(Ordering::Relaxed)
    }

    /// Watches accepted since the server started.
    pub fn watches(&self) -> u64 {
        self.0.watches.load(Ordering::Relaxed)
    }

    /// Watches streaming now.
    pub fn active_watches(&self) -> u64 {
        self.0.active_watches.load(Ordering::Relaxed)
    }

    /// Watches cut off because they fell behind.
    pub fn lagged(&self) -> u64 {
        self.0.lagged.load(Ordering::Relaxed)
    }

    /// Watches cut off because their peer took no frames for
    /// [`STALL_LIMIT`](super::STALL_LIMIT).
    pub fn stalled(&self) -> u64 {
        self.0.stalled.load(Ordering::Relaxed)
    }

    pub(super) fn count_stalled(&self) {
        self.0.stalled.fetch_add(1, Ordering::Relaxed);
    }

    /// Watches that resumed from a revision: they got only the events they missed.
    pub fn resumed_watches(&self) -> u64 {
        self.0.resumed_watches.load(Ordering::Relaxed)
    }

    /// Watches that got the full state (a first connection, or a resume point the log
    /// no longer holds).
    pub fn full_watches(&self) -> u64 {
        self.0.full_watches.load(Ordering::Relaxed)
    }

    /// Frames sent to every watcher since the server started.
    pub fn frames_sent(&self) -> u64 {
        self.0.frames_sent.load(Ordering::Relaxed)
    }

    /// Events in those frames.
    pub fn events_sent(&self) -> u64 {
        self.0.events_sent.load(Ordering::Relaxed)
    }

    /// Bytes of those events as encoded once for every watcher.
    pub fn bytes_sent(&self) -> u64 {
        self.0.bytes_sent.load(Ordering::Relaxed)
    }

    /// The watches streaming now, oldest first.
    pub fn watchers(&self) -> Vec<WatcherSnapshot> {
        let open = self.0.open.lock();
        open.values()
            .map(|w| WatcherSnapshot {
                peer: w.peer.clone(),
                kinds: w.kinds.clone(),
                since_unix_ms: w.since_unix_ms,
                resumed: w
                    .started
                    .load(Ordering::Relaxed)
                    .then(|| w.resumed.load(Ordering::Relaxed)),
                frames: w.frames.load(Ordering::Relaxed),
                events: w.events.load(Ordering::Relaxed),
                bytes: w.bytes.load(Ordering::Relaxed),
                revision: w.revision.load(Ordering::Relaxed),
            })
            .collect()
    }

    pub(super) fn count_error(&self, err: &super::GrpcError) {
        use super::GrpcError as E;
        let counter = match err {
            E::NoPeerIdentity | E::BadPeerIdentity { .. } => &self.0.unauthenticated,
            E::NotAllowed { peer, .. } => {
                *self
                    .0
                    .denied_peers
                    .lock()
                    .entry(peer.to_string())
                    .or_default() += 1;
                &self.0.permission_denied
            }
            E::InvalidRequest { .. } => &self.0.invalid_requests,
            E::Lagged => &self.0.lagged,
            E::Restarted | E::Stopping => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a watch of `peer` as started and active until the guard is dropped.
    pub(super) fn watch_started(&self, peer: &str, kinds: &str) -> ActiveWatch {
        self.0.watches.fetch_add(1, Ordering::Relaxed);
        self.0.active_watches.fetch_add(1, Ordering::Relaxed);
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let watcher = Arc::new(Watcher {
            peer: peer.to_string(),
            kinds: kinds.to_string(),
            since_unix_ms: crate::observe::unix_ms_now(),
            resumed: AtomicBool::new(false),
            started: AtomicBool::new(false),
            frames: AtomicU64::new(0),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            revision: AtomicU64::new(0),
        });
        self.0.open.lock().insert(id, watcher.clone());
        ActiveWatch {
            stats: self.clone(),
            id,
            watcher,
        }
    }
}

/// Held by a watch stream; it leaves the active count when the stream is dropped (the
/// peer went away, or the stream ended).
#[derive(Debug)]
pub(super) struct ActiveWatch {
    stats: GrpcStats,
    id: u64,
    watcher: Arc<Watcher>,
}

impl ActiveWatch {
    /// How many watches stream now, this one included.
    pub(super) fn watchers(&self) -> u64 {
        self.stats.active_watches()
    }

    /// The subscription is made: it resumed, or gets the full state.
    pub(super) fn subscribed(&self, resumed: bool) {
        self.watcher.resumed.store(resumed, Ordering::Relaxed);
        self.watcher.started.store(true, Ordering::Relaxed);
        let counter = if resumed {
            &self.stats.0.resumed_watches
        } else {
            &self.stats.0.full_watches
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A frame of `events` events, `bytes` bytes, bringing the watcher to `revision`.
    pub(super) fn sent(&self, events: usize, bytes: usize, revision: u64) {
        let (events, bytes) = (events as u64, bytes as u64);
        let w = &self.watcher;
        w.frames.fetch_add(1, Ordering::Relaxed);
        w.events.fetch_add(events, Ordering::Relaxed);
        w.bytes.fetch_add(bytes, Ordering::Relaxed);
        w.revision.fetch_max(revision, Ordering::Relaxed);
        let totals = &self.stats.0;
        totals.frames_sent.fetch_add(1, Ordering::Relaxed);
        totals.events_sent.fetch_add(events, Ordering::Relaxed);
        totals.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Drop for ActiveWatch {
    fn drop(&mut self) {
        self.stats.0.open.lock().remove(&self.id);
        self.stats.0.active_watches.fetch_sub(1, Ordering::Relaxed);
    }
}
