//! A fake Kubernetes API server, small and faithful enough for kube-rs clients: list and
//! watch (chunked JSON events, resourceVersion, bookmarks, `410 Gone`), get, create,
//! replace, delete and merge-patch over plain HTTP on 127.0.0.1, no authentication.
//!
//! No real API server can run on the test machines; this one serves real Kubernetes JSON
//! (objects built from k8s-openapi types) so the watchers and the EndpointSlice writer
//! are exercised through the real kube client. What it leaves out: field selectors,
//! set-based label selectors, pagination (`limit` is ignored: every list is one page),
//! strategic-merge and server-side-apply patches, admission and validation.

mod request;
mod state;

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use request::{ResourceType, Selector, Target, parse_path};
use state::{ApiError, State, WatchLine, event_line};

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

type Shared = Arc<Mutex<State>>;

/// The server; it stops when dropped.
pub struct FakeKube {
    url: String,
    state: Shared,
    server: JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeKube {
    /// Serves Namespaces, Nodes, Pods, Services, EndpointSlices and ConfigMaps (where the
    /// apiserver keeps identity numbers).
    pub async fn start() -> FakeKube {
        let state = State::new(vec![
            ResourceType::new("v1", "Namespace", "namespaces", false),
            ResourceType::new("v1", "ConfigMap", "configmaps", true),
            ResourceType::new("v1", "Node", "nodes", false),
            ResourceType::new("v1", "Pod", "pods", true),
            ResourceType::new("v1", "Service", "services", true),
            ResourceType::new(
                "discovery.k8s.io/v1",
                "EndpointSlice",
                "endpointslices",
                true,
            ),
        ]);
        let state: Shared = Arc::new(Mutex::new(state));
        let app = Router::new().fallback(serve).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKube { url, state, server }
    }

    /// Also serves Cilium's CiliumIdentity, CiliumEndpoint and CiliumNode: Cilium is
    /// installed.
    pub fn install_cilium_crds(&self) {
        self.state.lock().types.extend([
            ResourceType::new("cilium.io/v2", "CiliumIdentity", "ciliumidentities", false),
            ResourceType::new("cilium.io/v2", "CiliumEndpoint", "ciliumendpoints", true),
            ResourceType::new("cilium.io/v2", "CiliumNode", "ciliumnodes", false),
        ]);
    }

    /// Also serves Cilium's CiliumEndpointSlice (`cilium.io/v2alpha1`).
    pub fn install_cilium_endpoint_slice_crd(&self) {
        self.state.lock().types.push(ResourceType::new(
            "cilium.io/v2alpha1",
            "CiliumEndpointSlice",
            "ciliumendpointslices",
            false,
        ));
    }

    /// Also serves the MCS API's ServiceExport (`multicluster.x-k8s.io/v1alpha1`).
    pub fn install_mcs_crds(&self) {
        self.state.lock().types.push(ResourceType::new(
            "multicluster.x-k8s.io/v1alpha1",
            "ServiceExport",
            "serviceexports",
            true,
        ));
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A kube client talking to this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("the server's URL"));
        kube::Client::try_from(config).expect("a kube client for the fake API server")
    }

    /// Writes a kubeconfig whose current context is this server.
    pub fn write_kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\n\
             current-context: fake\n",
            self.url
        );
        std::fs::write(path, text).expect("write the kubeconfig");
    }

    /// Creates or replaces an object as a controller in the cluster would; returns its
    /// new resourceVersion.
    pub fn apply<T: serde::Serialize>(&self, object: &T) -> u64 {
        self.apply_json(serde_json::to_value(object).expect("a serializable object"))
    }

    pub fn apply_json(&self, object: Value) -> u64 {
        let mut state = self.state.lock();
        let resource = kind_of(&state, &object);
        let namespace = namespace_of(&resource, &object);
        state.store(&resource, &namespace, object);
        state.revision()
    }

    /// Deletes an object; whether it existed.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let mut state = self.state.lock();
        let resource = state
            .resource_of_kind(api_version, kind)
            .unwrap_or_else(|| panic!("the fake API server does not serve {api_version} {kind}"));
        state
            .remove(&resource, namespace.unwrap_or_default(), name)
            .is_some()
    }

    pub fn get_json(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.state.lock();
        let resource = state.resource_of_kind(api_version, kind)?;
        state.get(&resource, namespace.unwrap_or_default(), name)
    }

    /// Every object of a kind, in every namespace, sorted by namespace and name.
    pub fn list_json(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let state = self.state.lock();
        state
            .resource_of_kind(api_version, kind)
            .map(|resource| state.list(&resource, None, &Selector::default()))
            .unwrap_or_default()
    }

    /// Ends every open watch with a `410 Gone`; resuming from any earlier resourceVersion
    /// is refused the same way, so clients must list again.
    pub fn expire_watches(&self) {
        self.state.lock().expire_watches();
    }

    /// The requests served, in order, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().requests.clone()
    }
}

fn kind_of(state: &State, object: &Value) -> ResourceType {
    let field = |name: &str| object[name].as_str().unwrap_or_default().to_string();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    state
        .resource_of_kind(&api_version, &kind)
        .unwrap_or_else(|| panic!("the fake API server does not serve {api_version} {kind}"))
}

fn namespace_of(resource: &ResourceType, object: &Value) -> String {
    if !resource.namespaced {
        return String::new();
    }
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string()
}

async fn serve(
    AxumState(state): AxumState<Shared>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.lock().requests.push(format!(
        "{method} {}",
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    ));
    match handle(&state, &method, uri.path(), &query, &headers, &body) {
        Ok(Reply::Json(code, value)) => (code, axum::Json(value)).into_response(),
        Ok(Reply::Watch(watch)) => watch_response(watch, &query),
        Err(err) => {
            let code = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, axum::Json(err.status())).into_response()
        }
    }
}

enum Reply {
    Json(StatusCode, Value),
    Watch(OpenWatch),
}

/// A watch the state opened, and what its bookmarks need.
struct OpenWatch {
    events: mpsc::UnboundedReceiver<WatchLine>,
    resource: ResourceType,
    /// The resourceVersion when it opened: every replayed event is at or below it.
    opened_at: u64,
}

fn handle(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    };
    let target = parse_path(path).ok_or_else(not_found)?;
    let mut state = shared.lock();
    let resource_of = |state: &State, api_version: &str, plural: &str| {
        state.resource(api_version, plural).ok_or_else(not_found)
    };
    match (method.clone(), target) {
        (
            Method::GET,
            Target::Discovery {
                api_version,
                groups,
            },
        ) => discovery(&state, api_version.as_deref(), groups).ok_or_else(not_found),
        (
            Method::GET,
            Target::Collection {
                api_version,
                plural,
                namespace,
            },
        ) => {
            let resource = resource_of(&state, &api_version, &plural)?;
            let selector = Selector::parse(query.get("labelSelector").map_or("", String::as_str))
                .map_err(|message| ApiError::new(400, "BadRequest", message))?;
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                let from = match query.get("resourceVersion").map(String::as_str) {
                    None | Some("") | Some("0") => None,
                    Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                        ApiError::new(400, "BadRequest", format!("invalid resourceVersion {rv:?}"))
                    })?),
                };
                let opened_at = state.revision();
                let events = state.watch(resource.clone(), namespace, selector, from);
                return Ok(Reply::Watch(OpenWatch {
                    events,
                    resource,
                    opened_at,
                }));
            }
            let items: Vec<Value> = state
                .list(&resource, namespace.as_deref(), &selector)
                .into_iter()
                .map(list_item)
                .collect();
            Ok(Reply::Json(
                StatusCode::OK,
                json!({
                    "apiVersion": resource.api_version,
                    "kind": format!("{}List", resource.kind),
                    "metadata": {"resourceVersion": state.revision().to_string()},
                    "items": items,
                }),
            ))
        }
        (
            Method::POST,
            Target::Collection {
                api_version,
                plural,
                namespace,
            },
        ) => {
            let resource = resource_of(&state, &api_version, &plural)?;
            let mut object = parse_body(body)?;
            let namespace = namespace.unwrap_or_default();
            if object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_none()
            {
                let prefix = object
                    .pointer("/metadata/generateName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::new(422, "Invalid", "metadata.name: Required value")
                    })?;
                object["metadata"]["name"] =
                    json!(format!("{prefix}{:05x}", rand::random::<u32>() & 0xfffff));
            }
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if state.get(&resource, &namespace, &name).is_some() {
                return Err(ApiError::new(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", resource.plural),
                ));
            }
            Ok(Reply::Json(
                StatusCode::CREATED,
                state.store(&resource, &namespace, object),
            ))
        }
        (
            method,
            Target::Item {
                api_version,
                plural,
                namespace,
                name,
            },
        ) => {
            let resource = resource_of(&state, &api_version, &plural)?;
            let namespace = namespace.unwrap_or_default();
            let missing = || {
                ApiError::new(
                    404,
                    "NotFound",
                    format!("{} \"{name}\" not found", resource.plural),
                )
            };
            let current = state.get(&resource, &namespace, &name);
            match method {
                Method::GET => current
                    .map(|o| Reply::Json(StatusCode::OK, o))
                    .ok_or_else(missing),
                Method::DELETE => state
                    .remove(&resource, &namespace, &name)
                    .map(|o| Reply::Json(StatusCode::OK, o))
                    .ok_or_else(missing),
                Method::PUT => {
                    let current = current.ok_or_else(missing)?;
                    let object = parse_body(body)?;
                    let named = object.pointer("/metadata/name").and_then(Value::as_str);
                    if named != Some(name.as_str()) {
                        return Err(ApiError::new(
                            400,
                            "BadRequest",
                            format!(
                                "the name of the object ({}) does not match the name on the URL ({name})",
                                named.unwrap_or_default()
                            ),
                        ));
                    }
                    let stale = object
                        .pointer("/metadata/resourceVersion")
                        .is_some_and(|rv| Some(rv) != current.pointer("/metadata/resourceVersion"));
                    if stale {
                        return Err(ApiError::new(
                            409,
                            "Conflict",
                            format!(
                                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                                resource.plural
                            ),
                        ));
                    }
                    Ok(Reply::Json(
                        StatusCode::OK,
                        state.store(&resource, &namespace, object),
                    ))
                }
                Method::PATCH => {
                    let content_type = headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if content_type != "application/merge-patch+json" {
                        return Err(ApiError::new(
                            415,
                            "UnsupportedMediaType",
                            format!(
                                "the fake API server takes merge patches only, not {content_type:?}"
                            ),
                        ));
                    }
                    let mut object = current.ok_or_else(missing)?;
                    merge_patch(&mut object, &parse_body(body)?);
                    Ok(Reply::Json(
                        StatusCode::OK,
                        state.store(&resource, &namespace, object),
                    ))
                }
                _ => Err(ApiError::new(
                    405,
                    "MethodNotAllowed",
                    format!("{method} is not allowed on {path}"),
                )),
            }
        }
        (method, _) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not allowed on {path}"),
        )),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|err| {
        ApiError::new(
            400,
            "BadRequest",
            format!("the request body is not JSON: {err}"),
        )
    })
}

/// A list item as the API server returns it: without apiVersion and kind.
fn list_item(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    object
}

/// JSON merge patch (RFC 7386).
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(map) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn discovery(state: &State, api_version: Option<&str>, groups: bool) -> Option<Reply> {
    let value = match (api_version, groups) {
        (None, false) => {
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        }
        (None, true) => {
            let names: BTreeSet<(&str, &str)> = state
                .types
                .iter()
                .filter(|t| !t.group().is_empty())
                .map(|t| (t.group(), t.version()))
                .collect();
            let groups: Vec<Value> = names
                .iter()
                .map(|(group, version)| {
                    let gv =
                        json!({"groupVersion": format!("{group}/{version}"), "version": version});
                    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        (Some(api_version), _) => {
            let resources: Vec<Value> = state
                .types
                .iter()
                .filter(|t| t.api_version == api_version)
                .map(|t| {
                    json!({
                        "name": t.plural, "singularName": t.kind.to_lowercase(),
                        "namespaced": t.namespaced, "kind": t.kind,
                        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                    })
                })
                .collect();
            if resources.is_empty() {
                return None;
            }
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": resources})
        }
    };
    Some(Reply::Json(StatusCode::OK, value))
}

/// Streams a watch: its events, a bookmark every [`BOOKMARK_INTERVAL`] when the client
/// allows them, until the client's `timeoutSeconds` or the server ends it.
fn watch_response(watch: OpenWatch, query: &HashMap<String, String>) -> Response {
    let OpenWatch {
        mut events,
        resource,
        opened_at,
    } = watch;
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = Duration::from_secs(
        query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1800),
    );
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticks = tokio::time::interval(BOOKMARK_INTERVAL);
        ticks.tick().await;
        let mut last_revision = opened_at;
        loop {
            // Biased: queued events go out before a bookmark, which must not overtake them.
            let line = tokio::select! {
                biased;
                event = events.recv() => match event {
                    Some(Some(line)) => {
                        let revision = serde_json::from_str::<Value>(&line).ok().and_then(|v| {
                            v.pointer("/object/metadata/resourceVersion")?.as_str()?.parse::<u64>().ok()
                        });
                        last_revision = last_revision.max(revision.unwrap_or(0));
                        line
                    }
                    _ => break,
                },
                _ = ticks.tick(), if bookmarks => event_line(
                    "BOOKMARK",
                    &json!({
                        "apiVersion": resource.api_version, "kind": resource.kind,
                        "metadata": {"resourceVersion": last_revision.to_string()},
                    }),
                ),
                () = &mut deadline => break,
            };
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .expect("a watch response")
}
