//! The baseline: an agent the way Cilium's work, watching the source cluster's etcd
//! directly (a list, then a watch) with its own etcd client, and decoding Cilium's JSON
//! values into the model. It watches `cilium/state/` in one watch where Cilium opens one
//! per kind: that favours the baseline (fewer lists and streams for etcd to serve).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;

use crate::kvstore::codec;
use crate::kvstore::etcd::{EtcdConfig, EtcdStore, Keepalive};
use crate::kvstore::keys::StateKey;
use crate::kvstore::{KeyValue, Store, WatchEvent, WatchStart};
use crate::model::{Cluster, Resource, ResourceKey, Revision};

/// The prefix a Cilium agent reads a remote cluster's state under.
pub(super) const STATE_PREFIX: &str = "cilium/state/";
/// An agent's etcd client gives up connecting after this.
pub(super) const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// A Cilium agent's HTTP/2 pings towards its remote clusters' etcd (a ping after 15 s
/// with nothing read, 25 s for its answer), not `kvstore::etcd`'s shorter ones: an agent
/// that reads behind megabytes of watch responses gets its answer that late.
pub(super) const CILIUM_KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(15),
    timeout: Duration::from_secs(25),
};

/// What one etcd-direct agent saw until its list was complete.
pub struct DirectSync {
    /// From `started` to the end of the list.
    pub synced_after: Duration,
    /// Every decoded object, by key.
    pub held: HashMap<ResourceKey, Resource>,
    /// Keys listed more than once.
    pub duplicate: u64,
    /// Listed values newer than the list's own revision.
    pub out_of_order: u64,
    /// Values that did not decode.
    pub undecodable: u64,
}

/// Connects to the etcd of `config` (its own client, as every agent has), lists the
/// source's state and decodes it; timed from `started`.
pub async fn sync_direct(
    config: EtcdConfig,
    source: &Cluster,
    started: Instant,
) -> anyhow::Result<DirectSync> {
    let store = EtcdStore::connect(EtcdConfig {
        dial_timeout: DIAL_TIMEOUT,
        keepalive: CILIUM_KEEPALIVE,
        ..config
    })
    .await
    .context("an etcd-direct agent cannot connect")?;
    let mut watch = store
        .watch(STATE_PREFIX, WatchStart::List)
        .await
        .context("an etcd-direct agent cannot watch")?;
    let mut sync = DirectSync {
        synced_after: Duration::ZERO,
        held: HashMap::new(),
        duplicate: 0,
        out_of_order: 0,
        undecodable: 0,
    };
    let mut revisions: Vec<Revision> = Vec::new();
    while let Some(event) = watch.next().await {
        match event.context("an etcd-direct agent's watch failed")? {
            WatchEvent::ListStart => {}
            WatchEvent::Put(kv) => {
                revisions.push(kv.mod_revision);
                match decode(&kv, source) {
                    Some(resource) => {
                        if sync.held.insert(resource.key(), resource).is_some() {
                            sync.duplicate += 1;
                        }
                    }
                    None => sync.undecodable += 1,
                }
            }
            WatchEvent::Delete { key, .. } => bail!("{key} was deleted during a sync bench"),
            WatchEvent::ListDone { revision } => {
                sync.synced_after = started.elapsed();
                sync.out_of_order = revisions.iter().filter(|r| **r > revision).count() as u64;
                return Ok(sync);
            }
        }
    }
    bail!("an etcd-direct agent's watch ended before its list was complete")
}

/// Decodes a listed key-value as a Cilium agent does; `None` when it does not decode.
pub(super) fn decode(kv: &KeyValue, source: &Cluster) -> Option<Resource> {
    let mode = source.mode;
    match StateKey::parse(&kv.key)? {
        StateKey::Node { .. } => codec::decode_node(&kv.value, mode).ok().map(Resource::Node),
        StateKey::Service { .. } => codec::decode_service(&kv.value, mode)
            .ok()
            .map(Resource::Service),
        StateKey::Identity(id) => codec::decode_identity(id, &kv.value, source)
            .ok()
            .map(Resource::Identity),
        StateKey::Endpoint(_) => codec::decode_endpoint(&kv.value)
            .ok()
            .map(Resource::Endpoint),
        StateKey::FleetmeshService { .. } | StateKey::ServiceExport { .. } => None,
    }
}
