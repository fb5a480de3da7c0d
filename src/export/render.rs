//! Desired state → the exact keys and values the store should hold.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::allocator::{AllocError, IdentityAllocator};
use crate::kvstore::{codec, keys};
use crate::model::{Cluster, DesiredState, Endpoint, Identity, IpPrefix, Kind};

/// Every key the exporter owns, with its value, grouped by the kind whose sync canary
/// covers it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RenderedState {
    pub by_kind: BTreeMap<Kind, BTreeMap<String, Bytes>>,
}

impl RenderedState {
    pub fn len(&self) -> usize {
        self.by_kind.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&mut self, kind: Kind, key: String, value: Bytes) {
        self.by_kind.entry(kind).or_default().insert(key, value);
    }

    /// The value of `key`, whatever its kind.
    pub fn get(&self, key: &str) -> Option<&Bytes> {
        self.by_kind.values().find_map(|m| m.get(key))
    }
}

/// Renders `state` for `cluster`, allocating identities for its workloads. Service
/// exports are rendered only when `mcs_api` is on.
pub async fn render(
    cluster: &Cluster,
    state: &DesiredState,
    mcs_api: bool,
    allocator: &mut IdentityAllocator,
) -> Result<RenderedState, AllocError> {
    let mut out = RenderedState::default();
    // Every kind written is present, even when empty, so that its canary is written.
    for kind in Kind::ORIGINAL {
        out.by_kind.entry(kind).or_default();
    }
    if mcs_api {
        out.by_kind.entry(Kind::ServiceExport).or_default();
        for export in state
            .service_exports
            .iter()
            .filter(|e| e.cluster == cluster.name)
        {
            out.insert(
                Kind::ServiceExport,
                keys::service_export(&cluster.name, &export.name),
                codec::encode_service_export(export),
            );
        }
    }

    for node in state.nodes.iter().filter(|n| n.cluster == cluster.name) {
        out.insert(
            Kind::Node,
            keys::node(&cluster.name, node.name()),
            codec::encode_node(node),
        );
    }

    for svc in state.services.iter().filter(|s| s.cluster == cluster.name) {
        out.insert(
            Kind::Service,
            keys::fleetmesh_service(&cluster.name, &svc.name),
            codec::encode_fleetmesh_service(svc),
        );
        if svc.shared {
            out.insert(
                Kind::Service,
                keys::service(&cluster.name, &svc.name),
                codec::encode_service(svc),
            );
        }
    }

    for identity in &state.identities {
        out.insert(
            Kind::Identity,
            keys::identity(identity.id()),
            codec::encode_identity(identity),
        );
    }
    let mut endpoints: BTreeMap<IpPrefix, Endpoint> = BTreeMap::new();
    for ep in &state.endpoints {
        endpoints.insert(ep.prefix, ep.clone());
    }

    // Ids that came allocated (CiliumIdentity) are never handed out again.
    for identity in &state.identities {
        allocator.reserve(identity.id());
    }
    for workload in &state.workloads {
        let id = match allocator.allocate(&workload.labels).await {
            Ok(id) => id,
            Err(err @ AllocError::Exhausted { .. }) => {
                // One workload without an identity must not stop every other export.
                tracing::warn!(pod = %format!("{}/{}", workload.namespace, workload.pod),
                    error = %err, "not exporting a workload: no identity left");
                continue;
            }
            Err(err) => return Err(err),
        };
        match Identity::new(cluster, id, workload.labels.clone()) {
            Ok(identity) => out.insert(
                Kind::Identity,
                keys::identity(id),
                codec::encode_identity(&identity),
            ),
            Err(err) => {
                tracing::warn!(pod = %format!("{}/{}", workload.namespace, workload.pod), %err,
                    "not exporting a workload whose identity is invalid");
                continue;
            }
        }
        for ip in &workload.ips {
            let prefix = IpPrefix::host(*ip);
            let mut ep = Endpoint::new(prefix, id);
            ep.host_ip = workload.host_ip;
            ep.namespace = Some(workload.namespace.clone());
            ep.pod = Some(workload.pod.clone());
            ep.service_account = workload.service_account.clone();
            ep.named_ports = workload.named_ports.clone();
            if let Some(previous) = endpoints.insert(prefix, ep) {
                tracing::warn!(ip = %prefix, previous = ?previous.pod, pod = %workload.pod,
                    "two workloads claim one IP; the later one is exported");
            }
        }
    }
    for (prefix, ep) in endpoints {
        out.insert(
            Kind::Endpoint,
            keys::ip(prefix),
            codec::encode_endpoint(&ep),
        );
    }
    Ok(out)
}
