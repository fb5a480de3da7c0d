//! Cilium's own resources (`cilium.io/v2`), read the way Cilium's clustermesh-apiserver
//! reads them: `CiliumIdentity`, `CiliumEndpoint` and `CiliumNode`; and, where the
//! cluster batches its endpoints, `CiliumEndpointSlice` (`cilium.io/v2alpha1`).
//!
//! Only the fields fleetmesh reads are declared; every other field (Cilium adds some in
//! most releases) is ignored when an object is read. Fields are optional wherever Cilium's
//! CRD marks them so, so that an object with less than expected still reads and the
//! conversion in [`crate::k8s::convert`] can say what is missing. Each type implements
//! [`kube::Resource`], so `kube::Api<CiliumIdentity>` and friends work without the CRD
//! schema at hand.

/// Implements [`kube::Resource`] for a Cilium type whose `metadata` field holds its
/// object metadata. Defined before the modules below, which use it.
macro_rules! cilium_resource {
    ($type:ty, kind: $kind:literal, plural: $plural:literal, scope: $scope:ty) => {
        cilium_resource!($type, kind: $kind, plural: $plural, scope: $scope, version: super::VERSION);
    };
    ($type:ty, kind: $kind:literal, plural: $plural:literal, scope: $scope:ty, version: $version:expr) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                super::GROUP.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

mod endpoint;
mod endpoint_slice;
mod identity;
mod node;

pub use endpoint::{
    AddressPair, CiliumEndpoint, EncryptionSpec, EndpointIdentity, EndpointNetworking,
    EndpointStatus, NamedPort,
};
pub use endpoint_slice::{CiliumEndpointSlice, CoreCiliumEndpoint};
pub use identity::CiliumIdentity;
pub use node::{
    AllocatedPool, CiliumNode, CiliumNodeSpec, HealthAddressing, IpamPools, IpamSpec, NodeAddress,
};

/// The API group of every Cilium resource.
pub const GROUP: &str = "cilium.io";
/// The version of that group fleetmesh reads (Cilium's storage version).
pub const VERSION: &str = "v2";
/// `apiVersion` of the objects, as manifests spell it: `GROUP/VERSION` (a test checks).
pub const API_VERSION: &str = "cilium.io/v2";
/// The version of `CiliumEndpointSlice`, which has no `v2` yet.
pub const SLICE_VERSION: &str = "v2alpha1";
/// `apiVersion` of `CiliumEndpointSlice`: `GROUP/SLICE_VERSION` (a test checks).
pub const SLICE_API_VERSION: &str = "cilium.io/v2alpha1";

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_version_joins_group_and_version() {
        assert_eq!(
            super::API_VERSION,
            format!("{}/{}", super::GROUP, super::VERSION)
        );
        assert_eq!(
            super::SLICE_API_VERSION,
            format!("{}/{}", super::GROUP, super::SLICE_VERSION)
        );
    }
}
