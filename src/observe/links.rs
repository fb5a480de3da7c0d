//! What the API needs to know about the agent's links, and when the agent is ready.
//!
//! Readiness follows KVStoreMesh (reference §3): the agent is ready once every configured
//! link has been ready at least once. A link that has not connected within
//! [`PER_LINK_READY_TIMEOUT`] of being configured is left out, so one dead peer does not
//! keep the agent unready forever; a link that is connected but still syncing is waited
//! for, up to [`GLOBAL_READY_TIMEOUT`] after start.

use std::time::{Duration, Instant};

use crate::mesh::PeerStatus;
use crate::model::Kind;

/// KVStoreMesh's `--per-cluster-ready-timeout`: long enough for a healthy peer to answer,
/// short enough that an unreachable one does not hold a rollout.
pub const PER_LINK_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// KVStoreMesh's `--global-ready-timeout`: a circuit breaker for a peer that connects but
/// never finishes its initial sync.
pub const GLOBAL_READY_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The agent's links, as the API reads them.
pub trait Links: Send + Sync + 'static {
    /// Every configured link, sorted by cluster name.
    fn reports(&self) -> Vec<LinkReport>;
}

/// One configured link.
#[derive(Clone, Debug)]
pub struct LinkReport {
    pub status: PeerStatus,
    /// When the link was configured (its remotes file appeared or changed).
    pub since: Instant,
    /// The link has been ready at least once since `since`.
    pub been_ready: bool,
}

/// The links the agent still waits for, each with why; empty when the agent is ready.
pub fn waiting_for(links: &[LinkReport], started: Instant, now: Instant) -> Vec<String> {
    if now.saturating_duration_since(started) >= GLOBAL_READY_TIMEOUT {
        return Vec::new();
    }
    links
        .iter()
        .filter(|l| !l.been_ready)
        .filter_map(|l| {
            let s = &l.status;
            let timed_out = now.saturating_duration_since(l.since) >= PER_LINK_READY_TIMEOUT;
            if s.connected {
                let pending: Vec<&str> = Kind::ALL
                    .into_iter()
                    .filter(|k| !s.synced.get(*k))
                    .map(Kind::as_str)
                    .collect();
                Some(if pending.is_empty() {
                    format!("{}: connected, not ready yet", s.cluster)
                } else {
                    format!("{}: connected, syncing {}", s.cluster, pending.join(", "))
                })
            } else if timed_out {
                None
            } else {
                Some(match &s.last_failure {
                    Some(f) => format!("{}: not connected: {}", s.cluster, f.reason),
                    None => format!("{}: connecting", s.cluster),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{Failure, SyncedKinds};

    fn mk_link(cluster: &str, since: Instant) -> LinkReport {
        LinkReport {
            status: PeerStatus {
                cluster: cluster.into(),
                ..PeerStatus::default()
            },
            since,
            been_ready: false,
        }
    }

    #[test]
    fn ready_once_every_link_has_been_ready() {
        let t0 = Instant::now();
        let mut a = mk_link("a", t0);
        let mut b = mk_link("b", t0);
        let now = t0 + Duration::from_secs(1);
        assert_eq!(
            waiting_for(&[a.clone(), b.clone()], t0, now),
            vec!["a: connecting", "b: connecting"]
        );
        a.been_ready = true;
        b.status.connected = true;
        b.status.synced.nodes = true;
        assert_eq!(
            waiting_for(&[a.clone(), b.clone()], t0, now),
            vec!["b: connected, syncing services, identities, endpoints, serviceexports"]
        );
        // Ready once, then lost: readiness does not flap with the link.
        b.been_ready = true;
        b.status.connected = false;
        assert!(waiting_for(&[a, b], t0, now).is_empty());
        assert!(waiting_for(&[], t0, now).is_empty());
    }

    #[test]
    fn a_link_that_cannot_connect_is_left_out_after_the_per_link_timeout() {
        let t0 = Instant::now();
        let mut a = mk_link("a", t0);
        a.status.last_failure = Some(Failure {
            reason: "connect to 127.0.0.1:1: connection refused".into(),
            at_unix_ms: 1,
        });
        let early = t0 + Duration::from_secs(3);
        assert_eq!(
            waiting_for(std::slice::from_ref(&a), t0, early),
            vec!["a: not connected: connect to 127.0.0.1:1: connection refused"]
        );
        let late = t0 + PER_LINK_READY_TIMEOUT;
        assert!(waiting_for(std::slice::from_ref(&a), t0, late).is_empty());

        // A connected link that is still syncing is waited for...
        a.status.connected = true;
        a.status.synced = SyncedKinds {
            nodes: true,
            services: true,
            identities: true,
            endpoints: true,
            service_exports: true,
        };
        assert_eq!(
            waiting_for(std::slice::from_ref(&a), t0, late),
            vec!["a: connected, not ready yet"]
        );
        // ...until the global timeout.
        assert!(waiting_for(&[a], t0, t0 + GLOBAL_READY_TIMEOUT).is_empty());
    }
}
