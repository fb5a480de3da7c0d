//! Kubernetes objects → model ([`convert`]), and the sources that read them.

pub mod cilium;
pub mod client;
pub mod convert;
pub mod kube;
pub mod manifests;
mod snapshot;

pub use snapshot::Snapshot;
