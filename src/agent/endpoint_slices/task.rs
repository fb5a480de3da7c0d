//! The writer's loop: wait for the links to sync (module `gate`), then keep the slices
//! equal to what the view selects. A pass against the API runs when the desired slices
//! differ from those last written, when the resync period is up (to repair edits and
//! deletions by others), and when a failed pass's backoff is over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::{info, warn};

use crate::observe::{Links, SliceStats};
use crate::remote::SharedView;
use crate::report::error_chain;

use super::desired::{Desired, desired_slices};
use super::gate;
use super::reconcile::reconcile;

/// How often the view's services version is read: a change reaches the slices within
/// this, and reading a counter under the read lock ten times a second costs nothing.
const POLL: Duration = Duration::from_millis(100);
/// The first retry after a failed pass: soon enough for a conflict with a concurrent
/// edit, which the next pass resolves at once.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait between retries while the API keeps failing: spares an overloaded
/// API server without leaving the slices wrong for long once it recovers.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Doublings after which the backoff window stops growing (500 ms · 2^7 > 60 s).
const MAX_DOUBLINGS: u32 = 7;

/// Keeps the agent's EndpointSlices in step with its view.
pub(super) struct SliceWriter {
    client: kube::Client,
    view: SharedView,
    links: Arc<dyn Links>,
    resync: Duration,
    stats: SliceStats,
}

/// Where the loop stands between two polls.
struct State {
    /// The services version `desired` was computed at.
    version: Option<u64>,
    desired: Desired,
    /// When `desired` must be computed again though the version did not move (a peer
    /// becomes stale then).
    stale_deadline: Option<Instant>,
    /// What the last successful pass wrote.
    written: Option<Desired>,
    next_resync: Instant,
    retry_at: Option<Instant>,
    failures: u32,
}

impl State {
    /// Schedules the next pass after a failed one; returns the delay.
    fn retry_later(&mut self, now: Instant) -> Duration {
        self.written = None;
        let delay = retry_delay(self.failures, &mut rand::rng());
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + delay);
        delay
    }
}

impl SliceWriter {
    pub fn new(
        client: kube::Client,
        view: SharedView,
        links: Arc<dyn Links>,
        resync: Duration,
        stats: SliceStats,
    ) -> Self {
        Self {
            client,
            view,
            links,
            resync,
            stats,
        }
    }

    /// Runs until aborted; never returns.
    pub async fn run(self) -> anyhow::Result<()> {
        self.wait_for_links().await;
        let mut state = State {
            version: None,
            desired: Desired::new(),
            stale_deadline: None,
            written: None,
            next_resync: Instant::now(),
            retry_at: None,
            failures: 0,
        };
        loop {
            self.step(&mut state).await;
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_for_links(&self) {
        let started = Instant::now();
        let mut reported = None;
        loop {
            let waiting = gate::waiting_for(&self.links.reports(), started, Instant::now());
            let Some(what) = waiting else {
                info!("links synced: writing EndpointSlices");
                return;
            };
            if reported.as_ref() != Some(&what) {
                info!("EndpointSlices wait for {what}");
                reported = Some(what);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn step(&self, state: &mut State) {
        let now = Instant::now();
        {
            let view = self.view.read();
            let version = view.services_version();
            if state.version != Some(version) || state.stale_deadline.is_some_and(|t| now >= t) {
                state.desired = desired_slices(&view.services(now));
                state.stale_deadline = view.next_stale_deadline(now);
                state.version = Some(version);
            }
        }
        let due = match state.retry_at {
            Some(at) => now >= at,
            None => state.written.as_ref() != Some(&state.desired) || now >= state.next_resync,
        };
        if !due {
            return;
        }
        let result = reconcile(&self.client, &state.desired).await;
        match &result {
            Ok(o) => self
                .stats
                .count_pass(o.created, o.updated, o.deleted, o.failed),
            Err(_) => self.stats.count_list_error(),
        }
        match result {
            Ok(outcome) if outcome.failed == 0 => {
                if outcome.changed() {
                    info!(
                        slices = state.desired.len(),
                        created = outcome.created,
                        updated = outcome.updated,
                        deleted = outcome.deleted,
                        "EndpointSlices written"
                    );
                }
                state.written = Some(state.desired.clone());
                state.next_resync = now + self.resync;
                state.retry_at = None;
                state.failures = 0;
            }
            Ok(outcome) => {
                let delay = state.retry_later(now);
                warn!(
                    failed = outcome.failed,
                    retry_in = ?delay,
                    "EndpointSlices: some writes failed (logged above)"
                );
            }
            Err(e) => {
                let delay = state.retry_later(now);
                warn!(
                    error = %error_chain(&e),
                    retry_in = ?delay,
                    "EndpointSlices: cannot list the agent's slices"
                );
            }
        }
    }
}

/// Full jitter over a window that doubles with each consecutive failure: many agents
/// that lost the same API server do not come back in step.
fn retry_delay(failures: u32, rng: &mut impl Rng) -> Duration {
    let cap = BACKOFF_MIN
        .saturating_mul(1 << failures.min(MAX_DOUBLINGS))
        .min(BACKOFF_MAX);
    rng.random_range(BACKOFF_MIN..=cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_with_jitter_up_to_the_cap() {
        let mut rng = rand::rng();
        for failures in [0, 1, 3, 7, 8, 100] {
            let cap = BACKOFF_MIN
                .saturating_mul(1 << failures.min(MAX_DOUBLINGS))
                .min(BACKOFF_MAX);
            for _ in 0..50 {
                let d = retry_delay(failures, &mut rng);
                assert!(d >= BACKOFF_MIN && d <= cap, "{failures}: {d:?}");
            }
        }
        assert_eq!(
            BACKOFF_MIN
                .saturating_mul(1 << MAX_DOUBLINGS)
                .min(BACKOFF_MAX),
            BACKOFF_MAX
        );
    }
}
