//! `/healthz` (the process is alive), `/readyz` (every sync canary is written, as
//! Cilium's clustermesh-apiserver reports readiness), `/metrics` (module `metrics`) and
//! `/v1/status` (module `status`).

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use super::metrics::ApiserverMetrics;
use super::status::ApiserverStatus;
use crate::exposition::CONTENT_TYPE;

/// Serves the health endpoints, `/metrics` and `/v1/status` on `listener`, within the
/// limits of [`observe::http`](crate::observe::http), until the future is dropped.
pub async fn serve(listener: TcpListener, metrics: ApiserverMetrics) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/status", get(status))
        .with_state(metrics);
    let stats = crate::observe::http::HttpStats::default();
    crate::observe::http::serve_limited(listener, app, stats, std::future::pending()).await
}

async fn metrics_text(State(metrics): State<ApiserverMetrics>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render())
}

async fn status(State(metrics): State<ApiserverMetrics>) -> Json<ApiserverStatus> {
    Json(metrics.status())
}

async fn readyz(State(metrics): State<ApiserverMetrics>) -> (StatusCode, String) {
    let status = metrics.export.borrow().clone();
    if status.synced {
        (
            StatusCode::OK,
            format!("ready: {} keys exported\n", status.keys),
        )
    } else {
        let why = status
            .last_error
            .unwrap_or_else(|| "initial sync in progress".to_string());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
    }
}

/// Binds the health listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for health checks on {addr}"))
}
