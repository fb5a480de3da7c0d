//! What the configuration files share: the `cluster:` block that names the member a
//! process belongs to. The files themselves are read by their own wiring (`apiserver`,
//! `agent`).

use serde::Deserialize;

use crate::model::{Cluster, ClusterId, ClusterName, IdMode};

/// Cilium's default mesh size (255 clusters).
const DEFAULT_MAX_CONNECTED_CLUSTERS: u32 = 255;

/// `cluster: {name, id, maxConnectedClusters}` as written in a config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterBlock {
    pub name: String,
    pub id: u32,
    #[serde(default = "default_max_connected_clusters")]
    pub max_connected_clusters: u32,
}

fn default_max_connected_clusters() -> u32 {
    DEFAULT_MAX_CONNECTED_CLUSTERS
}

impl ClusterBlock {
    /// The validated cluster, or the field that is wrong and why.
    pub fn to_cluster(&self) -> Result<Cluster, (&'static str, String)> {
        let mode = IdMode::from_max_connected_clusters(self.max_connected_clusters)
            .map_err(|e| ("cluster.maxConnectedClusters", e.to_string()))?;
        let name = ClusterName::new(&self.name).map_err(|e| ("cluster.name", e.to_string()))?;
        let id = ClusterId::new(self.id, mode).map_err(|e| ("cluster.id", e.to_string()))?;
        Ok(Cluster::new(name, id, mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(name: &str, id: u32, max: u32) -> ClusterBlock {
        ClusterBlock {
            name: name.to_string(),
            id,
            max_connected_clusters: max,
        }
    }

    #[test]
    fn each_wrong_field_is_named() {
        assert_eq!(block("c1", 400, 511).to_cluster().unwrap().id.get(), 400);
        assert_eq!(
            block("C1", 1, 255).to_cluster().unwrap_err().0,
            "cluster.name"
        );
        assert_eq!(
            block("c1", 0, 255).to_cluster().unwrap_err().0,
            "cluster.id"
        );
        assert_eq!(
            block("c1", 1, 300).to_cluster().unwrap_err().0,
            "cluster.maxConnectedClusters"
        );
    }
}
