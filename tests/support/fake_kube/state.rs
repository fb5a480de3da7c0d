//! What the fake API server holds: objects as JSON, one resourceVersion counter, the
//! event history watches resume from, and the open watches.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::request::{ResourceType, Selector};

/// `(apiVersion, plural, namespace or "", name)`.
type ObjectKey = (String, String, String, String);

/// One line of a watch stream, already serialized; `None` ends the stream.
pub type WatchLine = Option<String>;

/// An API error as the server reports it: a `Status` object and its HTTP code.
#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message,
            "reason": self.reason, "code": self.code,
        })
    }
}

struct Watch {
    resource: ResourceType,
    namespace: Option<String>,
    selector: Selector,
    lines: mpsc::UnboundedSender<WatchLine>,
}

impl Watch {
    fn wants(&self, resource: &ResourceType, namespace: &str, object: &Value) -> bool {
        self.resource == *resource
            && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.selector.matches(object)
    }
}

struct Recorded {
    revision: u64,
    resource: ResourceType,
    namespace: String,
    event: &'static str,
    object: Value,
}

#[derive(Default)]
pub struct State {
    pub types: Vec<ResourceType>,
    objects: BTreeMap<ObjectKey, Value>,
    revision: u64,
    history: Vec<Recorded>,
    /// Watches from a resourceVersion below this get 410 Gone.
    oldest_watchable: u64,
    watches: Vec<Watch>,
    pub requests: Vec<String>,
}

impl State {
    pub fn new(types: Vec<ResourceType>) -> Self {
        Self {
            types,
            ..Self::default()
        }
    }

    pub fn resource(&self, api_version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.api_version == api_version && t.plural == plural)
            .cloned()
    }

    pub fn resource_of_kind(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.api_version == api_version && t.kind == kind)
            .cloned()
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, resource: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        self.objects.get(&key(resource, namespace, name)).cloned()
    }

    /// Objects of a kind in one namespace (or all), sorted by namespace and name.
    pub fn list(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((api_version, plural, ns, _), object)| {
                *api_version == resource.api_version
                    && *plural == resource.plural
                    && namespace.is_none_or(|wanted| wanted == ns)
                    && selector.matches(object)
            })
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Stores an object (creating or replacing), stamping its metadata as the API server
    /// does, and tells the watches. Returns the stored object.
    pub fn store(&mut self, resource: &ResourceType, namespace: &str, mut object: Value) -> Value {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let previous = self.get(resource, namespace, &name);
        self.revision += 1;
        let meta = object
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
        if let Some(Value::Object(meta)) = meta {
            let kept = |field: &str| {
                previous
                    .as_ref()
                    .and_then(|p| p["metadata"].get(field).cloned())
            };
            meta.insert("resourceVersion".into(), json!(self.revision.to_string()));
            meta.insert(
                "uid".into(),
                kept("uid").unwrap_or_else(|| json!(format!("{:032x}", rand::random::<u128>()))),
            );
            meta.insert(
                "creationTimestamp".into(),
                kept("creationTimestamp").unwrap_or_else(|| json!("2026-01-01T00:00:00Z")),
            );
            if resource.namespaced {
                meta.insert("namespace".into(), json!(namespace));
            }
        }
        object["apiVersion"] = json!(resource.api_version);
        object["kind"] = json!(resource.kind);
        let event = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects
            .insert(key(resource, namespace, &name), object.clone());
        self.record(resource, namespace, event, object.clone());
        object
    }

    /// Removes an object and tells the watches; the removed object, if there was one.
    pub fn remove(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let mut object = self.objects.remove(&key(resource, namespace, name))?;
        self.revision += 1;
        object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
        self.record(resource, namespace, "DELETED", object.clone());
        Some(object)
    }

    /// Opens a watch from `from` (exclusive): replays later events, then follows. `None`
    /// replays the current objects as ADDED, as a watch from resourceVersion 0 does.
    pub fn watch(
        &mut self,
        resource: ResourceType,
        namespace: Option<String>,
        selector: Selector,
        from: Option<u64>,
    ) -> Result<mpsc::UnboundedReceiver<WatchLine>, ApiError> {
        let (lines, rx) = mpsc::unbounded_channel();
        let watch = Watch {
            resource,
            namespace,
            selector,
            lines,
        };
        match from {
            Some(from) if from < self.oldest_watchable => {
                return Err(too_old());
            }
            Some(from) => {
                for recorded in self.history.iter().filter(|r| r.revision > from) {
                    if watch.wants(&recorded.resource, &recorded.namespace, &recorded.object) {
                        let _ = watch
                            .lines
                            .send(Some(event_line(recorded.event, &recorded.object)));
                    }
                }
            }
            None => {
                for object in
                    self.list(&watch.resource, watch.namespace.as_deref(), &watch.selector)
                {
                    let _ = watch.lines.send(Some(event_line("ADDED", &object)));
                }
            }
        }
        self.watches.push(watch);
        Ok(rx)
    }

    /// Ends every watch with a 410 Gone and forgets the history before now.
    pub fn expire_watches(&mut self) {
        let gone = event_line("ERROR", &too_old().status());
        for watch in self.watches.drain(..) {
            let _ = watch.lines.send(Some(gone.clone()));
            let _ = watch.lines.send(None);
        }
        self.history.clear();
        self.oldest_watchable = self.revision;
    }

    fn record(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        event: &'static str,
        object: Value,
    ) {
        let line = event_line(event, &object);
        self.watches.retain(|watch| {
            !watch.wants(resource, namespace, &object)
                || watch.lines.send(Some(line.clone())).is_ok()
        });
        self.history.push(Recorded {
            revision: self.revision,
            resource: resource.clone(),
            namespace: namespace.to_string(),
            event,
            object,
        });
    }
}

fn key(resource: &ResourceType, namespace: &str, name: &str) -> ObjectKey {
    (
        resource.api_version.clone(),
        resource.plural.clone(),
        namespace.to_string(),
        name.to_string(),
    )
}

fn too_old() -> ApiError {
    ApiError::new(410, "Expired", "too old resource version")
}

/// One watch event as the API server streams it: a JSON object and a newline.
pub fn event_line(event: &str, object: &Value) -> String {
    format!("{}\n", json!({"type": event, "object": object}))
}
