//! Reading manifest files while keeping the last good version of what they held, as the
//! kube source does: a file that no longer reads must not withdraw live objects.
//!
//! - A file that cannot be read whole (unreadable, not UTF-8, over the size limit, a
//!   document that is not YAML, or — where it read before — a YAML file cut short of its
//!   final newline, as a file caught half-written is) keeps everything it held.
//! - An object whose document reads but not as its kind (a field with a bad value) keeps
//!   its last good version; the other objects of the file are taken as they are now.
//! - A file that is gone withdraws its objects: deleting a file is how objects are removed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::documents::{self, ObjectKey};
use super::scan::ManifestFile;
use super::{LoadedManifests, ManifestProblem};
use crate::k8s::convert::Objects;

/// The objects of one file as last read well, by key.
type FileObjects = BTreeMap<ObjectKey, Value>;

/// Loads manifest files, remembering each file's last good objects between loads.
#[derive(Debug, Default)]
pub struct LastGood {
    files: HashMap<PathBuf, FileObjects>,
}

impl LastGood {
    /// The objects of `files` and their problems; what no longer reads is replaced by
    /// its last good version.
    pub(super) fn load(&mut self, files: &[ManifestFile]) -> LoadedManifests {
        let mut previous = std::mem::take(&mut self.files);
        let mut loaded = LoadedManifests::default();
        for file in files {
            let before = previous.remove(&file.path);
            let now = load_file(file, before, &mut loaded);
            self.files.insert(file.path.clone(), now);
        }
        loaded
    }
}

/// Adds what `file` holds to `loaded`, falling back to `before` (its last good objects)
/// for what does not read; returns the file's objects as they now stand.
fn load_file(
    file: &ManifestFile,
    before: Option<FileObjects>,
    loaded: &mut LoadedManifests,
) -> FileObjects {
    let problem = |document, message: String| ManifestProblem {
        file: file.path.clone(),
        document,
        message,
    };
    let documents = match read_documents(file, before.is_some()) {
        Ok(documents) => documents,
        Err((document, message)) => {
            let kept = before.unwrap_or_default();
            let message = if kept.is_empty() {
                message
            } else {
                format!(
                    "{message}; keeping the {} object(s) it held before",
                    kept.len()
                )
            };
            loaded.problems.push(problem(document, message));
            for value in kept.values() {
                add_kept(value, &file.path, &mut loaded.objects);
            }
            return kept;
        }
    };
    let before = before.unwrap_or_default();
    let mut now = FileObjects::new();
    for (index, document) in documents.into_iter().enumerate() {
        let document = match document {
            Ok(document) => document,
            Err(message) => {
                loaded.problems.push(problem(index, message));
                continue;
            }
        };
        for (item, value) in items(document) {
            let key = documents::object_key(&value);
            let added =
                documents::add_document(value.clone(), &file.path, index, &mut loaded.objects);
            let Err(message) = added else {
                if let Some(key) = key {
                    now.insert(key, value);
                }
                continue;
            };
            let message = match item {
                Some(i) => format!("items[{i}]: {message}"),
                None => message,
            };
            match key.and_then(|key| before.get_key_value(&key)) {
                Some((key, good)) => {
                    loaded.problems.push(problem(
                        index,
                        format!("{message}; keeping its last good version"),
                    ));
                    add_kept(good, &file.path, &mut loaded.objects);
                    now.insert(key.clone(), good.clone());
                }
                None => loaded.problems.push(problem(index, message)),
            }
        }
    }
    now
}

/// The file's documents, or the first reason it cannot be read whole (with the document
/// it concerns). A file read for the first time has nothing to keep: its documents are
/// taken one by one, those that do not parse reported.
fn read_documents(
    file: &ManifestFile,
    read_before: bool,
) -> Result<Vec<Result<Value, String>>, (usize, String)> {
    let bytes = file.content.as_ref().map_err(|e| (0, e.clone()))?;
    let text = std::str::from_utf8(bytes).map_err(|e| (0, format!("not UTF-8: {e}")))?;
    if is_json(&file.path) {
        return serde_json::from_str(text)
            .map(|value| vec![Ok(value)])
            .map_err(|e| (0, e.to_string()));
    }
    let documents = documents::yaml_documents(text);
    if !read_before {
        // Nothing to keep: every document that reads is taken.
        return Ok(documents);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err((
            documents.len().saturating_sub(1),
            "the file ends without a newline: it looks half-written".to_string(),
        ));
    }
    if let Some((index, Err(message))) = documents.iter().enumerate().find(|(_, d)| d.is_err()) {
        return Err((index, message.clone()));
    }
    Ok(documents)
}

/// A document's objects: the items of a `v1` `List` (with their index), or the document.
fn items(document: Value) -> Vec<(Option<usize>, Value)> {
    let is_list = document.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && document.get("kind").and_then(Value::as_str) == Some("List");
    match document {
        Value::Object(mut map) if is_list => match map.remove("items") {
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| (Some(i), item))
                .collect(),
            // Reported by add_document as it stands.
            other => {
                if let Some(items) = other {
                    map.insert("items".to_string(), items);
                }
                vec![(None, Value::Object(map))]
            }
        },
        other => vec![(None, other)],
    }
}

/// Adds a value that read well before; it reads the same way now.
fn add_kept(value: &Value, file: &Path, objects: &mut Objects) {
    if let Err(message) = documents::add_document(value.clone(), file, 0, objects) {
        tracing::error!(file = %file.display(), %message, "a kept manifest object no longer reads");
    }
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLICE: &str = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
        metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\n\
        addressType: IPv4\nendpoints:\n- addresses: [10.0.0.1]\n  conditions: {ready: true}\n";
    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n";

    fn mk_file(text: &str) -> ManifestFile {
        ManifestFile {
            path: PathBuf::from("/m/services.yaml"),
            content: Ok(text.as_bytes().to_vec()),
        }
    }

    fn ready_of(loaded: &LoadedManifests) -> Vec<Option<bool>> {
        loaded
            .objects
            .endpoint_slices
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .map(|e| e.conditions.as_ref().and_then(|c| c.ready))
            .collect()
    }

    #[test]
    fn a_bad_field_keeps_that_objects_last_good_version_and_names_file_document_object_and_field() {
        let mut memory = LastGood::default();
        let good = format!("{SERVICE}---\n{SLICE}");
        assert_eq!(memory.load(&[mk_file(&good)]).problems, []);

        let bad = format!(
            "{}---\n{}",
            SERVICE.replace("name: web,", "name: web2,"),
            SLICE.replace("ready: true", "ready: \"yes\"")
        );
        let loaded = memory.load(&[mk_file(&bad)]);
        assert_eq!(ready_of(&loaded), [Some(true)]);
        let names: Vec<_> = loaded
            .objects
            .services
            .iter()
            .map(|s| s.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["web2"], "the other object is taken as it is now");
        let problems: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "/m/services.yaml: document 1: EndpointSlice shop/web-1: field \
              endpoints[0].conditions.ready: invalid type: string \"yes\", expected a boolean; \
              keeping its last good version"
            ]
        );

        // Kept across further reads of the same bad file, until it is fixed.
        assert_eq!(ready_of(&memory.load(&[mk_file(&bad)])), [Some(true)]);
        let fixed = SLICE.replace("ready: true", "ready: false");
        assert_eq!(ready_of(&memory.load(&[mk_file(&fixed)])), [Some(false)]);
    }

    #[test]
    fn a_file_that_does_not_read_whole_keeps_everything_it_held() {
        let mut memory = LastGood::default();
        let good = format!("{SERVICE}---\n{SLICE}");
        memory.load(&[mk_file(&good)]);

        let cut_mid_line = &good[..good.len() - 4];
        let syntax_error = format!("{SERVICE}---\nkind: [\n");
        let oversized = ManifestFile {
            path: PathBuf::from("/m/services.yaml"),
            content: Err("the file is 9000000 bytes, over the limit".to_string()),
        };
        for file in [mk_file(cut_mid_line), mk_file(&syntax_error), oversized] {
            let loaded = memory.load(&[file]);
            assert_eq!(ready_of(&loaded), [Some(true)]);
            assert_eq!(loaded.objects.services.len(), 1);
            assert_eq!(loaded.problems.len(), 1);
            let problem = loaded.problems[0].to_string();
            assert!(
                problem.starts_with("/m/services.yaml: document ")
                    && problem.ends_with("keeping the 2 object(s) it held before"),
                "{problem}"
            );
        }

        // A deleted file withdraws what it held.
        assert_eq!(memory.load(&[]).objects.services.len(), 0);
        // A new file without a final newline was never half of anything read before.
        assert_eq!(memory.load(&[mk_file(SERVICE.trim_end())]).problems, []);
    }
}
