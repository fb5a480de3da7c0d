//! `GET /v1/status` on the apiserver's health port, which `fleetmesh status --apiserver`
//! prints: every connected watcher, the exporter's state, the canary, and the store's
//! epoch and revision as the watch cache holds them.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::metrics::ApiserverMetrics;

/// The apiserver's side of the mesh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiserverStatus {
    pub cluster: String,
    pub export: ExportState,
    /// `None` when the apiserver does not serve gRPC.
    pub serving: Option<ServingState>,
}

/// The exporter's state (it writes every kind in one reconcile).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportState {
    /// The sync canary is written: the store holds the source's full state.
    pub canary_written: bool,
    pub keys: usize,
    pub reconciles: u64,
    pub writes: u64,
    pub deletes: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// The watch cache and its watchers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServingState {
    pub epoch: Option<String>,
    pub revision: u64,
    pub synced: bool,
    /// Resources the cache holds, per kind.
    pub resources: Vec<(String, usize)>,
    pub watchers: Vec<WatcherState>,
}

/// One connected watcher.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatcherState {
    pub peer: String,
    pub kinds: String,
    pub since_unix_ms: u64,
    /// Resumed from a revision, or sent the full state; `None` while it waits for the
    /// cache to sync.
    pub resumed: Option<bool>,
    pub frames: u64,
    pub events: u64,
    /// The revision its last frame brought it to, and how far that is behind the cache.
    pub revision: u64,
    pub behind: u64,
}

impl ApiserverMetrics {
    /// The status document now.
    pub fn status(&self) -> ApiserverStatus {
        let export = self.export.borrow().clone();
        let c = &self.export_counters;
        let serving = self.grpc.as_ref().map(|grpc| {
            let cache = grpc.cache.stats();
            ServingState {
                epoch: cache.epoch.as_deref().map(str::to_string),
                revision: cache.revision,
                synced: cache.synced,
                resources: cache
                    .entries
                    .iter()
                    .map(|(k, n)| (k.as_str().to_string(), *n))
                    .collect(),
                watchers: grpc
                    .stats
                    .watchers()
                    .into_iter()
                    .map(|w| WatcherState {
                        behind: cache.revision.saturating_sub(w.revision),
                        peer: w.peer,
                        kinds: w.kinds,
                        since_unix_ms: w.since_unix_ms,
                        resumed: w.resumed,
                        frames: w.frames,
                        events: w.events,
                        revision: w.revision,
                    })
                    .collect(),
            }
        });
        ApiserverStatus {
            cluster: self.cluster.clone(),
            export: ExportState {
                canary_written: export.synced,
                keys: export.keys,
                reconciles: c.reconciles.load(Ordering::Relaxed),
                writes: export.totals.sum(|t| t.writes),
                deletes: export.totals.sum(|t| t.deletes),
                errors: export.totals.sum(|t| t.errors) + export.totals.other_errors,
                last_error: export.last_error,
            },
            serving,
        }
    }
}

/// The status as `fleetmesh status --apiserver` prints it; times relative to `now_ms`.
pub fn apiserver_status_table(s: &ApiserverStatus, now_ms: u64) -> String {
    let mut out = String::new();
    let e = &s.export;
    let _ = writeln!(
        out,
        "apiserver of {}: canary {}, {} keys exported; {} reconciles, {} writes, {} deletes, {} errors",
        s.cluster,
        if e.canary_written {
            "written"
        } else {
            "not written"
        },
        e.keys,
        e.reconciles,
        e.writes,
        e.deletes,
        e.errors
    );
    if let Some(err) = &e.last_error {
        let _ = writeln!(out, "last export error: {err}");
    }
    let Some(serving) = &s.serving else {
        out.push_str("not serving gRPC\n");
        return out;
    };
    let _ = writeln!(
        out,
        "store epoch {}, revision {}, cache {}",
        serving.epoch.as_deref().unwrap_or("-"),
        serving.revision,
        if serving.synced {
            "synced"
        } else {
            "not synced"
        }
    );
    let _ = writeln!(
        out,
        "{:<16} {:<28} {:>9} {:<8} {:>8} {:>9} {:>7}",
        "PEER", "KINDS", "SINCE", "START", "FRAMES", "EVENTS", "BEHIND"
    );
    for w in &serving.watchers {
        let since = format!("{}s", now_ms.saturating_sub(w.since_unix_ms) / 1000);
        let start = match w.resumed {
            Some(true) => "resumed",
            Some(false) => "full",
            None => "waiting",
        };
        let _ = writeln!(
            out,
            "{:<16} {:<28} {:>9} {:<8} {:>8} {:>9} {:>7}",
            w.peer, w.kinds, since, start, w.frames, w.events, w.behind
        );
    }
    if serving.watchers.is_empty() {
        out.push_str("(no watcher connected)\n");
    }
    out
}
