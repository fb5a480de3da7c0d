//! `bench merge --etcd-api`: the merging agent also keeps every cluster's Cilium cache
//! keys (KVStoreMesh's part), and one reader then lists `cilium/cache/ip/v1/` as Cilium
//! does — pages of 256 keys, the first at the latest revision, the others pinned to it.
//! The list reads the key cache in process, as the etcd API's `Range` does, without the
//! gRPC transport.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::cache_keys::{CacheKeys, DEFAULT_DRAIN_GRACE};
use crate::etcd_api::{KeyCache, KeyCacheSettings, KeyRange};
use crate::model::Cluster;

/// Cilium's page size (`etcd.limit`).
const PAGE: usize = 256;
const IP_PREFIX: &str = "cilium/cache/ip/v1/";

/// What the cache keys held, and the paged list.
#[derive(Clone, Debug, Serialize)]
pub struct CacheKeysReport {
    /// Every key the cache serves.
    pub keys: u64,
    /// Keys under `cilium/cache/ip/v1/`, as the paged list read them.
    pub ip_keys: u64,
    pub pages: u64,
    /// The paged list of `cilium/cache/ip/v1/`.
    pub list_ms: f64,
    /// From the merge's start until the cache keys' writer had written everything the
    /// links queued (the bench's synced time includes it).
    pub written_ms: f64,
}

pub(super) fn new_cache_keys(local: &Cluster) -> Arc<CacheKeys> {
    Arc::new(CacheKeys::new(
        local,
        DEFAULT_DRAIN_GRACE,
        KeyCacheSettings::default(),
    ))
}

/// Lists the ipcache keys page by page and counts everything.
pub(super) fn measure(keys: &CacheKeys, written: Duration) -> anyhow::Result<CacheKeysReport> {
    let cache = keys.key_cache();
    let all = cache.range(&KeyRange::prefix("cilium/"), 0, 1)?.count as u64;
    let started = Instant::now();
    let (ip_keys, pages) = paged_list(&cache)?;
    Ok(CacheKeysReport {
        keys: all,
        ip_keys,
        pages,
        list_ms: started.elapsed().as_secs_f64() * 1000.0,
        written_ms: written.as_secs_f64() * 1000.0,
    })
}

fn paged_list(cache: &KeyCache) -> anyhow::Result<(u64, u64)> {
    let end = KeyRange::prefix(IP_PREFIX);
    let mut from = Bytes::from_static(IP_PREFIX.as_bytes());
    let mut revision = 0;
    let (mut read, mut pages) = (0u64, 0u64);
    loop {
        let range = KeyRange::from_request(from.clone(), end_of(&end));
        let page = cache.range(&range, revision, PAGE)?;
        revision = page.header.revision;
        pages += 1;
        read += page.kvs.len() as u64;
        let Some(last) = page.kvs.last() else { break };
        if page.count <= page.kvs.len() {
            break;
        }
        let mut next = last.key.to_vec();
        next.push(0);
        from = Bytes::from(next);
    }
    Ok((read, pages))
}

/// The range end of a prefix (the prefix with its last byte incremented).
fn end_of(_prefix: &KeyRange) -> Bytes {
    let mut end = IP_PREFIX.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    Bytes::from(end)
}
