use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use k8s_openapi::api::core::v1::Namespace;

use super::{ConvertProblem, Obj, string_map};

/// Namespace annotation that keeps a namespace's services and pods out of the export when
/// `"false"` (Cilium's `clustermesh.cilium.io/global`).
pub const GLOBAL_NAMESPACE_ANNOTATION: &str = "clustermesh.cilium.io/global";

/// Labels of a namespace nobody described.
static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// What the conversion of pods and services needs to know of their namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Whether the namespace's services and pods are exported.
    pub global: bool,
    pub labels: BTreeMap<String, String>,
}

/// One Namespace object: its name and what it says. An unparsable global annotation is
/// reported and read as the default (global), as Cilium's default-global setting does.
pub fn namespace_info(
    namespace: &Namespace,
) -> Result<(String, NamespaceInfo, Option<ConvertProblem>), ConvertProblem> {
    let obj = Obj::cluster_scoped("Namespace", &namespace.metadata);
    obj.require_name()?;
    let annotation = namespace
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(GLOBAL_NAMESPACE_ANNOTATION));
    let (global, problem) = match annotation.map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("true") => (true, None),
        Some("false") => (false, None),
        Some(_) => (
            true,
            Some(obj.problem(
                &format!("metadata.annotations[{GLOBAL_NAMESPACE_ANNOTATION}]"),
                "must be \"true\" or \"false\"; the namespace stays global",
            )),
        ),
    };
    let info = NamespaceInfo {
        global,
        labels: string_map(namespace.metadata.labels.as_ref()),
    };
    Ok((obj.name.to_string(), info, problem))
}

/// Every namespace of a cluster by name. A namespace without an object (the manifest
/// directory may omit `default`) is global and has no labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespaces(BTreeMap<String, NamespaceInfo>);

impl Namespaces {
    /// Indexes Namespace objects; the first of two with the same name wins.
    pub fn from_objects(namespaces: &[Namespace]) -> (Self, Vec<ConvertProblem>) {
        let mut by_name = BTreeMap::new();
        let mut problems = Vec::new();
        for ns in namespaces {
            match namespace_info(ns) {
                Ok((name, info, problem)) => {
                    problems.extend(problem);
                    match by_name.entry(name) {
                        Entry::Occupied(e) => problems.push(ConvertProblem::new(
                            format!("Namespace {}", e.key()),
                            "defined more than once; the first definition is used",
                        )),
                        Entry::Vacant(e) => {
                            e.insert(info);
                        }
                    }
                }
                Err(p) => problems.push(p),
            }
        }
        (Self(by_name), problems)
    }

    pub fn is_global(&self, name: &str) -> bool {
        self.0.get(name).is_none_or(|info| info.global)
    }

    pub fn labels(&self, name: &str) -> &BTreeMap<String, String> {
        self.0.get(name).map_or(&NO_LABELS, |info| &info.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn mk_namespace(name: &str, global: Option<&str>) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some([("team".to_string(), name.to_string())].into()),
                annotations: global
                    .map(|v| [(GLOBAL_NAMESPACE_ANNOTATION.to_string(), v.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    #[test]
    fn namespaces_are_global_unless_annotated_false() {
        let (index, problems) = Namespaces::from_objects(&[
            mk_namespace("shop", None),
            mk_namespace("legacy", Some("FALSE")),
            mk_namespace("explicit", Some("true")),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(index.is_global("shop"));
        assert!(!index.is_global("legacy"));
        assert!(index.is_global("explicit"));
        assert!(index.is_global("undeclared"));
        assert_eq!(index.labels("shop").get("team").unwrap(), "shop");
        assert!(index.labels("undeclared").is_empty());
    }

    #[test]
    fn bad_annotations_and_duplicates_are_reported() {
        let (index, problems) = Namespaces::from_objects(&[
            mk_namespace("odd", Some("maybe")),
            mk_namespace("twice", Some("false")),
            mk_namespace("twice", None),
            Namespace::default(),
        ]);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "Namespace odd: metadata.annotations[clustermesh.cilium.io/global]: must be \"true\" or \"false\"; the namespace stays global",
                "Namespace twice: defined more than once; the first definition is used",
                "Namespace <unnamed>: metadata.name: missing",
            ]
        );
        assert!(index.is_global("odd"));
        assert!(!index.is_global("twice"));
    }
}
