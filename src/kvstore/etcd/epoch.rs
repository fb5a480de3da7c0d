//! The store's epoch over etcd: etcd's cluster id and a marker key naming one history of
//! the keys ([`keys::EPOCH_MARKER`]).
//!
//! A wiped etcd comes back without the marker — under the same cluster id when it is
//! started with the same flags — so the marker, not the cluster id, is what tells one
//! history from the next. An etcd restored from a backup keeps its marker but goes back
//! in revisions, which a check notices and answers with a new marker: nobody may resume
//! from a revision of the history that went on before the restore. The marker is created
//! with compare-and-swap, so every apiserver on one store agrees on it.

use bytes::Bytes;

use super::EtcdStore;
use super::convert::{etcd_error, revision};
use crate::kvstore::{CasOutcome, Epoch, Expect, Store, StoreError, keys};
use crate::model::Revision;

impl EtcdStore {
    /// See [`Store::check_epoch`].
    pub(super) async fn check_marker(&self) -> Result<Epoch, StoreError> {
        // One check at a time, so each reads a revision no lower than the one before
        // unless the history went back.
        let mut last = self.checked.lock().await;
        let resp = self
            .kv()
            .get(self.namespace.key(keys::EPOCH_MARKER), None)
            .await
            .map_err(etcd_error("check epoch"))?;
        let header = resp.header().ok_or_else(|| StoreError::EtcdProtocol {
            op: "check epoch",
            reason: "response without a header".to_owned(),
        })?;
        let (cluster_id, read_at) = (header.cluster_id(), revision(header.revision()));
        let before = self.pin.epoch();
        let same_cluster = cluster_id == self.pin.cluster_id();
        self.pin.accept_cluster(cluster_id);
        let went_back = same_cluster && last.is_some_and(|at| read_at < at);
        let found = resp
            .kvs()
            .first()
            .map(|kv| Bytes::from(kv.value().to_vec()));
        let (marker, marked_at) = match found {
            Some(value) if !went_back => (String::from_utf8_lossy(&value).into_owned(), read_at),
            Some(value) => self.new_marker(Expect::Value(value)).await?,
            None => self.new_marker(Expect::Absent).await?,
        };
        *last = Some(read_at.max(marked_at));
        let now = self.pin.repin(cluster_id, &marker);
        if now != before {
            tracing::info!(old = %before, new = %now, went_back, "store epoch pinned");
        }
        Ok(now)
    }

    /// Writes a new marker unless another writer did first; the marker and the revision
    /// it was written at.
    async fn new_marker(&self, expect: Expect) -> Result<(String, Revision), StoreError> {
        let marker = format!("{:016x}", rand::random::<u64>());
        let value = Bytes::from(marker.clone());
        match self
            .compare_and_swap(keys::EPOCH_MARKER, expect, Some(value), None)
            .await?
        {
            CasOutcome::Swapped(at) => Ok((marker, at)),
            CasOutcome::Failed(Some(kv)) => Ok((
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.mod_revision,
            )),
            CasOutcome::Failed(None) => Err(StoreError::EtcdProtocol {
                op: "check epoch",
                reason: "the epoch marker vanished while it was being replaced".to_owned(),
            }),
        }
    }
}
