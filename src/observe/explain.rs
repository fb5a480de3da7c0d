//! `explain ip`: who holds an IP, who else claims it and how that was resolved, and
//! where its identity's labels come from.
//!
//! `explain service`: for every backend of every cluster, whether it is selected now and
//! why or why not, from the service's [`ServiceView`] (the selection itself is
//! [`crate::mesh`]'s; this only tells it), the view's stale times and the links'
//! status.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::mesh::{IpcacheEntryView, MeshView, PeerStatus, SelectionReason, ServiceView};
use crate::model::Affinity;

/// Why a backend is or is not selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Selected by the service's affinity class (see the explanation's `chosen`).
    Selected,
    /// Selected though not ready: no candidate is ready, it is serving.
    SelectedServingFallback,
    /// Ready, but the affinity chose another class (local ready over remote, say).
    OtherClassChosen,
    /// Not ready and not serving.
    NotReady,
    /// Terminating but still serving: used only when nothing is ready anywhere.
    ServingNotNeeded,
    /// Its (remote) cluster does not share the service (`shared: false`). A local
    /// `shared: false` service still uses its own backends: only peers do not get them.
    NotShared,
    /// Its cluster is unreachable past the grace period: its backends are withdrawn.
    StaleWithdrawn,
}

/// One backend and its verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendExplanation {
    pub cluster: String,
    pub ip: IpAddr,
    pub selected: bool,
    pub verdict: Verdict,
    /// The verdict in a sentence.
    pub why: String,
}

/// What concerns a whole cluster of the service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNote {
    pub cluster: String,
    pub shared: bool,
    pub stale: bool,
    pub withdrawn: bool,
    /// When the cluster became (or becomes) stale, Unix ms, if its link is down.
    pub stale_since_unix_ms: Option<u64>,
    /// Stale but not withdrawn: the isolation guard (most peers unreachable) or the
    /// service's last backends keep it.
    pub kept_by_guard: bool,
    /// Events from the cluster its link refused, and the last refusal.
    pub refused_events: u64,
    pub last_refusal: Option<String>,
}

/// `explain service NS/NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExplanation {
    pub service: String,
    pub local_global: bool,
    pub affinity: Affinity,
    /// The class the selection chose.
    pub chosen: SelectionReason,
    pub clusters: Vec<ClusterNote>,
    pub backends: Vec<BackendExplanation>,
}

/// Explains `view`. `stale_since_unix_ms` names, per cluster, when it became stale;
/// `peers` are the links' statuses (for refused data).
pub fn explain_service(
    view: &ServiceView,
    stale_since_unix_ms: &BTreeMap<String, u64>,
    peers: &[PeerStatus],
) -> ServiceExplanation {
    let chosen = view.reason;
    let mut clusters = Vec::new();
    let mut backends = Vec::new();
    for c in &view.clusters {
        let name = c.cluster.to_string();
        let link = peers.iter().find(|p| p.cluster == name);
        let refused_events = link.map_or(0, |p| p.refused_events);
        let last_refusal = link
            .and_then(|p| p.last_failure.as_ref())
            .filter(|f| f.reason.starts_with("refused"))
            .map(|f| f.reason.clone());
        let since = stale_since_unix_ms.get(&name).copied();
        clusters.push(ClusterNote {
            cluster: name.clone(),
            shared: c.shared,
            stale: c.stale,
            withdrawn: c.withdrawn,
            stale_since_unix_ms: since,
            kept_by_guard: c.stale && !c.withdrawn,
            refused_events,
            last_refusal,
        });
        for b in &c.backends {
            let selected = view
                .selected
                .iter()
                .any(|s| s.cluster == c.cluster && s.ip == b.ip);
            let cond = b.backend.conditions;
            let (verdict, why) = if selected && !cond.ready {
                (
                    Verdict::SelectedServingFallback,
                    format!("selected: {chosen} (serving, not ready)"),
                )
            } else if selected {
                (Verdict::Selected, format!("selected: {chosen}"))
            } else if !c.shared && !c.local {
                (
                    Verdict::NotShared,
                    format!("{name} does not share the service (shared: false)"),
                )
            } else if c.withdrawn {
                let when = since.map_or_else(String::new, |t| format!(" since {}", rfc3339(t)));
                (
                    Verdict::StaleWithdrawn,
                    format!("{name} is stale{when}: its backends are withdrawn"),
                )
            } else if cond.ready {
                (
                    Verdict::OtherClassChosen,
                    format!(
                        "ready, but affinity {} chose: {chosen}",
                        affinity_name(view.affinity)
                    ),
                )
            } else if cond.serving {
                (
                    Verdict::ServingNotNeeded,
                    "terminating but serving: used only when no backend is ready".to_string(),
                )
            } else {
                let terminating = if cond.terminating {
                    " (terminating)"
                } else {
                    ""
                };
                (
                    Verdict::NotReady,
                    format!("not ready and not serving{terminating}"),
                )
            };
            backends.push(BackendExplanation {
                cluster: name.clone(),
                ip: b.ip,
                selected,
                verdict,
                why,
            });
        }
    }
    ServiceExplanation {
        service: view.name.to_string(),
        local_global: view.local_global,
        affinity: view.affinity,
        chosen,
        clusters,
        backends,
    }
}

fn affinity_name(affinity: Affinity) -> String {
    serde_json::to_value(affinity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn rfc3339(unix_ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The explanation as the CLI prints it.
pub fn explain_table(e: &ServiceExplanation) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: affinity {}, chosen: {}{}",
        e.service,
        affinity_name(e.affinity),
        e.chosen,
        if e.local_global {
            ""
        } else {
            " (not global here: affinity none)"
        }
    );
    for c in &e.clusters {
        let mut notes = Vec::new();
        if !c.shared {
            notes.push("shared: false".to_string());
        }
        if c.withdrawn {
            notes.push("stale, withdrawn".to_string());
        } else if c.kept_by_guard {
            notes.push("stale, kept (isolation guard or last backends)".to_string());
        }
        if let Some(t) = c.stale_since_unix_ms {
            notes.push(format!("stale from {}", rfc3339(t)));
        }
        if c.refused_events > 0 {
            notes.push(format!("{} refused events", c.refused_events));
        }
        let _ = writeln!(out, "  cluster {}: {}", c.cluster, notes.join(", "));
        for b in e.backends.iter().filter(|b| b.cluster == c.cluster) {
            let mark = if b.selected { "+" } else { "-" };
            let _ = writeln!(out, "    {mark} {:<16} {}", b.ip, b.why);
        }
        if let Some(r) = &c.last_refusal {
            let _ = writeln!(out, "    last refusal: {r}");
        }
    }
    out
}

/// `explain ip IP`: who holds the IP, who else claims it and how that was resolved, and
/// where the identity's labels come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpExplanation {
    pub ip: IpAddr,
    /// The entry look-ups answer with.
    pub holder: IpcacheEntryView,
    /// Every cluster claiming the holder's prefix, in the order they win; one entry when
    /// there is no conflict.
    pub claimants: Vec<String>,
    /// How a conflict was resolved, if there is one.
    pub resolution: Option<String>,
    /// The cluster whose identity table gave the labels (for a reserved identity, the
    /// first cluster holding it: the local one first).
    pub labels_from: Option<String>,
}

/// Explains `ip` in `view`; `None` if no cluster holds it.
pub fn explain_ip(view: &MeshView, ip: IpAddr) -> Option<IpExplanation> {
    let holder = view.lookup(ip)?;
    let claimants: Vec<String> = view
        .conflicts()
        .into_iter()
        .find(|c| c.prefix == holder.prefix)
        .map_or_else(
            || vec![holder.cluster.to_string()],
            |c| c.clusters.iter().map(ToString::to_string).collect(),
        );
    let resolution = (claimants.len() > 1).then(|| {
        let local = view.local().name.to_string();
        if claimants.contains(&local) {
            format!(
                "claimed by {}: the local cluster's entry wins",
                claimants.join(", ")
            )
        } else {
            format!(
                "claimed by {}: no local claim, the lowest cluster name wins",
                claimants.join(", ")
            )
        }
    });
    let labels_from = holder
        .labels
        .as_ref()
        .and_then(|_| view.identity(holder.identity))
        .map(|(cluster, _)| cluster.to_string());
    Some(IpExplanation {
        ip,
        holder,
        claimants,
        resolution,
        labels_from,
    })
}

/// The IP explanation as the CLI prints it.
pub fn explain_ip_table(e: &IpExplanation) -> String {
    let h = &e.holder;
    let mut out = format!(
        "{}: held by {} as {} (identity {})\n",
        e.ip, h.cluster, h.prefix, h.identity
    );
    if let (Some(ns), Some(pod)) = (&h.namespace, &h.pod) {
        out.push_str(&format!("  pod {ns}/{pod}\n"));
    }
    match &e.resolution {
        Some(r) => out.push_str(&format!("  conflict: {r}\n")),
        None => out.push_str("  no other cluster claims it\n"),
    }
    match (&h.labels, &e.labels_from) {
        (Some(labels), Some(from)) => {
            let labels: Vec<String> = labels.iter().map(ToString::to_string).collect();
            out.push_str(&format!(
                "  labels (from {from}'s identities): {}\n",
                labels.join(" ")
            ));
        }
        _ => out.push_str("  identity unknown: no labels\n"),
    }
    out
}
