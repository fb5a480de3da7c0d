//! The agent side of the mesh: one task per peer that connects to the peer's apiserver,
//! validates who it is, watches its state and feeds it into the shared [`MeshView`].
//!
//! ```text
//!  remotes/<name>.yaml ─► PeerConfig ─► spawn_link ─► task (span peer = <name>)
//!     connect (mTLS, server cert must name <name>) ─► Info ─► validate, reserve the id
//!     ─► Watch(resume?) ─► full state, applied as it comes     ─► MeshView::apply_change
//!                          at `synced`: what it did not list    ─► MeshView::sweep
//!                       └► or resumed: only what was missed     ─► MeshView::apply_change
//!     ─► deltas ─► MeshView::apply_change   (each event checked, then applied as decoded)
//!     stream ends ─► set_reachable(false), back off with jitter, reconnect and resume
//! ```
//!
//! The rules it keeps (DESIGN.md §6):
//!
//! - **Nothing is deleted because a peer went away.** A lost stream marks the peer
//!   unreachable and keeps its entries; after a reconnect that could not resume, the new
//!   listing is applied as it comes and its keys are kept until the synced marker, which
//!   is the only place an entry the peer no longer has disappears (mark and sweep,
//!   [`MeshView::sweep`]).
//! - **A peer's data is accepted only after its `Info` is validated**: the name equals
//!   the peer file's name and the server certificate's cluster, the id mode equals ours,
//!   the id is not the local one nor another peer's ([`IdRegistry`]). Each event is
//!   converted and checked against that cluster; one that fails is refused, logged with
//!   the reason, counted and shown as the link's last failure, never half-applied. A
//!   peer whose id changed is drained before it is read again.
//! - **Reconnects back off with full jitter**, and every link is its own task, so a peer
//!   that keeps failing slows no other.
//!
//! The link reports itself through a `watch` of [`PeerStatus`]; its `last_failure` says
//! what actually went wrong ("connect failed: …", "TLS handshake failed: …",
//! "permission denied by c1: …"), never a guess.

mod backoff;
mod config;
mod credentials;
mod error;
mod ids;
mod link;
mod observer;
mod sink;
mod status;
mod sync;
mod validate;

use std::sync::Arc;

use crate::mesh::MeshView;

pub use self::config::{PeerConfig, PeerConfigError};
pub use self::error::LinkError;
pub use self::ids::{IdConflict, IdRegistry};
pub use self::link::{LinkSettings, PeerLink, spawn_link};
pub use self::observer::{ApplyObserver, SharedObserver};
pub use self::sink::{PeerSink, SharedSink};
pub use self::validate::ValidationError;
pub use crate::mesh::{Failure, PeerStatus, SyncedKinds};

/// The merged view shared by all links of one agent. The lock is never held across
/// `.await`.
pub type SharedView = Arc<parking_lot::RwLock<MeshView>>;
