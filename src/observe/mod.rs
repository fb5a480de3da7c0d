//! What an agent shows of itself: the HTTP query and status API, Prometheus metrics, a
//! small web page, the tables the CLI prints, and the client the CLI reads them with.
//!
//! | route | answers |
//! | --- | --- |
//! | `/v1/status` | [`StatusReport`]: the local cluster, every link's [`PeerStatus`](crate::mesh::PeerStatus), readiness |
//! | `/v1/services`, `/v1/services/{ns}/{name}` | [`ServiceView`](crate::mesh::ServiceView)s: global services, backends per cluster, what is selected now and why |
//! | `/v1/explain/services/{ns}/{name}` | [`ServiceExplanation`]: every backend, selected or not, and why |
//! | `/v1/explain/ip/{ip}` | [`IpExplanation`]: who holds an IP, conflicts, the labels' origin |
//! | `/v1/ipcache/{ip}` | [`IpcacheEntryView`](crate::mesh::IpcacheEntryView): who owns an IP |
//! | `/v1/identities/{id}`, `/v1/nodes`, `/v1/conflicts` | [`IdentityView`], [`NodeView`]s, [`IpConflict`](crate::mesh::IpConflict)s |
//! | `/healthz`, `/readyz` | alive; ready once every link has been ready (module `links`) |
//! | `/metrics` | Prometheus text (module `metrics`) |
//! | `/` | the HTML page (module `page`) |
//!
//! `observe` reads the [`MeshView`](crate::mesh::MeshView) and the agent's links through
//! the [`Links`] trait; it knows nothing of how links are made (DESIGN.md §3).

mod api;
mod client;
mod explain;
mod graph;
pub mod http;
mod links;
mod metrics;
mod page;
mod render;
mod report;
mod slice_stats;

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;

pub use api::{ApiState, router};
pub use client::{AgentClient, ClientError, DEFAULT_AGENT_URL};
pub use explain::{
    BackendExplanation, ClusterNote, IpExplanation, ServiceExplanation, Verdict, explain_ip,
    explain_ip_table, explain_service, explain_table,
};
pub use links::{GLOBAL_READY_TIMEOUT, LinkReport, Links, PER_LINK_READY_TIMEOUT};
pub use render::{lookup_table, services_table, status_table};
pub use report::{ErrorBody, IdentityView, NodeView, StatusReport};
pub use slice_stats::SliceStats;

/// Serves the API on `listener`, within [`http`]'s limits, until the future is dropped.
pub async fn serve(listener: TcpListener, state: ApiState) -> std::io::Result<()> {
    let stats = http::HttpStats::default();
    http::serve_limited(listener, router(state), stats, std::future::pending()).await
}

/// Milliseconds since the Unix epoch, the unit of every time in [`StatusReport`].
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
