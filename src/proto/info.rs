//! What `Info` answers, ⇄ wire.

use super::{ProtoError, v1};
use crate::model::{Cluster, ClusterId, ClusterName, IdMode};

/// The serving side of a connection, as `Info` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub cluster: Cluster,
    pub protocol_version: u32,
    /// The store epoch; empty before the server has read its store.
    pub epoch: String,
    pub capabilities: Vec<String>,
}

impl From<&ServerInfo> for v1::InfoResponse {
    fn from(info: &ServerInfo) -> Self {
        v1::InfoResponse {
            cluster_name: info.cluster.name.to_string(),
            cluster_id: info.cluster.id.get(),
            max_connected_clusters: info.cluster.mode.max_cluster_id(),
            protocol_version: info.protocol_version,
            epoch: info.epoch.clone(),
            capabilities: info.capabilities.clone(),
        }
    }
}

/// A server's `Info` answer with its cluster name, id and id mode checked. Whether the
/// answer is the one expected of that peer is the caller's check.
pub fn server_info_from_wire(wire: v1::InfoResponse) -> Result<ServerInfo, ProtoError> {
    let name =
        ClusterName::new(&wire.cluster_name).map_err(ProtoError::model("info.cluster_name"))?;
    let mode = IdMode::from_max_connected_clusters(wire.max_connected_clusters)
        .map_err(ProtoError::model("info.max_connected_clusters"))?;
    let id = ClusterId::new(wire.cluster_id, mode).map_err(ProtoError::model("info.cluster_id"))?;
    Ok(ServerInfo {
        cluster: Cluster::new(name, id, mode),
        protocol_version: wire.protocol_version,
        epoch: wire.epoch,
        capabilities: wire.capabilities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::fixtures::mk_cluster;

    #[test]
    fn info_round_trips_and_is_checked() {
        let info = ServerInfo {
            cluster: mk_cluster("c1", 200),
            protocol_version: 1,
            epoch: "abc".into(),
            capabilities: vec!["resume".into()],
        };
        let wire = v1::InfoResponse::from(&info);
        assert_eq!(wire.max_connected_clusters, 255);
        assert_eq!(server_info_from_wire(wire.clone()).unwrap(), info);

        let mut bad = wire.clone();
        bad.max_connected_clusters = 100;
        assert!(
            server_info_from_wire(bad)
                .unwrap_err()
                .to_string()
                .contains("info.max_connected_clusters")
        );
        let mut bad = wire;
        bad.cluster_id = 300;
        assert!(
            server_info_from_wire(bad)
                .unwrap_err()
                .to_string()
                .contains("info.cluster_id")
        );
    }
}
