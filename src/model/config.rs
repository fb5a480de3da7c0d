use super::{ClusterId, IdMode};

/// What a cluster announces about itself under `cilium/cluster-config/<name>`; a peer is
/// accepted only after this is read and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub id: ClusterId,
    pub capabilities: Capabilities,
}

/// Capabilities of the writer of a cluster's data (Cilium's `capabilities` object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The writer produces per-prefix sync canaries.
    pub synced_canaries: bool,
    /// The data lives under `cilium/cache/...` (written by a cache, not the source).
    pub cached: bool,
    pub mode: IdMode,
    /// MCS-API service exports: `None` when the writer does not know of them.
    pub service_exports_enabled: Option<bool>,
}

impl Capabilities {
    /// What a fleetmesh apiserver announces.
    pub fn fleetmesh(mode: IdMode) -> Self {
        Self {
            synced_canaries: true,
            cached: false,
            mode,
            service_exports_enabled: Some(false),
        }
    }
}
