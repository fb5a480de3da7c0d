use std::net::IpAddr;

use super::{Endpoint, Identity, Labels, NamedPort, Node, Service, ServiceExport};

/// A pod's network presence before its identity is allocated: the security labels that
/// will select an identity, and the addresses that identity will own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    pub service_account: Option<String>,
    /// Security labels, including the namespace, service account and cluster labels.
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub host_ip: Option<IpAddr>,
    pub named_ports: Vec<NamedPort>,
}

/// Everything a source says one cluster should export, as of one moment. The exporter
/// turns it into store keys; anything stored and not in here is deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub nodes: Vec<Node>,
    /// Every global service, shared or not (non-shared ones are not written to Cilium's
    /// keys, but the local agent needs them).
    pub services: Vec<Service>,
    /// Pods whose identities the exporter allocates.
    pub workloads: Vec<Workload>,
    /// Identities whose ids were already allocated elsewhere (Cilium's CiliumIdentity).
    pub identities: Vec<Identity>,
    /// Ipcache entries with already-known identities (Cilium's CiliumEndpoint and
    /// CiliumEndpointSlice).
    pub endpoints: Vec<Endpoint>,
    /// MCS-API service exports whose Service exists; written only where the apiserver
    /// has MCS-API exports on.
    pub service_exports: Vec<ServiceExport>,
}
