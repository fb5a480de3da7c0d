//! Latency summaries: percentiles over every sample of a run (no sampling, no histogram
//! buckets: runs are small enough to keep every figure).

use std::time::Duration;

use serde::Serialize;

/// Percentiles of a set of durations, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Summarizes `samples` (any order); all zero when there are none.
    pub fn of(samples: &[Duration]) -> Self {
        let mut sorted: Vec<Duration> = samples.to_vec();
        sorted.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Self {
            count: sorted.len(),
            p50_ms: percentile(&sorted, 0.50).map_or(0.0, ms),
            p99_ms: percentile(&sorted, 0.99).map_or(0.0, ms),
            max_ms: sorted.last().copied().map_or(0.0, ms),
        }
    }
}

/// Latency percentiles down to the tail (p99.9), in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Tail {
    /// How many samples.
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Tail {
    /// Summarizes `samples` in microseconds (any order); all zero when there are none.
    pub fn of_micros(mut samples: Vec<u32>) -> Self {
        samples.sort_unstable();
        let ms = |q: f64| percentile(&samples, q).map_or(0.0, |us| f64::from(us) / 1000.0);
        let total: u64 = samples.iter().map(|us| u64::from(*us)).sum();
        Self {
            count: samples.len(),
            mean_ms: total as f64 / samples.len().max(1) as f64 / 1000.0,
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: ms(1.0),
        }
    }
}

/// The nearest-rank percentile `q` (0..=1) of `sorted`; `None` when it is empty.
fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    // Nearest rank: the smallest sample with at least q of the samples at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&samples);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
    }

    #[test]
    fn the_tail_uses_the_nearest_rank_too() {
        let samples: Vec<u32> = (1..=1000).rev().map(|ms| ms * 1000).collect();
        let t = Tail::of_micros(samples);
        assert_eq!(t.count, 1000);
        assert_eq!(
            (t.p50_ms, t.p99_ms, t.p999_ms, t.max_ms),
            (500.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(Tail::of_micros(Vec::new()), Tail::default());
    }

    #[test]
    fn no_samples_give_zeros() {
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
    }
}
