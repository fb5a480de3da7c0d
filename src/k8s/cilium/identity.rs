use std::collections::BTreeMap;

use k8s_openapi::ClusterResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A security identity allocated by Cilium in CRD identity mode (cluster-scoped).
///
/// `metadata.name` is the numeric identity; `security-labels` maps `source:key` (for
/// example `k8s:app`) to the label's value and is the source of truth for the identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CiliumIdentity {
    pub metadata: ObjectMeta,
    #[serde(
        rename = "security-labels",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub security_labels: Option<BTreeMap<String, String>>,
}

cilium_resource!(CiliumIdentity, kind: "CiliumIdentity", plural: "ciliumidentities", scope: ClusterResourceScope);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn an_identity_reads_from_ciliums_json_ignoring_unknown_fields() {
        let identity: CiliumIdentity = serde_json::from_value(serde_json::json!({
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumIdentity",
            "metadata": {"name": "196915", "labels": {"io.kubernetes.pod.namespace": "bar"}},
            "security-labels": {
                "k8s:app": "baz",
                "k8s:io.cilium.k8s.policy.cluster": "cluster3"
            },
            "status": {"unknown": true}
        }))
        .unwrap();
        assert_eq!(identity.metadata.name.as_deref(), Some("196915"));
        let labels = identity.security_labels.unwrap();
        assert_eq!(labels.get("k8s:app").map(String::as_str), Some("baz"));
        assert_eq!(
            CiliumIdentity::url_path(&(), None),
            "/apis/cilium.io/v2/ciliumidentities"
        );
        assert_eq!(CiliumIdentity::api_version(&()), "cilium.io/v2");
    }
}
