//! Keeps one watcher per kind running.
//!
//! A watcher never ends on its own (errors back off and retry inside it), so one that
//! ends or panics is a bug; left alone, its kind would freeze while the apiserver stays
//! ready and exports stale state. It is logged at error and restarted after a backoff
//! (kube-runtime's default: exponential with jitter, capped at 30 s, reset after two
//! quiet minutes). The restarted watcher lists its kind again; the kind's store keeps
//! what it held until that list completes, as for any re-list.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ::kube::runtime::watcher::DefaultBackoff;
use tokio::task::{self, JoinSet};
use tracing::Instrument;

/// The longest wait before a restart, should the backoff run out (it does not).
const RESTART_MAX: Duration = Duration::from_secs(30);

/// One run of a watcher.
pub(super) type WatcherRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts a run of one kind's watcher.
type Start = Box<dyn Fn() -> WatcherRun + Send>;

/// The running watchers. Dropping it aborts them all.
#[derive(Default)]
pub(super) struct Watchers {
    tasks: JoinSet<()>,
    kinds: HashMap<task::Id, Kind>,
}

/// One kind's watcher: how to start it, and its restart backoff.
struct Kind {
    name: String,
    start: Start,
    backoff: DefaultBackoff,
}

impl Watchers {
    /// Starts the watcher of the kind `name`; `start` makes each run, the first and every
    /// restart.
    pub(super) fn spawn(
        &mut self,
        name: impl Into<String>,
        start: impl Fn() -> WatcherRun + Send + 'static,
    ) {
        let kind = Kind {
            name: name.into(),
            start: Box::new(start),
            backoff: DefaultBackoff::default(),
        };
        self.run(kind, Duration::ZERO);
    }

    fn run(&mut self, kind: Kind, delay: Duration) {
        let span = tracing::info_span!("watch", kind = %kind.name);
        let run = (kind.start)();
        let handle = self.tasks.spawn(
            async move {
                tokio::time::sleep(delay).await;
                run.await;
            }
            .instrument(span),
        );
        self.kinds.insert(handle.id(), kind);
    }

    /// Restarts every watcher that ends or panics, for as long as it is polled.
    pub(super) async fn supervise(&mut self) -> Infallible {
        loop {
            let Some(joined) = self.tasks.join_next_with_id().await else {
                // No watcher at all: nothing to supervise, ever.
                return std::future::pending().await;
            };
            let (id, why) = match joined {
                Ok((id, ())) => (id, "ended".to_string()),
                Err(e) => (e.id(), e.to_string()),
            };
            let Some(mut kind) = self.kinds.remove(&id) else {
                continue;
            };
            let delay = kind.backoff.next().unwrap_or(RESTART_MAX);
            tracing::error!(
                kind = %kind.name,
                %why,
                restart_in = ?delay,
                "watcher stopped; restarting it, keeping what it listed"
            );
            self.run(kind, delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::mpsc;

    /// A watcher start that reports each run as `(kind, run)` and ends its first run
    /// with `first`.
    fn mk_start(
        kind: &'static str,
        tx: mpsc::UnboundedSender<(&'static str, usize)>,
        first: fn(),
    ) -> impl Fn() -> WatcherRun + Send + 'static {
        let runs = Arc::new(AtomicUsize::new(0));
        move || {
            let run = runs.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            Box::pin(async move {
                tx.send((kind, run)).unwrap();
                if run == 0 {
                    first();
                } else {
                    std::future::pending::<()>().await;
                }
            })
        }
    }

    // Waits for kube-runtime's first backoff step (under two seconds, jitter included).
    #[tokio::test]
    async fn a_watcher_that_panics_or_ends_is_restarted() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watchers = Watchers::default();
        watchers.spawn("Pod", mk_start("Pod", tx.clone(), || panic!("a bug")));
        watchers.spawn("Node", mk_start("Node", tx, || {}));
        let started = async {
            let mut seen = Vec::new();
            while seen.len() < 4 {
                seen.push(rx.recv().await.unwrap());
            }
            seen.sort();
            seen
        };
        tokio::select! {
            never = watchers.supervise() => match never {},
            seen = started => assert_eq!(seen, [("Node", 0), ("Node", 1), ("Pod", 0), ("Pod", 1)]),
        }
        // The second runs go on: nothing restarts a watcher that runs.
        assert_eq!(watchers.tasks.len(), 2);
    }
}
