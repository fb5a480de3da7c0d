//! The minimal-write state writer: it remembers what it wrote and makes the store match
//! the desired keys with as few writes as possible.
//!
//! It remembers a digest of each value, not the value: the store holds the value
//! already, and a second copy would cost the apiserver as much memory again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, stream};
use sha2::{Digest, Sha256};

use super::leases::LeasePool;
use crate::kvstore::keys::StateKey;
use crate::kvstore::{LeaseId, Store, StoreError};
use crate::model::Kind;

/// Writes in flight at once: etcd serves ~10x more puts per second with many in flight
/// than one at a time (see reference/performance.md).
const MAX_IN_FLIGHT: usize = 64;

/// Bytes of a value's SHA-256 kept: enough that two different values never match by
/// chance, half the size of the whole digest.
const DIGEST_LEN: usize = 16;

/// What identifies a value written.
type ValueDigest = [u8; DIGEST_LEN];

fn digest(value: &[u8]) -> ValueDigest {
    let full = Sha256::digest(value);
    let mut short = [0; DIGEST_LEN];
    short.copy_from_slice(&full[..DIGEST_LEN]);
    short
}

#[derive(Clone, Debug)]
struct Written {
    value: ValueDigest,
    /// `None` for a key found in the store on a lease that is gone or not ours: it is
    /// rewritten if still wanted.
    lease: Option<LeaseId>,
}

/// How many writes one reconcile made, in all and per kind of key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub puts: usize,
    pub deletes: usize,
    /// Per kind, in the order of [`Kind::ALL`]; keys of no kind are only in the totals.
    per_kind: [KindWrites; Kind::ALL.len()],
}

/// One kind's share of a reconcile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindWrites {
    pub puts: usize,
    pub deletes: usize,
}

impl WriteStats {
    /// What the reconcile wrote of `kind`.
    pub fn of(&self, kind: Kind) -> KindWrites {
        self.per_kind[kind_index(kind)]
    }

    fn count(&mut self, key: &str, put: bool) {
        if put {
            self.puts += 1;
        } else {
            self.deletes += 1;
        }
        if let Some(kind) = StateKey::parse(key).map(|k| k.kind()) {
            let writes = &mut self.per_kind[kind_index(kind)];
            if put {
                writes.puts += 1;
            } else {
                writes.deletes += 1;
            }
        }
    }
}

fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// Makes the store hold exactly the desired keys under the prefixes it manages.
pub struct StateWriter {
    store: Arc<dyn Store>,
    leases: LeasePool,
    managed: Vec<String>,
    written: HashMap<String, Written>,
    /// The kind of the first key whose write failed since [`StateWriter::take_failed_kind`]
    /// last asked (a canary's or a key of no kind: none).
    failed_kind: Option<Kind>,
}

impl StateWriter {
    /// Starts from what the store already holds under the `managed` and `pinned` prefixes
    /// (a previous run's keys): those on a lease that is still alive are adopted as they
    /// are, so a restart rewrites nothing that did not change. Reconcile deletes what it
    /// does not want under `managed`; it never deletes under `pinned`.
    pub async fn adopt(
        store: Arc<dyn Store>,
        mut leases: LeasePool,
        managed: Vec<String>,
        pinned: &[String],
    ) -> Result<Self, StoreError> {
        let mut written = HashMap::new();
        for prefix in managed.iter().chain(pinned) {
            for kv in store.list(prefix).await?.kvs {
                let lease = match kv.lease {
                    Some(lease) if leases.adopt(lease).await? => {
                        leases.count(lease);
                        Some(lease)
                    }
                    _ => None,
                };
                written.insert(
                    kv.key,
                    Written {
                        value: digest(&kv.value),
                        lease,
                    },
                );
            }
        }
        Ok(Self {
            store,
            leases,
            managed,
            written,
            failed_kind: None,
        })
    }

    pub fn leases(&mut self) -> &mut LeasePool {
        &mut self.leases
    }

    /// Whether `key` is held with `value` on a live lease.
    pub fn holds(&self, key: &str, value: &Bytes) -> bool {
        self.written
            .get(key)
            .is_some_and(|w| w.lease.is_some() && w.value == digest(value))
    }

    /// Whether `key` is held on a live lease, whatever its value.
    pub fn holds_key(&self, key: &str) -> bool {
        self.written.get(key).is_some_and(|w| w.lease.is_some())
    }

    fn is_managed(&self, key: &str) -> bool {
        self.managed.iter().any(|p| key.starts_with(p.as_str()))
    }

    /// Puts what differs and deletes managed keys that are no longer desired. On error,
    /// what succeeded is remembered and the next call retries only the rest.
    pub async fn reconcile(
        &mut self,
        desired: &BTreeMap<&str, &Bytes>,
    ) -> Result<WriteStats, StoreError> {
        let puts: Vec<(String, Bytes)> = desired
            .iter()
            .filter(|(k, v)| !self.holds(k, v))
            .map(|(k, v)| (k.to_string(), (*v).clone()))
            .collect();
        let deletes: Vec<String> = self
            .written
            .keys()
            .filter(|k| self.is_managed(k) && !desired.contains_key(k.as_str()))
            .cloned()
            .collect();
        let mut stats = WriteStats::default();
        for (key, _) in &puts {
            stats.count(key, true);
        }
        for key in &deletes {
            stats.count(key, false);
        }
        self.put_all(puts).await?;
        self.delete_all(deletes).await?;
        Ok(stats)
    }

    /// Writes one key outside the managed prefixes (a sync canary), leased like the rest.
    pub async fn put_pinned(&mut self, key: &str, value: Bytes) -> Result<(), StoreError> {
        self.put_all(vec![(key.to_string(), value)]).await
    }

    /// Deletes one key outside the managed prefixes (the sync canary of a kind no longer
    /// written) if this writer holds or adopted it; whether it did.
    pub async fn withdraw_pinned(&mut self, key: &str) -> Result<bool, StoreError> {
        if !self.written.contains_key(key) {
            return Ok(false);
        }
        self.delete_all(vec![key.to_string()]).await?;
        Ok(true)
    }

    async fn put_all(&mut self, puts: Vec<(String, Bytes)>) -> Result<(), StoreError> {
        let mut planned = Vec::with_capacity(puts.len());
        for (key, value) in puts {
            if let Some(Written {
                lease: Some(old), ..
            }) = self.written.get(&key)
            {
                self.leases.release(*old);
            }
            let lease = self.leases.acquire().await?;
            planned.push((key, value, lease));
        }
        let store = &self.store;
        let results: Vec<_> = stream::iter(planned)
            .map(|(key, value, lease)| async move {
                let result = store.put(&key, value.clone(), Some(lease)).await;
                (key, value, lease, result)
            })
            .buffer_unordered(MAX_IN_FLIGHT)
            .collect()
            .await;
        let mut first_error = None;
        for (key, value, lease, result) in results {
            match result {
                Ok(_) => {
                    self.written.insert(
                        key,
                        Written {
                            value: digest(&value),
                            lease: Some(lease),
                        },
                    );
                }
                Err(err) => {
                    self.leases.release(lease);
                    self.failed(&key);
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn delete_all(&mut self, deletes: Vec<String>) -> Result<(), StoreError> {
        let store = &self.store;
        let results: Vec<_> = stream::iter(deletes)
            .map(|key| async move {
                let result = store.delete(&key).await;
                (key, result)
            })
            .buffer_unordered(MAX_IN_FLIGHT)
            .collect()
            .await;
        let mut first_error = None;
        for (key, result) in results {
            match result {
                Ok(_) => {
                    if let Some(Written {
                        lease: Some(lease), ..
                    }) = self.written.remove(&key)
                    {
                        self.leases.release(lease);
                    }
                }
                Err(err) => {
                    self.failed(&key);
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn failed(&mut self, key: &str) {
        if self.failed_kind.is_none() {
            self.failed_kind = StateKey::parse(key).map(|k| k.kind());
        }
    }

    /// The kind of the first key whose write failed since the last call, if any had one.
    pub fn take_failed_kind(&mut self) -> Option<Kind> {
        self.failed_kind.take()
    }

    /// Renews the leases; forgets the keys of any lease that expired, so the next
    /// reconcile rewrites them. Returns whether anything was lost.
    pub async fn keep_alive(&mut self) -> Result<bool, StoreError> {
        let lost = self.leases.keep_alive().await?;
        if lost.is_empty() {
            return Ok(false);
        }
        tracing::warn!(leases = ?lost, "leases expired; their keys will be rewritten");
        self.written
            .retain(|_, w| !w.lease.is_some_and(|l| lost.contains(&l)));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::kvstore::memory::MemoryStore;

    async fn mk_writer(store: Arc<dyn Store>, ttl: Duration) -> StateWriter {
        let leases = LeasePool::new(store.clone(), ttl);
        StateWriter::adopt(store, leases, vec!["s/".to_string()], &["pin/".to_string()])
            .await
            .unwrap()
    }

    fn desired<'a>(pairs: &'a [(&'a str, Bytes)]) -> BTreeMap<&'a str, &'a Bytes> {
        pairs.iter().map(|(k, v)| (*k, v)).collect()
    }

    #[tokio::test]
    async fn only_differences_are_written() {
        let store: Arc<dyn Store> = MemoryStore::new();
        let mut writer = mk_writer(store.clone(), Duration::from_secs(60)).await;
        let a = Bytes::from_static(b"a");
        let b = Bytes::from_static(b"b");

        let first = [("s/1", a.clone()), ("s/2", a.clone())];
        let stats = writer.reconcile(&desired(&first)).await.unwrap();
        assert_eq!((stats.puts, stats.deletes), (2, 0));
        assert_eq!(
            writer.reconcile(&desired(&first)).await.unwrap(),
            WriteStats::default()
        );

        let second = [("s/1", b.clone())];
        let stats = writer.reconcile(&desired(&second)).await.unwrap();
        assert_eq!((stats.puts, stats.deletes), (1, 1));
        assert_eq!(store.get("s/1").await.unwrap().unwrap().value, b);
        assert!(store.get("s/2").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn pinned_keys_are_never_deleted_and_foreign_prefixes_untouched() {
        let store: Arc<dyn Store> = MemoryStore::new();
        store
            .put("other/x", Bytes::from_static(b"x"), None)
            .await
            .unwrap();
        let mut writer = mk_writer(store.clone(), Duration::from_secs(60)).await;
        writer
            .put_pinned("pin/canary", Bytes::from_static(b"t"))
            .await
            .unwrap();
        let stats = writer.reconcile(&BTreeMap::new()).await.unwrap();
        assert_eq!(stats, WriteStats::default());
        assert!(store.get("pin/canary").await.unwrap().is_some());
        assert!(store.get("other/x").await.unwrap().is_some());

        // Withdrawn only when asked, and only what it holds.
        assert!(!writer.withdraw_pinned("other/x").await.unwrap());
        assert!(writer.withdraw_pinned("pin/canary").await.unwrap());
        assert!(store.get("pin/canary").await.unwrap().is_none());
        assert!(store.get("other/x").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_restarted_writer_adopts_live_keys_and_rewrites_orphans() {
        let store: Arc<dyn Store> = MemoryStore::new();
        let v = Bytes::from_static(b"v");
        let pairs = [("s/kept", v.clone())];
        let mut first = mk_writer(store.clone(), Duration::from_secs(60)).await;
        first.reconcile(&desired(&pairs)).await.unwrap();
        // A key without a lease (not written by an exporter) is not adopted as it is.
        store.put("s/orphan", v.clone(), None).await.unwrap();

        let mut second = mk_writer(store.clone(), Duration::from_secs(60)).await;
        let both = [("s/kept", v.clone()), ("s/orphan", v.clone())];
        let stats = second.reconcile(&desired(&both)).await.unwrap();
        assert_eq!((stats.puts, stats.deletes), (1, 0));
        assert!(
            store
                .get("s/orphan")
                .await
                .unwrap()
                .unwrap()
                .lease
                .is_some()
        );
    }

    #[tokio::test]
    async fn keys_of_an_expired_lease_are_rewritten() {
        let store: Arc<dyn Store> = MemoryStore::new();
        let mut writer = mk_writer(store.clone(), Duration::from_secs(60)).await;
        let pairs = [("s/1", Bytes::from_static(b"v"))];
        writer.reconcile(&desired(&pairs)).await.unwrap();
        let lease = store.get("s/1").await.unwrap().unwrap().lease.unwrap();
        store.revoke_lease(lease).await.unwrap();
        assert!(store.get("s/1").await.unwrap().is_none());

        assert!(writer.keep_alive().await.unwrap());
        let stats = writer.reconcile(&desired(&pairs)).await.unwrap();
        assert_eq!((stats.puts, stats.deletes), (1, 0));
        assert!(store.get("s/1").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn writes_are_counted_per_kind_and_a_failed_key_names_its_kind() {
        let store: Arc<dyn Store> = MemoryStore::new();
        let leases = LeasePool::new(store.clone(), Duration::from_secs(60));
        let mut writer = StateWriter::adopt(store.clone(), leases, vec!["cilium/".into()], &[])
            .await
            .unwrap();
        let v = Bytes::from_static(b"v");
        let node = "cilium/state/nodes/v1/c1/n1";
        let first = [
            (node, v.clone()),
            ("cilium/state/ip/v1/default/10.0.0.1", v.clone()),
            ("cilium/state/ip/v1/default/10.0.0.2", v.clone()),
        ];
        let stats = writer.reconcile(&desired(&first)).await.unwrap();
        assert_eq!(
            stats.of(Kind::Endpoint),
            KindWrites {
                puts: 2,
                deletes: 0
            }
        );
        assert_eq!(
            stats.of(Kind::Node),
            KindWrites {
                puts: 1,
                deletes: 0
            }
        );
        assert_eq!(stats.of(Kind::Service), KindWrites::default());
        let stats = writer.reconcile(&desired(&first[..1])).await.unwrap();
        assert_eq!(
            stats.of(Kind::Endpoint),
            KindWrites {
                puts: 0,
                deletes: 2
            }
        );
        assert_eq!(writer.take_failed_kind(), None);

        // The lease the writer puts with is gone: the node's write fails.
        let lease = store.get(node).await.unwrap().unwrap().lease.unwrap();
        store.revoke_lease(lease).await.unwrap();
        let changed = [(node, Bytes::from_static(b"w"))];
        assert!(writer.reconcile(&desired(&changed)).await.is_err());
        assert_eq!(writer.take_failed_kind(), Some(Kind::Node));
        assert_eq!(writer.take_failed_kind(), None, "taken once");
    }
}
