use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use super::{ConvertProblem, Obj, l4_addr, list_or_single};
use crate::model::{CLUSTER_LABEL, Cluster, Label, Labels, NamedPort, Workload};

/// Label naming the pod's namespace in its identity.
const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label naming the pod's service account in its identity.
const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";
/// Prefix under which the namespace's labels join the pod's identity.
const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// Prefix of the labels Cilium derives from policy-relevant pod fields.
const POLICY_LABELS_PREFIX: &str = "io.cilium.k8s.policy.";
/// The label Kubernetes puts on every namespace (1.21+) naming it; added even when the
/// Namespace object is not given, so a manifest directory yields a real cluster's labels.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The service account a pod without one runs as.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Phases of pods that are done and hold no address any more.
const FINISHED_PHASES: [&str; 2] = ["Succeeded", "Failed"];

/// Pod labels that never select an identity: controllers stamp them per revision or per
/// instance, so keeping them would give every rollout (or every pod) its own identity.
/// Cilium's default label filter drops them (`pkg/labelsfilter`).
const NON_IDENTITY_KEYS: [&str; 9] = [
    "pod-template-hash",
    "pod-template-generation",
    "controller-revision-hash",
    "controller-uid",
    "job-name",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
];
/// Key fragments Cilium's default filter drops wherever they appear (its `!kubernetes\.io`,
/// `!k8s\.io` and `!io\.kubernetes` rules): labels managed by Kubernetes itself.
const NON_IDENTITY_FRAGMENTS: [&str; 3] = ["kubernetes.io", "k8s.io", "io.kubernetes"];
/// Kubernetes-domain labels Cilium keeps nevertheless (its `app.kubernetes.io` rule).
const IDENTITY_PREFIX: &str = "app.kubernetes.io";
/// Labels Cilium derives from annotations; they describe, they don't select.
const ANNOTATION_PREFIX: &str = "annotation.";

/// Whether a pod label belongs in the pod's security identity. Labels under Cilium's own
/// `io.cilium.k8s.namespace.labels.` and `io.cilium.k8s.policy.` prefixes are refused too:
/// they are derived from the namespace and the pod spec, and a pod must not claim another
/// namespace's labels or another cluster.
pub fn is_identity_label(key: &str) -> bool {
    if key.starts_with(NAMESPACE_LABELS_PREFIX) || key.starts_with(POLICY_LABELS_PREFIX) {
        return false;
    }
    if key.starts_with(IDENTITY_PREFIX) {
        return true;
    }
    !NON_IDENTITY_KEYS.contains(&key)
        && !NON_IDENTITY_FRAGMENTS.iter().any(|f| key.contains(f))
        && !key.starts_with(ANNOTATION_PREFIX)
}

/// A pod's network presence, or `None` for a pod that holds no address of its own: host
/// network, finished, or not yet given an IP. `namespace_labels` are the labels of the
/// pod's namespace.
pub fn pod_to_workload(
    cluster: &Cluster,
    pod: &Pod,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<Option<Workload>, ConvertProblem> {
    let obj = Obj::namespaced("Pod", &pod.metadata);
    obj.require_name()?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let finished = status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| FINISHED_PHASES.contains(&phase));
    if host_network || finished {
        return Ok(None);
    }

    let listed = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .collect();
    let single = status.and_then(|s| s.pod_ip.as_deref());
    let ips: Vec<IpAddr> = list_or_single(("status.podIPs", listed), ("status.podIP", single))
        .into_iter()
        .map(|(field, ip)| {
            ip.parse()
                .map_err(|_| obj.problem(&field, format!("{ip:?} is not an IP address")))
        })
        .collect::<Result<_, _>>()?;
    if ips.is_empty() {
        return Ok(None);
    }
    let host_ip: Option<IpAddr> = status
        .and_then(|s| s.host_ip.as_deref())
        .filter(|ip| !ip.is_empty())
        .map(|ip| {
            ip.parse()
                .map_err(|_| obj.problem("status.hostIP", format!("{ip:?} is not an IP address")))
        })
        .transpose()?;

    let service_account = spec
        .and_then(|s| {
            s.service_account_name
                .as_deref()
                .or(s.service_account.as_deref())
        })
        .filter(|sa| !sa.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT);
    let labels = security_labels(
        cluster,
        pod,
        obj.namespace,
        service_account,
        namespace_labels,
    )
    .map_err(|e| obj.problem("metadata.labels", e))?;

    let mut named_ports: Vec<NamedPort> = Vec::new();
    for (c, container) in spec.iter().flat_map(|s| &s.containers).enumerate() {
        for (p, port) in container.ports.iter().flatten().enumerate() {
            let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let addr = l4_addr(port.protocol.as_deref(), port.container_port)
                .map_err(|e| obj.problem(&format!("spec.containers[{c}].ports[{p}]"), e))?;
            // The first container to name a port wins, as it would in a named-port lookup.
            if !named_ports.iter().any(|n| n.name == name) {
                named_ports.push(NamedPort {
                    name: name.to_string(),
                    port: addr,
                });
            }
        }
    }
    named_ports.sort_by(|a, b| a.name.cmp(&b.name));

    Ok(Some(Workload {
        namespace: obj.namespace.to_string(),
        pod: obj.name.to_string(),
        service_account: Some(service_account.to_string()),
        labels,
        ips,
        host_ip,
        named_ports,
    }))
}

/// The pod's identity labels: its own identity-relevant labels, its namespace's labels,
/// and the namespace, service account and cluster labels Cilium adds.
fn security_labels(
    cluster: &Cluster,
    pod: &Pod,
    namespace: &str,
    service_account: &str,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<Labels, crate::model::ModelError> {
    let mut labels = Labels::new();
    for (key, value) in pod.metadata.labels.iter().flatten() {
        if is_identity_label(key) {
            labels.insert(Label::k8s(key, value)?);
        }
    }
    let name_label = (NAMESPACE_NAME_LABEL, namespace);
    for (key, value) in std::iter::once(name_label).chain(
        namespace_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    ) {
        labels.insert(Label::k8s(
            &format!("{NAMESPACE_LABELS_PREFIX}{key}"),
            value,
        )?);
    }
    labels.insert(Label::k8s(NAMESPACE_LABEL, namespace)?);
    labels.insert(Label::k8s(SERVICE_ACCOUNT_LABEL, service_account)?);
    labels.insert(Label::k8s(CLUSTER_LABEL, cluster.name.as_str())?);
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::convert::fixtures::{mk_cluster, mk_map, mk_pod};
    use crate::model::{L4Addr, Protocol};

    fn no_labels() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn controller_stamps_are_not_identity_labels() {
        for dropped in NON_IDENTITY_KEYS {
            assert!(!is_identity_label(dropped), "{dropped}");
        }
        for dropped in [
            "topology.kubernetes.io/zone",
            "node.k8s.io/pool",
            "io.kubernetes.container.name",
            "beta.kubernetes.io/arch",
            "annotation.foo",
            "io.cilium.k8s.policy.cluster",
            "io.cilium.k8s.namespace.labels.team",
        ] {
            assert!(!is_identity_label(dropped), "{dropped}");
        }
        for kept in ["app", "tier", "app.kubernetes.io/name", "example.com/team"] {
            assert!(is_identity_label(kept), "{kept}");
        }
    }

    #[test]
    fn a_pod_becomes_a_workload_with_ciliums_labels() {
        let pod = mk_pod(
            "shop",
            "checkout-1",
            &[
                ("app", "checkout"),
                ("pod-template-hash", "5d9c7b"),
                ("io.cilium.k8s.policy.cluster", "spoofed"),
            ],
            &["10.244.1.10", "fd00::10"],
        );
        let ns_labels = mk_map(&[("team", "shop")]);
        let w = pod_to_workload(&mk_cluster(), &pod, &ns_labels)
            .unwrap()
            .unwrap();
        assert_eq!(
            (w.namespace.as_str(), w.pod.as_str()),
            ("shop", "checkout-1")
        );
        assert_eq!(w.service_account.as_deref(), Some("default"));
        assert_eq!(
            w.labels.to_kvstore_string(),
            "k8s:app=checkout;\
             k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop;\
             k8s:io.cilium.k8s.namespace.labels.team=shop;\
             k8s:io.cilium.k8s.policy.cluster=cluster1;\
             k8s:io.cilium.k8s.policy.serviceaccount=default;\
             k8s:io.kubernetes.pod.namespace=shop;"
        );
        assert_eq!(
            w.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.244.1.10", "fd00::10"]
        );
        assert_eq!(w.host_ip.unwrap().to_string(), "172.18.0.2");
        assert_eq!(
            w.named_ports,
            [NamedPort {
                name: "http".to_string(),
                port: L4Addr {
                    protocol: Protocol::Tcp,
                    port: 8080
                }
            }]
        );
    }

    #[test]
    fn the_service_account_and_pod_ip_fallbacks_apply() {
        let mut pod = mk_pod("shop", "p", &[], &["10.244.1.10"]);
        if let Some(status) = pod.status.as_mut() {
            status.pod_ips = None;
        }
        if let Some(spec) = pod.spec.as_mut() {
            spec.service_account_name = Some("checkout".to_string());
        }
        let w = pod_to_workload(&mk_cluster(), &pod, &no_labels())
            .unwrap()
            .unwrap();
        assert_eq!(w.ips.len(), 1);
        assert_eq!(w.service_account.as_deref(), Some("checkout"));
        assert_eq!(
            w.labels
                .get(SERVICE_ACCOUNT_LABEL)
                .map(|l| l.value.as_str()),
            Some("checkout")
        );
    }

    #[test]
    fn pods_without_their_own_address_are_skipped() {
        let cluster = mk_cluster();
        let pending = mk_pod("shop", "p", &[], &[]);
        assert_eq!(pod_to_workload(&cluster, &pending, &no_labels()), Ok(None));

        let mut host = mk_pod("shop", "p", &[], &["172.18.0.2"]);
        if let Some(spec) = host.spec.as_mut() {
            spec.host_network = Some(true);
        }
        assert_eq!(pod_to_workload(&cluster, &host, &no_labels()), Ok(None));

        for phase in FINISHED_PHASES {
            let mut done = mk_pod("shop", "p", &[], &["10.244.1.10"]);
            if let Some(status) = done.status.as_mut() {
                status.phase = Some(phase.to_string());
            }
            assert_eq!(
                pod_to_workload(&cluster, &done, &no_labels()),
                Ok(None),
                "{phase}"
            );
        }
    }

    #[test]
    fn invalid_pods_are_refused_naming_the_field() {
        let cluster = mk_cluster();
        let bad_label = mk_pod("shop", "p", &[("app", "a;b")], &["10.244.1.10"]);
        let err = pod_to_workload(&cluster, &bad_label, &no_labels()).unwrap_err();
        assert_eq!(err.object, "Pod shop/p");
        assert!(
            err.message.starts_with("metadata.labels: invalid label"),
            "{err}"
        );

        let bad_ip = mk_pod("shop", "p", &[], &["10.244.1.10", "nope"]);
        assert_eq!(
            pod_to_workload(&cluster, &bad_ip, &no_labels())
                .unwrap_err()
                .message,
            "status.podIPs[1]: \"nope\" is not an IP address"
        );

        let mut bad_host = mk_pod("shop", "p", &[], &["10.244.1.10"]);
        if let Some(status) = bad_host.status.as_mut() {
            status.host_ip = Some("host".to_string());
        }
        assert_eq!(
            pod_to_workload(&cluster, &bad_host, &no_labels())
                .unwrap_err()
                .message,
            "status.hostIP: \"host\" is not an IP address"
        );

        let mut bad_port = mk_pod("shop", "p", &[], &["10.244.1.10"]);
        if let Some(ports) = bad_port
            .spec
            .as_mut()
            .and_then(|s| s.containers[0].ports.as_mut())
        {
            ports[0].protocol = Some("HTTP".to_string());
        }
        let err = pod_to_workload(&cluster, &bad_port, &no_labels()).unwrap_err();
        assert!(
            err.message
                .starts_with("spec.containers[0].ports[0]: invalid protocol"),
            "{err}"
        );
    }

    #[test]
    fn a_pod_without_namespace_is_in_default() {
        let pod = mk_pod("", "p", &[], &["10.244.1.10"]);
        let w = pod_to_workload(&mk_cluster(), &pod, &no_labels())
            .unwrap()
            .unwrap();
        assert_eq!(w.namespace, "default");
        assert_eq!(
            w.labels.get(NAMESPACE_LABEL).map(|l| l.value.as_str()),
            Some("default")
        );
    }
}
