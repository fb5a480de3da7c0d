use std::future::Future;
use std::sync::Arc;

use crate::cache::{KindSet, ResumePoint, Subscription, WatchCache};

/// What the server streams from: the watch cache in the apiserver, a fake in tests.
pub trait WatchSource: Send + Sync + 'static {
    /// The store epoch served, once known.
    fn epoch(&self) -> Option<Arc<str>>;

    /// Waits until there is state to serve, then subscribes (see
    /// [`WatchCache::subscribe`]).
    fn subscribe(
        &self,
        kinds: KindSet,
        resume: Option<ResumePoint>,
    ) -> impl Future<Output = Subscription> + Send + '_;
}

impl WatchSource for WatchCache {
    fn epoch(&self) -> Option<Arc<str>> {
        WatchCache::epoch(self)
    }

    async fn subscribe(&self, kinds: KindSet, resume: Option<ResumePoint>) -> Subscription {
        self.subscribe_synced(kinds, resume.as_ref()).await
    }
}
