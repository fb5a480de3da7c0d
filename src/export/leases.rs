//! Leases for exported keys: at most [`MAX_KEYS_PER_LEASE`] keys on one lease, renewed
//! in one place, and a report of the leases that were lost so their keys get rewritten.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::kvstore::{LeaseId, Store, StoreError};

/// etcd's put latency grows with the keys attached to one lease; Cilium caps it at 1000.
pub const MAX_KEYS_PER_LEASE: usize = 1000;

/// The leases one writer holds, with how many keys each carries.
pub struct LeasePool {
    store: Arc<dyn Store>,
    ttl: Duration,
    keys_per_lease: BTreeMap<LeaseId, usize>,
}

impl LeasePool {
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            keys_per_lease: BTreeMap::new(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes over a lease a previous run left behind, if it is still alive. Only a lease
    /// the store says is gone is refused; any other error is the caller's to retry, so
    /// that a blip never makes a restart rewrite every key.
    pub async fn adopt(&mut self, lease: LeaseId) -> Result<bool, StoreError> {
        if self.keys_per_lease.contains_key(&lease) {
            return Ok(true);
        }
        match self.store.keep_alive(lease).await {
            Ok(()) => {
                self.keys_per_lease.insert(lease, 0);
                Ok(true)
            }
            Err(StoreError::LeaseNotFound(_)) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Records that a key on `lease` exists (an adopted key).
    pub fn count(&mut self, lease: LeaseId) {
        *self.keys_per_lease.entry(lease).or_default() += 1;
    }

    /// A lease with room for one more key; the key is counted against it.
    pub async fn acquire(&mut self) -> Result<LeaseId, StoreError> {
        let room = self
            .keys_per_lease
            .iter()
            .find(|(_, n)| **n < MAX_KEYS_PER_LEASE)
            .map(|(id, _)| *id);
        let lease = match room {
            Some(lease) => lease,
            None => self.store.grant_lease(self.ttl).await?,
        };
        self.count(lease);
        Ok(lease)
    }

    /// A key on `lease` was deleted or moved.
    pub fn release(&mut self, lease: LeaseId) {
        if let Some(n) = self.keys_per_lease.get_mut(&lease) {
            *n = n.saturating_sub(1);
        }
    }

    /// Renews every lease; returns the ones that had expired (their keys are gone).
    pub async fn keep_alive(&mut self) -> Result<Vec<LeaseId>, StoreError> {
        let mut lost = Vec::new();
        for lease in self.keys_per_lease.keys().copied().collect::<Vec<_>>() {
            match self.store.keep_alive(lease).await {
                Ok(()) => {}
                Err(StoreError::LeaseNotFound(_)) => {
                    self.keys_per_lease.remove(&lease);
                    lost.push(lease);
                }
                Err(err) => return Err(err),
            }
        }
        Ok(lost)
    }

    /// How often to renew: three times per TTL, so one missed renewal is harmless.
    pub fn renew_interval(&self) -> Duration {
        self.ttl / 3
    }
}
