//! Fleet profiles: a mesh's members and topology, validated and turned into every
//! member's configuration files and certificates, with a what-if of what changes.
//!
//! # The profile
//!
//! ```yaml
//! mesh: prod                      # names the mesh CA; a cluster-name-like string
//! maxConnectedClusters: 255       # 255 (default) or 511 (extended mode)
//! members:
//!   - name: hub                   # ≤ 32 chars: lowercase letters, digits, '-'
//!     id: 1                       # optional: the lowest free id, then kept (fleet.lock.yaml)
//!     address: "hub.mesh.example:9891"   # host:port or [v6]:port peers dial
//!     podCIDRs: [10.1.0.0/16]     # optional; may not overlap another member's ranges
//!     serviceCIDRs: [10.96.0.0/16]
//!   - {name: tenant-a, address: "10.0.2.10:9891"}
//! topology: {kind: hub-spoke, hubs: [hub]}
//! # or {kind: full-mesh}
//! # or {kind: links, links: [{from: tenant-a, to: hub}]}   # tenant-a's agent watches hub
//! kustomize:                      # optional: also write each member's kustomize overlay
//!   base: ../../deploy/overlays/embedded   # relative to DIR/<name>/, or a remote URL
//!   store: embedded               # or etcd-sidecar, for deploy/overlays/etcd-sidecar
//! etcdApi: {port: 2379}           # optional: apiservers also speak etcd to Cilium agents
//! kvstoremesh: {port: 2379}       # optional: each agent serves its peers to its own
//!                                 # cluster's Cilium agents (KVStoreMesh's part)
//! ```
//!
//! Hub-spoke is the shared-services model: hubs see every member, every other member is
//! a spoke and sees the hubs only; spokes never see each other.
//!
//! # The output
//!
//! ```text
//! DIR/fleet.lock.yaml                  ids and who sees whom, read back by the next run
//! DIR/ca/ca.{crt,key}                  the mesh CA: created once, then reused
//! DIR/<name>/apiserver.yaml            gRPC on 0.0.0.0:<port of address>; allowedPeers:
//!                                      itself and the members that watch it
//! DIR/<name>/agent.yaml
//! DIR/<name>/remotes/<peer>.yaml       the peers it sees, and itself (its local services)
//! DIR/<name>/certs/ca.crt, server-<name>.{crt,key}, client-<name>.{crt,key}
//! DIR/<name>/clustermesh/<peer>        with `etcdApi`: the etcd client config a Cilium
//!                                      agent reads for each peer it sees, next to
//!                                      common-etcd-client{-ca.crt,.crt,.key}: the shape
//!                                      of Cilium's `cilium-clustermesh` Secret
//! DIR/<name>/certs/kvstoremesh-<name>.{crt,key}  with `kvstoremesh`: the agent's etcd API
//! DIR/<name>/cilium-kvstoremesh/       the member's own Cilium agents → its agent: one
//!                                      config per peer, local-etcd-client{-ca.crt,.crt,.key}
//!                                      (the local role), kustomization.yaml (with `kustomize`)
//! DIR/<name>/manifests/                the apiserver's source (left alone)
//! DIR/<name>/kustomization.yaml        with `kustomize`: the overlay over the base, with
//! DIR/<name>/kube/{apiserver,agent}.yaml   the in-cluster configs (Kubernetes source,
//!                                      container ports), remotes/ and certs/
//! ```
//!
//! Everything is validated before anything is written, and every problem is reported
//! (each naming the member and the field). A re-run compares with what `DIR` holds and
//! says what changes: members, links, ids, certificates, files. A certificate is issued
//! again only if it is missing, names something else, or was not signed by the mesh CA.
//! An id never changes; a member leaves only with `--allow-removal`.

mod cidr;
mod error;
mod kustomize;
mod kvstoremesh;
mod leaves;
mod lock;
mod plan;
mod profile;
mod render;
mod topology;
mod validate;

pub use error::{FleetError, Problems};
pub use lock::{LOCK_FILE, Lock, LockedMember};
pub use plan::{CA_DIR, Change, FileOp, Plan, WhatIf, plan};
pub use profile::{
    EtcdApiSpec, InClusterStore, KustomizeSpec, KvstoremeshSpec, LinkSpec, MemberSpec, Profile,
    TopologySpec,
};
pub use topology::Visibility;
pub use validate::{Address, Fleet, Member, Problem, validate};
