//! The etcd agents of a churn run (etcd-direct and etcd-api): each watches
//! `cilium/state/` — of the source etcd, or of the apiserver's etcd API — with its own
//! client (a list, then the changes), decodes Cilium's JSON values into the
//! model, keeps them in a map as an agent's cache would, and reports each change once
//! it is held — as Cilium's agents work.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use super::recorder::Recorder;
use crate::bench::direct::{CILIUM_KEEPALIVE, DIAL_TIMEOUT, STATE_PREFIX, decode};
use crate::kvstore::etcd::{EtcdConfig, EtcdStore};
use crate::kvstore::keys::StateKey;
use crate::kvstore::{Store, WatchEvent, WatchStart};
use crate::model::{Change, Cluster, Resource, ResourceKey};

/// A running etcd agent; it ends with its runtime.
pub struct DirectAgent {
    task: JoinHandle<anyhow::Result<()>>,
}

impl DirectAgent {
    /// Starts an agent on `runtime` reading `source`'s state from the etcd of `config`,
    /// dialing once `dialing` lets it; `synced` fires when its list is held.
    pub fn spawn(
        runtime: &Handle,
        config: EtcdConfig,
        source: Cluster,
        recorder: Arc<Recorder>,
        dialing: Arc<Semaphore>,
    ) -> (Self, oneshot::Receiver<()>) {
        let (synced_tx, synced_rx) = oneshot::channel();
        let task = runtime.spawn(watch(config, source, recorder, synced_tx, dialing));
        (Self { task }, synced_rx)
    }

    /// Stops the agent; its error if it had ended on one.
    pub async fn stop(self) -> anyhow::Result<()> {
        if self.task.is_finished() {
            return self.task.await.context("an etcd agent panicked")?;
        }
        self.task.abort();
        Ok(())
    }
}

async fn watch(
    config: EtcdConfig,
    source: Cluster,
    recorder: Arc<Recorder>,
    synced_tx: oneshot::Sender<()>,
    dialing: Arc<Semaphore>,
) -> anyhow::Result<()> {
    let dial = dialing.acquire_owned().await;
    let store = EtcdStore::connect(EtcdConfig {
        dial_timeout: DIAL_TIMEOUT,
        keepalive: CILIUM_KEEPALIVE,
        ..config
    })
    .await
    .context("an etcd agent cannot connect")?;
    let mut events = store
        .watch(STATE_PREFIX, WatchStart::List)
        .await
        .context("an etcd agent cannot watch")?;
    drop(dial);
    let mut held: HashMap<ResourceKey, Resource> = HashMap::new();
    let mut listing: Option<Vec<Change>> = None;
    let mut synced_tx = Some(synced_tx);
    while let Some(event) = events.next().await {
        let change = match event.context("an etcd agent's watch failed")? {
            WatchEvent::ListStart => {
                listing = Some(Vec::new());
                continue;
            }
            WatchEvent::ListDone { .. } => {
                let listed = listing.take().unwrap_or_default();
                match synced_tx.take() {
                    Some(synced) => {
                        for change in &listed {
                            hold(&mut held, change.clone());
                        }
                        recorder.record(&listed, Instant::now());
                        // The bench stopped waiting: nothing to tell.
                        let _ = synced.send(());
                    }
                    // Listed again: its watch was canceled with a compact revision.
                    None => {
                        let changed = relist(&mut held, listed);
                        recorder.record_relist(&changed, Instant::now());
                    }
                }
                continue;
            }
            // A value that does not decode is never held: the check counts it lost.
            WatchEvent::Put(kv) => match decode(&kv, &source) {
                Some(resource) => Change::Upsert(resource),
                None => continue,
            },
            WatchEvent::Delete { key, .. } => match resource_key(&key) {
                Some(key) => Change::Delete(key),
                None => continue,
            },
        };
        match listing.as_mut() {
            Some(listed) => listed.push(change),
            None => {
                hold(&mut held, change.clone());
                recorder.record(&[change], Instant::now());
            }
        }
    }
    bail!("an etcd agent's watch ended")
}

/// Replaces what `held` holds with `listed` (a listing made again, all upserts), as a
/// Cilium agent's store does after a re-list; returns how they differed: the listed
/// values it did not hold, and the deletes of what the listing no longer has.
fn relist(held: &mut HashMap<ResourceKey, Resource>, listed: Vec<Change>) -> Vec<Change> {
    let mut fresh = HashMap::with_capacity(listed.len());
    let mut changed = Vec::new();
    for change in listed {
        let Change::Upsert(resource) = change else {
            continue;
        };
        let key = resource.key();
        if held.get(&key) != Some(&resource) {
            changed.push(Change::Upsert(resource.clone()));
        }
        fresh.insert(key, resource);
    }
    changed.extend(
        held.keys()
            .filter(|key| !fresh.contains_key(*key))
            .map(|key| Change::Delete(key.clone())),
    );
    *held = fresh;
    changed
}

fn hold(held: &mut HashMap<ResourceKey, Resource>, change: Change) {
    match change {
        Change::Upsert(resource) => {
            held.insert(resource.key(), resource);
        }
        Change::Delete(key) => {
            held.remove(&key);
        }
    }
}

/// The resource a Cilium state key names.
fn resource_key(key: &str) -> Option<ResourceKey> {
    Some(match StateKey::parse(key)? {
        StateKey::Node { name, .. } => ResourceKey::Node(name),
        StateKey::Service { name, .. } => ResourceKey::Service(name),
        StateKey::Identity(id) => ResourceKey::Identity(id),
        StateKey::Endpoint(prefix) => ResourceKey::Endpoint(prefix),
        StateKey::FleetmeshService { .. } | StateKey::ServiceExport { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, IdentityId, IpPrefix};

    fn mk_endpoint(ip: &str, identity: u32) -> Resource {
        Resource::Endpoint(Endpoint::new(
            IpPrefix::host(ip.parse().unwrap()),
            IdentityId::new(identity).unwrap(),
        ))
    }

    #[test]
    fn a_listing_made_again_yields_only_what_changed() {
        let (kept, moved, gone) = (
            mk_endpoint("10.0.0.1", 70_001),
            mk_endpoint("10.0.0.2", 70_002),
            mk_endpoint("10.0.0.3", 70_003),
        );
        let mut held: HashMap<_, _> = [&kept, &moved, &gone]
            .into_iter()
            .map(|r| (r.key(), r.clone()))
            .collect();
        let (moved_now, new) = (
            mk_endpoint("10.0.0.2", 70_020),
            mk_endpoint("10.0.0.4", 70_004),
        );
        let listed = [&kept, &moved_now, &new]
            .into_iter()
            .map(|r| Change::Upsert(r.clone()))
            .collect();
        let changed = relist(&mut held, listed);
        assert_eq!(
            changed,
            [
                Change::Upsert(moved_now.clone()),
                Change::Upsert(new.clone()),
                Change::Delete(gone.key()),
            ]
        );
        assert_eq!(held.len(), 3);
        assert_eq!(held.get(&moved_now.key()), Some(&moved_now));
    }
}
