use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::broadcast;

use super::{Batch, CachedEvent, KindSet};
use crate::model::Revision;

/// Where a watcher left off: it has every event up to `revision` of that epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    pub epoch: String,
    pub revision: Revision,
}

/// What a new watcher gets: its initial part, then the live batches after it. Both were
/// taken under one lock, so no event falls between them or comes twice.
#[derive(Debug)]
pub struct Subscription {
    pub epoch: Arc<str>,
    pub kinds: KindSet,
    /// The revision the initial part brings the watcher to.
    pub revision: Revision,
    pub initial: Initial,
    /// Every batch applied after the initial part. A receiver that falls more than the
    /// channel's capacity behind gets `Lagged`: it must resync.
    pub live: broadcast::Receiver<Arc<Batch>>,
}

/// The first part of a subscription.
#[derive(Debug)]
pub enum Initial {
    /// The full state of the requested kinds as encoded upserts, one part per kind
    /// (shared with other watchers that started while the state was unchanged).
    Full(Vec<Arc<[Bytes]>>),
    /// The watcher resumed: what it holds stays valid, and these batches hold what it
    /// missed — their events after `after`, of the requested kinds.
    Resumed {
        after: Revision,
        batches: Vec<Arc<Batch>>,
    },
}

impl Subscription {
    /// The events of a resumed subscription's initial part: those of the requested
    /// kinds after the resume point, in order. Empty for a full one.
    pub fn missed(&self) -> impl Iterator<Item = &CachedEvent> {
        let (after, batches) = match &self.initial {
            Initial::Resumed { after, batches } => (*after, batches.as_slice()),
            Initial::Full(_) => (0, &[][..]),
        };
        let kinds = self.kinds;
        batches
            .iter()
            .flat_map(|b| b.events.iter())
            .filter(move |e| e.revision > after && kinds.contains(e.kind))
    }
}

/// The cache has not completed its first list of the store yet (or is re-reading a
/// store whose history restarted): there is no state to serve.
#[derive(Debug, Error)]
#[error("the watch cache has not synced with its store yet")]
pub struct NotSynced;
