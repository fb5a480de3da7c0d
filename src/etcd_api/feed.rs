//! Feeding the key cache from a [`Store`]: one store watch of a prefix, kept going.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

use super::KeyCache;
use crate::kvstore::{Epoch, Store, StoreError, WatchEvent, WatchStart};
use crate::model::Revision;
use crate::report::error_chain;

/// The store prefix the apiserver's etcd API serves from: every key a Cilium role
/// may read is under it.
pub const CILIUM_PREFIX: &str = "cilium/";
/// Events handed to the cache at once while more keep arriving: bounds a batch, and so
/// the responses every watcher gets at once.
const MAX_BATCH: usize = 1024;
/// Watch responses per second the etcd API sends to all its streams together while
/// changes keep coming. Each batch the cache broadcasts becomes one response per
/// stream that watches it, and a response costs a TLS record, an HTTP/2 frame, a socket
/// write and a wake-up on each side, whatever it carries: so while changes come faster,
/// the feed holds a batch back until its share of this budget has passed since the last
/// one, and what arrives meanwhile joins it — fewer, fuller responses, each still
/// encoded once for every watcher of its range. The first change after a quiet spell
/// goes out at once. At 255 streams and 3,000 writes/s (`bench churn --etcd-api`) a
/// budget of 32,000 cost 0.69 µs of apiserver CPU per delivery, 5,000 cost 0.34 and
/// 2,500 cost 0.27–0.29; Cilium's writers (20 writes/s by default, 100 for
/// KVStoreMesh) seldom meet the hold at all.
const RESPONSES_PER_SECOND: u64 = 2_500;
/// The longest a batch is held back, however many streams watch: a change waits at
/// most this long for the ones after it.
const MAX_HOLD: Duration = Duration::from_millis(100);

/// First pause after a failed watch: a store that blips is back within it.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Watches every key under `prefix` in `store` and applies it to `cache`, for as long
/// as the returned future runs. After a failure it waits (with backoff and jitter) and
/// resumes after the last revision applied; if the store's epoch changed meanwhile, or
/// no listing had completed, it lists again — which starts a new history in the cache.
pub async fn follow_store(store: Arc<dyn Store>, cache: Arc<KeyCache>, prefix: &'static str) {
    let span = info_span!("etcd_api_feed", prefix);
    async move {
        let mut resume: Option<(Epoch, Revision)> = None;
        let mut delay = BACKOFF_MIN;
        loop {
            let epoch = store.epoch();
            let start = match &resume {
                Some((held, revision)) if *held == epoch => WatchStart::After(*revision),
                _ => WatchStart::List,
            };
            info!(?start, "watching the store for the etcd API");
            let error = match store.watch(prefix, start).await {
                Ok(watch) => {
                    let (error, progressed) = pump(watch, &cache, &epoch, &mut resume).await;
                    if progressed {
                        delay = BACKOFF_MIN;
                    }
                    error
                }
                Err(error) => error,
            };
            let pause = delay.mul_f64(rand::random_range(0.5..1.5));
            warn!(error = %error_chain(&error), retry_in = ?pause, "etcd API feed failed");
            tokio::time::sleep(pause).await;
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }
    .instrument(span)
    .await
}

/// Applies `watch` to `cache` in batches of what is ready, paced (see
/// [`RESPONSES_PER_SECOND`]), until it fails; returns the error and whether anything was
/// applied.
async fn pump(
    mut watch: crate::kvstore::WatchStream,
    cache: &KeyCache,
    epoch: &Epoch,
    resume: &mut Option<(Epoch, Revision)>,
) -> (StoreError, bool) {
    let mut progressed = false;
    let mut listing = false;
    let mut batch = Vec::new();
    // The next live batch is held until then.
    let mut held_until: Option<Instant> = None;
    loop {
        let next = if batch.is_empty() {
            watch.next().await
        } else {
            let full = batch.len() >= MAX_BATCH && !listing;
            match (!full).then(|| watch.next().now_or_never()).flatten() {
                Some(next) => next,
                None => {
                    // Nothing more ready, or the batch is full: hand it over, unless
                    // it is held back — then what arrives meanwhile joins it.
                    let hold =
                        held_until.filter(|until| !full && !listing && *until > Instant::now());
                    let arrived = match hold {
                        Some(until) => tokio::select! {
                            next = watch.next() => Some(next),
                            () = tokio::time::sleep_until(until) => None,
                        },
                        None => None,
                    };
                    match arrived {
                        Some(next) => next,
                        None => {
                            apply(cache, epoch, &mut batch, listing, resume);
                            held_until = Some(Instant::now() + hold_for(cache.streams()));
                            progressed = true;
                            continue;
                        }
                    }
                }
            }
        };
        let event = match next {
            Some(Ok(event)) => event,
            Some(Err(error)) => return (error, progressed),
            None => return (StoreError::Closed, progressed),
        };
        match &event {
            WatchEvent::ListStart => {
                *resume = None;
                listing = true;
            }
            WatchEvent::ListDone { revision } => {
                listing = false;
                batch.push(event.clone());
                cache.apply(epoch, std::mem::take(&mut batch));
                *resume = Some((epoch.clone(), *revision));
                progressed = true;
                continue;
            }
            _ => {}
        }
        batch.push(event);
    }
}

/// How long a batch is held back after the last one while `streams` streams watch:
/// their share of [`RESPONSES_PER_SECOND`], at most [`MAX_HOLD`].
fn hold_for(streams: usize) -> Duration {
    let share = (streams as u64).saturating_mul(1_000_000) / RESPONSES_PER_SECOND;
    Duration::from_micros(share).min(MAX_HOLD)
}

fn apply(
    cache: &KeyCache,
    epoch: &Epoch,
    batch: &mut Vec<WatchEvent>,
    listing: bool,
    resume: &mut Option<(Epoch, Revision)>,
) {
    if !listing {
        let last = batch.iter().rev().find_map(|event| match event {
            WatchEvent::Put(kv) => Some(kv.mod_revision),
            WatchEvent::Delete { revision, .. } => Some(*revision),
            _ => None,
        });
        if let (Some(last), Some((_, revision))) = (last, resume.as_mut()) {
            *revision = last;
        }
    }
    cache.apply(epoch, std::mem::take(batch));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_held_for_its_streams_share_of_the_budget() {
        assert_eq!(hold_for(0), Duration::ZERO);
        assert_eq!(hold_for(5), Duration::from_millis(2));
        assert_eq!(hold_for(125), Duration::from_millis(50));
        assert_eq!(hold_for(10_000), MAX_HOLD);
    }
}
