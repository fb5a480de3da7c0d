//! Keeping a state watch going, and handing its events over in whole revisions.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tracing::{Instrument, info, info_span, warn};

use super::{StateEvent, StateWatch, StateWatchStats};
use crate::kvstore::{Epoch, Store, StoreError, WatchStart};
use crate::model::{Cluster, Event, Revision};
use crate::report::error_chain;

/// Events gathered before they are handed over while more keep arriving: bounds the
/// batch a sink gets, and so the batch every live watcher receives at once.
const MAX_BATCH: usize = 1024;
/// First pause after a failed watch: a store that blips is back within it.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between attempts: an unreachable store is retried often enough to
/// resume within seconds of its return.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Where [`follow`] hands the state: the watch cache, in the apiserver.
///
/// Calls come in the order of a [`StateEvent`] stream: `reset`, `apply` with the
/// listing, `synced`, then `apply` with deltas. Each `apply` holds whole revisions —
/// never some of one revision's events — so the end of one is a point a watcher can
/// resume from.
pub trait StateSink {
    /// A (re)list starts in store epoch `epoch`.
    fn reset(&mut self, epoch: &Epoch);
    /// Listed resources, or deltas in revision order.
    fn apply(&mut self, events: Vec<Event>);
    /// The list is complete as of `revision`.
    fn synced(&mut self, revision: Revision);

    /// A list in `epoch` is about to start. The sink may hold it back until the store
    /// is complete in that epoch (the apiserver waits for its exporter, so that no
    /// watcher syncs on a half-written store); `false` means the epoch has moved on
    /// meanwhile and [`follow`] checks it again. By default a list starts at once.
    fn ready_to_list(&mut self, epoch: &Epoch) -> impl Future<Output = bool> + Send {
        let _ = epoch;
        std::future::ready(true)
    }
}

/// Watches `cluster`'s state in `store` and hands it to `sink`, for as long as the
/// returned future runs (drop it to stop). After a failure it waits (with backoff and
/// jitter), asks the store whether its history restarted, and resumes after the last
/// revision it handed over whole; if the store's epoch changed meanwhile, or it had not
/// finished a list, it lists again once the sink is ready for it.
///
/// Batches end where a revision ends: either the next event has a later revision, or
/// the store watch has nothing more ready — a store watch hands out a revision's
/// events together (the embedded store and etcd both deliver a revision at once).
pub async fn follow<S: StateSink>(
    store: Arc<dyn Store>,
    cluster: Cluster,
    mut sink: S,
    stats: StateWatchStats,
) {
    let span = info_span!("state_watch", cluster = %cluster.name);
    async move {
        // The epoch and revision the sink has everything up to, once a list completed.
        let mut resume: Option<(Epoch, Revision)> = None;
        let mut delay = BACKOFF_MIN;
        loop {
            let watch = match store.check_epoch().await {
                Ok(epoch) => {
                    let start = match &resume {
                        Some((held, revision)) if *held == epoch => WatchStart::After(*revision),
                        _ => WatchStart::List,
                    };
                    if start == WatchStart::List && !sink.ready_to_list(&epoch).await {
                        continue;
                    }
                    info!(?start, %epoch, "watching the store");
                    StateWatch::start(store.as_ref(), cluster.clone(), start, stats.clone()).await
                }
                Err(error) => Err(error),
            };
            let error = match watch {
                Ok(mut watch) => {
                    let (error, progressed) = pump(&mut watch, &mut sink, &mut resume).await;
                    if progressed {
                        delay = BACKOFF_MIN;
                    }
                    error
                }
                Err(error) => error,
            };
            stats.restarts.fetch_add(1, Ordering::Relaxed);
            let pause = delay.mul_f64(rand::random_range(0.5..1.5));
            warn!(error = %error_chain(&error), retry_in = ?pause, "state watch failed");
            tokio::time::sleep(pause).await;
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }
    .instrument(span)
    .await
}

/// Reads `watch` into `sink` until it fails. Returns the error and whether anything
/// reached the sink.
async fn pump<S: StateSink>(
    watch: &mut StateWatch,
    sink: &mut S,
    resume: &mut Option<(Epoch, Revision)>,
) -> (StoreError, bool) {
    let epoch = watch.epoch().clone();
    let mut pending = Pending {
        events: Vec::new(),
        listing: false,
        progressed: false,
    };
    loop {
        let next = if pending.events.is_empty() {
            watch.next().await
        } else {
            match watch.next().now_or_never() {
                Some(next) => next,
                None => {
                    // Nothing more ready: the revisions held are whole.
                    pending.flush(sink, resume, &epoch);
                    continue;
                }
            }
        };
        let event = match next {
            Some(Ok(event)) => event,
            // What is pending may be part of a revision: it is read again on resume.
            Some(Err(error)) => return (error, pending.progressed),
            None => return (StoreError::Closed, pending.progressed),
        };
        match event {
            StateEvent::Reset { epoch } => {
                // Deltas not handed over yet are covered by the list.
                pending.events.clear();
                pending.listing = true;
                *resume = None;
                sink.reset(&epoch);
            }
            StateEvent::Change(event) => {
                // A listing's events are in key order; a cut anywhere is fine there,
                // since nothing is served from a list before it completes.
                let boundary = pending.listing
                    || pending
                        .events
                        .last()
                        .is_some_and(|last| event.revision > last.revision);
                if boundary && pending.events.len() >= MAX_BATCH {
                    pending.flush(sink, resume, &epoch);
                }
                pending.events.push(event);
            }
            StateEvent::Synced { revision } => {
                pending.flush(sink, resume, &epoch);
                pending.listing = false;
                sink.synced(revision);
                *resume = Some((epoch.clone(), revision));
                pending.progressed = true;
            }
        }
    }
}

struct Pending {
    events: Vec<Event>,
    /// Between a reset and its synced marker.
    listing: bool,
    progressed: bool,
}

impl Pending {
    fn flush<S: StateSink>(
        &mut self,
        sink: &mut S,
        resume: &mut Option<(Epoch, Revision)>,
        epoch: &Epoch,
    ) {
        let Some(last) = self.events.last() else {
            return;
        };
        if !self.listing {
            *resume = Some((epoch.clone(), last.revision));
        }
        sink.apply(std::mem::take(&mut self.events));
        self.progressed = true;
    }
}
