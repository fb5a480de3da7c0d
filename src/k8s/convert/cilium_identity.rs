use super::{ConvertProblem, Namespaces, Obj};
use crate::k8s::cilium::CiliumIdentity;
use crate::model::{Cluster, Identity, IdentityId, Label, Labels};

/// The security label naming the namespace of an identity's pods; Cilium's apiserver
/// decides from it whether the identity is exported.
pub const NAMESPACE_SECURITY_LABEL: &str = "k8s:io.kubernetes.pod.namespace";
/// The label source of a security label whose key names none (Cilium's `unspec`).
const UNSPEC_SOURCE: &str = "unspec";
/// The label source Cilium's `$name` shorthand stands for.
const RESERVED_SOURCE: &str = "reserved";

/// A CiliumIdentity as the mesh sees it, or `None` when its namespace is not global or
/// not known yet (Cilium's apiserver leaves it out then, and writes it once the
/// namespace is known and global).
///
/// Refused as Cilium's apiserver skips them (reported here as problems, where Cilium logs
/// them): an identity without security labels (`CiliumIdentityConverter`), or whose
/// labels name no namespace: the synchronizer filters identities by the namespace label
/// and skips one where it is absent or empty, logging "Failed to determine namespace"
/// (`clustermesh-apiserver/clustermesh/synchronizer.go`, `namespacers.go`).
///
/// Refused besides, where Cilium writes them: a name that is not an id inside the
/// cluster's identity range, and labels that do not name the cluster. Every consumer
/// refuses such an identity from a remote cluster (reference §6: the agent checks the
/// range and the cluster label), so writing it would only move the failure to every
/// peer; refusing it here names the object where it can be fixed.
pub fn cilium_identity_to_model(
    cluster: &Cluster,
    identity: &CiliumIdentity,
    namespaces: &Namespaces,
) -> Result<Option<Identity>, ConvertProblem> {
    let obj = Obj::cluster_scoped("CiliumIdentity", &identity.metadata);
    obj.require_name()?;
    let security = identity
        .security_labels
        .as_ref()
        .filter(|labels| !labels.is_empty())
        .ok_or_else(|| obj.problem("security-labels", "missing"))?;
    let namespace = security
        .get(NAMESPACE_SECURITY_LABEL)
        .filter(|ns| !ns.is_empty())
        .ok_or_else(|| {
            obj.problem(
                "security-labels",
                format!("no {NAMESPACE_SECURITY_LABEL:?} label naming the namespace"),
            )
        })?;
    if !namespaces.is_known_global(namespace) {
        return Ok(None);
    }

    let id: IdentityId = obj
        .name
        .parse()
        .map_err(|e| obj.problem("metadata.name", e))?;
    // Reserved ids are never CiliumIdentities, so the whole id must be in the range.
    obj.require_in_range("metadata.name", cluster, id)?;

    let mut labels = Labels::new();
    for (key, value) in security {
        let label = security_label(key, value)
            .map_err(|e| obj.problem(&format!("security-labels[{key}]"), e))?;
        labels.insert(label);
    }
    Identity::new(cluster, id, labels)
        .map(Some)
        .map_err(|e| obj.problem("security-labels", e))
}

/// One entry of `security-labels`, `source:key` → value, as Cilium's `Map2Labels` reads
/// it: a key without a source is `unspec`, and `$key` is a reserved label.
fn security_label(key: &str, value: &str) -> Result<Label, crate::model::ModelError> {
    if let Some(reserved) = key.strip_prefix('$') {
        return Label::new(RESERVED_SOURCE, reserved, value);
    }
    match key.split_once(':') {
        Some((source, key)) => Label::new(source, key, value),
        None => Label::new(UNSPEC_SOURCE, key, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::convert::cilium_fixtures::{mk_cilium_identity, mk_cluster3, mk_namespaces};

    fn convert(identity: &CiliumIdentity) -> Result<Option<Identity>, ConvertProblem> {
        cilium_identity_to_model(&mk_cluster3(), identity, &mk_namespaces(&["foo"]))
    }

    #[test]
    fn an_identity_keeps_its_id_and_sorted_security_labels() {
        let identity = mk_cilium_identity(
            "196915",
            &[
                ("k8s:io.kubernetes.pod.namespace", "bar"),
                ("k8s:io.cilium.k8s.policy.cluster", "cluster3"),
                ("k8s:app", "baz"),
            ],
        );
        let converted = convert(&identity).unwrap().unwrap();
        assert_eq!(converted.id().get(), 196_915);
        assert_eq!(
            converted.labels().to_kvstore_string(),
            "k8s:app=baz;k8s:io.cilium.k8s.policy.cluster=cluster3;k8s:io.kubernetes.pod.namespace=bar;"
        );
    }

    #[test]
    fn identities_of_non_global_namespaces_are_left_out() {
        let identity = mk_cilium_identity(
            "199472",
            &[
                ("k8s:io.kubernetes.pod.namespace", "foo"),
                ("k8s:io.cilium.k8s.policy.cluster", "cluster3"),
            ],
        );
        assert_eq!(convert(&identity), Ok(None));
        // Left out before its id is looked at, as Cilium filters before converting.
        let bad_id = mk_cilium_identity("x", &[("k8s:io.kubernetes.pod.namespace", "foo")]);
        assert_eq!(convert(&bad_id), Ok(None));
    }

    #[test]
    fn label_keys_without_a_source_read_as_cilium_reads_them() {
        assert_eq!(
            security_label("app", "x").unwrap().to_string(),
            "unspec:app=x"
        );
        assert_eq!(
            security_label("$host", "").unwrap().to_string(),
            "reserved:host="
        );
        assert_eq!(
            security_label("container:a:b", "v").unwrap().to_string(),
            "container:a:b=v"
        );
    }

    #[test]
    fn invalid_identities_are_refused_naming_the_field() {
        let ns = ("k8s:io.kubernetes.pod.namespace", "bar");
        let cluster = ("k8s:io.cilium.k8s.policy.cluster", "cluster3");
        let cases = [
            (
                mk_cilium_identity("196915", &[]),
                "CiliumIdentity 196915: security-labels: missing",
            ),
            (
                mk_cilium_identity("196915", &[cluster]),
                "CiliumIdentity 196915: security-labels: no \"k8s:io.kubernetes.pod.namespace\" label naming the namespace",
            ),
            (
                mk_cilium_identity("abc", &[ns, cluster]),
                "CiliumIdentity abc: metadata.name: invalid identity id \"abc\"",
            ),
            (
                mk_cilium_identity("65541", &[ns, cluster]),
                "CiliumIdentity 65541: metadata.name: identity 65541 is outside cluster 3's range 196608..=262143",
            ),
            (
                mk_cilium_identity("6", &[ns, cluster]),
                "CiliumIdentity 6: metadata.name: identity 6 is outside cluster 3's range 196608..=262143",
            ),
            (
                mk_cilium_identity(
                    "196915",
                    &[ns, ("k8s:io.cilium.k8s.policy.cluster", "other")],
                ),
                "CiliumIdentity 196915: security-labels: identity 196915 is labelled for cluster \"other\", not \"cluster3\"",
            ),
            (
                mk_cilium_identity("196915", &[ns]),
                "CiliumIdentity 196915: security-labels: identity 196915 has no label \"k8s:io.cilium.k8s.policy.cluster=cluster3\"",
            ),
            (
                mk_cilium_identity("196915", &[ns, cluster, ("k8s:app", "a;b")]),
                "CiliumIdentity 196915: security-labels[k8s:app]: invalid label \"k8s:app=a;b\": value must not contain ';'",
            ),
            (
                mk_cilium_identity("", &[ns, cluster]),
                "CiliumIdentity <unnamed>: metadata.name: missing",
            ),
        ];
        for (identity, expected) in cases {
            assert_eq!(
                convert(&identity).map_err(|p| p.to_string()),
                Err(expected.to_string())
            );
        }
    }
}
