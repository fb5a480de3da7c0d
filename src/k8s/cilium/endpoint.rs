use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The status Cilium's agent publishes for one pod's endpoint (namespaced; named like the
/// pod).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CiliumEndpoint {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EndpointStatus>,
}

/// `status` of a [`CiliumEndpoint`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// The security identity; absent while the endpoint waits for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<EndpointIdentity>,
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
    /// The pod's service account (Cilium 1.15 and later).
    #[serde(
        rename = "service-account",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account: Option<String>,
}

/// `status.identity` of a [`CiliumEndpoint`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointIdentity {
    /// The numeric identity (an int64 in Cilium's schema; checked on conversion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
}

/// `status.networking` of a [`CiliumEndpoint`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointNetworking {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addressing: Option<Vec<AddressPair>>,
    /// The IP of the node hosting the endpoint, reachable from other nodes.
    #[serde(rename = "node", default, skip_serializing_if = "Option::is_none")]
    pub node_ip: Option<String>,
}

/// An IPv4 and/or IPv6 address (Cilium's `AddressPair`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AddressPair {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
}

/// Cilium's `EncryptionSpec`: the IPsec key index, 0 when encryption is off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EncryptionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<i64>,
}

/// A named container port of the endpoint (Cilium's `models.Port`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

cilium_resource!(CiliumEndpoint, kind: "CiliumEndpoint", plural: "ciliumendpoints", scope: NamespaceResourceScope);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn an_endpoint_reads_from_ciliums_json_ignoring_unknown_fields() {
        let cep: CiliumEndpoint = serde_json::from_value(serde_json::json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumEndpoint",
            "metadata": {"name": "cep-002", "namespace": "bar"},
            "status": {
                "encryption": {"key": 5},
                "id": 1482,
                "identity": {"id": 199475, "labels": ["k8s:app=qux"]},
                "networking": {
                    "addressing": [{"ipv4": "10.244.2.74", "ipv6": "fd00:10:244:2::e024"}],
                    "node": "172.18.0.2"
                },
                "named-ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "service-account": "default",
                "state": "ready",
                "policy": {"ingress": {"enforcing": false}}
            }
        }))
        .unwrap();
        let status = cep.status.unwrap();
        assert_eq!(status.identity.and_then(|i| i.id), Some(199_475));
        let networking = status.networking.unwrap();
        assert_eq!(networking.node_ip.as_deref(), Some("172.18.0.2"));
        let addressing = networking.addressing.unwrap();
        assert_eq!(addressing[0].ipv6.as_deref(), Some("fd00:10:244:2::e024"));
        assert_eq!(status.encryption.and_then(|e| e.key), Some(5));
        assert_eq!(status.named_ports.unwrap()[0].port, Some(8080));
        assert_eq!(status.service_account.as_deref(), Some("default"));
        assert_eq!(
            CiliumEndpoint::url_path(&(), Some("bar")),
            "/apis/cilium.io/v2/namespaces/bar/ciliumendpoints"
        );
    }
}
