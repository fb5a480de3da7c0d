//! Tables for people: what `fleetmesh status`, `services` and `lookup` print without
//! `-o json`. Pure functions of the API's documents and the current time, so what a user
//! sees is unit tested.

use std::fmt::Write;
use std::net::IpAddr;

use crate::mesh::{IpcacheEntryView, PeerStatus, ServiceView};
use crate::model::Kind;

use super::report::StatusReport;

/// Selected backend IPs listed per cluster before the rest are only counted.
const MAX_LISTED_BACKENDS: usize = 3;

/// `fleetmesh status`: a summary line, then one row per link, then the Cilium cache keys
/// per peer (with the removed peers still draining).
pub fn status_table(report: &StatusReport, now_unix_ms: u64) -> String {
    let links: Vec<&PeerStatus> = report.peers.iter().filter(|p| p.is_link()).collect();
    let ready = links.iter().filter(|p| p.ready).count();
    let mut out = format!(
        "cluster {} (id {}): {}, {}/{} links ready\n",
        report.cluster,
        report.cluster_id,
        if report.ready { "ready" } else { "NOT READY" },
        ready,
        links.len()
    );
    for why in &report.not_ready {
        let _ = writeln!(out, "  waiting for {why}");
    }
    if links.is_empty() {
        out.push_str("no links configured: the remotes directory is empty\n");
        out.push_str(&cache_section(report));
        return out;
    }
    out.push('\n');
    let headers = [
        "CLUSTER",
        "READY",
        "CONNECTED",
        "SYNCED",
        "NODES",
        "ENDPOINTS",
        "IDENTITIES",
        "SERVICES",
        "EXPORTS",
        "LAST EVENT",
        "HEARTBEAT",
        "RECONNECTS",
        "CERTS PEER/OWN",
        "LAST FAILURE",
    ];
    let rows = links
        .iter()
        .map(|p| {
            vec![
                link_name(p),
                yes_no(p.ready),
                yes_no(p.connected),
                synced_summary(p),
                p.counts.nodes.to_string(),
                p.counts.endpoints.to_string(),
                p.counts.identities.to_string(),
                p.counts.services.to_string(),
                p.counts.service_exports.to_string(),
                last_event(p, now_unix_ms),
                heartbeat(p, now_unix_ms),
                p.reconnects.to_string(),
                cert_expiries(p, now_unix_ms),
                last_failure(p, now_unix_ms),
            ]
        })
        .collect();
    out.push_str(&table(&headers, rows));
    let warnings: Vec<String> = links
        .iter()
        .flat_map(|p| p.credential_warnings(now_unix_ms))
        .collect();
    if !warnings.is_empty() {
        out.push('\n');
        for warning in warnings {
            let _ = writeln!(out, "WARNING: {warning}");
        }
    }
    out.push_str(&cache_section(report));
    out
}

/// The Cilium cache keys the agent serves (KVStoreMesh's part), per peer; empty when it
/// serves none.
fn cache_section(report: &StatusReport) -> String {
    let cached: Vec<(&PeerStatus, &crate::mesh::CacheStatus)> = report
        .peers
        .iter()
        .filter_map(|p| p.cache.as_ref().map(|c| (p, c)))
        .collect();
    let Some((_, first)) = cached.first() else {
        return String::new();
    };
    let mut out = format!(
        "\nCilium cache keys (etcd API): {} etcd client(s) connected\n",
        first.etcd_clients
    );
    let headers = [
        "CLUSTER",
        "CACHE KEYS",
        "CANARIES",
        "CONFIG",
        "WITHDRAWN SERVICES",
    ];
    let rows = cached
        .iter()
        .map(|(p, c)| {
            vec![
                if c.draining {
                    format!("{} (removed)", p.cluster)
                } else {
                    p.cluster.clone()
                },
                c.keys.to_string(),
                c.canaries.to_string(),
                if c.config { "served" } else { "deleted" }.to_string(),
                c.withdrawn_services.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(&headers, rows));
    out
}

/// Days left on the peer's and on our own certificate of a link: `364d/30d`; `-` when
/// unknown (never connected), `expired` when past.
fn cert_expiries(p: &PeerStatus, now_unix_ms: u64) -> String {
    let left = |not_after: &Option<String>| {
        let Some(t) = not_after.as_deref().and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        }) else {
            return "-".to_string();
        };
        let ms_left = i128::from(t.unix_timestamp()) * 1000 - i128::from(now_unix_ms);
        if ms_left <= 0 {
            "expired".to_string()
        } else {
            format!("{}d", ms_left / 86_400_000)
        }
    };
    format!(
        "{}/{}",
        left(&p.peer_cert_not_after),
        left(&p.own_cert_not_after)
    )
}

/// `fleetmesh services`: per service one row per contributing cluster, with what is
/// selected from it and why.
pub fn services_table(services: &[ServiceView]) -> String {
    if services.is_empty() {
        return "no global services\n".to_string();
    }
    let headers = [
        "SERVICE",
        "AFFINITY",
        "CLUSTER",
        "READY",
        "STATE",
        "SELECTED",
        "SELECTION",
    ];
    let mut rows = Vec::new();
    for svc in services {
        for (i, c) in svc.clusters.iter().enumerate() {
            let ready = c
                .backends
                .iter()
                .filter(|b| b.backend.conditions.ready)
                .count();
            let selected: Vec<IpAddr> = svc
                .selected
                .iter()
                .filter(|s| s.cluster == c.cluster)
                .map(|s| s.ip)
                .collect();
            let first = i == 0;
            rows.push(vec![
                if first {
                    svc.name.to_string()
                } else {
                    String::new()
                },
                if first { affinity(svc) } else { String::new() },
                if c.local {
                    format!("{} (local)", c.cluster)
                } else {
                    c.cluster.to_string()
                },
                format!("{ready}/{}", c.backends.len()),
                cluster_state(c.stale, c.withdrawn, c.shared),
                list_ips(&selected),
                if first {
                    svc.reason.describe().to_string()
                } else {
                    String::new()
                },
            ]);
        }
    }
    table(&headers, rows)
}

/// `fleetmesh lookup`: who owns an IP, one field per line.
pub fn lookup_table(ip: IpAddr, entry: &IpcacheEntryView) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_string());
    let mut fields = vec![
        ("IP", ip.to_string()),
        ("PREFIX", entry.prefix.to_string()),
        ("CLUSTER", entry.cluster.to_string()),
        ("NAMESPACE", dash(&entry.namespace)),
        ("POD", dash(&entry.pod)),
        ("SERVICE ACCOUNT", dash(&entry.service_account)),
        ("NODE IP", dash(&entry.host_ip.map(|i| i.to_string()))),
        ("IDENTITY", entry.identity.to_string()),
    ];
    match &entry.labels {
        None => fields.push(("LABELS", "(identity not known to this agent)".to_string())),
        Some(labels) if labels.is_empty() => fields.push(("LABELS", "-".to_string())),
        Some(labels) => {
            for (i, l) in labels.iter().enumerate() {
                fields.push((if i == 0 { "LABELS" } else { "" }, l.to_string()));
            }
        }
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    fields
        .into_iter()
        .map(|(k, v)| format!("{k:width$}  {v}\n"))
        .collect()
}

/// A link's cluster name, marked when it is the link to the local apiserver.
pub(super) fn link_name(p: &PeerStatus) -> String {
    if p.local {
        format!("{} (local)", p.cluster)
    } else {
        p.cluster.clone()
    }
}

/// The affinity selection uses: the local service's, or `none` while this cluster has
/// no such global service.
pub(super) fn affinity(svc: &ServiceView) -> String {
    if svc.local_global {
        svc.affinity.as_str().to_string()
    } else {
        "none (not local)".to_string()
    }
}

/// `all`, `none`, or the synced kinds.
pub(super) fn synced_summary(p: &PeerStatus) -> String {
    let synced: Vec<&str> = Kind::ALL
        .into_iter()
        .filter(|k| p.synced.get(*k))
        .map(Kind::as_str)
        .collect();
    match synced.len() {
        0 => "none".to_string(),
        n if n == Kind::ALL.len() => "all".to_string(),
        _ => synced.join(","),
    }
}

/// `never`, or how long ago and why.
/// How long ago the link last delivered a change: a quiet peer and a stuck link look
/// alike here, which is what the LAST FAILURE and CONNECTED columns tell apart.
pub(super) fn last_event(p: &PeerStatus, now_unix_ms: u64) -> String {
    p.last_event_unix_ms.map_or_else(
        || "never".to_string(),
        |at| format!("{} ago", age(now_unix_ms.saturating_sub(at))),
    )
}

/// How long ago the peer's apiserver last wrote its store's heartbeat; `-` for a peer
/// that does not tell it.
fn heartbeat(p: &PeerStatus, now_unix_ms: u64) -> String {
    p.heartbeat_unix_ms.map_or_else(
        || "-".to_string(),
        |at| format!("{} ago", age(now_unix_ms.saturating_sub(at))),
    )
}

pub(super) fn last_failure(p: &PeerStatus, now_unix_ms: u64) -> String {
    match &p.last_failure {
        None => "never".to_string(),
        Some(f) => format!(
            "{} ago: {}",
            age(now_unix_ms.saturating_sub(f.at_unix_ms)),
            f.reason
        ),
    }
}

/// Why a contributing cluster's backends are or are not in selection.
pub(super) fn cluster_state(stale: bool, withdrawn: bool, shared: bool) -> String {
    match (stale, withdrawn, shared) {
        (_, true, _) => "withdrawn (stale)",
        (true, false, _) => "stale, kept",
        (false, false, false) => "not shared",
        (false, false, true) => "ok",
    }
    .to_string()
}

/// A duration in milliseconds as kubectl shows ages: `45s`, `5m12s`, `3h4m`, `2d3h`.
pub(super) fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

fn list_ips(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "-".to_string();
    }
    let listed: Vec<String> = ips
        .iter()
        .take(MAX_LISTED_BACKENDS)
        .map(ToString::to_string)
        .collect();
    let more = ips.len().saturating_sub(MAX_LISTED_BACKENDS);
    if more > 0 {
        format!("{} (+{more})", listed.join(","))
    } else {
        listed.join(",")
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// Columns aligned on the widest cell, two spaces apart; the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(ToString::to_string).collect();
    std::iter::once(header)
        .chain(rows)
        .map(|row| {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i == last {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:w$}  ");
                }
            }
            line.truncate(line.trim_end().len());
            line.push('\n');
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{
        BackendEntry, ClusterBackends, Counts, Failure, SelectedBackend, SelectionReason,
        SyncedKinds,
    };
    use crate::model::{
        Affinity, Backend, BackendConditions, ClusterName, IdentityId, IpPrefix, Label, Labels,
    };

    fn mk_name(s: &str) -> ClusterName {
        ClusterName::new(s).unwrap()
    }

    fn mk_report() -> StatusReport {
        let local = PeerStatus {
            cluster: "c1".into(),
            local: true,
            connected: true,
            ready: true,
            synced: SyncedKinds {
                nodes: true,
                services: true,
                identities: true,
                endpoints: true,
                service_exports: true,
            },
            counts: Counts {
                nodes: 3,
                endpoints: 120,
                identities: 8,
                services: 10,
                service_exports: 2,
            },
            last_event_unix_ms: Some(73_000),
            heartbeat_unix_ms: Some(66_000),
            ..PeerStatus::default()
        };
        let c2 = PeerStatus {
            cluster: "c2".into(),
            synced: SyncedKinds {
                nodes: true,
                services: true,
                ..SyncedKinds::default()
            },
            reconnects: 4,
            // Ten days left on the peer's certificate: a warning.
            peer_cert_not_after: Some("1970-01-11T00:00:01Z".into()),
            own_cert_not_after: Some("1971-01-01T00:00:00Z".into()),
            last_failure: Some(Failure {
                reason: "cannot connect to 10.0.0.2:9891: connection refused".into(),
                at_unix_ms: 1_000,
            }),
            ..PeerStatus::default()
        };
        StatusReport {
            cluster: mk_name("c1"),
            cluster_id: 1,
            peers: vec![local, c2],
            ready: false,
            not_ready: vec!["c2: connecting".into()],
        }
    }

    #[test]
    fn status_table_shows_every_link_with_aligned_columns() {
        let text = status_table(&mk_report(), 1_000 + 75_000);
        let expected = "\
cluster c1 (id 1): NOT READY, 1/2 links ready
  waiting for c2: connecting

CLUSTER     READY  CONNECTED  SYNCED          NODES  ENDPOINTS  IDENTITIES  SERVICES  EXPORTS  LAST EVENT  HEARTBEAT  RECONNECTS  CERTS PEER/OWN  LAST FAILURE
c1 (local)  yes    yes        all             3      120        8           10        2        3s ago      10s ago    0           -/-             never
c2          no     no         nodes,services  0      0          0           0         0        never       -          4           9d/364d         1m15s ago: cannot connect to 10.0.0.2:9891: connection refused

WARNING: c2's server certificate expires in 9 days (1970-01-11T00:00:01Z): renew it with `fleetmesh certs rotate`
";
        assert_eq!(text, expected);
    }

    #[test]
    fn status_table_shows_the_cache_keys_held_per_peer_and_the_etcd_clients() {
        let mut report = mk_report();
        assert!(!status_table(&report, 0).contains("Cilium cache keys"));
        report.peers[0].cache = Some(crate::mesh::CacheStatus {
            keys: 1234,
            canaries: 4,
            config: true,
            withdrawn_services: 1,
            etcd_clients: 7,
            draining: false,
        });
        let text = status_table(&report, 0);
        assert!(
            text.contains("Cilium cache keys (etcd API): 7 etcd client(s) connected"),
            "{text}"
        );
        let row = text.lines().last().unwrap();
        assert!(row.contains("1234") && row.contains("served"), "{text}");
    }

    #[test]
    fn a_removed_peer_still_draining_is_no_link_but_its_cache_keys_are_shown() {
        let mut report = mk_report();
        let links = report.peers.len();
        let ready = report.peers.iter().filter(|p| p.ready).count();
        report.peers.push(PeerStatus {
            cluster: "c9".into(),
            cache: Some(crate::mesh::CacheStatus {
                keys: 42,
                canaries: 4,
                config: false,
                withdrawn_services: 0,
                etcd_clients: 1,
                draining: true,
            }),
            ..PeerStatus::default()
        });
        let text = status_table(&report, 0);
        assert!(
            text.contains(&format!("{ready}/{links} links ready")),
            "{text}"
        );
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("c9")).collect();
        let row: Vec<&str> = rows.iter().flat_map(|r| r.split_whitespace()).collect();
        assert_eq!(
            row,
            ["c9", "(removed)", "42", "4", "deleted", "0"],
            "{text}"
        );
    }

    #[test]
    fn status_table_of_an_agent_without_links_says_so() {
        let report = StatusReport {
            peers: Vec::new(),
            ready: true,
            not_ready: Vec::new(),
            ..mk_report()
        };
        assert_eq!(
            status_table(&report, 0),
            "cluster c1 (id 1): ready, 0/0 links ready\nno links configured: the remotes directory is empty\n"
        );
    }

    fn mk_backend(ip: &str, ready: bool) -> BackendEntry {
        BackendEntry {
            ip: ip.parse().unwrap(),
            backend: Backend {
                conditions: BackendConditions {
                    ready,
                    serving: ready,
                    terminating: false,
                },
                ..Backend::default()
            },
        }
    }

    fn mk_selected(cluster: &str, ip: &str) -> SelectedBackend {
        SelectedBackend {
            cluster: mk_name(cluster),
            ip: ip.parse().unwrap(),
            ports: Default::default(),
            conditions: BackendConditions::READY,
        }
    }

    #[test]
    fn services_table_shows_each_cluster_and_what_is_selected() {
        let svc = ServiceView {
            name: "test/echo".parse().unwrap(),
            local_global: true,
            affinity: Affinity::Local,
            clusters: vec![
                ClusterBackends {
                    cluster: mk_name("c1"),
                    local: true,
                    shared: true,
                    stale: false,
                    withdrawn: false,
                    backends: vec![mk_backend("10.1.0.1", false)],
                },
                ClusterBackends {
                    cluster: mk_name("c2"),
                    local: false,
                    shared: true,
                    stale: false,
                    withdrawn: false,
                    backends: (1..=5)
                        .map(|i| mk_backend(&format!("10.2.0.{i}"), true))
                        .collect(),
                },
            ],
            selected: (1..=5)
                .map(|i| mk_selected("c2", &format!("10.2.0.{i}")))
                .collect(),
            reason: SelectionReason::FailoverToRemote,
        };
        let expected = "\
SERVICE    AFFINITY  CLUSTER     READY  STATE  SELECTED                         SELECTION
test/echo  local     c1 (local)  0/1    ok     -                                failover to remote: no local backend ready
                     c2          5/5    ok     10.2.0.1,10.2.0.2,10.2.0.3 (+2)
";
        assert_eq!(services_table(&[svc]), expected);
        assert_eq!(services_table(&[]), "no global services\n");
    }

    #[test]
    fn lookup_table_lists_owner_and_labels() {
        let labels: Labels = [
            Label::k8s("app", "echo").unwrap(),
            Label::k8s("io.cilium.k8s.policy.cluster", "c2").unwrap(),
        ]
        .into_iter()
        .collect();
        let ip: IpAddr = "10.2.0.7".parse().unwrap();
        let entry = IpcacheEntryView {
            cluster: mk_name("c2"),
            prefix: IpPrefix::host(ip),
            identity: IdentityId::new(131_073).unwrap(),
            host_ip: Some("172.18.0.3".parse().unwrap()),
            namespace: Some("test".into()),
            pod: Some("echo-1".into()),
            service_account: None,
            labels: Some(labels),
        };
        let expected = "\
IP               10.2.0.7
PREFIX           10.2.0.7
CLUSTER          c2
NAMESPACE        test
POD              echo-1
SERVICE ACCOUNT  -
NODE IP          172.18.0.3
IDENTITY         131073
LABELS           k8s:app=echo
                 k8s:io.cilium.k8s.policy.cluster=c2
";
        assert_eq!(lookup_table(ip, &entry), expected);
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(999), "0s");
        assert_eq!(age(45_000), "45s");
        assert_eq!(age(312_000), "5m12s");
        assert_eq!(age(3 * 3_600_000 + 240_000), "3h4m");
        assert_eq!(age(2 * 86_400_000 + 3 * 3_600_000), "2d3h");
    }

    #[test]
    fn cluster_states_explain_selection() {
        assert_eq!(cluster_state(true, true, true), "withdrawn (stale)");
        assert_eq!(cluster_state(true, false, true), "stale, kept");
        assert_eq!(cluster_state(false, false, false), "not shared");
        assert_eq!(cluster_state(false, false, true), "ok");
    }
}
