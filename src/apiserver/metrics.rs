//! The apiserver's `/metrics` on its health port: what the gRPC server, its TLS
//! listener, the watch cache, the exporter and the store count, read at scrape time
//! (see [`crate::exposition`]). Names follow Cilium's clustermesh-apiserver where it has
//! one (reference §4.5), under the `fleetmesh_apiserver_` prefix.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::cache::WatchCache;
use crate::certs::inspect::inspect;
use crate::export::{ExportStatus, KindTotals};
use crate::exposition::{Exposition, HistogramFamily, flag, labels, rfc3339_unix_seconds};
use crate::grpc::GrpcStats;
use crate::model::Kind;
use crate::tls::server::{HandshakeStats, RefusalReason};

const PREFIX: &str = "fleetmesh_apiserver";

/// The exporter's successful reconciles, counted from the reports it publishes after
/// each (its status channel). Its writes, deletes and errors are totals in the reports
/// themselves ([`crate::export::ExportTotals`]).
#[derive(Debug, Default)]
pub struct ExportCounters {
    pub(super) reconciles: AtomicU64,
}

/// Counts each report on `status` into `counters`. Never returns: once the exporter is
/// gone, its own task reports why.
pub async fn count_exports(
    mut status: watch::Receiver<ExportStatus>,
    counters: Arc<ExportCounters>,
) {
    while status.changed().await.is_ok() {
        // A success replaces the whole report (clearing the error); a failure sets the
        // error and keeps the rest.
        if status.borrow_and_update().last_error.is_none() {
            counters.reconciles.fetch_add(1, Ordering::Relaxed);
        }
    }
    std::future::pending::<()>().await;
}

/// What the apiserver's metrics read.
#[derive(Clone)]
pub struct ApiserverMetrics {
    pub cluster: String,
    pub export: watch::Receiver<ExportStatus>,
    pub export_counters: Arc<ExportCounters>,
    pub store_latency: HistogramFamily,
    /// Absent when the apiserver does not serve gRPC.
    pub grpc: Option<GrpcServing>,
}

/// The gRPC side's counters.
#[derive(Clone)]
pub struct GrpcServing {
    pub stats: GrpcStats,
    pub handshakes: HandshakeStats,
    pub cache: Arc<WatchCache>,
    /// The server certificate file (read at each scrape: it may be rotated).
    pub cert: PathBuf,
}

impl ApiserverMetrics {
    /// The exposition text now.
    pub fn render(&self) -> String {
        let mut e = Exposition::new(PREFIX);
        let export = self.export.borrow().clone();
        let cluster = labels([("cluster", &self.cluster)]);
        e.gauge_family(
            "export_synced",
            "1 once every sync canary is written: the store holds the source's full state",
            [(cluster.clone(), flag(export.synced))],
        );
        e.gauge(
            "canaries_written",
            "Sync canaries written by the exporter (one for the cluster once synced)",
            flag(export.synced),
        );
        e.gauge(
            "exported_keys",
            "Keys the exporter's last successful reconcile wrote or kept",
            export.keys as f64,
        );
        let c = &self.export_counters;
        e.counter(
            "export_reconciles",
            "Successful reconciles of the store with the source's state",
            c.reconciles.load(Ordering::Relaxed),
        );
        let totals = &export.totals;
        let per_kind = |pick: fn(&KindTotals) -> u64| {
            Kind::ALL
                .into_iter()
                .map(move |kind| (labels([("kind", kind.as_str())]), pick(&totals.of(kind))))
        };
        e.counter_family(
            "export_writes",
            "Keys the exporter wrote, per kind",
            per_kind(|t| t.writes),
        );
        e.counter_family(
            "export_deletes",
            "Keys the exporter deleted, per kind",
            per_kind(|t| t.deletes),
        );
        e.counter_family(
            "export_errors",
            "Failed writes of the exporter per kind of key; kind=\"other\" for failures of \
             no one kind (identity allocation, a canary, the store's epoch, a lost lease)",
            per_kind(|t| t.errors).chain([(labels([("kind", "other")]), totals.other_errors)]),
        );
        e.gauge(
            "identities_allocated",
            "Identity numbers the exporter holds for this cluster's label sets, those in \
             quarantine included",
            export.identities.allocated as f64,
        );
        e.gauge(
            "identities_quarantined",
            "Identity numbers whose labels no workload uses, kept until their quarantine \
             runs out",
            export.identities.quarantined as f64,
        );
        e.kept(
            "kvstore_operations_duration_seconds",
            "Duration of the store's operations (Cilium's kvstore_operations_duration_seconds)",
            self.store_latency.clone(),
        );
        if let Some(grpc) = &self.grpc {
            render_grpc(&mut e, grpc);
        }
        e.finish()
    }
}

fn render_grpc(e: &mut Exposition, grpc: &GrpcServing) {
    let stats = &grpc.stats;
    let cache = grpc.cache.stats();
    let watchers = stats.watchers();
    let mut per_peer = std::collections::BTreeMap::<(String, String), f64>::new();
    for w in &watchers {
        *per_peer
            .entry((w.peer.clone(), w.kinds.clone()))
            .or_default() += 1.0;
    }
    e.gauge_family(
        "watchers",
        "Watch streams open now, per peer cluster and set of kinds",
        per_peer
            .into_iter()
            .map(|((peer, kinds), n)| (labels([("peer", &peer), ("kinds", &kinds)]), n)),
    );
    let mut behind = std::collections::BTreeMap::<(String, String), u64>::new();
    for w in &watchers {
        let lag = cache.revision.saturating_sub(w.revision);
        let entry = behind.entry((w.peer.clone(), w.kinds.clone())).or_default();
        *entry = (*entry).max(lag);
    }
    e.gauge_family(
        "watcher_revisions_behind",
        "How far the furthest behind open watch of each peer and set of kinds is: store \
         revisions the cache holds that it has not been sent yet",
        behind
            .into_iter()
            .map(|((peer, kinds), n)| (labels([("peer", &peer), ("kinds", &kinds)]), n as f64)),
    );
    e.counter(
        "watches",
        "Watch streams accepted since the server started",
        stats.watches(),
    );
    e.counter_family(
        "watch_starts",
        "Watch streams by how they started: resumed from a revision, or the full state",
        [
            (labels([("mode", "resumed")]), stats.resumed_watches()),
            (labels([("mode", "full")]), stats.full_watches()),
        ],
    );
    e.counter(
        "watchers_lagged",
        "Watch streams cut off because they fell too far behind",
        stats.lagged(),
    );
    e.counter(
        "watchers_stalled",
        "Watch streams whose connection was closed because the peer took no frames for \
         the stall limit",
        stats.stalled(),
    );
    e.counter("frames_sent", "Watch frames sent", stats.frames_sent());
    e.counter(
        "events_sent",
        "Events in the watch frames sent",
        stats.events_sent(),
    );
    e.counter(
        "event_bytes_sent",
        "Bytes of the events in the watch frames sent",
        stats.bytes_sent(),
    );
    e.counter_family(
        "requests_refused",
        "gRPC calls refused, by reason",
        [
            (
                labels([("reason", "unauthenticated")]),
                stats.unauthenticated(),
            ),
            (
                labels([("reason", "permission_denied")]),
                stats.permission_denied(),
            ),
            (
                labels([("reason", "invalid_request")]),
                stats.invalid_requests(),
            ),
        ],
    );
    e.counter_family(
        "authorization_refusals",
        "Calls refused because the peer may not see this cluster, per peer",
        stats
            .permission_denied_by_peer()
            .into_iter()
            .map(|(peer, n)| (labels([("peer", &peer)]), n)),
    );
    e.counter_family(
        "tls_handshakes",
        "TLS handshakes on the gRPC port, by outcome (refused: no certificate, an untrusted \
         or expired one, or a client that went silent)",
        [
            (
                labels([("outcome", "accepted")]),
                grpc.handshakes.accepted(),
            ),
            (labels([("outcome", "refused")]), grpc.handshakes.refused()),
        ],
    );
    e.counter_family(
        "tls_refusals",
        "Connections to the gRPC port refused, by reason: closed before their handshake \
         over a limit (source_busy, full), or refused in it (closed, timed_out, \
         no_certificate, expired_certificate, bad_certificate, protocol)",
        RefusalReason::ALL.into_iter().map(|r| {
            (
                labels([("reason", r.as_str())]),
                grpc.handshakes.refused_for(r),
            )
        }),
    );
    e.gauge(
        "cache_revision",
        "The store revision the watch cache holds",
        cache.revision as f64,
    );
    e.gauge(
        "cache_synced",
        "1 once the watch cache holds the store's full state",
        flag(cache.synced),
    );
    e.gauge_family(
        "cache_resources",
        "Resources the watch cache holds, per kind",
        cache
            .entries
            .iter()
            .map(|(kind, n)| (labels([("kind", kind.as_str())]), *n as f64)),
    );
    e.gauge(
        "cache_log_events",
        "Events in the watch cache's resume log",
        cache.log_events as f64,
    );
    let expiry = inspect(std::slice::from_ref(&grpc.cert))
        .ok()
        .and_then(|certs| {
            certs
                .first()
                .and_then(|c| rfc3339_unix_seconds(&c.not_after))
        });
    e.gauge_family(
        "certificate_expiry_timestamp_seconds",
        "When the gRPC server certificate expires (Unix time); no sample if it cannot be read",
        expiry.map(|t| (labels([("certificate", "server")]), t)),
    );
}
