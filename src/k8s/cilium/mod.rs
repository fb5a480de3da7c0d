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
/// `apiVersion` of the objects, as manifests spell it: `GROUP/VERSION`.
pub const API_VERSION: &str = match std::str::from_utf8(&API_VERSION_BYTES) {
    Ok(api_version) => api_version,
    Err(_) => panic!("GROUP and VERSION are ASCII"),
};

/// The bytes of [`API_VERSION`], joined at compile time (`concat!` takes only literals).
const API_VERSION_BYTES: [u8; GROUP.len() + 1 + VERSION.len()] = join_with_slash(GROUP, VERSION);

/// `a/b`, in an array exactly that long.
const fn join_with_slash<const N: usize>(a: &str, b: &str) -> [u8; N] {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut out = [b'/'; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < b.len() {
        out[a.len() + 1 + j] = b[j];
        j += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_version_joins_group_and_version() {
        assert_eq!(super::API_VERSION, "cilium.io/v2");
    }
}
