//! The link's side of its [`PeerStatus`]: every change goes through here so that
//! `ready` is always derived the same way (connected ∧ validated ∧ every kind synced).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::{Failure, PeerStatus, SyncedKinds};

/// Publishes one link's status.
pub(super) struct Reporter {
    tx: watch::Sender<PeerStatus>,
    /// The peer's `Info` passed validation on the current connection.
    validated: bool,
}

impl Reporter {
    pub(super) fn new(initial: PeerStatus) -> (Self, watch::Receiver<PeerStatus>) {
        let (tx, rx) = watch::channel(initial);
        (
            Self {
                tx,
                validated: false,
            },
            rx,
        )
    }

    /// Changes the status with `f`, then re-derives `ready`, and tells the watchers.
    pub(super) fn update(&self, f: impl FnOnce(&mut PeerStatus)) {
        let validated = self.validated;
        self.tx.send_modify(|status| {
            f(status);
            status.ready = status.connected && validated && status.synced.all();
        });
    }

    /// The peer's `Info` passed (or no longer has passed) validation.
    pub(super) fn set_validated(&mut self, validated: bool) {
        self.validated = validated;
        self.update(|_| {});
    }

    /// The link is down because of `reason`: not connected, nothing synced, nothing
    /// validated until the next connection says so again.
    pub(super) fn down(&mut self, reason: String) {
        self.validated = false;
        self.update(|s| {
            s.connected = false;
            s.synced = SyncedKinds::default();
            s.last_failure = Some(Failure {
                reason,
                at_unix_ms: unix_ms(),
            });
        });
    }

    /// The peer asked for a reconnect: down like after a failure, but the last failure
    /// stays what it was — nothing failed.
    pub(super) fn reconnecting(&mut self) {
        self.validated = false;
        self.update(|s| {
            s.connected = false;
            s.synced = SyncedKinds::default();
        });
    }

    /// Whether the status already names `epoch` (a look, no copy).
    pub(super) fn has_epoch(&self, epoch: &str) -> bool {
        self.tx.borrow().epoch.as_deref() == Some(epoch)
    }

    /// The status as published now.
    pub(super) fn current(&self) -> PeerStatus {
        self.tx.borrow().clone()
    }
}

/// Milliseconds since the Unix epoch, for status timestamps (0 if the clock is before it).
pub(super) fn unix_ms() -> u64 {
    unix_ms_of(SystemTime::now())
}

/// `at` in milliseconds since the Unix epoch (0 if before it).
pub(super) fn unix_ms_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    #[test]
    fn ready_needs_connected_validated_and_every_kind_synced() {
        let (mut reporter, rx) = Reporter::new(PeerStatus::default());
        reporter.update(|s| {
            s.connected = true;
            for kind in Kind::ALL {
                s.synced.set(kind, true);
            }
        });
        assert!(!rx.borrow().ready, "not validated yet");
        reporter.set_validated(true);
        assert!(rx.borrow().ready);
        reporter.update(|s| s.synced.set(Kind::Node, false));
        assert!(!rx.borrow().ready);
        reporter.update(|s| s.synced.set(Kind::Node, true));
        assert!(rx.borrow().ready);

        reporter.down("connect failed: h:1: connection refused".into());
        let status = rx.borrow().clone();
        assert!(!status.ready && !status.connected && !status.synced.nodes);
        let failure = status.last_failure.unwrap();
        assert!(failure.reason.starts_with("connect failed"));
        assert!(failure.at_unix_ms > 0);

        reporter.update(|s| {
            s.connected = true;
            for kind in Kind::ALL {
                s.synced.set(kind, true);
            }
        });
        assert!(!rx.borrow().ready, "validation is per connection");
    }
}
