//! Counters of the etcd API, for metrics and tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cheap to clone; every clone counts into the same numbers.
#[derive(Clone, Debug, Default)]
pub struct EtcdApiStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    refused_peers: AtomicU64,
    refused_reads: AtomicU64,
    refused_writes: AtomicU64,
    watches_created: AtomicU64,
    watch_streams: AtomicU64,
    streams_caught_up: AtomicU64,
    watches_dropped: AtomicU64,
}

impl EtcdApiStats {
    /// Calls refused because the peer's certificate names no allowed cluster.
    pub fn refused_peers(&self) -> u64 {
        self.0.refused_peers.load(Ordering::Relaxed)
    }

    /// Reads and watches of keys outside the peer's role.
    pub fn refused_reads(&self) -> u64 {
        self.0.refused_reads.load(Ordering::Relaxed)
    }

    /// Writes (`Put`, `DeleteRange`, `Txn`, `Compact`, `Lease*`) refused.
    pub fn refused_writes(&self) -> u64 {
        self.0.refused_writes.load(Ordering::Relaxed)
    }

    pub fn watches_created(&self) -> u64 {
        self.0.watches_created.load(Ordering::Relaxed)
    }

    /// Watch streams opened (each may carry many watches).
    pub fn watch_streams(&self) -> u64 {
        self.0.watch_streams.load(Ordering::Relaxed)
    }

    /// Streams that fell behind the broadcast and caught up from the revision log.
    pub fn streams_caught_up(&self) -> u64 {
        self.0.streams_caught_up.load(Ordering::Relaxed)
    }

    /// Watches canceled because they fell behind what the log holds, or the history
    /// restarted: their clients re-list.
    pub fn watches_dropped(&self) -> u64 {
        self.0.watches_dropped.load(Ordering::Relaxed)
    }

    pub(super) fn count_refused_peer(&self) {
        self.0.refused_peers.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_refused_read(&self) {
        self.0.refused_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_refused_write(&self) {
        self.0.refused_writes.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_watch_created(&self) {
        self.0.watches_created.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_watch_stream(&self) {
        self.0.watch_streams.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_caught_up(&self) {
        self.0.streams_caught_up.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_dropped(&self, watches: usize) {
        self.0
            .watches_dropped
            .fetch_add(watches as u64, Ordering::Relaxed);
    }
}
