//! What the agent's EndpointSlice writer did, for its metrics: the writer counts, the
//! metrics read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The writer's counters; cheap to clone, shared with the metrics.
#[derive(Clone, Debug, Default)]
pub struct SliceStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    created: AtomicU64,
    updated: AtomicU64,
    deleted: AtomicU64,
    failed: AtomicU64,
    list_errors: AtomicU64,
}

impl SliceStats {
    /// Slices written, per operation: `created`, `updated`, `deleted`.
    pub fn writes(&self) -> [(&'static str, u64); 3] {
        let c = &self.0;
        [
            ("created", c.created.load(Ordering::Relaxed)),
            ("updated", c.updated.load(Ordering::Relaxed)),
            ("deleted", c.deleted.load(Ordering::Relaxed)),
        ]
    }

    /// Failed API calls: writes, and listings of the agent's own slices.
    pub fn errors(&self) -> [(&'static str, u64); 2] {
        let c = &self.0;
        [
            ("write", c.failed.load(Ordering::Relaxed)),
            ("list", c.list_errors.load(Ordering::Relaxed)),
        ]
    }

    pub fn count_pass(&self, created: usize, updated: usize, deleted: usize, failed: usize) {
        let c = &self.0;
        c.created.fetch_add(created as u64, Ordering::Relaxed);
        c.updated.fetch_add(updated as u64, Ordering::Relaxed);
        c.deleted.fetch_add(deleted as u64, Ordering::Relaxed);
        c.failed.fetch_add(failed as u64, Ordering::Relaxed);
    }

    pub fn count_list_error(&self) {
        self.0.list_errors.fetch_add(1, Ordering::Relaxed);
    }
}
