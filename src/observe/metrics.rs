//! `/metrics`: Prometheus text exposition (format 0.0.4), written by hand — a dozen
//! gauges and counters do not need a metrics crate. Names follow Cilium's agent metrics
//! (`cilium_clustermesh_remote_cluster_*{target_cluster}`, reference §4.5) under the
//! `fleetmesh_agent_` prefix.

use std::fmt::Write;

use crate::mesh::PeerStatus;

/// The content type Prometheus expects for the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const PREFIX: &str = "fleetmesh_agent_";

/// One per-link metric: name after the prefix, type, help, and how to read it.
struct PerLink {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&PeerStatus) -> f64,
}

const PER_LINK: &[PerLink] = &[
    PerLink {
        name: "remote_cluster_ready",
        kind: "gauge",
        help: "1 if the link is connected, its config validated and every kind synced.",
        value: |s| flag(s.ready),
    },
    PerLink {
        name: "remote_cluster_connected",
        kind: "gauge",
        help: "1 if the link to the cluster's apiserver is up.",
        value: |s| flag(s.connected),
    },
    PerLink {
        name: "remote_cluster_failures_total",
        kind: "counter",
        help: "Failed connection attempts and broken sessions.",
        value: |s| s.failures as f64,
    },
    PerLink {
        name: "remote_cluster_reconnects_total",
        kind: "counter",
        help: "Times the link connected again after its first connection.",
        value: |s| s.reconnects as f64,
    },
    PerLink {
        name: "remote_cluster_refused_events_total",
        kind: "counter",
        help: "Events from the cluster refused because they failed validation.",
        value: |s| s.refused_events as f64,
    },
    PerLink {
        name: "remote_cluster_last_failure_timestamp_seconds",
        kind: "gauge",
        help: "Unix time of the link's last failure, 0 if it never failed.",
        value: |s| {
            s.last_failure
                .as_ref()
                .map_or(0.0, |f| f.at_unix_ms as f64 / 1000.0)
        },
    },
    PerLink {
        name: "remote_cluster_nodes",
        kind: "gauge",
        help: "Nodes held from the cluster.",
        value: |s| s.counts.nodes as f64,
    },
    PerLink {
        name: "remote_cluster_endpoints",
        kind: "gauge",
        help: "Ipcache entries held from the cluster.",
        value: |s| s.counts.endpoints as f64,
    },
    PerLink {
        name: "remote_cluster_identities",
        kind: "gauge",
        help: "Identities held from the cluster.",
        value: |s| s.counts.identities as f64,
    },
    PerLink {
        name: "remote_cluster_services",
        kind: "gauge",
        help: "Services held from the cluster, shared or not.",
        value: |s| s.counts.services as f64,
    },
    PerLink {
        name: "remote_cluster_service_exports",
        kind: "gauge",
        help: "MCS-API service exports held from the cluster.",
        value: |s| s.counts.service_exports as f64,
    },
];

/// What the exposition shows besides the links.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentGauges {
    /// `/readyz` answers 200.
    pub ready: bool,
    /// Global services in the merged view.
    pub global_services: usize,
    /// Prefixes claimed by more than one cluster.
    pub ip_conflicts: usize,
}

/// The exposition text for these links (sorted by cluster) and gauges.
pub fn render(peers: &[PeerStatus], agent: AgentGauges) -> String {
    let mut out = String::new();
    let remote = peers.iter().filter(|p| !p.local).count();
    single(
        &mut out,
        "remote_clusters",
        "Peers configured in the remotes directory, the link to the local apiserver excluded.",
        remote as f64,
    );
    single(
        &mut out,
        "ready",
        "1 once every link has been ready (see /readyz).",
        flag(agent.ready),
    );
    single(
        &mut out,
        "global_services",
        "Global services in the merged view.",
        agent.global_services as f64,
    );
    single(
        &mut out,
        "ipcache_conflicts",
        "Prefixes claimed by more than one cluster.",
        agent.ip_conflicts as f64,
    );
    for metric in PER_LINK {
        header(&mut out, metric.name, metric.kind, metric.help);
        for peer in peers {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "{PREFIX}{}{{target_cluster=\"{}\"}} {}",
                metric.name,
                escape_label(&peer.cluster),
                (metric.value)(peer)
            );
        }
    }
    out
}

fn single(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{PREFIX}{name} {value}");
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// A label value as the text format requires: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{Counts, Failure};

    fn mk_peer(cluster: &str, local: bool) -> PeerStatus {
        PeerStatus {
            cluster: cluster.into(),
            local,
            ..PeerStatus::default()
        }
    }

    #[test]
    fn every_link_gets_every_metric_with_its_cluster_label() {
        let mut c2 = mk_peer("c2", false);
        c2.connected = true;
        c2.ready = true;
        c2.reconnects = 3;
        c2.failures = 4;
        c2.refused_events = 2;
        c2.counts = Counts {
            nodes: 1,
            endpoints: 20,
            identities: 5,
            services: 7,
            service_exports: 2,
        };
        c2.last_failure = Some(Failure {
            reason: "x".into(),
            at_unix_ms: 1_500,
        });
        let peers = [mk_peer("c1", true), c2, mk_peer("c3", false)];
        let text = render(
            &peers,
            AgentGauges {
                ready: true,
                global_services: 6,
                ip_conflicts: 1,
            },
        );
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "fleetmesh_agent_remote_clusters 2",
            "fleetmesh_agent_ready 1",
            "fleetmesh_agent_global_services 6",
            "fleetmesh_agent_ipcache_conflicts 1",
            "# TYPE fleetmesh_agent_remote_cluster_reconnects_total counter",
            "fleetmesh_agent_remote_cluster_ready{target_cluster=\"c2\"} 1",
            "fleetmesh_agent_remote_cluster_ready{target_cluster=\"c3\"} 0",
            "fleetmesh_agent_remote_cluster_connected{target_cluster=\"c1\"} 0",
            "fleetmesh_agent_remote_cluster_failures_total{target_cluster=\"c2\"} 4",
            "fleetmesh_agent_remote_cluster_reconnects_total{target_cluster=\"c2\"} 3",
            "fleetmesh_agent_remote_cluster_refused_events_total{target_cluster=\"c2\"} 2",
            "fleetmesh_agent_remote_cluster_last_failure_timestamp_seconds{target_cluster=\"c2\"} 1.5",
            "fleetmesh_agent_remote_cluster_nodes{target_cluster=\"c2\"} 1",
            "fleetmesh_agent_remote_cluster_endpoints{target_cluster=\"c2\"} 20",
            "fleetmesh_agent_remote_cluster_identities{target_cluster=\"c2\"} 5",
            "fleetmesh_agent_remote_cluster_services{target_cluster=\"c2\"} 7",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
        }
        // Every sample line belongs to a metric announced by a TYPE line.
        for line in lines.iter().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} has no TYPE"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
