//! A sink of what a link feeds the mesh view, told at the same points as the view: the
//! peer's validated identity, every change as it is applied (through
//! [`ApplyObserver`]), the synced marker, and a drain when the peer's id changed. The
//! agent's Cilium cache keys ([`crate::cache_keys`]) are one; they so follow the view's
//! validation and mark-and-sweep without a second copy of either.

use std::sync::Arc;
use std::time::Instant;

use super::observer::ApplyObserver;
use crate::model::{Change, Cluster, ClusterName};

/// Told what a link does to the view, in the order it does it. Never told about the
/// agent's own cluster (a peer file named like the local cluster).
pub trait PeerSink: ApplyObserver {
    /// The peer's `Info` was validated and its id reserved: its data follows.
    fn accepted(&self, peer: &Cluster);
    /// A full listing of the peer (or a resumed stream) reached its synced marker: the
    /// view holds the peer's whole state, and the sweep of what it no longer has is done.
    fn synced(&self, peer: &ClusterName);
    /// The peer changed its cluster id: everything it sent before was dropped from the
    /// view.
    fn drained(&self, peer: &ClusterName);
}

/// A shared sink, as [`LinkSettings`](super::LinkSettings) holds it.
pub type SharedSink = Arc<dyn PeerSink>;

/// Tells two observers, in order: the sink first, then a benchmark's observer, so that
/// what the observer times includes the sink's work.
#[derive(Debug)]
pub(super) struct Both<'a>(pub &'a dyn ApplyObserver, pub &'a dyn ApplyObserver);

impl ApplyObserver for Both<'_> {
    fn applied(&self, peer: &ClusterName, changes: &[Change], at: Instant) {
        self.0.applied(peer, changes, at);
        self.1.applied(peer, changes, at);
    }
}
