//! Cutting off a watcher that stopped taking its frames.
//!
//! A watch stream is polled by the server only while the peer's HTTP/2 flow-control
//! window has room, so a peer that stops reading (or answers pings but never reads its
//! stream) leaves its stream unpolled with frames waiting: the stream itself cannot tell,
//! and no status could reach a peer that reads nothing anyway. So every watch stream is
//! [`Stalls::watch`]ed: its waker is wrapped to note when the stream became ready to go on
//! (a live batch arrived, a frame's pause ended), and a watchdog closes the connection of
//! a stream that stayed ready but unpolled for [`STALL_LIMIT`]. The peer sees its
//! connection end, reconnects and resumes — or resyncs, if its resume point is gone by
//! then. Each cut is logged and counted ([`GrpcStats::stalled`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::Stream;
use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::warn;

use super::GrpcStats;
use crate::model::ClusterName;
use crate::tls::server::ConnectionCloser;

/// How long a watch stream may have frames ready that its peer does not take: a few
/// seconds of sending, far beyond any pause of a peer that reads (frames leave every
/// few milliseconds, and a peer's window reopens as soon as it reads).
pub const STALL_LIMIT: Duration = Duration::from_secs(5);
/// How often the watchdog looks: a stall is cut within this after the limit.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// A watch stream whose stalls a watchdog cuts off; dropping it stops the watchdog.
pub(super) struct Watched<S> {
    inner: S,
    probe: Arc<Probe>,
}

/// What the watchdog reads of a stream.
struct Probe {
    origin: Instant,
    /// Milliseconds after `origin` (plus one) when the stream was woken and not polled
    /// since; 0 while it is being polled or waits for nothing the server holds back.
    ready_since: AtomicU64,
    /// The server's waker, which the wrapper's wake passes on.
    waker: Mutex<Option<Waker>>,
    /// The stream was dropped.
    ended: AtomicBool,
}

impl Wake for Probe {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let now = millis_since(self.origin) + 1;
        let _ = self
            .ready_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
        if let Some(waker) = self.waker.lock().as_ref() {
            waker.wake_by_ref();
        }
    }
}

fn millis_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
}

impl<S> Watched<S> {
    /// Wraps `inner`, the watch of `peer`, and starts its watchdog: a stall closes the
    /// connection through `closer`.
    pub(super) fn new(
        inner: S,
        peer: ClusterName,
        closer: Option<ConnectionCloser>,
        stats: GrpcStats,
    ) -> Self {
        let probe = Arc::new(Probe {
            origin: Instant::now(),
            ready_since: AtomicU64::new(0),
            waker: Mutex::new(None),
            ended: AtomicBool::new(false),
        });
        tokio::spawn(watchdog(probe.clone(), peer, closer, stats));
        Self { inner, probe }
    }
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        self.probe.ended.store(true, Ordering::Release);
    }
}

impl<S: Stream + Unpin> Stream for Watched<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let probe = self.probe.clone();
        probe.ready_since.store(0, Ordering::Release);
        {
            let mut slot = probe.waker.lock();
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        let waker = Waker::from(probe);
        let mut inner_cx = Context::from_waker(&waker);
        Pin::new(&mut self.inner).poll_next(&mut inner_cx)
    }
}

async fn watchdog(
    probe: Arc<Probe>,
    peer: ClusterName,
    closer: Option<ConnectionCloser>,
    stats: GrpcStats,
) {
    let limit = u64::try_from(STALL_LIMIT.as_millis()).unwrap_or(u64::MAX);
    let mut tick = tokio::time::interval(STALL_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if probe.ended.load(Ordering::Acquire) {
            return;
        }
        let since = probe.ready_since.load(Ordering::Acquire);
        let now = millis_since(probe.origin) + 1;
        if since == 0 || now.saturating_sub(since) < limit {
            continue;
        }
        stats.count_stalled();
        warn!(%peer, stalled_for = ?Duration::from_millis(now - since),
            "watcher took no frames; closing its connection");
        // Only a connection without TLS (a test's) has no closer: nothing to close.
        if let Some(closer) = &closer {
            closer.close();
        }
        return;
    }
}
