//! Identity allocation: security labels → a numeric id inside the cluster's range.
//!
//! The numbers are recorded in an [`IdentityLedger`] (the store itself where the store is
//! durable, a state file or the cluster where it is not), so a label set keeps its number
//! across restarts, store wipes and replicas. The allocator caches what it has seen and
//! holds on to it across a store that lost its history: [`IdentityAllocator::resync`]
//! writes back what the ledger no longer has.
//!
//! A label set that no workload uses any more is released only after a quarantine (at
//! least the lease TTL, so every peer has dropped the number before it can name anything
//! else); if the labels come back meanwhile they keep their number. The quarantine clock
//! is kept in memory only: a restart starts it again, which only makes it longer.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::ledger::{Claim, IdentityLedger, LedgerError, StoreLedger};
use crate::kvstore::Store;
use crate::model::{Cluster, IdentityId, IdentityRange, Labels};

#[derive(Debug, Error)]
pub enum AllocError {
    #[error("identity range {range} of cluster {cluster} is exhausted")]
    Exhausted { cluster: String, range: String },
    #[error("identity allocation failed")]
    Ledger(#[from] LedgerError),
}

/// Allocates identity ids for one cluster; caches what it has seen.
pub struct IdentityAllocator {
    ledger: Arc<dyn IdentityLedger>,
    range: IdentityRange,
    cluster: Cluster,
    by_labels: HashMap<Labels, IdentityId>,
    taken: BTreeSet<u32>,
    /// Label sets no workload used at the last sweep, since when.
    unused_since: HashMap<Labels, Instant>,
    quarantine: Duration,
    /// Where the search for a free id resumes, so allocation stays O(1) amortised and a
    /// released number is the last to be handed out again.
    cursor: u32,
}

impl IdentityAllocator {
    /// Loads the allocations kept in the store itself, with the default quarantine.
    pub async fn load(store: Arc<dyn Store>, cluster: Cluster) -> Result<Self, AllocError> {
        let ledger = Arc::new(StoreLedger::new(store));
        Self::open(ledger, cluster, super::DEFAULT_LEASE_TTL).await
    }

    /// Loads the allocations recorded in `ledger`. A number is released `quarantine` after
    /// its labels were last used.
    pub async fn open(
        ledger: Arc<dyn IdentityLedger>,
        cluster: Cluster,
        quarantine: Duration,
    ) -> Result<Self, AllocError> {
        let range = cluster.identity_range();
        let mut allocator = Self {
            ledger,
            cursor: range.first(),
            range,
            cluster,
            by_labels: HashMap::new(),
            taken: BTreeSet::new(),
            unused_since: HashMap::new(),
            quarantine,
        };
        allocator.resync().await?;
        Ok(allocator)
    }

    /// Reads the ledger again and records in it every allocation this allocator holds that
    /// the ledger lost (a wiped store). Where the ledger gave a number to other labels
    /// meanwhile (another replica, after the wipe), the ledger wins.
    pub async fn resync(&mut self) -> Result<(), AllocError> {
        let recorded = self.ledger.allocations().await?;
        let recorded_labels: HashSet<&Labels> = recorded.iter().map(|(_, l)| l).collect();
        let lost: Vec<(Labels, IdentityId)> = self
            .by_labels
            .iter()
            .filter(|(labels, _)| !recorded_labels.contains(labels))
            .map(|(labels, id)| (labels.clone(), *id))
            .collect();
        for (id, labels) in &recorded {
            if !self.range.contains(*id) {
                tracing::warn!(%id, labels = %labels.to_kvstore_string(),
                    range = %self.range, "ignoring an identity allocation outside the range");
                continue;
            }
            if let Some(previous) = self.by_labels.insert(labels.clone(), *id)
                && previous != *id
            {
                tracing::warn!(labels = %labels.to_kvstore_string(), %previous, now = %id,
                    "the identity ledger gave these labels another number");
            }
        }
        self.taken.extend(self.ledger.taken_ids().await?);
        for (labels, id) in lost {
            match self.ledger.claim(id, &labels).await? {
                Claim::Granted => {
                    tracing::info!(%id, labels = %labels.to_kvstore_string(),
                        "identity allocation written back to a ledger that lost it");
                }
                Claim::LabelsHold(held) => {
                    self.by_labels.insert(labels, held);
                    self.taken.insert(held.get());
                }
                Claim::IdTaken => {
                    tracing::warn!(%id, labels = %labels.to_kvstore_string(),
                        "an identity number was given to other labels while the ledger had \
                         lost it; these labels get a new number");
                    self.by_labels.remove(&labels);
                }
            }
        }
        self.taken
            .extend(self.by_labels.values().map(|id| id.get()));
        Ok(())
    }

    /// The id of `labels`, allocating one if they have none yet.
    pub async fn allocate(&mut self, labels: &Labels) -> Result<IdentityId, AllocError> {
        if let Some(id) = self.by_labels.get(labels) {
            return Ok(*id);
        }
        loop {
            let candidate = self.next_free()?;
            self.taken.insert(candidate.get());
            match self.ledger.claim(candidate, labels).await? {
                Claim::Granted => {
                    self.by_labels.insert(labels.clone(), candidate);
                    return Ok(candidate);
                }
                Claim::LabelsHold(held) if !self.range.contains(held) => {
                    tracing::warn!(id = %held, labels = %labels.to_kvstore_string(),
                        "replacing an identity allocation outside the range");
                    self.taken.remove(&candidate.get());
                    self.ledger.release(held, labels).await?;
                }
                Claim::LabelsHold(held) => {
                    // Someone else (another replica, or a previous run) allocated them.
                    self.taken.remove(&candidate.get());
                    self.taken.insert(held.get());
                    self.by_labels.insert(labels.clone(), held);
                    return Ok(held);
                }
                Claim::IdTaken => continue,
            }
        }
    }

    /// The numbers held now, and those of them in quarantine (as of the last sweep).
    pub fn counts(&self) -> super::IdentityCounts {
        super::IdentityCounts {
            allocated: self.by_labels.len(),
            quarantined: self.unused_since.len(),
        }
    }

    /// Marks an id allocated elsewhere (a CiliumIdentity's) as taken.
    pub fn reserve(&mut self, id: IdentityId) {
        self.taken.insert(id.get());
    }

    /// Starts the quarantine of every label set not in `in_use`, and releases those whose
    /// quarantine has run out by `now`. Label sets in use end their quarantine.
    pub async fn sweep(
        &mut self,
        in_use: &HashSet<&Labels>,
        now: Instant,
    ) -> Result<(), AllocError> {
        self.unused_since
            .retain(|labels, _| !in_use.contains(labels));
        let mut expired = Vec::new();
        for (labels, id) in &self.by_labels {
            if in_use.contains(labels) {
                continue;
            }
            let since = *self.unused_since.entry(labels.clone()).or_insert(now);
            if now.saturating_duration_since(since) >= self.quarantine {
                expired.push((labels.clone(), *id));
            }
        }
        for (labels, id) in expired {
            self.ledger.release(id, &labels).await?;
            tracing::info!(%id, labels = %labels.to_kvstore_string(),
                "identity released after its quarantine");
            self.by_labels.remove(&labels);
            self.unused_since.remove(&labels);
            self.taken.remove(&id.get());
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::RedbLedger;
    use crate::kvstore::keys;
    use crate::kvstore::memory::MemoryStore;
    use crate::model::{ClusterId, ClusterName, IdMode, Label};

    const QUARANTINE: Duration = Duration::from_secs(60);

    fn mk_cluster() -> Cluster {
        Cluster {
            name: ClusterName::new("c1").unwrap(),
            id: ClusterId::new(1, IdMode::Normal).unwrap(),
            mode: IdMode::Normal,
        }
    }

    fn mk_labels(app: &str) -> Labels {
        let mut labels = Labels::new();
        labels.insert(Label::k8s("app", app).unwrap());
        labels
    }

    async fn mk_allocator(ledger: Arc<dyn IdentityLedger>) -> IdentityAllocator {
        IdentityAllocator::open(ledger, mk_cluster(), QUARANTINE)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_unused_number_rests_for_the_quarantine_before_it_names_other_labels() {
        let store: Arc<dyn Store> = MemoryStore::new();
        let mut allocator = mk_allocator(Arc::new(StoreLedger::new(store))).await;
        let (a, b) = (mk_labels("a"), mk_labels("b"));
        let id_a = allocator.allocate(&a).await.unwrap();
        let start = Instant::now();

        // `a` goes away, and comes back within its quarantine: same number.
        allocator.sweep(&HashSet::new(), start).await.unwrap();
        allocator
            .sweep(&HashSet::new(), start + QUARANTINE / 2)
            .await
            .unwrap();
        assert_eq!(allocator.allocate(&a).await.unwrap(), id_a);
        allocator
            .sweep(&HashSet::from([&a]), start + QUARANTINE)
            .await
            .unwrap();
        assert_eq!(allocator.allocate(&a).await.unwrap(), id_a);

        // Gone again: its quarantine starts anew, and until it runs out no other label
        // set gets the number, however many come.
        let gone_at = start + QUARANTINE * 2;
        allocator.sweep(&HashSet::new(), gone_at).await.unwrap();
        let mut others = Vec::new();
        for i in 0..5 {
            others.push(
                allocator
                    .allocate(&mk_labels(&format!("o{i}")))
                    .await
                    .unwrap(),
            );
        }
        assert!(
            !others.contains(&id_a),
            "{id_a} handed out during its quarantine"
        );
        allocator
            .sweep(
                &HashSet::new(),
                gone_at + QUARANTINE - Duration::from_secs(1),
            )
            .await
            .unwrap();
        assert_eq!(allocator.allocate(&a).await.unwrap(), id_a);

        // Released once the quarantine has run out: the number is free for others.
        allocator
            .sweep(&HashSet::new(), gone_at + QUARANTINE)
            .await
            .unwrap();
        assert!(!allocator.by_labels.contains_key(&a));
        assert_eq!(
            allocator.ledger.claim(id_a, &b).await.unwrap(),
            Claim::Granted
        );
    }

    #[tokio::test]
    async fn allocations_a_wiped_store_lost_are_written_back() {
        let store: Arc<dyn Store> = MemoryStore::new();
        let mut allocator = mk_allocator(Arc::new(StoreLedger::new(store.clone()))).await;
        let a = mk_labels("a");
        let id_a = allocator.allocate(&a).await.unwrap();
        for prefix in [keys::ALLOC_ID_PREFIX, keys::ALLOC_VALUE_PREFIX] {
            for kv in store.list(prefix).await.unwrap().kvs {
                store.delete(&kv.key).await.unwrap();
            }
        }

        allocator.resync().await.unwrap();
        // A second allocator (a replica) sees the number as taken by `a`.
        let mut replica = mk_allocator(Arc::new(StoreLedger::new(store))).await;
        assert_eq!(replica.allocate(&a).await.unwrap(), id_a);
        assert_ne!(replica.allocate(&mk_labels("b")).await.unwrap(), id_a);
    }

    #[tokio::test]
    async fn the_state_file_keeps_numbers_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (mk_labels("a"), mk_labels("b"));
        let (id_a, id_b) = {
            let mut allocator =
                mk_allocator(Arc::new(RedbLedger::open(dir.path()).await.unwrap())).await;
            let id_a = allocator.allocate(&a).await.unwrap();
            (id_a, allocator.allocate(&b).await.unwrap())
        };
        let ledger = Arc::new(RedbLedger::open(dir.path()).await.unwrap());
        let mut allocator = mk_allocator(ledger.clone()).await;
        // Asked in the other order, each keeps its number.
        assert_eq!(allocator.allocate(&b).await.unwrap(), id_b);
        assert_eq!(allocator.allocate(&a).await.unwrap(), id_a);
        assert_eq!(
            ledger.claim(id_a, &b).await.unwrap(),
            Claim::LabelsHold(id_b)
        );
        let c = mk_labels("c");
        assert_eq!(ledger.claim(id_a, &c).await.unwrap(), Claim::IdTaken);
        // A release names the labels: a stale one does nothing.
        ledger.release(id_a, &c).await.unwrap();
        assert_eq!(ledger.claim(id_a, &c).await.unwrap(), Claim::IdTaken);
        ledger.release(id_a, &a).await.unwrap();
        assert_eq!(ledger.claim(id_a, &c).await.unwrap(), Claim::Granted);
    }
}
