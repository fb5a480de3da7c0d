//! CiliumEndpointSlice → ipcache entries: every endpoint of a slice yields what the
//! CiliumEndpoint it stands for would (see `cilium_endpoint`), with the namespace of the
//! slice and the endpoint's name as the pod's, as Cilium's apiserver writes them with
//! `--enable-cilium-endpoint-slice`. Slices carry no service account, so neither do
//! their entries.

use super::cilium_endpoint::EndpointFields;
use super::{ConvertProblem, Obj};
use crate::k8s::cilium::CiliumEndpointSlice;
use crate::model::{Cluster, Endpoint};

/// The namespace a slice's endpoints belong to, or `None` when it names none (reported
/// by [`cilium_endpoint_slice_to_model`]).
pub fn slice_namespace(slice: &CiliumEndpointSlice) -> Option<&str> {
    slice.namespace.as_deref().filter(|ns| !ns.is_empty())
}

/// The ipcache entries of every endpoint of `slice`. An endpoint without a name is
/// refused, as are those whose identity or key cannot be written; a bad address is left
/// out. Each problem names the slice and the endpoint's index.
pub fn cilium_endpoint_slice_to_model(
    cluster: &Cluster,
    slice: &CiliumEndpointSlice,
) -> (Vec<Endpoint>, Vec<ConvertProblem>) {
    let obj = Obj::cluster_scoped("CiliumEndpointSlice", &slice.metadata);
    let mut problems = Vec::new();
    if let Err(problem) = obj.require_name() {
        return (Vec::new(), vec![problem]);
    }
    let Some(namespace) = slice_namespace(slice) else {
        return (Vec::new(), vec![obj.problem("namespace", "missing")]);
    };
    let mut entries = Vec::new();
    for (i, endpoint) in slice.endpoints.iter().flatten().enumerate() {
        let path = format!("endpoints[{i}].");
        let Some(pod) = endpoint.name.as_deref().filter(|n| !n.is_empty()) else {
            problems.push(obj.problem(&format!("{path}name"), "missing"));
            continue;
        };
        let fields = EndpointFields {
            identity: endpoint.identity,
            networking: endpoint.networking.as_ref(),
            encryption_key: endpoint.encryption.as_ref().and_then(|e| e.key),
            service_account: None,
            path: &path,
            identity_path: &format!("{path}id"),
        };
        match fields.entries(cluster, &obj, namespace, pod, &mut problems) {
            Ok(found) => entries.extend(found),
            Err(problem) => problems.push(problem),
        }
    }
    (entries, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::cilium::{AddressPair, CoreCiliumEndpoint, EncryptionSpec, EndpointNetworking};
    use crate::k8s::convert::cilium_fixtures::mk_cluster3;
    use crate::k8s::convert::fixtures::mk_meta;

    fn mk_core(name: &str, id: i64, ips: (&str, &str), node: &str) -> CoreCiliumEndpoint {
        let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        CoreCiliumEndpoint {
            name: some(name),
            identity: Some(id),
            networking: Some(EndpointNetworking {
                addressing: Some(vec![AddressPair {
                    ipv4: some(ips.0),
                    ipv6: some(ips.1),
                }]),
                node_ip: some(node),
            }),
            encryption: Some(EncryptionSpec { key: Some(5) }),
            named_ports: None,
        }
    }

    fn mk_slice(namespace: &str, endpoints: Vec<CoreCiliumEndpoint>) -> CiliumEndpointSlice {
        CiliumEndpointSlice {
            metadata: mk_meta("", "ces-1"),
            namespace: Some(namespace.to_string()).filter(|n| !n.is_empty()),
            endpoints: Some(endpoints),
        }
    }

    #[test]
    fn every_endpoint_yields_what_its_cilium_endpoint_would() {
        let slice = mk_slice(
            "bar",
            vec![
                mk_core(
                    "cep-002",
                    199_475,
                    ("10.244.2.74", "fd00::e024"),
                    "172.18.0.2",
                ),
                mk_core("cep-003", 5, ("10.244.2.75", ""), ""),
            ],
        );
        let (entries, problems) = cilium_endpoint_slice_to_model(&mk_cluster3(), &slice);
        assert_eq!(problems, vec![]);
        let seen: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    e.prefix.to_string(),
                    e.identity.get(),
                    e.host_ip.map(|ip| ip.to_string()),
                    e.encrypt_key,
                    e.namespace.as_deref(),
                    e.pod.as_deref(),
                    e.service_account.as_deref(),
                )
            })
            .collect();
        let host = Some("172.18.0.2".to_string());
        assert_eq!(
            seen,
            [
                (
                    "10.244.2.74".into(),
                    199_475,
                    host.clone(),
                    5,
                    Some("bar"),
                    Some("cep-002"),
                    None
                ),
                (
                    "fd00::e024".into(),
                    199_475,
                    host,
                    5,
                    Some("bar"),
                    Some("cep-002"),
                    None
                ),
                (
                    "10.244.2.75".into(),
                    5,
                    None,
                    5,
                    Some("bar"),
                    Some("cep-003"),
                    None
                ),
            ]
        );
    }

    #[test]
    fn bad_endpoints_are_refused_naming_the_slice_and_index() {
        let mut unnamed = mk_core("", 199_475, ("10.244.2.9", ""), "");
        unnamed.name = None;
        let slice = mk_slice(
            "bar",
            vec![
                unnamed,
                mk_core("p", 65_541, ("10.244.2.10", ""), ""),
                mk_core("q", 199_475, ("nope", "fd00::1"), "node-1"),
            ],
        );
        let (entries, problems) = cilium_endpoint_slice_to_model(&mk_cluster3(), &slice);
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "CiliumEndpointSlice ces-1: endpoints[0].name: missing",
                "CiliumEndpointSlice ces-1: endpoints[1].id: identity 65541 is outside cluster 3's range 196608..=262143",
                "CiliumEndpointSlice ces-1: endpoints[2].networking.node: \"node-1\" is not an IP address",
                "CiliumEndpointSlice ces-1: endpoints[2].networking.addressing[0].ipv4: \"nope\" is not an IP address",
            ]
        );
        let ips: Vec<String> = entries.iter().map(|e| e.prefix.to_string()).collect();
        assert_eq!(ips, ["fd00::1"]);

        let (entries, problems) =
            cilium_endpoint_slice_to_model(&mk_cluster3(), &mk_slice("", vec![]));
        assert!(entries.is_empty());
        assert_eq!(
            problems[0].to_string(),
            "CiliumEndpointSlice ces-1: namespace: missing"
        );
    }
}
