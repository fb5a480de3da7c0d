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
use crate::bench::direct::{DIAL_TIMEOUT, STATE_PREFIX, decode};
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
                for change in &listed {
                    hold(&mut held, change.clone());
                }
                recorder.record(&listed, Instant::now());
                if let Some(synced) = synced_tx.take() {
                    // The bench stopped waiting: nothing to tell.
                    let _ = synced.send(());
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
