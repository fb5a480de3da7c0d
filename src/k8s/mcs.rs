//! The Multi-Cluster Services API's `ServiceExport` (`multicluster.x-k8s.io/v1alpha1`):
//! a namespaced object named like the Service it offers to the cluster set.
//!
//! Only the fields fleetmesh reads are declared; the others are ignored when an object is
//! read, so newer releases of the API still read.

use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The API group of the MCS API.
pub const GROUP: &str = "multicluster.x-k8s.io";
/// The version of that group fleetmesh reads.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the objects, as manifests spell it: `GROUP/VERSION` (a test checks).
pub const API_VERSION: &str = "multicluster.x-k8s.io/v1alpha1";

/// Marks the Service of the same namespace and name as exported to the cluster set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceExport {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ServiceExportSpec>,
}

/// `spec` of a [`ServiceExport`]: what the importing clusters' derived Services carry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExportSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_annotations: Option<BTreeMap<String, String>>,
}

impl kube::Resource for ServiceExport {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "ServiceExport".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "serviceexports".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn an_export_reads_from_its_json_ignoring_unknown_fields() {
        let export: ServiceExport = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1",
            "kind": "ServiceExport",
            "metadata": {"name": "web", "namespace": "shop",
                         "creationTimestamp": "2026-01-10T12:00:00Z"},
            "spec": {"exportedLabels": {"tier": "front"}},
            "status": {"conditions": [{"type": "Valid", "status": "True"}]}
        }))
        .unwrap();
        let labels = export.spec.unwrap().exported_labels.unwrap();
        assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
        assert_eq!(
            ServiceExport::url_path(&(), Some("shop")),
            "/apis/multicluster.x-k8s.io/v1alpha1/namespaces/shop/serviceexports"
        );
        assert_eq!(API_VERSION, format!("{GROUP}/{VERSION}"));
    }
}
