//! The agents' own propagation-lag histogram
//! (`fleetmesh_agent_remote_cluster_propagation_lag_seconds`, as the links record it),
//! read back after a run and set beside the bench's latency, which times every delivery
//! from outside.
//!
//! They are compared by their means first: the histogram's sum and count are exact, so
//! its mean is too, while a quantile read from it is interpolated inside a bucket twice
//! as wide as the one below. Their medians are compared too: the lag starts when the
//! apiserver took a change from its store, the bench's figure at the store's
//! acknowledgement, so a stall of the apiserver's store watch (a busy machine) is in the
//! bench's tail and mean but not in the lag's; the medians stay clear of it.

use serde::Serialize;

use crate::exposition::{Exposition, MeanHistogram};

/// The bench's mean and the histogram's may differ by this share of the bench's.
pub const AGREEMENT: f64 = 0.20;

/// What the agents' propagation-lag histogram holds after a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LagFigures {
    /// Observations: one per change an agent applied from a live frame.
    pub count: u64,
    pub mean_ms: f64,
    /// Quantiles interpolated within the histogram's buckets, as Prometheus'
    /// `histogram_quantile` does.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl LagFigures {
    /// Reads `lag` (every link's samples, whatever their target) through its
    /// exposition.
    pub fn of(lag: &MeanHistogram) -> Self {
        let mut e = Exposition::new("bench");
        e.kept("lag_seconds", "lag", lag.family());
        let text = e.finish();
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        let (mut sum, mut count) = (0.0, 0u64);
        for line in text.lines() {
            let Some((name_labels, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if let Some(labels) = name_labels.strip_prefix("bench_lag_seconds_bucket{") {
                let Some(le) = labels
                    .split("le=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                else {
                    continue;
                };
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                };
                let n: u64 = value.parse().unwrap_or(0);
                match buckets.iter_mut().find(|(b, _)| *b == bound) {
                    Some((_, total)) => *total += n,
                    None => buckets.push((bound, n)),
                }
            } else if name_labels.starts_with("bench_lag_seconds_sum") {
                sum += value.parse::<f64>().unwrap_or(0.0);
            } else if name_labels.starts_with("bench_lag_seconds_count") {
                count += value.parse::<u64>().unwrap_or(0);
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self {
            count,
            mean_ms: if count == 0 {
                0.0
            } else {
                sum / count as f64 * 1000.0
            },
            p50_ms: quantile(&buckets, count, 0.50) * 1000.0,
            p99_ms: quantile(&buckets, count, 0.99) * 1000.0,
        }
    }

    /// The histogram's mean is within [`AGREEMENT`] of `bench_mean_ms`.
    pub fn agrees_with(&self, bench_mean_ms: f64) -> bool {
        within(self.mean_ms, bench_mean_ms)
    }
}

/// `figure` is within [`AGREEMENT`] of `reference`.
pub fn within(figure: f64, reference: f64) -> bool {
    (figure - reference).abs() <= AGREEMENT * reference
}

/// Quantile `q` of cumulative `buckets` (upper bound, count at or below), interpolated
/// linearly inside its bucket; the highest finite bound when it falls in `+Inf`.
fn quantile(buckets: &[(f64, u64)], count: u64, q: f64) -> f64 {
    if count == 0 {
        return 0.0;
    }
    let rank = q * count as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, cumulative) in buckets {
        if cumulative as f64 >= rank {
            if bound.is_infinite() {
                return lower.0;
            }
            let inside = (cumulative - lower.1) as f64;
            let share = if inside == 0.0 {
                1.0
            } else {
                (rank - lower.1 as f64) / inside
            };
            return lower.0 + (bound - lower.0) * share;
        }
        lower = (bound, cumulative);
    }
    lower.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_the_histogram_as_exposed() {
        let lag = MeanHistogram::new("target_cluster");
        // 0.0015 s falls in the (0.001, 0.002] bucket, 0.003 in (0.002, 0.004].
        for _ in 0..98 {
            lag.observe("a", 0.0015);
        }
        lag.observe("b", 0.003);
        lag.observe("b", 0.003);
        let f = LagFigures::of(&lag);
        assert_eq!(f.count, 100);
        assert!((f.mean_ms - 1.53).abs() < 1e-9, "{f:?}");
        // The 50th of 98 in (1, 2] ms: 1 + 50/98.
        assert!((f.p50_ms - (1.0 + 50.0 / 98.0)).abs() < 1e-9, "{f:?}");
        // The 99th: the first of the two in (2, 4] ms, halfway.
        assert!((f.p99_ms - 3.0).abs() < 1e-9, "{f:?}");
        assert!(f.agrees_with(1.7) && !f.agrees_with(2.0));
    }
}
