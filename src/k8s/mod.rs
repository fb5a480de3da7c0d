//! Kubernetes objects → model ([`convert`]), and the sources that read them.

pub mod cilium;
pub mod convert;
pub mod manifests;
