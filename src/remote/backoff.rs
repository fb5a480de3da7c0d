//! When a link tries again: exponential backoff with full jitter, for reconnecting to a
//! peer.
//!
//! Each retry waits a uniformly random time between `min` and the current window, and
//! each retry doubles the window up to `max`. The window starts at `min`: a peer that
//! could not be reached is dialed again after `min`, then within ever wider windows.
//!
//! A **stream that broke** is different: an apiserver restart breaks the streams of
//! every agent at the same instant, so the first retry after a broken stream is drawn
//! from a window of at least [`BROKEN_STREAM_SPREAD`] (full jitter). Without it every
//! agent redials after exactly `min` and the whole fleet resyncs in the same second
//! (measured by `fleetmesh bench storm`); with it each second sees about a quarter of
//! them. Only that one retry is spread: if it finds the peer still down, the following
//! dials widen from `min` as after any failed dial. The trade: a lone peer's restart
//! costs two seconds on average before the agent redials (it serves what it holds
//! meanwhile), for a fleet that never resyncs all at once.

use std::time::Duration;

use rand::Rng;

/// The window of the first retry after a broken stream (capped at `max`): four seconds
/// put about a quarter of a fleet's reconnects into any one second after an apiserver
/// restart (the storm target is at most half), and a lone peer's restart still costs
/// two seconds on average — while the agent keeps serving what it holds.
pub const BROKEN_STREAM_SPREAD: Duration = Duration::from_secs(4);

/// The retry delays of one link.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The upper bound of the next delay; `min` after a reset, doubling per retry.
    window: Duration,
}

impl Backoff {
    /// Delays between `min` and `max`; `max` below `min` is raised to `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            window: min,
        }
    }

    /// The delay before the next retry, drawn from `rng`; widens the next window.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let (low, high) = (nanos(self.min), nanos(self.window));
        self.window = self.window.saturating_mul(2).min(self.max);
        Duration::from_nanos(rng.random_range(low..=high))
    }

    /// The delay before the next retry, drawn from a window of at least `spread` (capped
    /// at `max`). The backoff's own window widens as after any retry, not from `spread`:
    /// if that redial fails (the peer is still starting), the next ones come as quickly
    /// as after any failed dial.
    pub fn next_delay_spread(&mut self, spread: Duration, rng: &mut impl Rng) -> Duration {
        let high = self.window.max(spread.min(self.max));
        self.window = self.window.saturating_mul(2).min(self.max);
        Duration::from_nanos(rng.random_range(nanos(self.min)..=nanos(high)))
    }

    /// Starts over from the smallest window (after a connection that stayed healthy).
    pub fn reset(&mut self) {
        self.window = self.min;
    }
}

/// The retry decision of one link: the backoff, started over after a stream that stayed
/// up, spread after any stream that broke, and skipped once when the peer ended the
/// stream because this agent fell behind (a resume fixes that at once; skipping only
/// once keeps a peer that does it on every stream from making the link spin).
#[derive(Clone, Debug)]
pub struct Retry {
    backoff: Backoff,
    stable_after: Duration,
    /// The last retry skipped the backoff.
    skipped: bool,
}

impl Retry {
    /// Backoff between `min` and `max`; a stream up for `stable_after` resets it.
    pub fn new(min: Duration, max: Duration, stable_after: Duration) -> Self {
        Self {
            backoff: Backoff::new(min, max),
            stable_after,
            skipped: false,
        }
    }

    /// The delay before the next attempt. `streamed_for` is how long the attempt's watch
    /// stream was up (`None` if it never opened); `fell_behind`, whether the peer ended
    /// it because this agent fell behind.
    pub fn delay(
        &mut self,
        streamed_for: Option<Duration>,
        fell_behind: bool,
        rng: &mut impl Rng,
    ) -> Duration {
        if streamed_for.is_some_and(|up| up >= self.stable_after) {
            self.backoff.reset();
        }
        if fell_behind && !self.skipped {
            self.skipped = true;
            return Duration::ZERO;
        }
        self.skipped = false;
        if streamed_for.is_some() {
            // The peer went away under an open stream: every other agent saw the same.
            return self.backoff.next_delay_spread(BROKEN_STREAM_SPREAD, rng);
        }
        self.backoff.next_delay(rng)
    }
}

/// A duration in nanoseconds, saturating (a `u64` holds 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const MIN: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn delays_stay_within_a_window_that_doubles_up_to_max() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(MIN, MAX);
        for attempt in 0..40u32 {
            let cap = MIN.saturating_mul(1 << attempt.min(20)).min(MAX);
            let delay = backoff.next_delay(&mut rng);
            assert!(delay >= MIN && delay <= cap, "attempt {attempt}: {delay:?}");
        }
    }

    #[test]
    fn the_first_retry_waits_the_minimum() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(Backoff::new(MIN, MAX).next_delay(&mut rng), MIN);
        let mut retry = Retry::new(MIN, MAX, Duration::from_secs(30));
        assert_eq!(retry.delay(None, false, &mut rng), MIN);
    }

    #[test]
    fn delays_are_jittered_over_the_whole_window() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut delays = Vec::new();
        for _ in 0..200 {
            let mut backoff = Backoff::new(MIN, MAX);
            for _ in 0..10 {
                backoff.next_delay(&mut rng);
            }
            // The 11th retry's window is [200 ms, 30 s].
            delays.push(backoff.next_delay(&mut rng));
        }
        let low = delays
            .iter()
            .filter(|d| **d < Duration::from_secs(10))
            .count();
        let high = delays
            .iter()
            .filter(|d| **d > Duration::from_secs(20))
            .count();
        assert!(low > 30 && high > 30, "low {low}, high {high}");
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 190, "delays repeat: {}", delays.len());
    }

    #[test]
    fn reset_starts_over_from_the_minimum() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut backoff = Backoff::new(MIN, MAX);
        for _ in 0..30 {
            backoff.next_delay(&mut rng);
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(&mut rng), MIN);
        assert!(backoff.next_delay(&mut rng) <= MIN * 2);
    }

    /// What the storm bench measures, in miniature: 1,000 agents whose streams broke at
    /// the same instant redial over the whole spread, never more than a third of them
    /// in any one second (the storm target is half).
    #[test]
    fn a_broken_stream_spreads_the_first_retry_over_seconds() {
        let mut rng = StdRng::seed_from_u64(17);
        let agents = 1_000;
        let mut per_second = [0usize; 5];
        for _ in 0..agents {
            let mut retry = Retry::new(MIN, MAX, Duration::from_secs(30));
            let delay = retry.delay(Some(Duration::from_secs(1)), false, &mut rng);
            assert!(delay >= MIN && delay <= BROKEN_STREAM_SPREAD, "{delay:?}");
            per_second[delay.as_secs() as usize] += 1;
        }
        for (second, count) in per_second.iter().enumerate() {
            assert!(*count < agents / 3, "second {second}: {count} of {agents}");
        }
        assert!(per_second[3] > agents / 10, "{per_second:?}");
    }

    #[test]
    fn the_spread_never_exceeds_max_and_keeps_a_wider_window() {
        let mut rng = StdRng::seed_from_u64(19);
        let fast = Duration::from_millis(500);
        let mut retry = Retry::new(Duration::from_millis(20), fast, Duration::from_secs(30));
        for _ in 0..50 {
            assert!(retry.delay(Some(MIN), false, &mut rng) <= fast);
        }
        // Already past the spread: a broken stream does not narrow the window.
        let mut backoff = Backoff::new(MIN, MAX);
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        let before = backoff.window;
        backoff.next_delay_spread(BROKEN_STREAM_SPREAD, &mut rng);
        assert_eq!((before, backoff.window), (MAX, MAX));
    }

    /// The peer restarts slowly: the spread first retry finds it still down, and the
    /// dials after that come as after any failed dial (0.4 s, 0.8 s, …), not from a
    /// window doubled from the spread.
    #[test]
    fn failed_dials_after_a_spread_retry_stay_short() {
        let mut rng = StdRng::seed_from_u64(23);
        for _ in 0..100 {
            let mut retry = Retry::new(MIN, MAX, Duration::from_secs(30));
            assert!(
                retry.delay(Some(Duration::from_secs(1)), false, &mut rng) <= BROKEN_STREAM_SPREAD
            );
            assert!(retry.delay(None, false, &mut rng) <= MIN * 2);
            assert!(retry.delay(None, false, &mut rng) <= MIN * 4);
        }
    }

    #[test]
    fn a_stream_that_stayed_up_starts_the_backoff_over() {
        let mut rng = StdRng::seed_from_u64(11);
        let stable = Duration::from_secs(30);
        let short = Some(Duration::from_secs(29));
        let (mut after_short, mut after_stable) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..50 {
            let mut retry = Retry::new(MIN, MAX, stable);
            for _ in 0..10 {
                retry.delay(None, false, &mut rng);
            }
            let mut twin = retry.clone();
            // A short stream does not count as healthy: the window stays 30 s wide.
            after_short = after_short.max(retry.delay(short, false, &mut rng));
            // A healthy one starts over, from the broken-stream spread.
            after_stable = after_stable.max(twin.delay(Some(stable), false, &mut rng));
        }
        assert!(after_short > BROKEN_STREAM_SPREAD * 2, "{after_short:?}");
        assert!(after_stable <= BROKEN_STREAM_SPREAD, "{after_stable:?}");
    }

    #[test]
    fn falling_behind_retries_at_once_but_not_twice_in_a_row() {
        let mut rng = StdRng::seed_from_u64(13);
        let mut retry = Retry::new(MIN, MAX, Duration::from_secs(30));
        assert_eq!(retry.delay(None, true, &mut rng), Duration::ZERO);
        assert!(retry.delay(None, true, &mut rng) >= MIN);
        assert_eq!(retry.delay(None, true, &mut rng), Duration::ZERO);
        assert!(retry.delay(None, false, &mut rng) >= MIN);
        assert_eq!(retry.delay(None, true, &mut rng), Duration::ZERO);
    }

    #[test]
    fn max_below_min_is_raised_to_min() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut backoff = Backoff::new(MIN, Duration::from_millis(1));
        for _ in 0..5 {
            assert_eq!(backoff.next_delay(&mut rng), MIN);
        }
    }
}
