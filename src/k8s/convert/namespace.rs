use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use k8s_openapi::api::core::v1::Namespace;

use super::{ConvertProblem, Obj, string_map};

/// Namespace annotation that decides whether a namespace's identities and endpoints are
/// exported (Cilium's `clustermesh.cilium.io/global`): `"true"` (in any case) exports
/// them, any other value keeps them out, and without it the apiserver's default decides.
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

/// One Namespace object: its name and what it says, with `default_global` deciding for
/// a namespace without the annotation.
///
/// As Cilium reads the annotation, only `"true"` (compared case-insensitively) makes a
/// namespace global; `"false"` and every other value make it non-global. A value other
/// than `true` or `false` is most likely a mistake (`"yes"`, `"1"`), so it is reported
/// as a problem naming the namespace and the value.
pub fn namespace_info(
    namespace: &Namespace,
    default_global: bool,
) -> Result<(String, NamespaceInfo, Option<ConvertProblem>), ConvertProblem> {
    let obj = Obj::cluster_scoped("Namespace", &namespace.metadata);
    obj.require_name()?;
    let annotation = namespace
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(GLOBAL_NAMESPACE_ANNOTATION));
    let (global, problem) = match annotation {
        None => (default_global, None),
        Some(value) if value.eq_ignore_ascii_case("true") => (true, None),
        Some(value) if value.eq_ignore_ascii_case("false") => (false, None),
        Some(value) => (
            false,
            Some(obj.problem(
                &format!("metadata.annotations[{GLOBAL_NAMESPACE_ANNOTATION}]"),
                format!("{value:?} is neither \"true\" nor \"false\"; the namespace is not global"),
            )),
        ),
    };
    let info = NamespaceInfo {
        global,
        labels: string_map(namespace.metadata.labels.as_ref()),
    };
    Ok((obj.name.to_string(), info, problem))
}

/// Every namespace of a cluster by name, and the default for namespaces without the
/// annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespaces {
    by_name: BTreeMap<String, NamespaceInfo>,
    default_global: bool,
}

impl Default for Namespaces {
    fn default() -> Self {
        Self {
            by_name: BTreeMap::new(),
            default_global: true,
        }
    }
}

impl Namespaces {
    /// Indexes Namespace objects, namespaces without the annotation being global by
    /// default; the first of two with the same name wins.
    pub fn from_objects(namespaces: &[Namespace]) -> (Self, Vec<ConvertProblem>) {
        Self::with_default(namespaces, true)
    }

    /// Indexes Namespace objects, `default_global` deciding for namespaces without the
    /// annotation; the first of two with the same name wins.
    pub fn with_default(
        namespaces: &[Namespace],
        default_global: bool,
    ) -> (Self, Vec<ConvertProblem>) {
        let mut by_name = BTreeMap::new();
        let mut problems = Vec::new();
        for ns in namespaces {
            match namespace_info(ns, default_global) {
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
        let index = Self {
            by_name,
            default_global,
        };
        (index, problems)
    }

    /// Whether the services and pods of `name` are exported. A namespace without an
    /// object (the manifest directory may omit `default`) follows the default.
    pub fn is_global(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .map_or(self.default_global, |info| info.global)
    }

    /// Whether the identities and endpoints of `name` are exported: only once its
    /// Namespace is known and global, as Cilium's apiserver waits for the namespace
    /// before it decides.
    pub fn is_known_global(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|info| info.global)
    }

    pub fn labels(&self, name: &str) -> &BTreeMap<String, String> {
        self.by_name
            .get(name)
            .map_or(&NO_LABELS, |info| &info.labels)
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
    fn only_true_in_any_case_makes_a_namespace_global() {
        let objects = [
            mk_namespace("shop", None),
            mk_namespace("legacy", Some("FALSE")),
            mk_namespace("explicit", Some("true")),
            mk_namespace("shouting", Some("TRUE")),
        ];
        let (index, problems) = Namespaces::from_objects(&objects);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(index.is_global("shop"));
        assert!(!index.is_global("legacy"));
        assert!(index.is_global("explicit") && index.is_global("shouting"));
        assert!(index.is_global("undeclared"));
        assert!(!index.is_known_global("undeclared"));
        assert!(index.is_known_global("shop"));
        assert_eq!(index.labels("shop").get("team").unwrap(), "shop");
        assert!(index.labels("undeclared").is_empty());

        // With the default off, only the annotated ones are global.
        let (index, _) = Namespaces::with_default(&objects, false);
        assert!(!index.is_global("shop") && !index.is_known_global("shop"));
        assert!(!index.is_global("undeclared"));
        assert!(index.is_known_global("explicit") && index.is_known_global("shouting"));
        assert!(!index.is_known_global("legacy"));
    }

    #[test]
    fn odd_annotations_are_not_global_and_reported_with_duplicates() {
        let (index, problems) = Namespaces::from_objects(&[
            mk_namespace("odd", Some("yes")),
            mk_namespace("twice", Some("false")),
            mk_namespace("twice", None),
            Namespace::default(),
        ]);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "Namespace odd: metadata.annotations[clustermesh.cilium.io/global]: \"yes\" is neither \"true\" nor \"false\"; the namespace is not global",
                "Namespace twice: defined more than once; the first definition is used",
                "Namespace <unnamed>: metadata.name: missing",
            ]
        );
        assert!(!index.is_global("odd") && !index.is_known_global("odd"));
        assert!(!index.is_global("twice"));
    }
}
