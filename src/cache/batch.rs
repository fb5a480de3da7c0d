use bytes::Bytes;

use crate::model::{Kind, Revision};

/// One event as the cache holds it: encoded once, shared by every watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedEvent {
    /// The store revision that produced the event (raised, if need be, so that the log
    /// stays in order: see [`super::WatchCache::synced`]).
    pub revision: Revision,
    pub kind: Kind,
    /// The encoded event, as the injected encoder made it.
    pub bytes: Bytes,
}

/// Events applied together. A batch holds whole revisions: a watcher that has read a
/// batch to its end has everything up to [`Batch::revision`].
#[derive(Debug, PartialEq, Eq)]
pub struct Batch {
    /// In revision order.
    pub events: Vec<CachedEvent>,
    /// The cache's revision after this batch.
    pub revision: Revision,
    /// When the cache took these changes from the store (µs since the Unix epoch): the
    /// start of their propagation lag.
    pub received_unix_micros: u64,
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub(super) fn unix_micros_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
