//! Kubernetes objects → model ([`convert`]), and the sources that read them.

pub mod cilium;
pub mod client;
pub mod convert;
pub mod kube;
pub mod manifests;
pub mod mcs;
mod snapshot;

pub use snapshot::Snapshot;
