//! Allocations as keys in the kvstore: `fleetmesh/identities/v1/id/<id>` (the number is
//! taken, by these labels) and `fleetmesh/identities/v1/value/<labels>` (these labels hold
//! this number). Both are created with compare-and-swap, so two allocators never hand out
//! one number twice, and a label set that two allocators race on ends with the number of
//! whichever wrote the value key first.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Claim, IdentityLedger, LedgerError};
use crate::kvstore::{CasOutcome, Expect, Store, keys};
use crate::model::{IdentityId, Labels, Revision};

pub struct StoreLedger {
    store: Arc<dyn Store>,
}

impl StoreLedger {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The number the value key gives `value_key`'s labels; `Err(revision)` when the value
    /// cannot be read.
    async fn read_value(
        &self,
        value_key: &str,
    ) -> Result<Option<Result<IdentityId, Revision>>, LedgerError> {
        let Some(kv) = self.store.get(value_key).await? else {
            return Ok(None);
        };
        let id = std::str::from_utf8(&kv.value)
            .ok()
            .and_then(|v| v.parse::<IdentityId>().ok());
        Ok(Some(id.ok_or(kv.mod_revision)))
    }
}

#[async_trait]
impl IdentityLedger for StoreLedger {
    async fn allocations(&self) -> Result<Vec<(IdentityId, Labels)>, LedgerError> {
        let mut out = Vec::new();
        for kv in self.store.list(keys::ALLOC_VALUE_PREFIX).await?.kvs {
            let labels_str = &kv.key[keys::ALLOC_VALUE_PREFIX.len()..];
            let parsed = (
                Labels::parse_kvstore_string(labels_str),
                std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|v| v.parse::<IdentityId>().ok()),
            );
            match parsed {
                (Ok(labels), Some(id)) => out.push((id, labels)),
                _ => tracing::warn!(key = %kv.key, "ignoring malformed identity allocation"),
            }
        }
        Ok(out)
    }

    async fn taken_ids(&self) -> Result<Vec<u32>, LedgerError> {
        let listed = self.store.list(keys::ALLOC_ID_PREFIX).await?;
        Ok(listed
            .kvs
            .iter()
            .filter_map(|kv| kv.key[keys::ALLOC_ID_PREFIX.len()..].parse::<u32>().ok())
            .collect())
    }

    async fn claim(&self, id: IdentityId, labels: &Labels) -> Result<Claim, LedgerError> {
        let value_key = keys::alloc_value(labels);
        let labels_bytes = Bytes::from(labels.to_kvstore_string());
        loop {
            // Someone else (another replica, or a previous run) may have allocated it.
            match self.read_value(&value_key).await? {
                Some(Ok(held)) if held == id => {
                    // Make sure the number is marked taken too (a half-finished claim).
                    self.store
                        .compare_and_swap(
                            &keys::alloc_id(id),
                            Expect::Absent,
                            Some(labels_bytes),
                            None,
                        )
                        .await?;
                    return Ok(Claim::Granted);
                }
                Some(Ok(held)) => return Ok(Claim::LabelsHold(held)),
                Some(Err(revision)) => {
                    tracing::warn!(key = value_key, "replacing a malformed identity allocation");
                    self.store
                        .compare_and_swap(&value_key, Expect::ModRevision(revision), None, None)
                        .await?;
                    continue;
                }
                None => {}
            }
            let id_key = keys::alloc_id(id);
            let reserved = self
                .store
                .compare_and_swap(&id_key, Expect::Absent, Some(labels_bytes.clone()), None)
                .await?;
            if let CasOutcome::Failed(_) = reserved {
                return Ok(Claim::IdTaken);
            }
            let claimed = self
                .store
                .compare_and_swap(
                    &value_key,
                    Expect::Absent,
                    Some(Bytes::from(id.to_string())),
                    None,
                )
                .await?;
            match claimed {
                CasOutcome::Swapped(_) => return Ok(Claim::Granted),
                CasOutcome::Failed(_) => {
                    // Lost the race for these labels: give our reservation back and take
                    // the winner's number on the next turn of the loop.
                    self.store
                        .compare_and_swap(&id_key, Expect::Value(labels_bytes.clone()), None, None)
                        .await?;
                }
            }
        }
    }

    async fn release(&self, id: IdentityId, labels: &Labels) -> Result<(), LedgerError> {
        let id_string = Bytes::from(id.to_string());
        self.store
            .compare_and_swap(
                &keys::alloc_value(labels),
                Expect::Value(id_string),
                None,
                None,
            )
            .await?;
        let labels_bytes = Bytes::from(labels.to_kvstore_string());
        self.store
            .compare_and_swap(&keys::alloc_id(id), Expect::Value(labels_bytes), None, None)
            .await?;
        Ok(())
    }
}
