//! What the API server serves, asked of its discovery: whether Cilium is installed
//! (Cilium's clustermesh-apiserver reads CiliumIdentity, CiliumEndpoint and CiliumNode,
//! and where they exist fleetmesh reads them too, instead of Pods and Nodes), whether it
//! serves CiliumEndpointSlices (`cilium.io/v2alpha1`) and ServiceExports
//! (`multicluster.x-k8s.io/v1alpha1`).

use std::borrow::Cow;

use ::kube::{Client, Resource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;

use super::KubeError;
use crate::k8s::cilium::{self, CiliumEndpoint, CiliumIdentity, CiliumNode};

/// Whether the API server serves resource `K` (its group and version list its plural).
/// A group version that is not found is `false`; any other failure is an error to retry.
pub async fn resource_served<K: Resource<DynamicType = ()>>(
    client: &Client,
) -> Result<bool, KubeError> {
    let api_version = K::api_version(&()).into_owned();
    match client.list_api_group_resources(&api_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == K::plural(&()))),
        Err(::kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(source) => Err(KubeError::Discovery {
            api_version,
            source,
        }),
    }
}

/// The resources of `cilium.io/v2` fleetmesh reads, by the plural names discovery lists.
fn cilium_resources() -> [Cow<'static, str>; 3] {
    [
        CiliumIdentity::plural(&()),
        CiliumEndpoint::plural(&()),
        CiliumNode::plural(&()),
    ]
}

/// Asks the API server whether Cilium's resources are served.
///
/// `cilium.io/v2` not found means Cilium is not installed. The group served without one
/// of the three resources is an error (its CRDs are being installed, or an unsupported
/// Cilium): deciding now would pick the wrong source for as long as this process runs.
pub async fn cilium_installed(client: &Client) -> Result<bool, KubeError> {
    let api_version = format!("{}/{}", cilium::GROUP, cilium::VERSION);
    match client.list_api_group_resources(&api_version).await {
        Ok(list) => lists_every_cilium_resource(&list),
        Err(::kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(source) => Err(KubeError::Discovery {
            api_version,
            source,
        }),
    }
}

fn lists_every_cilium_resource(list: &APIResourceList) -> Result<bool, KubeError> {
    let missing: Vec<Cow<'static, str>> = cilium_resources()
        .into_iter()
        .filter(|wanted| !list.resources.iter().any(|r| r.name == *wanted))
        .collect();
    if missing.is_empty() {
        Ok(true)
    } else {
        Err(KubeError::IncompleteCilium {
            missing: missing.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;

    fn mk_list(names: &[&str]) -> APIResourceList {
        APIResourceList {
            group_version: "cilium.io/v2".into(),
            resources: names
                .iter()
                .map(|name| APIResource {
                    name: (*name).into(),
                    ..APIResource::default()
                })
                .collect(),
        }
    }

    #[test]
    fn cilium_is_installed_when_every_resource_is_listed() {
        let all = mk_list(&[
            "ciliumnodes",
            "ciliumnodes/status",
            "ciliumidentities",
            "ciliumendpoints",
            "ciliumnetworkpolicies",
        ]);
        assert!(lists_every_cilium_resource(&all).unwrap());
        let err = lists_every_cilium_resource(&mk_list(&["ciliumnodes"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cilium.io/v2 is served without ciliumidentities, ciliumendpoints; \
             waiting for Cilium's CRDs"
        );
    }
}
