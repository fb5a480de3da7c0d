//! Manifest text → Kubernetes objects: YAML streams split into documents, JSON files as
//! one document, each dispatched on `apiVersion` and `kind`.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::k8s::convert::Objects;
use crate::k8s::{cilium, mcs};

/// The kinds fleetmesh reads, with the one apiVersion of each it understands.
const SUPPORTED: [(&str, &str); 11] = [
    ("v1", "Service"),
    ("v1", "Pod"),
    ("v1", "Node"),
    ("v1", "Namespace"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("v1", "List"),
    (cilium::API_VERSION, "CiliumIdentity"),
    (cilium::API_VERSION, "CiliumEndpoint"),
    (cilium::API_VERSION, "CiliumNode"),
    (cilium::SLICE_API_VERSION, "CiliumEndpointSlice"),
    (mcs::API_VERSION, "ServiceExport"),
];

/// The documents of one YAML stream, each with its parse result, in order.
///
/// The stream is split at its document markers (a line that is `---`, alone or followed
/// by a blank) before parsing: YAML forbids such a line inside any scalar, so the split is
/// exact, and it lets one malformed document be reported without losing those after it
/// (serde_yaml's stream reader cannot get past a syntax error). Comments and blank lines
/// before the first marker are not a document.
pub(super) fn yaml_documents(text: &str) -> Vec<Result<Value, String>> {
    let mut chunks: Vec<(usize, &str)> = Vec::new();
    let (mut start, mut start_line, mut offset) = (0, 0, 0);
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        if is_document_marker(line) && offset > 0 {
            chunks.push((start_line, &text[start..offset]));
            (start, start_line) = (offset, line_no);
        }
        offset += line.len();
    }
    chunks.push((start_line, &text[start..]));
    if chunks.len() > 1 && is_blank(chunks[0].1) {
        chunks.remove(0);
    }

    let mut documents = Vec::new();
    for (first_line, chunk) in chunks {
        // Padding keeps the line numbers of parse errors those of the file.
        let padded = format!("{}{chunk}", "\n".repeat(first_line));
        for document in serde_yaml::Deserializer::from_str(&padded) {
            let parsed = Value::deserialize(document).map_err(|e| e.to_string());
            let failed = parsed.is_err();
            documents.push(parsed);
            if failed {
                break;
            }
        }
    }
    documents
}

fn is_document_marker(line: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

fn is_blank(chunk: &str) -> bool {
    chunk.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

/// Adds the object a document holds to `objects`. Empty documents add nothing; a kind
/// fleetmesh does not read (a Deployment, a ConfigMap) is skipped with a debug log, since
/// a directory of real manifests holds many; a kind it reads in another apiVersion, or a
/// document that is not a valid object, is an error.
pub(super) fn add_document(
    value: Value,
    file: &Path,
    document: usize,
    objects: &mut Objects,
) -> Result<(), String> {
    let mut map = match value {
        Value::Object(map) => map,
        Value::Null => return Ok(()),
        _ => {
            return Err(
                "not a Kubernetes object (expected a mapping with apiVersion and kind)".into(),
            );
        }
    };
    let field = |name: &str| {
        map.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("not a Kubernetes object: no {name}"))
    };
    let (api_version, kind) = (field("apiVersion")?, field("kind")?);
    let what = describe(&kind, map.get("metadata"));
    if (api_version.as_str(), kind.as_str()) == ("v1", "List") {
        let Some(Value::Array(items)) = map.remove("items") else {
            return Err("List: items must be a list".into());
        };
        for (i, item) in items.into_iter().enumerate() {
            add_document(item, file, document, objects).map_err(|e| format!("items[{i}]: {e}"))?;
        }
        return Ok(());
    }
    let value = Value::Object(map);
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => objects.services.push(parse(value, &what)?),
        ("v1", "Pod") => objects.pods.push(parse(value, &what)?),
        ("v1", "Node") => objects.nodes.push(parse(value, &what)?),
        ("v1", "Namespace") => objects.namespaces.push(parse(value, &what)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            objects.endpoint_slices.push(parse(value, &what)?);
        }
        // Any Cilium object says Cilium runs in the cluster, even when other kinds are
        // absent (a cluster may have no identities yet).
        (cilium::API_VERSION, "CiliumIdentity") => {
            let identity = parse(value, &what)?;
            objects
                .cilium
                .get_or_insert_default()
                .identities
                .push(identity);
        }
        (cilium::API_VERSION, "CiliumEndpoint") => {
            let endpoint = parse(value, &what)?;
            objects
                .cilium
                .get_or_insert_default()
                .endpoints
                .push(endpoint);
        }
        (cilium::API_VERSION, "CiliumNode") => {
            let node = parse(value, &what)?;
            objects.cilium.get_or_insert_default().nodes.push(node);
        }
        // Slices in the directory say the cluster publishes its endpoints in slices.
        (cilium::SLICE_API_VERSION, "CiliumEndpointSlice") => {
            let slice = parse(value, &what)?;
            let cilium = objects.cilium.get_or_insert_default();
            cilium.endpoint_slices.get_or_insert_default().push(slice);
        }
        (mcs::API_VERSION, "ServiceExport") => {
            objects.service_exports.push(parse(value, &what)?);
        }
        _ => {
            if let Some((expected, _)) = SUPPORTED.iter().find(|(_, k)| *k == kind) {
                return Err(format!(
                    "{what}: apiVersion {api_version} is not supported (fleetmesh reads {expected})"
                ));
            }
            tracing::debug!(
                file = %file.display(),
                document,
                %api_version,
                %what,
                "skipping an object of a kind fleetmesh does not read"
            );
        }
    }
    Ok(())
}

/// What names an object across versions of a file: apiVersion, kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ObjectKey {
    api_version: String,
    kind: String,
    namespace: String,
    name: String,
}

/// The key of a document's object, if it says its apiVersion, kind and name.
pub(super) fn object_key(value: &Value) -> Option<ObjectKey> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let metadata = value.get("metadata");
    Some(ObjectKey {
        api_version: text(value.get("apiVersion"))?,
        kind: text(value.get("kind"))?,
        namespace: text(metadata.and_then(|m| m.get("namespace"))).unwrap_or_default(),
        name: text(metadata.and_then(|m| m.get("name")))?,
    })
}

/// `Kind namespace/name` (or `Kind name`) as far as the document says.
fn describe(kind: &str, metadata: Option<&Value>) -> String {
    let text = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str);
    match (text("namespace"), text("name")) {
        (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
        (None, Some(name)) => format!("{kind} {name}"),
        _ => format!("{kind} <unnamed>"),
    }
}

/// The object, or what is wrong with it: the object and the path of the bad field.
fn parse<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("{what}: {inner}")
        } else {
            format!("{what}: field {path}: {inner}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(text: &str) -> Vec<Result<String, String>> {
        yaml_documents(text)
            .into_iter()
            .map(|d| d.map(|v| v.to_string()))
            .collect()
    }

    #[test]
    fn yaml_streams_split_at_document_markers() {
        let text = "# header\n---\na: 1\n--- # second\nb: 2\n---\n---\nc: |\n  x\n  ---x\n";
        assert_eq!(
            outcomes(text),
            [
                Ok(r#"{"a":1}"#.to_string()),
                Ok(r#"{"b":2}"#.to_string()),
                Ok("null".to_string()),
                Ok(r#"{"c":"x\n---x\n"}"#.to_string()),
            ]
        );
        assert_eq!(outcomes("a: 1\n"), [Ok(r#"{"a":1}"#.to_string())]);
    }

    #[test]
    fn a_malformed_document_does_not_hide_the_next_ones() {
        let docs = outcomes("a: 1\n---\nb: [1, 2\n---\nc: 3\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0], Ok(r#"{"a":1}"#.to_string()));
        let err = docs[1].clone().unwrap_err();
        // Line numbers are the file's, not the document's.
        assert!(err.contains("line 3"), "{err}");
        assert_eq!(docs[2], Ok(r#"{"c":3}"#.to_string()));
    }

    fn add(yaml: &str) -> (Objects, Result<(), String>) {
        let mut objects = Objects::default();
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        let result = add_document(value, Path::new("x.yaml"), 0, &mut objects);
        (objects, result)
    }

    #[test]
    fn documents_are_dispatched_on_api_version_and_kind() {
        let (objects, result) = add("apiVersion: v1\nkind: List\nitems:\n\
             - {apiVersion: v1, kind: Service, metadata: {name: a, namespace: n}}\n\
             - {apiVersion: v1, kind: Namespace, metadata: {name: n}}\n\
             - {apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: s}, addressType: IPv4}\n\
             - {apiVersion: v1, kind: Pod, metadata: {name: p}}\n\
             - {apiVersion: v1, kind: Node, metadata: {name: w}}\n\
             - {apiVersion: apps/v1, kind: Deployment, metadata: {name: d}}\n");
        assert_eq!(result, Ok(()));
        assert_eq!(
            (
                objects.services.len(),
                objects.namespaces.len(),
                objects.endpoint_slices.len(),
                objects.pods.len(),
                objects.nodes.len()
            ),
            (1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn cilium_documents_switch_the_cluster_to_cilium_mode() {
        let (objects, result) = add("apiVersion: v1\nkind: Node\nmetadata: {name: w}\n");
        assert_eq!(result, Ok(()));
        assert_eq!(objects.cilium, None);

        let (objects, result) = add("apiVersion: v1\nkind: List\nitems:\n\
             - {apiVersion: cilium.io/v2, kind: CiliumIdentity, metadata: {name: \"196915\"}, security-labels: {k8s:app: baz}}\n\
             - {apiVersion: cilium.io/v2, kind: CiliumEndpoint, metadata: {name: p, namespace: n}, status: {identity: {id: 196915}}}\n\
             - {apiVersion: cilium.io/v2, kind: CiliumNode, metadata: {name: w}, spec: {bootid: b}}\n\
             - {apiVersion: cilium.io/v2, kind: CiliumNetworkPolicy, metadata: {name: x}}\n");
        assert_eq!(result, Ok(()));
        let cilium = objects.cilium.unwrap();
        assert_eq!(
            (
                cilium.identities.len(),
                cilium.endpoints.len(),
                cilium.nodes.len()
            ),
            (1, 1, 1)
        );
        assert_eq!(cilium.endpoints[0].metadata.namespace.as_deref(), Some("n"));

        let (objects, _) = add("apiVersion: cilium.io/v2\nkind: CiliumNode\nmetadata: {name: w}\n");
        assert_eq!(objects.cilium.map(|c| c.nodes.len()), Some(1));
    }

    #[test]
    fn invalid_documents_say_what_is_wrong() {
        let cases = [
            (
                "- 1\n",
                "not a Kubernetes object (expected a mapping with apiVersion and kind)",
            ),
            ("kind: Service\n", "not a Kubernetes object: no apiVersion"),
            (
                "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: s, namespace: n}\n",
                "EndpointSlice n/s: apiVersion discovery.k8s.io/v1beta1 is not supported (fleetmesh reads discovery.k8s.io/v1)",
            ),
            (
                "apiVersion: cilium.io/v2alpha1\nkind: CiliumEndpoint\nmetadata: {name: p, namespace: n}\n",
                "CiliumEndpoint n/p: apiVersion cilium.io/v2alpha1 is not supported (fleetmesh reads cilium.io/v2)",
            ),
            (
                "apiVersion: cilium.io/v2\nkind: CiliumIdentity\nmetadata: {name: \"1\"}\nsecurity-labels: [a]\n",
                "CiliumIdentity 1: field security-labels: invalid type: sequence, expected a map",
            ),
            (
                "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: 3}}\n",
                "items[0]: Pod p: field spec.containers: invalid type: integer `3`, expected a sequence",
            ),
        ];
        for (yaml, expected) in cases {
            assert_eq!(add(yaml).1, Err(expected.to_string()), "{yaml}");
        }
        let (_, wrong_type) = add(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: [IPv4]\n",
        );
        assert!(
            wrong_type
                .unwrap_err()
                .starts_with("EndpointSlice s: field addressType: invalid type")
        );
    }
}
