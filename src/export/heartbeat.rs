//! The heartbeat: `cilium/.heartbeat` rewritten every minute, which Cilium clients watch
//! to tell a live store from a stale one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::leases::LeasePool;
use crate::kvstore::{Store, StoreError, codec, keys};

/// Cilium's `HeartbeatWriteInterval`; clients call a store stale after two missed beats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

/// Writes the heartbeat every `interval`, publishing each write's time in `written`.
/// Returns only on a store error.
pub async fn beat(
    store: Arc<dyn Store>,
    interval: Duration,
    lease_ttl: Duration,
    written: &watch::Sender<Option<SystemTime>>,
) -> Result<(), StoreError> {
    let mut leases = LeasePool::new(store.clone(), lease_ttl);
    let mut lease = leases.acquire().await?;
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if !leases.keep_alive().await?.is_empty() {
            lease = leases.acquire().await?;
        }
        let now = time::OffsetDateTime::now_utc();
        store
            .put(keys::HEARTBEAT, codec::encode_timestamp(now), Some(lease))
            .await?;
        written.send_replace(Some(now.into()));
    }
}
