//! `/healthz` (the process is alive) and `/readyz` (every sync canary is written, as
//! Cilium's clustermesh-apiserver reports readiness).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::export::ExportStatus;

/// Serves the health endpoints on `listener`, within the limits of
/// [`observe::http`](crate::observe::http), until the future is dropped.
pub async fn serve(
    listener: TcpListener,
    status: watch::Receiver<ExportStatus>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(status);
    let stats = crate::observe::http::HttpStats::default();
    crate::observe::http::serve_limited(listener, app, stats, std::future::pending()).await
}

async fn readyz(State(status): State<watch::Receiver<ExportStatus>>) -> (StatusCode, String) {
    let status = status.borrow().clone();
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
