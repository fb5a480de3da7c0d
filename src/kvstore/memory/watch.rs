//! Pull-based watches of the embedded store. Writers only append to the history and bump
//! a `tokio::sync::watch` of the latest revision; each watch keeps its own cursor and
//! copies the events after it under a short lock. So no writer ever waits for a watcher,
//! and a slow watcher costs only its own memory: when its cursor falls out of the history
//! it lists again, as the `Store` contract says.
//!
//! A watcher holds records (pointers to what the store holds anyway) and makes each
//! event only as it hands it out, so a listing of 100k keys costs 100k pointers while it
//! is read, and nothing once it has been.

use std::collections::VecDeque;
use std::sync::Weak;

use futures::stream;
use tokio::sync::watch;

use super::Shared;
use super::record::{Record, sort_by_key};
use super::state::{Read, State};
use crate::kvstore::{StoreError, WatchEvent, WatchStart, WatchStream};
use crate::model::Revision;

/// Events scanned per lock acquisition: bounds how long one watcher holds the lock that
/// writers need (a few hundred microseconds), whatever the backlog.
pub(super) const MAX_SCAN: usize = 4096;

/// One watcher's cursor and the events it has read but not yet handed out.
pub(super) struct Watcher {
    shared: Weak<Shared>,
    changes: watch::Receiver<Revision>,
    prefix: String,
    /// Sequence number of the next history event to read.
    cursor: u64,
    /// A listing not yet handed out in full; it comes before `pending`.
    relist: Option<Relist>,
    /// History events read, at most one scan's worth.
    pending: VecDeque<Record>,
}

/// A listing being handed out: `ListStart`, a put per record in key order, then
/// `ListDone`.
struct Relist {
    /// Taken in no order under the lock; sorted when the listing starts, outside it.
    unsorted: Option<Vec<Record>>,
    /// Freed as a whole once read: the listing holds no memory after it is handed out.
    records: std::vec::IntoIter<Record>,
    revision: Revision,
}

impl Relist {
    fn next_event(&mut self) -> Option<WatchEvent> {
        if let Some(mut records) = self.unsorted.take() {
            sort_by_key(&mut records);
            self.records = records.into_iter();
            return Some(WatchEvent::ListStart);
        }
        self.records.next().map(|record| record.to_event())
    }
}

impl Watcher {
    /// Places the cursor (listing first where `start` asks for it or the history no longer
    /// reaches back far enough) under the same lock, so no event falls in between.
    pub(super) fn new(
        shared: Weak<Shared>,
        changes: watch::Receiver<Revision>,
        state: &State,
        prefix: &str,
        start: WatchStart,
    ) -> Self {
        let mut watcher = Watcher {
            shared,
            changes,
            prefix: prefix.to_owned(),
            cursor: 0,
            relist: None,
            pending: VecDeque::new(),
        };
        match start {
            WatchStart::After(revision) => match state.seq_after(revision) {
                Some(cursor) => watcher.cursor = cursor,
                None => watcher.relist(state),
            },
            WatchStart::List => watcher.relist(state),
        }
        watcher
    }

    /// The watcher as a stream; it ends with `Closed` once the store is dropped.
    pub(super) fn into_stream(self) -> WatchStream {
        Box::pin(stream::unfold(Some(self), |watcher| async move {
            let mut watcher = watcher?;
            match watcher.next_event().await {
                Ok(event) => Some((Ok(event), Some(watcher))),
                Err(err) => Some((Err(err), None)),
            }
        }))
    }

    async fn next_event(&mut self) -> Result<WatchEvent, StoreError> {
        loop {
            if let Some(relist) = &mut self.relist {
                if let Some(event) = relist.next_event() {
                    return Ok(event);
                }
                let revision = relist.revision;
                self.relist = None;
                return Ok(WatchEvent::ListDone { revision });
            }
            if let Some(record) = self.pending.pop_front() {
                return Ok(record.to_event());
            }
            // Mark the latest revision seen before reading, so a write that lands after the
            // read below still wakes `changed()`.
            self.changes.borrow_and_update();
            let caught_up = {
                let shared = self.shared.upgrade().ok_or(StoreError::Closed)?;
                let state = shared.state.lock();
                match state.read(self.cursor, &self.prefix, MAX_SCAN, &mut self.pending) {
                    Read::Lost => {
                        self.relist(&state);
                        true
                    }
                    Read::Events { next } => {
                        self.cursor = next;
                        next == state.next_seq()
                    }
                }
            };
            if self.relist.is_some() || !self.pending.is_empty() {
                continue;
            }
            if caught_up {
                self.changes
                    .changed()
                    .await
                    .map_err(|_| StoreError::Closed)?;
            } else {
                // A long run of events under other prefixes: let other tasks in between.
                tokio::task::yield_now().await;
            }
        }
    }

    fn relist(&mut self, state: &State) {
        self.pending.clear();
        self.relist = Some(Relist {
            unsorted: Some(state.listed(&self.prefix)),
            records: Vec::new().into_iter(),
            revision: state.revision(),
        });
        self.cursor = state.next_seq();
    }
}
