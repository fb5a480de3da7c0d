//! The cache keys' own writer thread: every write to the key cache is queued here, in
//! order, and applied by one thread, so that a link never waits for the key cache's
//! lock on a runtime thread (where the other links' keepalives and reads run).
//!
//! The thread takes whatever is queued, many links' batches at once, and writes it
//! under one lock as one batch of the key cache (one broadcast to its watchers).
//! The queue is bounded by the changes it holds: a link that finds it full waits for
//! room off the runtime's worker threads ([`tokio::task::block_in_place`]), so the
//! memory a burst can pile up stays small and the other links keep running. Waiting
//! links are let in first come, first served: a link that waits reads nothing from its
//! peer, and a peer's apiserver cuts a watcher that takes no frames for a few seconds,
//! so no link may be passed over again and again while others refill the queue.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::etcd_api::KeyCache;
use crate::etcd_api::key_cache::KeyWrite;
use crate::kvstore::Epoch;

use super::Writer;

/// One queued write, run by the writer thread with the writer's state and the batch.
pub(super) type Op = Box<dyn FnOnce(&mut Writer, &mut KeyWrite<'_>) + Send>;

/// At most this many changes wait in the queue (a link's batch counts its changes,
/// any other write one).
const MAX_PENDING: usize = 65_536;
/// The writer takes about this many changes under one lock: a reader of the key cache
/// (a page of a listing) waits for at most one such batch.
const BATCH: usize = 4_096;

/// The queue of the writer thread; the thread stops once it is closed and empty.
pub(super) struct WriteQueue {
    state: Mutex<Queued>,
    /// Signalled when something is queued or the queue closes.
    work: Condvar,
    /// Signalled when the writer took something.
    room: Condvar,
}

#[derive(Default)]
struct Queued {
    ops: VecDeque<(Op, usize)>,
    pending: usize,
    closed: bool,
    /// Tickets of the links waiting for room: the next one given, and the one let in
    /// next (equal when nobody waits).
    next_ticket: u64,
    serving: u64,
}

impl Queued {
    fn full(&self) -> bool {
        self.pending >= MAX_PENDING && !self.closed
    }
}

impl WriteQueue {
    /// Starts the writer thread of `cache`, writing as `epoch` with `writer`.
    pub(super) fn start(
        cache: Arc<KeyCache>,
        epoch: Epoch,
        writer: Arc<Mutex<Writer>>,
    ) -> std::io::Result<Arc<Self>> {
        let queue = Arc::new(Self {
            state: Mutex::new(Queued::default()),
            work: Condvar::new(),
            room: Condvar::new(),
        });
        let run = queue.clone();
        std::thread::Builder::new()
            .name("cache-keys-writer".to_string())
            .spawn(move || {
                while let Some(ops) = run.next_batch() {
                    let mut writer = writer.lock();
                    cache.write(&epoch, |batch| {
                        for op in ops {
                            op(&mut writer, batch);
                        }
                    });
                }
            })?;
        Ok(queue)
    }

    /// Queues `op`, which writes `weight` changes; waits for room, after the links
    /// already waiting, if the queue is full.
    pub(super) fn submit(&self, weight: usize, op: Op) {
        let mut state = self.state.lock();
        if state.full() || state.serving != state.next_ticket {
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            drop(state);
            self.wait_for_turn(ticket);
            state = self.state.lock();
        }
        state.pending += weight;
        state.ops.push_back((op, weight));
        drop(state);
        self.work.notify_one();
    }

    /// Waits until every earlier ticket was let in and the writer made room, off the
    /// runtime's worker threads when on one; then lets the next ticket try.
    fn wait_for_turn(&self, ticket: u64) {
        let wait = || {
            let mut state = self.state.lock();
            while state.serving != ticket || state.full() {
                self.room.wait(&mut state);
            }
            state.serving += 1;
            drop(state);
            self.room.notify_all();
        };
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_worker {
            tokio::task::block_in_place(wait);
        } else {
            wait();
        }
    }

    /// The thread writes what is queued and stops.
    pub(super) fn close(&self) {
        self.state.lock().closed = true;
        self.work.notify_one();
        self.room.notify_all();
    }

    /// The next ops to write under one lock; `None` once closed and empty.
    fn next_batch(&self) -> Option<Vec<Op>> {
        let mut state = self.state.lock();
        while state.ops.is_empty() {
            if state.closed {
                return None;
            }
            self.work.wait(&mut state);
        }
        let mut ops = Vec::new();
        let mut taken = 0;
        while taken < BATCH {
            let Some((op, weight)) = state.ops.pop_front() else {
                break;
            };
            taken += weight;
            ops.push(op);
        }
        state.pending -= taken;
        drop(state);
        self.room.notify_all();
        Some(ops)
    }
}
