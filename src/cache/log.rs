//! The bounded log of recent batches that resuming watchers read from.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Batch;
use crate::model::Revision;

/// Recent batches in revision order, at most about `capacity` events: whole batches are
/// evicted, oldest first. The same `Arc`s go to live watchers, so the log costs
/// pointers, not copies.
pub(super) struct EventLog {
    batches: VecDeque<Arc<Batch>>,
    events: usize,
    capacity: usize,
    /// Every event after this revision is in the log: a watcher that has everything up
    /// to a revision at or after it can resume.
    floor: Revision,
}

impl EventLog {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            batches: VecDeque::new(),
            events: 0,
            capacity,
            floor: 0,
        }
    }

    /// Forgets every batch: from now on watchers can resume from `revision` on.
    pub(super) fn restart(&mut self, revision: Revision) {
        self.batches.clear();
        self.events = 0;
        self.floor = revision;
    }

    pub(super) fn push(&mut self, batch: Arc<Batch>) {
        self.events += batch.events.len();
        self.batches.push_back(batch);
        while self.events > self.capacity {
            let Some(oldest) = self.batches.pop_front() else {
                break;
            };
            self.events -= oldest.events.len();
            self.floor = oldest.revision;
        }
    }

    /// The batches holding the events after `revision`, or `None` when some of them
    /// were evicted already. The first batch may also hold events up to `revision`:
    /// the reader skips them.
    pub(super) fn after(&self, revision: Revision) -> Option<Vec<Arc<Batch>>> {
        if revision < self.floor {
            return None;
        }
        let start = self.batches.partition_point(|b| b.revision <= revision);
        Some(self.batches.range(start..).cloned().collect())
    }

    /// Events held.
    pub(super) fn len(&self) -> usize {
        self.events
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::cache::CachedEvent;
    use crate::model::Kind;

    fn mk_batch(revisions: &[Revision]) -> Arc<Batch> {
        let events = revisions
            .iter()
            .map(|r| CachedEvent {
                revision: *r,
                kind: Kind::Endpoint,
                bytes: Bytes::new(),
            })
            .collect();
        Arc::new(Batch {
            events,
            revision: *revisions.last().unwrap(),
            received_unix_micros: 0,
        })
    }

    fn revisions(batches: &[Arc<Batch>]) -> Vec<Revision> {
        batches.iter().map(|b| b.revision).collect()
    }

    #[test]
    fn evicts_whole_batches_and_raises_the_floor() {
        let mut log = EventLog::new(3);
        log.restart(10);
        assert_eq!(log.after(9), None, "before the start");
        assert_eq!(log.after(10).unwrap(), vec![]);
        log.push(mk_batch(&[11, 11]));
        log.push(mk_batch(&[12]));
        assert_eq!(revisions(&log.after(10).unwrap()), [11, 12]);
        assert_eq!(revisions(&log.after(11).unwrap()), [12]);

        log.push(mk_batch(&[13, 14]));
        assert_eq!(log.len(), 3, "the batch of revision 11 went");
        assert_eq!(log.after(10), None);
        assert_eq!(revisions(&log.after(11).unwrap()), [12, 14]);

        // A batch larger than the log evicts everything, itself included.
        log.push(mk_batch(&[15, 15, 15, 16]));
        assert_eq!(log.len(), 0);
        assert_eq!(log.after(15), None);
        assert_eq!(log.after(16).unwrap(), vec![]);
    }
}
