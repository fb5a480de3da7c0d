//! What a request to the fake API server asks for: the resource path and the label
//! selector, parsed the way the real API server reads them.

use std::collections::BTreeMap;

use serde_json::Value;

/// One kind the server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// `v1`, `discovery.k8s.io/v1`, `cilium.io/v2`.
    pub api_version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl ResourceType {
    pub fn new(api_version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            namespaced,
        }
    }

    /// The group of the apiVersion, `""` for the core group.
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    /// The version of the apiVersion.
    pub fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or(self.api_version.as_str(), |(_, version)| version)
    }
}

/// The resource a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`.
    Discovery {
        api_version: Option<String>,
        groups: bool,
    },
    /// A collection: every namespace (or a cluster-scoped kind) when `namespace` is `None`.
    Collection {
        api_version: String,
        plural: String,
        namespace: Option<String>,
    },
    /// One object.
    Item {
        api_version: String,
        plural: String,
        namespace: Option<String>,
        name: String,
    },
}

/// Parses an API path; `None` for a path no API server serves.
pub fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match segments.as_slice() {
        ["api"] => {
            return Some(Target::Discovery {
                api_version: None,
                groups: false,
            });
        }
        ["apis"] => {
            return Some(Target::Discovery {
                api_version: None,
                groups: true,
            });
        }
        ["api", version, rest @ ..] => (version.to_string(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let owned = |s: &&str| s.to_string();
    Some(match rest {
        [] => Target::Discovery {
            api_version: Some(api_version),
            groups: false,
        },
        [plural] => Target::Collection {
            api_version,
            plural: plural.to_string(),
            namespace: None,
        },
        ["namespaces", namespace, plural] => Target::Collection {
            api_version,
            plural: plural.to_string(),
            namespace: Some(owned(namespace)),
        },
        ["namespaces", namespace, plural, name] => Target::Item {
            api_version,
            plural: plural.to_string(),
            namespace: Some(owned(namespace)),
            name: owned(name),
        },
        [plural, name] => Target::Item {
            api_version,
            plural: plural.to_string(),
            namespace: None,
            name: owned(name),
        },
        _ => return None,
    })
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// An equality-based label selector (`a=b,c!=d,e,!f`); set-based forms are refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let requirement = if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once("==") {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once('=') {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::Absent(key.trim().into())
            } else if part.contains(' ') || part.contains('(') {
                return Err(format!("unsupported label selector requirement {part:?}"));
            } else {
                Requirement::Exists(part.into())
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels: BTreeMap<String, String> = object
            .pointer("/metadata/labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        })
    }
}
