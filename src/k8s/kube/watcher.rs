//! One kube-runtime watcher per kind, feeding that kind's store.

use std::sync::Arc;

use ::kube::api::{Api, ApiResource, DynamicObject};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::watcher::{self, Event, watcher};
use ::kube::{Client, Resource};
use futures::StreamExt;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::assemble::Stores;
use super::store::{self, KindStore};
use crate::report::error_chain;

/// The HTTP status of a watch whose resourceVersion is too old: the watcher re-lists.
const GONE: u16 = 410;

/// Picks one kind's store out of all of them.
pub(super) type Select<K> = fn(&mut Stores) -> &mut KindStore<K>;

/// Lists and watches every object of kind `K` (all namespaces) for as long as it runs,
/// applying each event to the store `select` picks and waking `changed` when what the
/// store holds changed.
///
/// Errors never end it: the watcher backs off (kube-runtime's default, client-go's
/// exponential backoff with jitter), resumes the watch, or re-lists when the API server
/// says its resourceVersion is gone; the store keeps what was listed meanwhile.
pub(super) async fn watch_kind<K>(
    client: Client,
    stores: Arc<Mutex<Stores>>,
    select: Select<K>,
    changed: Arc<Notify>,
) where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone,
{
    // Untyped on the wire, typed one object at a time in the store: see `store::parse`.
    let api: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<K>(&()));
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let done = matches!(event, Event::InitDone);
                // Typed before the lock is taken: parsing is the costly part.
                let event = store::read::<K>(event);
                let mut stores = stores.lock();
                let store = select(&mut stores);
                let visible = store.apply(event);
                if done {
                    tracing::info!(objects = store.len(), "listed");
                }
                drop(stores);
                if visible {
                    changed.notify_one();
                }
            }
            Err(watcher::Error::WatchError(status)) if status.code == GONE => {
                tracing::info!(
                    message = %status.message,
                    "the watch fell out of the API server's window; re-listing, keeping what was listed"
                );
            }
            Err(e) => tracing::warn!(
                error = %error_chain(&e),
                "watch failed; retrying with backoff, keeping what was listed"
            ),
        }
    }
}
