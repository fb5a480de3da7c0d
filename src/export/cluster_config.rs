//! The cluster config key: written with a lease, re-asserted periodically, and watched so
//! that a foreign edit or deletion is reverted at once (Cilium's `clustercfg.Enforce`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::leases::LeasePool;
use crate::kvstore::{Store, StoreError, WatchEvent, WatchStart, codec, keys};
use crate::model::{Capabilities, Cluster, ClusterConfig};

/// Cilium re-asserts its cluster config every 5 minutes, besides reacting to watch events.
const REASSERT_INTERVAL: Duration = Duration::from_secs(300);

/// Keeps `cilium/cluster-config/<name>` equal to this cluster's config, whose
/// `serviceExportsEnabled` says whether MCS-API exports are on. Returns only on a store
/// error (the caller restarts it).
pub async fn enforce(
    store: Arc<dyn Store>,
    cluster: Cluster,
    mcs_api: bool,
    lease_ttl: Duration,
) -> Result<(), StoreError> {
    let key = keys::cluster_config(&cluster.name);
    let value = codec::encode_cluster_config(&ClusterConfig {
        id: cluster.id,
        capabilities: Capabilities {
            service_exports_enabled: Some(mcs_api),
            ..Capabilities::fleetmesh(cluster.mode)
        },
    });
    let mut leases = LeasePool::new(store.clone(), lease_ttl);
    let mut lease = match adoptable(&*store, &key, &value, &mut leases).await? {
        Some(lease) => lease,
        None => {
            let lease = leases.acquire().await?;
            store.put(&key, value.clone(), Some(lease)).await?;
            tracing::info!(%key, "cluster config written");
            lease
        }
    };

    let mut watch = store.watch(&key, WatchStart::List).await?;
    let mut renew = tokio::time::interval(leases.renew_interval());
    let mut reassert = tokio::time::interval_at(
        tokio::time::Instant::now() + REASSERT_INTERVAL,
        REASSERT_INTERVAL,
    );
    loop {
        let rewrite = tokio::select! {
            event = watch.next() => match event {
                None => return Err(StoreError::Closed),
                Some(event) => is_foreign_change(&key, &value, &event?),
            },
            _ = renew.tick() => {
                if !leases.keep_alive().await?.is_empty() {
                    lease = leases.acquire().await?;
                    true
                } else {
                    false
                }
            }
            _ = reassert.tick() => true,
        };
        if rewrite {
            tracing::info!(%key, "restoring the cluster config");
            store.put(&key, value.clone(), Some(lease)).await?;
        }
    }
}

/// The lease of a config a previous run left in place, if it is ours and still alive:
/// then a restart need not rewrite it.
async fn adoptable(
    store: &dyn Store,
    key: &str,
    value: &Bytes,
    leases: &mut LeasePool,
) -> Result<Option<crate::kvstore::LeaseId>, StoreError> {
    let Some(kv) = store.get(key).await? else {
        return Ok(None);
    };
    match kv.lease {
        Some(lease) if kv.value == *value && leases.adopt(lease).await? => {
            leases.count(lease);
            Ok(Some(lease))
        }
        _ => Ok(None),
    }
}

fn is_foreign_change(key: &str, ours: &Bytes, event: &WatchEvent) -> bool {
    match event {
        WatchEvent::Put(kv) => kv.key == key && kv.value != *ours,
        WatchEvent::Delete { key: k, .. } => k == key,
        WatchEvent::ListStart | WatchEvent::ListDone { .. } => false,
    }
}
