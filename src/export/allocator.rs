//! Identity allocation: security labels → a numeric id inside the cluster's range.
//!
//! Allocations live in the store, not in memory, so they survive restarts and are shared
//! by every apiserver replica writing to the same store:
//! `fleetmesh/identities/v1/id/<id>` (the id is taken, by these labels) and
//! `fleetmesh/identities/v1/value/<labels>` (these labels have this id). Both are created
//! with compare-and-swap, so two allocators never hand out one id twice, and a label set
//! that two allocators race on ends with the id of whichever wrote the value key first.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

use crate::kvstore::{CasOutcome, Expect, Store, StoreError, keys};
use crate::model::{Cluster, IdentityId, IdentityRange, Labels};

#[derive(Debug, Error)]
pub enum AllocError {
    #[error("identity range {range} of cluster {cluster} is exhausted")]
    Exhausted { cluster: String, range: String },
    #[error("identity allocation in the store failed")]
    Store(#[from] StoreError),
}

/// What the store records for a label set.
enum Recorded {
    Absent,
    Id(IdentityId),
    /// Unparseable or outside the range; written at this revision.
    Malformed(u64),
}

/// Allocates identity ids for one cluster; caches what it has seen.
pub struct IdentityAllocator {
    store: Arc<dyn Store>,
    range: IdentityRange,
    cluster: Cluster,
    by_labels: HashMap<Labels, IdentityId>,
    taken: BTreeSet<u32>,
    /// Where the search for a free id resumes, so allocation stays O(1) amortised.
    cursor: u32,
}

impl IdentityAllocator {
    /// Loads the allocations already in the store.
    pub async fn load(store: Arc<dyn Store>, cluster: Cluster) -> Result<Self, AllocError> {
        let range = cluster.identity_range();
        let mut by_labels = HashMap::new();
        let mut taken = BTreeSet::new();
        for kv in store.list(keys::ALLOC_VALUE_PREFIX).await?.kvs {
            let labels_str = &kv.key[keys::ALLOC_VALUE_PREFIX.len()..];
            let parsed = (
                Labels::parse_kvstore_string(labels_str),
                std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|v| v.parse::<IdentityId>().ok()),
            );
            match parsed {
                (Ok(labels), Some(id)) if range.contains(id) => {
                    taken.insert(id.get());
                    by_labels.insert(labels, id);
                }
                _ => tracing::warn!(key = %kv.key, "ignoring malformed identity allocation"),
            }
        }
        for kv in store.list(keys::ALLOC_ID_PREFIX).await?.kvs {
            if let Ok(id) = kv.key[keys::ALLOC_ID_PREFIX.len()..].parse::<u32>() {
                taken.insert(id);
            }
        }
        Ok(Self {
            store,
            cursor: range.first(),
            range,
            cluster,
            by_labels,
            taken,
        })
    }

    /// The id of `labels`, allocating one if they have none yet.
    pub async fn allocate(&mut self, labels: &Labels) -> Result<IdentityId, AllocError> {
        if let Some(id) = self.by_labels.get(labels) {
            return Ok(*id);
        }
        let value_key = keys::alloc_value(labels);
        let labels_bytes = Bytes::from(labels.to_kvstore_string());
        loop {
            // Someone else (another replica, or a previous run) may have allocated it.
            match self.read_value(&value_key).await? {
                Recorded::Id(id) => {
                    self.remember(labels, id);
                    return Ok(id);
                }
                Recorded::Malformed(revision) => {
                    tracing::warn!(key = value_key, "replacing a malformed identity allocation");
                    self.store
                        .compare_and_swap(&value_key, Expect::ModRevision(revision), None, None)
                        .await?;
                    continue;
                }
                Recorded::Absent => {}
            }
            let candidate = self.next_free()?;
            let id_key = keys::alloc_id(candidate);
            let reserved = self
                .store
                .compare_and_swap(&id_key, Expect::Absent, Some(labels_bytes.clone()), None)
                .await?;
            self.taken.insert(candidate.get());
            if let CasOutcome::Failed(_) = reserved {
                continue;
            }
            let claimed = self
                .store
                .compare_and_swap(
                    &value_key,
                    Expect::Absent,
                    Some(Bytes::from(candidate.to_string())),
                    None,
                )
                .await?;
            match claimed {
                CasOutcome::Swapped(_) => {
                    self.remember(labels, candidate);
                    return Ok(candidate);
                }
                CasOutcome::Failed(_) => {
                    // Lost the race for these labels: give our reservation back and
                    // take the winner's id on the next turn of the loop.
                    self.store
                        .compare_and_swap(&id_key, Expect::Value(labels_bytes.clone()), None, None)
                        .await?;
                    self.taken.remove(&candidate.get());
                }
            }
        }
    }

    /// Marks an id allocated elsewhere (a CiliumIdentity's) as taken.
    pub fn reserve(&mut self, id: IdentityId) {
        self.taken.insert(id.get());
    }

    async fn read_value(&self, value_key: &str) -> Result<Recorded, AllocError> {
        let Some(kv) = self.store.get(value_key).await? else {
            return Ok(Recorded::Absent);
        };
        let id = std::str::from_utf8(&kv.value)
            .ok()
            .and_then(|v| v.parse::<IdentityId>().ok())
            .filter(|id| self.range.contains(*id));
        Ok(match id {
            Some(id) => Recorded::Id(id),
            None => Recorded::Malformed(kv.mod_revision),
        })
    }

    fn remember(&mut self, labels: &Labels, id: IdentityId) {
        self.taken.insert(id.get());
        self.by_labels.insert(labels.clone(), id);
    }

    fn next_free(&mut self) -> Result<IdentityId, AllocError> {
        let (first, last) = (self.range.first(), self.range.last());
        let span = last - first + 1;
        for step in 0..span {
            let id = first + (self.cursor - first + step) % span;
            if !self.taken.contains(&id) {
                self.cursor = if id == last { first } else { id + 1 };
                // The range never includes 0 and stays below 2^24, so this cannot fail.
                if let Ok(id) = IdentityId::new(id) {
                    return Ok(id);
                }
            }
        }
        Err(AllocError::Exhausted {
            cluster: self.cluster.name.to_string(),
            range: self.range.to_string(),
        })
    }
}
