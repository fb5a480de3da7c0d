//! Prometheus exposition for both binaries, in the OpenMetrics text format through the
//! `prometheus-client` crate. Most values are counted where the work happens (the gRPC
//! server's, the TLS listener's, a link's status) and only read at scrape time, so each
//! scrape builds a fresh registry of those readings; histograms live across scrapes and
//! are registered as they are.
//!
//! Names follow Prometheus' conventions: the unit in the name, and counters named
//! without `_total`, which the encoder appends. Help texts end without a full stop: the
//! encoder adds one.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use std::sync::atomic::AtomicU64;

/// The content type of [`Exposition::finish`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label pairs of one sample.
pub type Labels = Vec<(String, String)>;

/// A histogram per label set, kept across scrapes.
pub type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Buckets for latencies from a millisecond to about half a minute, in seconds.
pub fn latency_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// One scrape's metrics, built from readings.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// Metrics named `<prefix>_<name>`.
    pub fn new(prefix: &str) -> Self {
        Self {
            registry: Registry::with_prefix(prefix),
        }
    }

    /// A counter reading; `name` without `_total`.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.counter_family(name, help, [(Labels::new(), value)]);
    }

    /// A counter reading per label set; `name` without `_total`.
    pub fn counter_family(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let family = Family::<Labels, Counter>::default();
        for (labels, value) in samples {
            family.get_or_create(&labels).inc_by(value);
        }
        self.registry.register(name, help, family);
    }

    /// A gauge reading.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.gauge_family(name, help, [(Labels::new(), value)]);
    }

    /// A gauge reading per label set.
    pub fn gauge_family(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (labels, value) in samples {
            family.get_or_create(&labels).set(value);
        }
        self.registry.register(name, help, family);
    }

    /// A metric that lives across scrapes (a histogram, say).
    pub fn kept(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help, metric);
    }

    /// The exposition text, ending with `# EOF`.
    pub fn finish(self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// `[(name, value)]` as labels.
pub fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// 1 or 0.
pub fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Seconds since the Unix epoch of an RFC 3339 time, if it parses.
pub fn rfc3339_unix_seconds(text: &str) -> Option<f64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_and_the_text_ends_with_eof() {
        let mut e = Exposition::new("x");
        e.counter("things", "Things", 3);
        e.gauge_family("up", "Up", [(labels([("peer", "a\"b")]), 1.0)]);
        let text = e.finish();
        assert!(text.contains("# TYPE x_things counter\n"), "{text}");
        assert!(text.contains("x_things_total 3\n"), "{text}");
        assert!(text.contains("x_up{peer=\"a\\\"b\"} 1.0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn rfc3339_times_become_unix_seconds() {
        assert_eq!(rfc3339_unix_seconds("1970-01-01T00:01:00Z"), Some(60.0));
        assert_eq!(rfc3339_unix_seconds("yesterday"), None);
    }
}

/// A histogram per label value that also keeps each one's sum and count, which
/// `prometheus-client` does not expose (the status page shows the mean). Cheap to clone.
#[derive(Clone, Debug)]
pub struct MeanHistogram {
    label: &'static str,
    family: HistogramFamily,
    totals: std::sync::Arc<parking_lot::Mutex<std::collections::BTreeMap<String, (f64, u64)>>>,
}

impl MeanHistogram {
    /// Histograms labelled `label` with [`latency_buckets`].
    pub fn new(label: &'static str) -> Self {
        Self {
            label,
            family: HistogramFamily::new_with_constructor(latency_buckets),
            totals: Default::default(),
        }
    }

    /// Observes `value` under `label_value`.
    pub fn observe(&self, label_value: &str, value: f64) {
        let labels = vec![(self.label.to_string(), label_value.to_string())];
        self.family.get_or_create(&labels).observe(value);
        let mut totals = self.totals.lock();
        let entry = totals.entry(label_value.to_string()).or_default();
        entry.0 += value;
        entry.1 += 1;
    }

    /// The mean of what `label_value` observed, if anything.
    pub fn mean(&self, label_value: &str) -> Option<f64> {
        let totals = self.totals.lock();
        let (sum, count) = totals.get(label_value)?;
        (*count > 0).then(|| sum / *count as f64)
    }

    /// The histograms, to register.
    pub fn family(&self) -> HistogramFamily {
        self.family.clone()
    }
}
