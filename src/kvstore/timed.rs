//! A [`Store`] that times every operation of the store it wraps, for the apiserver's
//! store latency histogram. Watches are timed until their stream is set up only: what
//! they deliver later is not an operation of this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{CasOutcome, Epoch, Expect, KeyValue, LeaseId, Listing, Store, StoreError};
use super::{WatchStart, WatchStream};
use crate::exposition::{HistogramFamily, Labels, latency_buckets};
use crate::model::Revision;

/// Wraps `inner`, observing each operation's duration in `latency` under the label
/// `operation` (`get`, `list`, `put`, ...).
pub struct TimedStore {
    inner: Arc<dyn Store>,
    latency: HistogramFamily,
}

impl TimedStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            latency: HistogramFamily::new_with_constructor(latency_buckets),
        }
    }

    /// The histograms, shared with the store: register it to expose them.
    pub fn latency(&self) -> HistogramFamily {
        self.latency.clone()
    }

    fn observe(&self, operation: &str, started: Instant) {
        let labels: Labels = vec![("operation".to_string(), operation.to_string())];
        let took: Duration = started.elapsed();
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

#[async_trait]
impl Store for TimedStore {
    fn epoch(&self) -> Epoch {
        self.inner.epoch()
    }

    async fn check_epoch(&self) -> Result<Epoch, StoreError> {
        let started = Instant::now();
        let result = self.inner.check_epoch().await;
        self.observe("check_epoch", started);
        result
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let started = Instant::now();
        let result = self.inner.get(key).await;
        self.observe("get", started);
        result
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let started = Instant::now();
        let result = self.inner.list(prefix).await;
        self.observe("list", started);
        result
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let started = Instant::now();
        let result = self.inner.put(key, value, lease).await;
        self.observe("put", started);
        result
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let started = Instant::now();
        let result = self.inner.delete(key).await;
        self.observe("delete", started);
        result
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Option<Bytes>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError> {
        let started = Instant::now();
        let result = self.inner.compare_and_swap(key, expect, value, lease).await;
        self.observe("compare_and_swap", started);
        result
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let started = Instant::now();
        let result = self.inner.grant_lease(ttl).await;
        self.observe("grant_lease", started);
        result
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.keep_alive(lease).await;
        self.observe("keep_alive", started);
        result
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.revoke_lease(lease).await;
        self.observe("revoke_lease", started);
        result
    }

    async fn watch(&self, prefix: &str, start: WatchStart) -> Result<WatchStream, StoreError> {
        let started = Instant::now();
        let result = self.inner.watch(prefix, start).await;
        self.observe("watch", started);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvstore::memory::MemoryStore;

    #[tokio::test]
    async fn each_operation_is_observed_under_its_name() {
        let store = TimedStore::new(MemoryStore::new());
        store
            .put("a", Bytes::from_static(b"1"), None)
            .await
            .unwrap();
        store.get("a").await.unwrap();
        store.get("b").await.unwrap();
        let latency = store.latency();
        let mut e = crate::exposition::Exposition::new("t");
        e.kept("op_duration_seconds", "Ops", latency);
        let text = e.finish();
        assert!(
            text.contains("t_op_duration_seconds_count{operation=\"get\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("t_op_duration_seconds_count{operation=\"put\"} 1\n"),
            "{text}"
        );
    }
}
