//! The agent's `/metrics`: every link's status, the merged view's totals, the
//! EndpointSlice writer's work, through [`crate::exposition`].
//! Names follow Cilium's agent metrics (`cilium_clustermesh_remote_cluster_*
//! {target_cluster}`, reference §4.5) under the `fleetmesh_agent_` prefix.

use crate::exposition::{Exposition, HistogramFamily, Labels, flag, labels, rfc3339_unix_seconds};
use crate::mesh::PeerStatus;
use crate::proto::ProtoError;

use super::SliceStats;

const PREFIX: &str = "fleetmesh_agent";

/// A per-link counter: name (without `_total`), help, reading.
type LinkCounter = (&'static str, &'static str, fn(&PeerStatus) -> u64);
/// A per-link gauge.
type LinkGauge = (&'static str, &'static str, fn(&PeerStatus) -> f64);

const LINK_COUNTERS: &[LinkCounter] = &[
    (
        "remote_cluster_failures",
        "Failed connection attempts and broken sessions",
        |s| s.failures,
    ),
    (
        "remote_cluster_reconnects",
        "Times the link connected again after its first connection",
        |s| s.reconnects,
    ),
    (
        "remote_cluster_full_resyncs",
        "Reconnects that had to list the peer's full state again",
        |s| s.full_resyncs,
    ),
    (
        "remote_cluster_resumes",
        "Reconnects that resumed from the last revision received",
        |s| s.resumes,
    ),
];

const LINK_GAUGES: &[LinkGauge] = &[
    (
        "remote_cluster_readiness_status",
        "1 if the link is connected, its config validated and every kind synced",
        |s| flag(s.ready),
    ),
    (
        "remote_cluster_connected",
        "1 if the link to the cluster's apiserver is up",
        |s| flag(s.connected),
    ),
    (
        "remote_cluster_last_failure_ts",
        "Unix time (seconds) of the link's last failure, 0 if it never failed",
        |s| {
            s.last_failure
                .as_ref()
                .map_or(0.0, |f| f.at_unix_ms as f64 / 1000.0)
        },
    ),
    (
        "remote_cluster_revision",
        "The peer store's last revision received",
        |s| s.revision as f64,
    ),
    ("remote_cluster_nodes", "Nodes held from the cluster", |s| {
        s.counts.nodes as f64
    }),
    (
        "remote_cluster_endpoints",
        "Ipcache entries held from the cluster",
        |s| s.counts.endpoints as f64,
    ),
    (
        "remote_cluster_identities",
        "Identities held from the cluster",
        |s| s.counts.identities as f64,
    ),
    (
        "remote_cluster_services",
        "Services held from the cluster, shared or not",
        |s| s.counts.services as f64,
    ),
    (
        "remote_cluster_service_exports",
        "MCS-API service exports held from the cluster",
        |s| s.counts.service_exports as f64,
    ),
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

/// What the agent's metrics read at a scrape.
pub struct Scrape<'a> {
    pub peers: &'a [PeerStatus],
    pub agent: AgentGauges,
    pub now_unix_ms: u64,
    pub slices: Option<&'a SliceStats>,
    /// The links' propagation lag, per target cluster.
    pub lag: Option<&'a HistogramFamily>,
}

/// The exposition text.
pub fn render(scrape: &Scrape<'_>) -> String {
    let mut e = Exposition::new(PREFIX);
    let peers = scrape.peers;
    let remote = peers.iter().filter(|p| !p.local).count();
    e.gauge(
        "remote_clusters",
        "Peers configured in the remotes directory, the link to the local apiserver excluded",
        remote as f64,
    );
    e.gauge(
        "ready",
        "1 once every link has been ready (see /readyz)",
        flag(scrape.agent.ready),
    );
    e.gauge(
        "global_services",
        "Global services in the merged view",
        scrape.agent.global_services as f64,
    );
    e.gauge(
        "ipcache_conflicts",
        "Prefixes claimed by more than one cluster",
        scrape.agent.ip_conflicts as f64,
    );
    let target = |p: &PeerStatus| labels([("target_cluster", &p.cluster)]);
    for (name, help, read) in LINK_COUNTERS {
        e.counter_family(name, help, peers.iter().map(|p| (target(p), read(p))));
    }
    e.counter_family(
        "remote_cluster_refused_events",
        "Events from the cluster refused because they failed validation, by reason",
        peers.iter().flat_map(|p| {
            ProtoError::REASONS.into_iter().map(move |reason| {
                let mut l = target(p);
                l.push(("reason".to_string(), reason.to_string()));
                let n = p.refused_by_reason.get(reason).copied().unwrap_or(0);
                (l, n)
            })
        }),
    );
    for (name, help, read) in LINK_GAUGES {
        e.gauge_family(name, help, peers.iter().map(|p| (target(p), read(p))));
    }
    e.gauge_family(
        "remote_cluster_last_event_age_seconds",
        "Seconds since the link last received a frame from the peer (events or a synced \
         marker); no sample before the first",
        peers.iter().filter_map(|p| {
            let at = p.last_event_unix_ms?;
            let age = scrape.now_unix_ms.saturating_sub(at) as f64 / 1000.0;
            Some((target(p), age))
        }),
    );
    e.gauge_family(
        "remote_cluster_heartbeat_age_seconds",
        "Seconds since the peer's apiserver last wrote its store's heartbeat, as it last told \
         the link (the peer's clock; it grows while the link is down or the store is not \
         written); no sample for peers that do not tell it",
        peers.iter().filter_map(|p| {
            let at = p.heartbeat_unix_ms?;
            let age = scrape.now_unix_ms.saturating_sub(at) as f64 / 1000.0;
            Some((target(p), age))
        }),
    );
    e.gauge_family(
        "remote_cluster_certificate_expiry_timestamp_seconds",
        "When a link's certificates expire (Unix time): the peer's server certificate \
         (end=\"peer\") and this agent's client certificate (end=\"own\"), as of the link's \
         last connection",
        peers.iter().flat_map(|p| {
            [
                ("peer", &p.peer_cert_not_after),
                ("own", &p.own_cert_not_after),
            ]
            .into_iter()
            .filter_map(|(end, not_after)| {
                let t = rfc3339_unix_seconds(not_after.as_deref()?)?;
                let mut l: Labels = target(p);
                l.push(("end".to_string(), end.to_string()));
                Some((l, t))
            })
        }),
    );
    if let Some(lag) = scrape.lag {
        e.kept(
            "remote_cluster_propagation_lag_seconds",
            "From the peer's apiserver taking a change from its store to this agent applying \
             it (across hosts, clock skew included); live changes only",
            lag.clone(),
        );
    }
    if let Some(slices) = scrape.slices {
        e.counter_family(
            "endpoint_slice_writes",
            "EndpointSlices the agent wrote, per operation",
            slices
                .writes()
                .into_iter()
                .map(|(op, n)| (labels([("operation", op)]), n)),
        );
        e.counter_family(
            "endpoint_slice_errors",
            "Failed Kubernetes API calls of the EndpointSlice writer, per call",
            slices
                .errors()
                .into_iter()
                .map(|(call, n)| (labels([("call", call)]), n)),
        );
    }
    e.finish()
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
        c2.full_resyncs = 1;
        c2.refused_events = 2;
        c2.refused_by_reason = [("wrong_cluster".to_string(), 2)].into();
        c2.last_event_unix_ms = Some(8_000);
        c2.heartbeat_unix_ms = Some(6_500);
        c2.peer_cert_not_after = Some("1970-01-02T00:00:00Z".into());
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
        let lag = HistogramFamily::new_with_constructor(crate::exposition::latency_buckets);
        lag.get_or_create(&labels([("target_cluster", "c2")]))
            .observe(0.002);
        let slices = SliceStats::default();
        slices.count_pass(2, 1, 0, 1);
        let text = render(&Scrape {
            peers: &peers,
            agent: AgentGauges {
                ready: true,
                global_services: 6,
                ip_conflicts: 1,
            },
            now_unix_ms: 10_000,
            slices: Some(&slices),
            lag: Some(&lag),
        });
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "fleetmesh_agent_remote_clusters 2.0",
            "fleetmesh_agent_ready 1.0",
            "fleetmesh_agent_global_services 6.0",
            "fleetmesh_agent_ipcache_conflicts 1.0",
            "# TYPE fleetmesh_agent_remote_cluster_reconnects counter",
            "fleetmesh_agent_remote_cluster_readiness_status{target_cluster=\"c2\"} 1.0",
            "fleetmesh_agent_remote_cluster_readiness_status{target_cluster=\"c3\"} 0.0",
            "fleetmesh_agent_remote_cluster_connected{target_cluster=\"c1\"} 0.0",
            "fleetmesh_agent_remote_cluster_failures_total{target_cluster=\"c2\"} 4",
            "fleetmesh_agent_remote_cluster_reconnects_total{target_cluster=\"c2\"} 3",
            "fleetmesh_agent_remote_cluster_full_resyncs_total{target_cluster=\"c2\"} 1",
            "fleetmesh_agent_remote_cluster_refused_events_total{target_cluster=\"c2\",reason=\"wrong_cluster\"} 2",
            "fleetmesh_agent_remote_cluster_refused_events_total{target_cluster=\"c2\",reason=\"undecodable\"} 0",
            "fleetmesh_agent_remote_cluster_last_failure_ts{target_cluster=\"c2\"} 1.5",
            "fleetmesh_agent_remote_cluster_last_event_age_seconds{target_cluster=\"c2\"} 2.0",
            "fleetmesh_agent_remote_cluster_heartbeat_age_seconds{target_cluster=\"c2\"} 3.5",
            "fleetmesh_agent_remote_cluster_certificate_expiry_timestamp_seconds{target_cluster=\"c2\",end=\"peer\"} 86400.0",
            "fleetmesh_agent_remote_cluster_nodes{target_cluster=\"c2\"} 1.0",
            "fleetmesh_agent_remote_cluster_endpoints{target_cluster=\"c2\"} 20.0",
            "fleetmesh_agent_remote_cluster_identities{target_cluster=\"c2\"} 5.0",
            "fleetmesh_agent_remote_cluster_services{target_cluster=\"c2\"} 7.0",
            "fleetmesh_agent_remote_cluster_propagation_lag_seconds_count{target_cluster=\"c2\"} 1",
            "fleetmesh_agent_endpoint_slice_writes_total{operation=\"created\"} 2",
            "fleetmesh_agent_endpoint_slice_errors_total{call=\"write\"} 1",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
        }
        // No age before a link's first frame.
        assert!(!text.contains("last_event_age_seconds{target_cluster=\"c3\"}"));
        // No heartbeat age for a peer that never told one.
        assert!(!text.contains("heartbeat_age_seconds{target_cluster=\"c3\"}"));
    }
}
