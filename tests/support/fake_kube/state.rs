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
    fn watches(&self, resource: &ResourceType, namespace: &str) -> bool {
        self.resource == *resource && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    /// The event this watch sees for a change from `before` to `after` (`None`: deleted):
    /// an object leaving its selector is DELETED for it, one entering it ADDED.
    fn sees(&self, before: Option<&Value>, after: Option<&Value>) -> Option<&'static str> {
        let matched = |o: Option<&Value>| o.is_some_and(|o| self.selector.matches(o));
        match (matched(before), matched(after)) {
            (false, true) => Some("ADDED"),
            (true, true) => Some("MODIFIED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        }
    }
}

struct Recorded {
    revision: u64,
    resource: ResourceType,
    namespace: String,
    /// The object before the change (`None`: created) and after it (`None`: deleted).
    before: Option<Value>,
    after: Option<Value>,
}

impl Recorded {
    /// The line a watch gets for this change, if any.
    fn line_for(&self, watch: &Watch) -> Option<String> {
        if !watch.watches(&self.resource, &self.namespace) {
            return None;
        }
        let event = watch.sees(self.before.as_ref(), self.after.as_ref())?;
        let object = if event == "DELETED" {
            // A deleted object is sent as last stored, at the deletion's resourceVersion.
            let mut last = self.before.clone()?;
            last["metadata"]["resourceVersion"] = json!(self.revision.to_string());
            last
        } else {
            self.after.clone()?
        };
        Some(event_line(event, &object))
    }
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
        self.objects
            .insert(key(resource, namespace, &name), object.clone());
        self.record(resource, namespace, previous, Some(object.clone()));
        object
    }

    /// Removes an object and tells the watches; the removed object, if there was one.
    pub fn remove(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let object = self.objects.remove(&key(resource, namespace, name))?;
        self.revision += 1;
        self.record(resource, namespace, Some(object.clone()), None);
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
    ) -> mpsc::UnboundedReceiver<WatchLine> {
        let (lines, rx) = mpsc::unbounded_channel();
        let watch = Watch {
            resource,
            namespace,
            selector,
            lines,
        };
        match from {
            // As a real API server does: the watch opens, then an ERROR event says 410.
            Some(from) if from < self.oldest_watchable => {
                let _ = watch
                    .lines
                    .send(Some(event_line("ERROR", &too_old().status())));
                let _ = watch.lines.send(None);
                return rx;
            }
            Some(from) => {
                for recorded in self.history.iter().filter(|r| r.revision > from) {
                    if let Some(line) = recorded.line_for(&watch) {
                        let _ = watch.lines.send(Some(line));
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
        rx
    }

    /// Ends every watch with a 410 Gone and forgets the history before now.
    pub fn expire_watches(&mut self) {
        let gone = event_line("ERROR", &too_old().status());
        for watch in self.watches.drain(..) {
            let _ = watch.lines.send(Some(gone.clone()));
            let _ = watch.lines.send(None);
        }
        self.history.clear();
        self.oldest_watchable = self.revision + 1;
    }

    fn record(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) {
        let recorded = Recorded {
            revision: self.revision,
            resource: resource.clone(),
            namespace: namespace.to_string(),
            before,
            after,
        };
        self.watches.retain(|watch| match recorded.line_for(watch) {
            Some(line) => watch.lines.send(Some(line)).is_ok(),
            None => !watch.lines.is_closed(),
        });
        self.history.push(recorded);
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
