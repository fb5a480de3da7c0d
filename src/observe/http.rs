//! Serving an HTTP router (the agent's query API, the apiserver's health port) with
//! limits, so that idle or header-trickling clients cannot hold connections forever:
//!
//! - a request's head must arrive within [`HEADER_READ_TIMEOUT`] — which also closes a
//!   kept-alive connection that sends no next request within it (idle);
//! - at most [`MAX_CONNECTIONS`] connections at once; one more is closed at once,
//!   counted, and logged at a bounded rate.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::report::LogBudget;

/// Connections served at once: scrapers, probes and a few people, many times over.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a request's head, and how long a kept-alive
/// connection may wait for its next request. Probes and scrapers send theirs at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after an accept error that is not about one connection (out of descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(500);
const LOG_BURST: u32 = 5;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Connections refused over [`MAX_CONNECTIONS`]; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct HttpStats {
    refused: Arc<AtomicU64>,
}

impl HttpStats {
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Serves `app` on `listener` until `shutdown` completes (connections being served
/// finish on their own, within their timeouts).
pub async fn serve_limited(
    listener: TcpListener,
    app: Router,
    stats: HttpStats,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refusal_log = LogBudget::new(LOG_BURST, LOG_WINDOW);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return Ok(()),
        };
        let (tcp, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            stats.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = refusal_log.allow() {
                warn!(peer = %addr, limit = MAX_CONNECTIONS, refused_before_unlogged = held_back,
                    "HTTP connection refused: too many open");
            }
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                app.clone().oneshot(request)
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            if let Err(e) = served {
                debug!(peer = %addr, error = %e, "HTTP connection ended");
            }
        });
    }
}
