//! When a link tries again: exponential backoff with full jitter, for reconnecting to a
//! peer.
//!
//! The n-th consecutive retry waits a uniformly random time between `min` and
//! `min(max, min · 2ⁿ)`. The randomness spreads the reconnects of many agents after an
//! apiserver restart over the whole window instead of synchronising them into waves;
//! the floor keeps a flapping peer from being dialed in a tight loop.

use std::time::Duration;

use rand::Rng;

/// Doublings after which the window stops growing: `min · 2^20` exceeds any sensible
/// `max`, and the cap keeps the shift from overflowing.
const MAX_DOUBLINGS: u32 = 20;

/// The retry delays of one link.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Consecutive failures since the last reset.
    attempt: u32,
}

impl Backoff {
    /// Delays between `min` and `max`; `max` below `min` is raised to `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    /// The delay before the next retry, drawn from `rng`; widens the next window.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let cap = self
            .min
            .saturating_mul(1 << self.attempt.min(MAX_DOUBLINGS))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let (low, high) = (nanos(self.min), nanos(cap));
        Duration::from_nanos(rng.random_range(low..=high))
    }

    /// Starts over from the smallest window (after a connection that stayed healthy).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The retry decision of one link: the backoff, started over after a stream that stayed
/// up, and skipped once when the peer ended the stream because this agent fell behind
/// (a resume fixes that at once; skipping only once keeps a peer that does it on every
/// stream from making the link spin).
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
            let cap = MIN.saturating_mul(1 << attempt.min(MAX_DOUBLINGS)).min(MAX);
            let delay = backoff.next_delay(&mut rng);
            assert!(delay >= MIN && delay <= cap, "attempt {attempt}: {delay:?}");
        }
    }

    #[test]
    fn the_first_retry_waits_the_minimum() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(Backoff::new(MIN, MAX).next_delay(&mut rng), MIN);
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

    #[test]
    fn a_stream_that_stayed_up_starts_the_backoff_over() {
        let mut rng = StdRng::seed_from_u64(11);
        let stable = Duration::from_secs(30);
        let mut retry = Retry::new(MIN, MAX, stable);
        for _ in 0..10 {
            retry.delay(None, false, &mut rng);
        }
        // A short stream does not count as healthy: the window stays wide.
        let short = Some(Duration::from_secs(29));
        assert!(retry.delay(short, false, &mut rng) > MIN * 2);
        assert_eq!(retry.delay(Some(stable), false, &mut rng), MIN);
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
