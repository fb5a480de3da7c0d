use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

    pub(super) fn count_error(&self, err: &super::GrpcError) {
        use super::GrpcError as E;
        let counter = match err {
            E::NoPeerIdentity | E::BadPeerIdentity { .. } => &self.0.unauthenticated,
            E::NotAllowed { .. } => &self.0.permission_denied,
            E::InvalidRequest { .. } => &self.0.invalid_requests,
            E::Lagged => &self.0.lagged,
            E::Restarted | E::Stopping => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a watch as started and active until the guard is dropped.
    pub(super) fn watch_started(&self) -> ActiveWatch {
        self.0.watches.fetch_add(1, Ordering::Relaxed);
        self.0.active_watches.fetch_add(1, Ordering::Relaxed);
        ActiveWatch(self.clone())
    }
}

/// Held by a watch stream; it leaves the active count when the stream is dropped (the
/// peer went away, or the stream ended).
#[derive(Debug)]
pub(super) struct ActiveWatch(GrpcStats);

impl ActiveWatch {
    /// How many watches stream now, this one included.
    pub(super) fn watchers(&self) -> u64 {
        self.0.active_watches()
    }
}

impl Drop for ActiveWatch {
    fn drop(&mut self) {
        self.0.0.active_watches.fetch_sub(1, Ordering::Relaxed);
    }
}
