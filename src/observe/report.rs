//! The query API's JSON documents that the mesh does not already define (services and
//! ipcache entries are [`ServiceView`](crate::mesh::ServiceView) and
//! [`IpcacheEntryView`](crate::mesh::IpcacheEntryView)). The server writes them and the
//! CLI's client reads them back, so both sides share these types.

use serde::{Deserialize, Serialize};

use crate::mesh::PeerStatus;
use std::collections::BTreeMap;

use crate::model::{ClusterName, IdentityId, Labels, Node, ServiceExport};

/// `GET /v1/status`: this agent and every one of its links.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub cluster: ClusterName,
    pub cluster_id: u32,
    /// Every configured link, sorted by cluster name.
    pub peers: Vec<PeerStatus>,
    /// What `/readyz` answers.
    pub ready: bool,
    /// Why the agent is not ready: one line per link it waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ready: Vec<String>,
}

/// `GET /v1/identities/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityView {
    pub id: IdentityId,
    /// The cluster holding it (local first: reserved ids exist in every cluster).
    pub cluster: ClusterName,
    /// `source:key=value`, sorted by key.
    pub labels: Vec<String>,
}

impl IdentityView {
    pub fn new(id: IdentityId, cluster: ClusterName, labels: &Labels) -> Self {
        Self {
            id,
            cluster,
            labels: labels.iter().map(ToString::to_string).collect(),
        }
    }
}

/// One element of `GET /v1/nodes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub cluster: ClusterName,
    pub name: String,
    /// `<type>=<ip>`, e.g. `InternalIP=172.18.0.2`, as the node lists them.
    pub addresses: Vec<String>,
    /// Pod CIDRs, primary first then secondary, IPv4 then IPv6.
    pub pod_cidrs: Vec<String>,
}

impl NodeView {
    pub fn new(cluster: ClusterName, node: &Node) -> Self {
        let cidrs = node
            .ipv4_alloc_cidr
            .iter()
            .chain(&node.ipv6_alloc_cidr)
            .chain(&node.ipv4_secondary_alloc_cidrs)
            .chain(&node.ipv6_secondary_alloc_cidrs);
        Self {
            cluster,
            name: node.name().to_string(),
            addresses: node
                .addresses
                .iter()
                .map(|a| format!("{}={}", a.kind, a.ip))
                .collect(),
            pod_cidrs: cidrs.map(ToString::to_string).collect(),
        }
    }
}

/// One element of `GET /v1/serviceexports`: an MCS-API export a cluster offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExportView {
    pub cluster: ClusterName,
    /// `<namespace>/<name>`.
    pub name: String,
    /// `ClusterSetIP` or `Headless`.
    #[serde(rename = "type")]
    pub export_type: String,
    /// `<name>:<port>/<protocol>` (`<port>/<protocol>` for an unnamed port).
    pub ports: Vec<String>,
    pub session_affinity: String,
    pub ip_families: Vec<String>,
    /// When the export was created, seconds since the Unix epoch: the oldest export
    /// wins a conflict between clusters.
    pub export_created_unix: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ServiceExportView {
    pub fn new(export: &ServiceExport) -> Self {
        Self {
            cluster: export.cluster.clone(),
            name: export.name.to_string(),
            export_type: export.export_type.to_string(),
            ports: export
                .ports
                .iter()
                .map(|p| {
                    let port = format!("{}/{}", p.port, p.protocol);
                    if p.name.is_empty() {
                        port
                    } else {
                        format!("{}:{port}", p.name)
                    }
                })
                .collect(),
            session_affinity: export.session_affinity.to_string(),
            ip_families: export.ip_families.iter().map(ToString::to_string).collect(),
            export_created_unix: export.export_created_unix,
            labels: export.labels.clone(),
            annotations: export.annotations.clone(),
        }
    }
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
