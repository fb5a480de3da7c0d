//! Cilium's own resources (`cilium.io/v2`), read the way Cilium's clustermesh-apiserver
//! reads them: `CiliumIdentity`, `CiliumEndpoint` and `CiliumNode`.
//!
//! Only the fields fleetmesh reads are declared; every other field (Cilium adds some in
//! most releases) is ignored when an object is read. Fields are optional wherever Cilium's
//! CRD marks them so, so that an object with less than expected still reads and the
//! conversion in [`crate::k8s::convert`] can say what is missing. Each type implements
//! [`kube::Resource`], so `kube::Api<CiliumIdentity>` and friends work without the CRD
//! schema at hand.

mod endpoint;
mod identity;
mod node;

pub use endpoint::{
    AddressPair, CiliumEndpoint, EncryptionSpec, EndpointIdentity, EndpointNetworking,
    EndpointStatus, NamedPort,
};
pub use identity::CiliumIdentity;
pub use node::{
    AllocatedPool, CiliumNode, CiliumNodeSpec, HealthAddressing, IpamPools, IpamSpec, NodeAddress,
};

/// The API group of every Cilium resource.
pub const GROUP: &str = "cilium.io";
/// The version of that group fleetmesh reads (Cilium's storage version).
pub const VERSION: &str = "v2";
/// `apiVersion` of the objects, as manifests spell it.
pub const API_VERSION: &str = "cilium.io/v2";
