use k8s_openapi::ClusterResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::{EncryptionSpec, EndpointNetworking, NamedPort};

/// A batch of CiliumEndpoints of one namespace, as Cilium's operator groups them when
/// `enableCiliumEndpointSlice` is on (cluster-scoped; the namespace is a field).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CiliumEndpointSlice {
    pub metadata: ObjectMeta,
    /// The namespace of every endpoint in the slice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<CoreCiliumEndpoint>>,
}

/// One endpoint of a slice: the part of a CiliumEndpoint's status the mesh needs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoreCiliumEndpoint {
    /// The CiliumEndpoint's (and pod's) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The numeric security identity (an int64 in Cilium's schema; checked on conversion).
    #[serde(rename = "id", default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<EndpointNetworking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
    #[serde(
        rename = "named-ports",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub named_ports: Option<Vec<NamedPort>>,
}

cilium_resource!(CiliumEndpointSlice, kind: "CiliumEndpointSlice", plural: "ciliumendpointslices", scope: ClusterResourceScope, version: super::SLICE_VERSION);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn a_slice_reads_from_ciliums_json_ignoring_unknown_fields() {
        let ces: CiliumEndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "cilium.io/v2alpha1",
            "kind": "CiliumEndpointSlice",
            "metadata": {"name": "ces-7k2xq"},
            "namespace": "bar",
            "endpoints": [{
                "name": "cep-002",
                "id": 199475,
                "networking": {
                    "addressing": [{"ipv4": "10.244.2.74"}],
                    "node": "172.18.0.2"
                },
                "encryption": {"key": 5},
                "service-account": "default",
                "uid": "1234"
            }]
        }))
        .unwrap();
        assert_eq!(ces.namespace.as_deref(), Some("bar"));
        let endpoint = &ces.endpoints.unwrap()[0];
        assert_eq!(endpoint.identity, Some(199_475));
        assert_eq!(endpoint.encryption.as_ref().and_then(|e| e.key), Some(5));
        assert_eq!(
            CiliumEndpointSlice::url_path(&(), None),
            "/apis/cilium.io/v2alpha1/ciliumendpointslices"
        );
        assert_eq!(CiliumEndpointSlice::api_version(&()), "cilium.io/v2alpha1");
    }
}
