//! One agent's link followed through an apiserver restart: when it dialed, when its
//! stream opened again, when it was ready again, and whether it ever relapsed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::spread::AgentReconnects;
use crate::mesh::{Counts, PeerStatus};

/// What one link did, as instants.
#[derive(Debug, Default)]
pub struct Trace {
    attempts: Vec<Instant>,
    connected: Vec<Instant>,
    /// Ready again after it had gone down.
    pub resynced: Option<Instant>,
    /// It went down again after it had resynced, or what it held of the source dipped
    /// below the source's counts (something was withdrawn, if only for a moment).
    pub flaps: u64,
}

impl Trace {
    /// The reconnects as offsets from `since` (the restart).
    pub fn reconnects(&self, since: Instant) -> AgentReconnects {
        let offsets = |at: &[Instant]| {
            at.iter()
                .map(|t| t.saturating_duration_since(since))
                .collect()
        };
        AgentReconnects {
            attempts: offsets(&self.attempts),
            connected: offsets(&self.connected),
        }
    }

    /// Restart to ready again.
    pub fn resynced_after(&self, since: Instant) -> Option<Duration> {
        self.resynced.map(|t| t.saturating_duration_since(since))
    }
}

/// A running trace; `finish` ends it and hands over what it saw.
pub struct Tracer {
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<Trace>,
}

impl Tracer {
    /// Follows `status` from now on (a ready link); counts into `resynced` once the link
    /// is ready again after going down. `expected`: what the link holds of the source.
    pub fn start(
        mut status: watch::Receiver<PeerStatus>,
        expected: Counts,
        resynced: Arc<AtomicUsize>,
    ) -> Self {
        let (stop_tx, mut stop_rx) = oneshot::channel();
        // Read now, not in the task: what happens from this call on must be seen.
        let first = status.borrow_and_update().clone();
        let task = tokio::spawn(async move {
            let mut trace = Trace::default();
            let (mut reconnects, mut connected, mut ready) =
                (first.reconnects, first.connected, first.ready);
            let mut went_down = false;
            let mut dipped = false;
            loop {
                tokio::select! {
                    changed = status.changed() => if changed.is_err() { break },
                    _ = &mut stop_rx => break,
                }
                let now = Instant::now();
                let s = status.borrow_and_update().clone();
                // Attempts that came in faster than this task woke share its instant.
                for _ in reconnects..s.reconnects {
                    trace.attempts.push(now);
                }
                reconnects = reconnects.max(s.reconnects);
                if s.connected && !connected {
                    trace.connected.push(now);
                }
                connected = s.connected;
                if !s.ready && ready {
                    went_down = true;
                    trace.flaps += u64::from(trace.resynced.is_some());
                }
                if s.ready && went_down && trace.resynced.is_none() {
                    trace.resynced = Some(now);
                    resynced.fetch_add(1, Ordering::Relaxed);
                }
                ready = s.ready;
                if !dipped && below(&s.counts, &expected) {
                    dipped = true;
                    trace.flaps += 1;
                }
            }
            trace
        });
        Self { stop_tx, task }
    }

    /// Stops following and returns what was seen.
    pub async fn finish(self) -> anyhow::Result<Trace> {
        // An error means the task already ended (the link's status closed).
        let _ = self.stop_tx.send(());
        Ok(self.task.await?)
    }
}

/// Some kind holds fewer entries than expected.
fn below(held: &Counts, expected: &Counts) -> bool {
    held.endpoints < expected.endpoints
        || held.identities < expected.identities
        || held.nodes < expected.nodes
        || held.services < expected.services
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_status(ready: bool, reconnects: u64, counts: Counts) -> PeerStatus {
        PeerStatus {
            connected: ready,
            ready,
            reconnects,
            counts,
            ..PeerStatus::default()
        }
    }

    #[tokio::test]
    async fn a_restart_is_traced_from_the_drop_to_ready_again() {
        let full = Counts {
            endpoints: 10,
            identities: 1,
            nodes: 1,
            services: 1,
            service_exports: 0,
        };
        let (tx, rx) = watch::channel(mk_status(true, 0, full));
        let resynced = Arc::new(AtomicUsize::new(0));
        let tracer = Tracer::start(rx, full, resynced.clone());
        let since = Instant::now();
        let steps = [
            mk_status(false, 0, full),
            mk_status(false, 1, full),
            mk_status(false, 2, full),
            mk_status(true, 2, full),
        ];
        for step in steps {
            tx.send(step).unwrap();
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let trace = tracer.finish().await.unwrap();
        let reconnects = trace.reconnects(since);
        assert_eq!(
            (reconnects.attempts.len(), reconnects.connected.len()),
            (2, 1)
        );
        assert!(trace.resynced_after(since).is_some());
        assert_eq!(trace.flaps, 0);
        assert_eq!(resynced.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_relapse_and_a_dip_are_flaps() {
        let full = Counts {
            endpoints: 10,
            ..Counts::default()
        };
        let (tx, rx) = watch::channel(mk_status(true, 0, full));
        let tracer = Tracer::start(rx, full, Arc::new(AtomicUsize::new(0)));
        let dipped = Counts {
            endpoints: 9,
            ..Counts::default()
        };
        for step in [
            mk_status(false, 1, full),
            mk_status(true, 1, dipped),
            mk_status(false, 2, full),
        ] {
            tx.send(step).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let trace = tracer.finish().await.unwrap();
        assert_eq!(trace.flaps, 2, "{trace:?}");
    }
}
