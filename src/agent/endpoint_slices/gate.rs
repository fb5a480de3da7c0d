//! When the writer may start: once the view holds what the links will give it. Before
//! that the view is partial — right after a restart it holds no global service at all —
//! and writing it would delete slices that are still right, only to create them again a
//! moment later.
//!
//! The local link must have synced: without it no service is known to be global here,
//! so nothing can be written or deleted safely, however long that takes. Peers follow the
//! agent's readiness rule (module `observe::links`): each must have synced, except one
//! that has not connected within [`PER_LINK_READY_TIMEOUT`] (a dead peer must not hold
//! every other slice back), and no peer is waited for beyond [`GLOBAL_READY_TIMEOUT`].

use std::time::Instant;

use crate::observe::{GLOBAL_READY_TIMEOUT, LinkReport, PER_LINK_READY_TIMEOUT};

/// What the writer still waits for, or `None` once it may write.
pub(super) fn waiting_for(links: &[LinkReport], started: Instant, now: Instant) -> Option<String> {
    let Some(local) = links.iter().find(|l| l.status.local) else {
        return Some(
            "no link to the local apiserver (a remotes file named like this cluster)".into(),
        );
    };
    if !local.been_ready {
        return Some(format!(
            "the link to the local apiserver ({}) to sync",
            local.status.cluster
        ));
    }
    if now.saturating_duration_since(started) >= GLOBAL_READY_TIMEOUT {
        return None;
    }
    let pending: Vec<&str> = links
        .iter()
        .filter(|l| !l.been_ready)
        .filter(|l| {
            l.status.connected || now.saturating_duration_since(l.since) < PER_LINK_READY_TIMEOUT
        })
        .map(|l| l.status.cluster.as_str())
        .collect();
    (!pending.is_empty()).then(|| format!("peers {} to sync", pending.join(", ")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::mesh::PeerStatus;

    fn mk_link(cluster: &str, local: bool, been_ready: bool, since: Instant) -> LinkReport {
        LinkReport {
            status: PeerStatus {
                cluster: cluster.into(),
                local,
                ..PeerStatus::default()
            },
            since,
            been_ready,
        }
    }

    #[test]
    fn the_local_link_is_always_waited_for() {
        let t0 = Instant::now();
        let late = t0 + GLOBAL_READY_TIMEOUT + Duration::from_secs(1);
        assert!(
            waiting_for(&[], t0, late)
                .unwrap()
                .contains("no link to the local")
        );
        let links = [
            mk_link("c1", true, false, t0),
            mk_link("c2", false, true, t0),
        ];
        assert!(waiting_for(&links, t0, late).unwrap().contains("(c1)"));
        let links = [
            mk_link("c1", true, true, t0),
            mk_link("c2", false, true, t0),
        ];
        assert_eq!(waiting_for(&links, t0, t0), None);
    }

    #[test]
    fn a_peer_is_waited_for_until_it_syncs_or_times_out() {
        let t0 = Instant::now();
        let links = [
            mk_link("c1", true, true, t0),
            mk_link("c2", false, false, t0),
        ];
        assert_eq!(
            waiting_for(&links, t0, t0).as_deref(),
            Some("peers c2 to sync")
        );
        // Never connected: given up on after the per-link timeout.
        let later = t0 + PER_LINK_READY_TIMEOUT;
        assert_eq!(waiting_for(&links, t0, later), None);
        // Connected and still syncing: waited for up to the global timeout.
        let mut syncing = links.clone();
        syncing[1].status.connected = true;
        assert!(waiting_for(&syncing, t0, later).is_some());
        assert_eq!(waiting_for(&syncing, t0, t0 + GLOBAL_READY_TIMEOUT), None);
    }
}
