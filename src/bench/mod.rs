//! `fleetmesh bench`: the harness that measures fleetmesh with its production code paths
//! — the apiserver's state watch, watch cache and gRPC server behind mutual TLS on
//! loopback, the agent's links and merged view — in one process, and the way Cilium's
//! agents work (each watching the source etcd directly) side by side in the same run.
//! Wiring only: it uses every module and owns none of their logic.
//!
//! ```text
//!  workload ─► store (memory | etcd) ─► state watch ─► watch cache ─► gRPC + mTLS
//!      │                                          ═══► W × (remote link ─► mesh view)
//!      └─► etcd ═══► W × (etcd client list+watch ─► Cilium JSON decode)   (baseline)
//! ```
//!
//! Every run checks its result, not only its speed: each agent's final state is compared
//! with the source's, object by object ([`correctness`]).

mod agents;
pub mod churn;
pub mod correctness;
mod direct;
pub mod memory;
pub mod merge;
mod pki;
mod progress;
pub mod report;
mod setup;
pub mod stats;
pub mod storm;
pub mod sync;
pub mod workload;

pub use self::setup::{BenchOptions, StoreChoice};
