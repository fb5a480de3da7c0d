//! The HTTP routes. Every handler takes the view's read lock only to copy out what it
//! answers (never across an `.await`), and every error answer is JSON
//! `{"error": "..."}` naming what was asked for.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::RwLock;
use serde::Deserialize;

use crate::mesh::{IpConflict, IpcacheEntryView, MeshView, ServiceView};
use crate::model::{IdentityId, ServiceName};

use super::SliceStats;
use super::explain::{IpExplanation, ServiceExplanation, explain_ip, explain_service};
use super::links::{Links, waiting_for};
use super::metrics::{self, AgentGauges, Scrape};
use super::page;
use super::report::{ErrorBody, IdentityView, NodeView, ServiceExportView, StatusReport};
use super::unix_ms_now;
use crate::exposition::{CONTENT_TYPE, MeanHistogram};

/// What the routes read: the merged view and the agent's links.
#[derive(Clone)]
pub struct ApiState {
    view: Arc<RwLock<MeshView>>,
    links: Arc<dyn Links>,
    started: Instant,
    slices: Option<SliceStats>,
    lag: Option<MeanHistogram>,
}

impl ApiState {
    /// State for an agent starting now.
    pub fn new(view: Arc<RwLock<MeshView>>, links: Arc<dyn Links>) -> Self {
        Self {
            view,
            links,
            started: Instant::now(),
            slices: None,
            lag: None,
        }
    }

    /// Each link's mean propagation lag in seconds, where it has readings.
    fn mean_lags(&self, status: &StatusReport) -> BTreeMap<String, f64> {
        let Some(lag) = &self.lag else {
            return BTreeMap::new();
        };
        status
            .peers
            .iter()
            .filter_map(|p| Some((p.cluster.clone(), lag.mean(&p.cluster)?)))
            .collect()
    }

    /// Shows the links' propagation lag histogram in the metrics.
    pub fn with_propagation_lag(mut self, lag: MeanHistogram) -> Self {
        self.lag = Some(lag);
        self
    }

    /// Shows the EndpointSlice writer's counters in the metrics.
    pub fn with_slice_stats(mut self, slices: SliceStats) -> Self {
        self.slices = Some(slices);
        self
    }

    /// The status document as of `now`.
    fn status(&self, now: Instant) -> StatusReport {
        let reports = self.links.reports();
        let not_ready = waiting_for(&reports, self.started, now);
        let local = self.view.read().local().clone();
        StatusReport {
            cluster: local.name,
            cluster_id: local.id.get(),
            peers: reports.into_iter().map(|r| r.status).collect(),
            ready: not_ready.is_empty(),
            not_ready,
        }
    }
}

/// Every route of the query API.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/status", get(status))
        .route("/v1/services", get(services))
        .route("/v1/services/{namespace}/{name}", get(service))
        .route("/v1/ipcache/{ip}", get(ipcache))
        .route("/v1/explain/services/{namespace}/{name}", get(explain))
        .route("/v1/explain/ip/{ip}", get(explain_ip_route))
        .route("/v1/identities/{id}", get(identity))
        .route("/v1/nodes", get(nodes))
        .route("/v1/serviceexports", get(service_exports))
        .route("/v1/conflicts", get(conflicts))
        .fallback(not_found)
        .with_state(state)
}

/// An error answer.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_request(message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }

    fn not_found(message: String) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such route: {}", uri.path()))
}

/// The status page's options.
#[derive(Debug, Deserialize)]
struct PageQuery {
    /// `0` turns the page's auto-refresh off (for a screenshot, or a print).
    refresh: Option<u32>,
}

async fn index(State(state): State<ApiState>, Query(query): Query<PageQuery>) -> Html<String> {
    let now = Instant::now();
    let status = state.status(now);
    let services = state.view.read().services(now);
    let lags = state.mean_lags(&status);
    let refresh = query.refresh != Some(0);
    Html(page::render(
        &status,
        &services,
        unix_ms_now(),
        &lags,
        refresh,
    ))
}

async fn readyz(State(state): State<ApiState>) -> (StatusCode, String) {
    let status = state.status(Instant::now());
    if status.ready {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let why: String = status
            .not_ready
            .iter()
            .map(|w| format!("waiting for {w}\n"))
            .collect();
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{why}"))
    }
}

async fn metrics_text(State(state): State<ApiState>) -> impl IntoResponse {
    let now = Instant::now();
    let status = state.status(now);
    let (global_services, ip_conflicts) = {
        let view = state.view.read();
        (view.services(now).len(), view.conflicts().len())
    };
    let text = metrics::render(&Scrape {
        peers: &status.peers,
        agent: AgentGauges {
            ready: status.ready,
            global_services,
            ip_conflicts,
        },
        now_unix_ms: unix_ms_now(),
        slices: state.slices.as_ref(),
        lag: state.lag.as_ref().map(MeanHistogram::family).as_ref(),
    });
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

async fn status(State(state): State<ApiState>) -> Json<StatusReport> {
    Json(state.status(Instant::now()))
}

async fn services(State(state): State<ApiState>) -> Json<Vec<ServiceView>> {
    Json(state.view.read().services(Instant::now()))
}

async fn service(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<ServiceView>, ApiError> {
    let svc = ServiceName::new(&namespace, &name)
        .map_err(|e| ApiError::bad_request(format!("{namespace}/{name}: {e}")))?;
    state
        .view
        .read()
        .service(&svc, Instant::now())
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no global service {svc}")))
}

async fn explain(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<ServiceExplanation>, ApiError> {
    let svc = ServiceName::new(&namespace, &name)
        .map_err(|e| ApiError::bad_request(format!("{namespace}/{name}: {e}")))?;
    let now = Instant::now();
    let now_ms = unix_ms_now();
    let peers = state.status(now).peers;
    let (view, stale_since) = {
        let mesh = state.view.read();
        let view = mesh
            .service(&svc, now)
            .ok_or_else(|| ApiError::not_found(format!("no global service {svc}")))?;
        let stale_since: BTreeMap<String, u64> = view
            .clusters
            .iter()
            .filter_map(|c| {
                let from = mesh.stale_from(&c.cluster)?;
                let ms = match from.checked_duration_since(now) {
                    Some(ahead) => now_ms.saturating_add(ahead.as_millis() as u64),
                    None => now_ms.saturating_sub((now - from).as_millis() as u64),
                };
                Some((c.cluster.to_string(), ms))
            })
            .collect();
        (view, stale_since)
    };
    Ok(Json(explain_service(&view, &stale_since, &peers)))
}

async fn explain_ip_route(
    State(state): State<ApiState>,
    Path(ip): Path<String>,
) -> Result<Json<IpExplanation>, ApiError> {
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{ip:?} is not an IP address")))?;
    explain_ip(&state.view.read(), addr)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no cluster holds {addr}")))
}

async fn ipcache(
    State(state): State<ApiState>,
    Path(ip): Path<String>,
) -> Result<Json<IpcacheEntryView>, ApiError> {
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{ip:?} is not an IP address")))?;
    // `::ffff:a.b.c.d` is how a dual-stack socket shows an IPv4 peer: the IPv4 address.
    let addr = addr.to_canonical();
    state
        .view
        .read()
        .lookup(addr)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no cluster owns {addr}")))
}

async fn identity(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<IdentityView>, ApiError> {
    let id: IdentityId = id
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{id:?}: {e}")))?;
    state
        .view
        .read()
        .identity(id)
        .map(|(cluster, labels)| Json(IdentityView::new(id, cluster, &labels)))
        .ok_or_else(|| ApiError::not_found(format!("no cluster holds identity {id}")))
}

async fn nodes(State(state): State<ApiState>) -> Json<Vec<NodeView>> {
    let nodes = state.view.read().nodes();
    Json(
        nodes
            .into_iter()
            .map(|(cluster, node)| NodeView::new(cluster, &node))
            .collect(),
    )
}

/// Every cluster's MCS-API exports, local first then by cluster, each by name.
async fn service_exports(State(state): State<ApiState>) -> Json<Vec<ServiceExportView>> {
    let view = state.view.read();
    let exports = view
        .clusters()
        .iter()
        .filter_map(|cluster| view.service_exports(cluster))
        .flat_map(|held| held.values().map(ServiceExportView::new))
        .collect();
    Json(exports)
}

async fn conflicts(State(state): State<ApiState>) -> Json<Vec<IpConflict>> {
    Json(state.view.read().conflicts())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::mesh::{PeerStatus, StalePolicy, SyncedKinds};
    use crate::model::{
        Affinity, Backend, BackendConditions, CLUSTER_LABEL, Change, Cluster, ClusterId,
        ClusterName, Endpoint, ExportPort, ExportType, IdMode, Identity, IpFamily, IpPrefix, Label,
        Labels, Node, Resource, Service, ServiceExport, SessionAffinity,
    };
    use crate::observe::links::LinkReport;

    fn mk_cluster(name: &str, id: u32) -> Cluster {
        Cluster::new(
            ClusterName::new(name).unwrap(),
            ClusterId::new(id, IdMode::Normal).unwrap(),
            IdMode::Normal,
        )
    }

    /// Cluster `c`'s state: node `node-1`, identity `first+1` labelled `app=echo`, pod
    /// `echo-1` at `10.<id>.0.1`, and global service `test/echo` backed by it.
    fn mk_state(c: &Cluster) -> Vec<Resource> {
        let labels: Labels = [
            Label::k8s("app", "echo").unwrap(),
            Label::k8s(CLUSTER_LABEL, c.name.as_str()).unwrap(),
        ]
        .into_iter()
        .collect();
        let id = IdentityId::new(c.identity_range().first() + 1).unwrap();
        let ip: IpAddr = format!("10.{}.0.1", c.id).parse().unwrap();
        let mut endpoint = Endpoint::new(IpPrefix::host(ip), id);
        endpoint.namespace = Some("test".into());
        endpoint.pod = Some("echo-1".into());
        let service = Service {
            cluster: c.name.clone(),
            cluster_id: c.id,
            name: "test/echo".parse().unwrap(),
            frontends: Default::default(),
            backends: [(
                ip,
                Backend {
                    conditions: BackendConditions::READY,
                    ..Backend::default()
                },
            )]
            .into(),
            labels: Default::default(),
            selector: Default::default(),
            include_external: true,
            shared: true,
            affinity: Affinity::None,
        };
        let export = ServiceExport {
            cluster: c.name.clone(),
            name: "test/echo".parse().unwrap(),
            export_created_unix: 1_768_046_400 + i64::from(c.id.get()),
            ports: vec![ExportPort {
                name: "http".into(),
                protocol: crate::model::Protocol::Tcp,
                app_protocol: None,
                port: 80,
            }],
            export_type: ExportType::ClusterSetIp,
            session_affinity: SessionAffinity::None,
            session_affinity_timeout_seconds: None,
            ip_families: vec![IpFamily::V4],
            labels: Default::default(),
            annotations: Default::default(),
            internal_traffic_policy: None,
            traffic_distribution: None,
        };
        vec![
            Resource::Node(Node::new("node-1", c.name.clone(), c.id).unwrap()),
            Resource::Identity(Identity::new(c, id, labels).unwrap()),
            Resource::Endpoint(endpoint),
            Resource::Service(service),
            Resource::ServiceExport(export),
        ]
    }

    struct FakeLinks(Vec<LinkReport>);

    impl Links for FakeLinks {
        fn reports(&self) -> Vec<LinkReport> {
            self.0.clone()
        }
    }

    fn mk_link(cluster: &str, ready: bool, since: Instant) -> LinkReport {
        let synced = SyncedKinds {
            nodes: ready,
            services: ready,
            identities: ready,
            endpoints: ready,
            service_exports: ready,
        };
        LinkReport {
            status: PeerStatus {
                cluster: cluster.into(),
                connected: ready,
                ready,
                synced,
                ..PeerStatus::default()
            },
            since,
            been_ready: ready,
        }
    }

    /// A router over local `c1` and peer `c2`, both holding `mk_state`, with links as given.
    fn mk_router(links: Vec<LinkReport>) -> Router {
        let c1 = mk_cluster("c1", 1);
        let c2 = mk_cluster("c2", 2);
        let mut view = MeshView::new(c1.clone(), StalePolicy::default());
        for c in [&c1, &c2] {
            let upserts: Vec<Change> = mk_state(c).into_iter().map(Change::Upsert).collect();
            view.apply(&c.name, &upserts);
        }
        let view = Arc::new(RwLock::new(view));
        router(ApiState::new(view, Arc::new(FakeLinks(links))))
    }

    async fn get_path(app: &Router, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn get_json(app: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let (status, body) = get_path(app, path).await;
        (status, serde_json::from_str(&body).unwrap())
    }

    #[tokio::test]
    async fn status_lists_every_link_and_readiness() {
        let now = Instant::now();
        let app = mk_router(vec![mk_link("c1", true, now), mk_link("c2", false, now)]);
        let (code, json) = get_json(&app, "/v1/status").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(json["cluster"], "c1");
        assert_eq!(json["clusterId"], 1);
        assert_eq!(json["ready"], false);
        assert_eq!(json["notReady"][0], "c2: connecting");
        assert_eq!(json["peers"][0]["cluster"], "c1");
        assert_eq!(json["peers"][1]["synced"]["nodes"], false);
        let back: StatusReport = serde_json::from_value(json).unwrap();
        assert_eq!(back.peers.len(), 2);

        let (code, body) = get_path(&app, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready\nwaiting for c2: connecting\n");
    }

    #[tokio::test]
    async fn readyz_is_ok_when_every_link_has_been_ready_or_timed_out() {
        let long_ago = Instant::now() - Duration::from_secs(60);
        let app = mk_router(vec![
            mk_link("c1", true, Instant::now()),
            mk_link("c2", false, long_ago),
        ]);
        assert_eq!(
            get_path(&app, "/readyz").await,
            (StatusCode::OK, "ready\n".to_string())
        );
        assert_eq!(
            get_path(&app, "/healthz").await,
            (StatusCode::OK, "ok\n".to_string())
        );
    }

    #[tokio::test]
    async fn service_exports_are_listed_per_cluster() {
        let app = mk_router(Vec::new());
        let (code, json) = get_json(&app, "/v1/serviceexports").await;
        assert_eq!(code, StatusCode::OK);
        let exports: Vec<ServiceExportView> = serde_json::from_value(json.clone()).unwrap();
        let held: Vec<(&str, &str)> = exports
            .iter()
            .map(|e| (e.cluster.as_str(), e.name.as_str()))
            .collect();
        assert_eq!(held, [("c1", "test/echo"), ("c2", "test/echo")]);
        assert_eq!(json[1]["type"], "ClusterSetIP");
        assert_eq!(json[1]["ports"][0], "http:80/TCP");
        assert_eq!(json[1]["exportCreatedUnix"], 1_768_046_402);
    }

    #[tokio::test]
    async fn services_and_one_service_by_name() {
        let app = mk_router(Vec::new());
        let (code, json) = get_json(&app, "/v1/services").await;
        assert_eq!(code, StatusCode::OK);
        let services: Vec<ServiceView> = serde_json::from_value(json).unwrap();
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].selected.len(), 2);

        let (code, json) = get_json(&app, "/v1/services/test/echo").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(json["name"], "test/echo");
        assert_eq!(json["clusters"][1]["cluster"], "c2");

        let (code, json) = get_json(&app, "/v1/services/test/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(json["error"], "no global service test/nope");

        let (code, json) = get_json(&app, "/v1/services/Test/x").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(json["error"].as_str().unwrap().contains("Test"), "{json}");
    }

    #[tokio::test]
    async fn ipcache_lookup_answers_owner_bad_ip_and_unknown_ip() {
        let app = mk_router(Vec::new());
        let (code, json) = get_json(&app, "/v1/ipcache/10.2.0.1").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(json["cluster"], "c2");
        assert_eq!(json["pod"], "echo-1");
        let entry: IpcacheEntryView = serde_json::from_value(json).unwrap();
        assert_eq!(entry.labels.unwrap().cluster(), Some("c2"));

        let (code, json) = get_json(&app, "/v1/ipcache/::ffff:10.2.0.1").await;
        assert_eq!(
            (code, &json["pod"]),
            (StatusCode::OK, &serde_json::json!("echo-1"))
        );
        let (code, json) = get_json(&app, "/v1/ipcache/::ffff:10.9.9.9").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(json["error"], "no cluster owns 10.9.9.9");

        let (code, json) = get_json(&app, "/v1/ipcache/10.2.0.999").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(json["error"], "\"10.2.0.999\" is not an IP address");

        let (code, json) = get_json(&app, "/v1/ipcache/10.9.9.9").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(json["error"], "no cluster owns 10.9.9.9");
    }

    #[tokio::test]
    async fn identities_nodes_and_conflicts() {
        let app = mk_router(Vec::new());
        let id = mk_cluster("c2", 2).identity_range().first() + 1;
        let (code, json) = get_json(&app, &format!("/v1/identities/{id}")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(json["cluster"], "c2");
        assert_eq!(json["labels"][0], "k8s:app=echo");

        let (code, json) = get_json(&app, "/v1/identities/77").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(json["error"], "no cluster holds identity 77");
        let (code, _) = get_json(&app, "/v1/identities/abc").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);

        let (code, json) = get_json(&app, "/v1/nodes").await;
        assert_eq!(code, StatusCode::OK);
        let nodes: Vec<NodeView> = serde_json::from_value(json).unwrap();
        let names: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}/{}", n.cluster, n.name))
            .collect();
        assert_eq!(names, vec!["c1/node-1", "c2/node-1"]);

        let (code, json) = get_json(&app, "/v1/conflicts").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(json, serde_json::json!([]));
    }

    #[tokio::test]
    async fn conflicts_list_every_claimant() {
        let c1 = mk_cluster("c1", 1);
        let c2 = mk_cluster("c2", 2);
        let mut view = MeshView::new(c1.clone(), StalePolicy::default());
        for c in [&c1, &c2] {
            let id = IdentityId::new(c.identity_range().first() + 1).unwrap();
            let e = Endpoint::new("10.7.0.1".parse().unwrap(), id);
            view.apply(&c.name, &[Change::Upsert(Resource::Endpoint(e))]);
        }
        let view = Arc::new(RwLock::new(view));
        let app = router(ApiState::new(view, Arc::new(FakeLinks(Vec::new()))));
        let (_, json) = get_json(&app, "/v1/conflicts").await;
        assert_eq!(
            json,
            serde_json::json!([{"prefix": "10.7.0.1", "clusters": ["c1", "c2"]}])
        );
    }

    #[tokio::test]
    async fn explain_ip_names_the_claimants_and_the_winner() {
        let c1 = mk_cluster("c1", 1);
        let c2 = mk_cluster("c2", 2);
        let mut view = MeshView::new(c1.clone(), StalePolicy::default());
        for c in [&c2, &c1] {
            let state: Vec<Change> = mk_state(c).into_iter().map(Change::Upsert).collect();
            view.apply(&c.name, &state);
            let id = IdentityId::new(c.identity_range().first() + 1).unwrap();
            let e = Endpoint::new("10.7.0.1".parse().unwrap(), id);
            view.apply(&c.name, &[Change::Upsert(Resource::Endpoint(e))]);
        }
        let app = router(ApiState::new(
            Arc::new(RwLock::new(view)),
            Arc::new(FakeLinks(Vec::new())),
        ));
        let (code, json) = get_json(&app, "/v1/explain/ip/10.7.0.1").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(json["holder"]["cluster"], "c1");
        assert_eq!(json["claimants"], serde_json::json!(["c1", "c2"]));
        let resolution = json["resolution"].as_str().unwrap();
        assert!(
            resolution.contains("local cluster's entry wins"),
            "{resolution}"
        );
        assert_eq!(json["labelsFrom"], "c1");

        let (code, json) = get_json(&app, "/v1/explain/ip/10.2.0.1").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(json["claimants"], serde_json::json!(["c2"]));
        assert_eq!(json["resolution"], serde_json::Value::Null);

        let (code, _) = get_json(&app, "/v1/explain/ip/10.9.9.9").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn metrics_page_and_unknown_routes() {
        let now = Instant::now();
        let app = mk_router(vec![mk_link("c2", true, now)]);
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let (_, text) = get_path(&app, "/metrics").await;
        assert!(text.contains(
            "fleetmesh_agent_remote_cluster_readiness_status{target_cluster=\"c2\"} 1.0\n"
        ));
        assert!(text.contains("fleetmesh_agent_global_services 1.0\n"));

        let (code, html) = get_path(&app, "/").await;
        assert_eq!(code, StatusCode::OK);
        assert!(html.contains("<code>test/echo</code>"));
        assert!(html.contains("<code>10.2.0.1</code>"));
        assert!(html.contains("http-equiv=\"refresh\""), "refreshes itself");
        let (code, still) = get_path(&app, "/?refresh=0").await;
        assert_eq!(code, StatusCode::OK);
        assert!(!still.contains("http-equiv"), "no refresh when asked");
        assert!(still.contains("<code>10.2.0.1</code>"));

        let (code, json) = get_json(&app, "/v2/nothing").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(json["error"], "no such route: /v2/nothing");
    }
}
