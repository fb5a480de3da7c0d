//! Least-squares slopes of memory against size: what each more endpoint or agent costs,
//! free of the fixed part (runtime, threads, TLS configs) a single point would include.

use anyhow::bail;
use serde::Serialize;

/// One measurement: a size and the resident memory at it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Endpoints, or agents.
    pub size: u64,
    pub rss_kib: u64,
}

/// The line through a set of points.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fit {
    pub points: Vec<Point>,
    /// KiB per unit of size.
    pub kib_per_unit: f64,
    /// KiB at size zero: the fixed part.
    pub intercept_kib: f64,
}

impl Fit {
    /// The least-squares line through `points`; at least two distinct sizes.
    pub fn of(points: Vec<Point>) -> anyhow::Result<Self> {
        let n = points.len() as f64;
        let mean = |f: &dyn Fn(&Point) -> f64| points.iter().map(f).sum::<f64>() / n;
        let (mx, my) = (mean(&|p| p.size as f64), mean(&|p| p.rss_kib as f64));
        let sxx: f64 = points.iter().map(|p| (p.size as f64 - mx).powi(2)).sum();
        if points.len() < 2 || sxx == 0.0 {
            bail!("a slope needs at least two different sizes, got {points:?}");
        }
        let sxy: f64 = points
            .iter()
            .map(|p| (p.size as f64 - mx) * (p.rss_kib as f64 - my))
            .sum();
        let slope = sxy / sxx;
        Ok(Self {
            kib_per_unit: slope,
            intercept_kib: my - slope * mx,
            points,
        })
    }

    /// MiB per 100,000 units of size.
    pub fn mib_per_100k(&self) -> f64 {
        self.kib_per_unit * 100_000.0 / 1024.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_points(values: &[(u64, u64)]) -> Vec<Point> {
        values
            .iter()
            .map(|&(size, rss_kib)| Point { size, rss_kib })
            .collect()
    }

    #[test]
    fn the_slope_of_points_on_a_line_is_exact() {
        let fit = Fit::of(mk_points(&[(0, 1000), (100_000, 11_240), (50_000, 6120)])).unwrap();
        assert!((fit.kib_per_unit - 0.1024).abs() < 1e-9, "{fit:?}");
        assert!((fit.mib_per_100k() - 10.0).abs() < 1e-6);
        assert!((fit.intercept_kib - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn noise_is_averaged_and_one_size_is_refused() {
        let fit = Fit::of(mk_points(&[(1, 10), (2, 22), (3, 30), (4, 42)])).unwrap();
        assert!((fit.kib_per_unit - 10.4).abs() < 1e-9, "{fit:?}");
        assert!(Fit::of(mk_points(&[(5, 10), (5, 20)])).is_err());
        assert!(Fit::of(mk_points(&[(5, 10)])).is_err());
    }
}
