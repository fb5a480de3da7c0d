//! Watches over etcd: a list then an etcd watch from the list's revision + 1, or an etcd
//! watch from a resume point; a resume point etcd has compacted away falls back to a
//! fresh list, as the `Store` contract says.

use std::collections::VecDeque;

use etcd_client::{EventType, WatchOptions, WatchResponse};
use futures::stream;

use super::convert::{etcd_error, etcd_revision, revision};
use super::{EtcdStore, MAX_MESSAGE};
use crate::kvstore::{Store, StoreError, WatchEvent, WatchStart, WatchStream};
use crate::model::Revision;

/// One watch: the etcd watch stream and the events read but not yet handed out.
pub(super) struct EtcdWatch {
    store: EtcdStore,
    prefix: String,
    /// Kept whole: dropping its request half would end the watch on etcd's side.
    etcd: etcd_client::WatchStream,
    pending: VecDeque<WatchEvent>,
}

impl EtcdWatch {
    /// Lists first if `start` asks for it, then opens the etcd watch.
    pub(super) async fn start(
        store: EtcdStore,
        prefix: &str,
        start: WatchStart,
    ) -> Result<Self, StoreError> {
        let mut pending = VecDeque::new();
        let after = match start {
            WatchStart::List => list_into(&store, prefix, &mut pending).await?,
            WatchStart::After(revision) => revision,
        };
        let etcd = open(&store, prefix, after).await?;
        Ok(EtcdWatch {
            store,
            prefix: prefix.to_owned(),
            etcd,
            pending,
        })
    }

    /// The watch as a stream; it ends after its first error.
    pub(super) fn into_stream(self) -> WatchStream {
        Box::pin(stream::unfold(Some(self), |watch| async move {
            let mut watch = watch?;
            match watch.next_event().await {
                Ok(event) => Some((Ok(event), Some(watch))),
                Err(err) => Some((Err(err), None)),
            }
        }))
    }

    async fn next_event(&mut self) -> Result<WatchEvent, StoreError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let resp = self
                .etcd
                .message()
                .await
                .map_err(etcd_error("watch"))?
                .ok_or_else(|| StoreError::EtcdProtocol {
                    op: "watch",
                    reason: "etcd ended the watch stream".to_owned(),
                })?;
            self.handle(resp).await?;
        }
    }

    async fn handle(&mut self, resp: WatchResponse) -> Result<(), StoreError> {
        self.store.pin.check(resp.header(), "watch")?;
        if resp.compact_revision() > 0 {
            // The resume point is compacted: etcd canceled the watch. List afresh and
            // follow from there.
            let listed = list_into(&self.store, &self.prefix, &mut self.pending).await?;
            self.etcd = open(&self.store, &self.prefix, listed).await?;
            return Ok(());
        }
        if resp.canceled() {
            // Anything else (permission, a bad range) would fail again the same way, so
            // the consumer hears of it instead of a retry loop.
            return Err(StoreError::EtcdProtocol {
                op: "watch",
                reason: format!("etcd canceled the watch: {}", resp.cancel_reason()),
            });
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => {
                    if let Some(kv) = self.store.namespace.kv(kv.clone()) {
                        self.pending.push_back(WatchEvent::Put(kv));
                    }
                }
                EventType::Delete => {
                    // etcd sets a deleted key's mod_revision to the deletion's revision.
                    let revision = revision(kv.mod_revision());
                    if let Some(key) = self.store.namespace.strip(kv.key().to_vec()) {
                        self.pending.push_back(WatchEvent::Delete { key, revision });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Lists `prefix` into `pending` as `ListStart`, one `Put` per key, `ListDone`; returns the
/// list's revision.
async fn list_into(
    store: &EtcdStore,
    prefix: &str,
    pending: &mut VecDeque<WatchEvent>,
) -> Result<Revision, StoreError> {
    let listing = store.list(prefix).await?;
    pending.clear();
    pending.push_back(WatchEvent::ListStart);
    pending.extend(listing.kvs.into_iter().map(WatchEvent::Put));
    pending.push_back(WatchEvent::ListDone {
        revision: listing.revision,
    });
    Ok(listing.revision)
}

/// Opens an etcd watch of `prefix` for the changes after revision `after`.
async fn open(
    store: &EtcdStore,
    prefix: &str,
    after: Revision,
) -> Result<etcd_client::WatchStream, StoreError> {
    let (start, end) = store.namespace.range(prefix);
    let options = WatchOptions::new()
        .with_range(end)
        .with_start_revision(etcd_revision(after.saturating_add(1), "watch")?);
    store
        .client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE)
        .watch(start, Some(options))
        .await
        .map_err(etcd_error("watch"))
}
