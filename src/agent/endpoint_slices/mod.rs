//! EndpointSlices for global services (an agent option): the remote backends the mesh
//! selects for each of the local cluster's global services, written as EndpointSlices in
//! the service's namespace, so that kube-proxy or any CNI load-balances across clusters
//! without knowing fleetmesh.
//!
//! ```text
//!  MeshView ── services_version changes, a stale deadline passes, or the resync period
//!     │
//!     ▼
//!  desired   (pure: each local global service's selected remote backends → slices,
//!     │       one set per source cluster, ≤ 100 endpoints each, deterministic names)
//!     ▼
//!  reconcile (list the slices labelled managed-by fleetmesh; create the missing,
//!             replace the changed ones in place, delete the rest; errors back off)
//! ```
//!
//! - **Only its own slices.** Every slice it writes carries
//!   `endpointslice.kubernetes.io/managed-by: fleetmesh.io/agent`; it reads, updates and
//!   deletes only slices with that label, so the Kubernetes controller's slices and
//!   anyone else's are never touched — not even one holding a name it wants.
//! - **Exactly the mesh's selection.** The slices hold what
//!   [`MeshView::services`](crate::mesh::MeshView::services) selects from other clusters,
//!   so affinity, failover and fail-back, stale withdrawal and drains are followed the way
//!   the agent's own view and `fleetmesh services` show them.
//! - **Nothing is written before the links have synced** (module `gate`): an agent that
//!   restarts would otherwise see no global service yet and delete every slice it wrote.
//! - **Drift is repaired.** Besides every change in the view, every slice is checked
//!   against the API each resync period, so a slice edited or deleted by someone else is
//!   put back.

mod desired;
mod gate;
mod names;
mod reconcile;
mod task;

use std::sync::Arc;

use tracing::{Instrument, info_span};

use crate::observe::{Links, SliceStats};
use crate::remote::SharedView;

use super::config::EndpointSlicesConfig;

/// The `managed-by` value of every slice the agent writes: the only slices it touches.
pub const MANAGED_BY: &str = "fleetmesh.io/agent";
/// The label tying a slice to its Service (read by kube-proxy and every CNI).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The label naming the cluster a slice's backends come from (the MCS API's).
pub const SOURCE_CLUSTER_LABEL: &str = "multicluster.kubernetes.io/source-cluster";

/// The writer's loop, in a span of its own: runs until the task is aborted.
pub(super) async fn run(
    client: kube::Client,
    view: SharedView,
    links: Arc<dyn Links>,
    config: EndpointSlicesConfig,
    stats: SliceStats,
) -> anyhow::Result<()> {
    task::SliceWriter::new(client, view, links, config.resync, stats)
        .run()
        .instrument(info_span!("endpoint_slices"))
        .await
}
