//! Both `/metrics` endpoints scraped during a three-cluster run and parsed as OpenMetrics
//! (by `support::openmetrics`): every metric is there with its type, and counters move
//! when their events happen (a refused handshake, a refused peer, a watcher that stops
//! reading and is cut off, an apiserver restart the agent reconnects and resumes after).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use fleetmesh::certs::Ca;
use fleetmesh::grpc::STALL_LIMIT;
use fleetmesh::observe::AgentClient;
use support::mesh::{MeshPki, mk_cluster, mk_name};
use support::openmetrics::MetricType as OpenMetricsType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Every metric family the apiserver exports when it serves gRPC, with its type.
const APISERVER_METRICS: &[(&str, OpenMetricsType)] = &[
    ("export_synced", OpenMetricsType::Gauge),
    ("canaries_written", OpenMetricsType::Gauge),
    ("exported_keys", OpenMetricsType::Gauge),
    ("export_reconciles", OpenMetricsType::Counter),
    ("export_writes", OpenMetricsType::Counter),
    ("export_deletes", OpenMetricsType::Counter),
    ("export_errors", OpenMetricsType::Counter),
    ("identities_allocated", OpenMetricsType::Gauge),
    ("identities_quarantined", OpenMetricsType::Gauge),
    (
        "kvstore_operations_duration_seconds",
        OpenMetricsType::Histogram,
    ),
    ("watchers", OpenMetricsType::Gauge),
    ("watcher_revisions_behind", OpenMetricsType::Gauge),
    ("watches", OpenMetricsType::Counter),
    ("watch_starts", OpenMetricsType::Counter),
    ("watchers_lagged", OpenMetricsType::Counter),
    ("watchers_stalled", OpenMetricsType::Counter),
    ("frames_sent", OpenMetricsType::Counter),
    ("events_sent", OpenMetricsType::Counter),
    ("event_bytes_sent", OpenMetricsType::Counter),
    ("requests_refused", OpenMetricsType::Counter),
    ("authorization_refusals", OpenMetricsType::Counter),
    ("tls_handshakes", OpenMetricsType::Counter),
    ("tls_refusals", OpenMetricsType::Counter),
    ("cache_revision", OpenMetricsType::Gauge),
    ("cache_synced", OpenMetricsType::Gauge),
    ("cache_resources", OpenMetricsType::Gauge),
    ("cache_log_events", OpenMetricsType::Gauge),
    (
        "certificate_expiry_timestamp_seconds",
        OpenMetricsType::Gauge,
    ),
];

/// Every metric family the agent exports (without an EndpointSlice writer).
const AGENT_METRICS: &[(&str, OpenMetricsType)] = &[
    ("remote_clusters", OpenMetricsType::Gauge),
    ("ready", OpenMetricsType::Gauge),
    ("global_services", OpenMetricsType::Gauge),
    ("ipcache_conflicts", OpenMetricsType::Gauge),
    ("remote_cluster_failures", OpenMetricsType::Counter),
    ("remote_cluster_reconnects", OpenMetricsType::Counter),
    ("remote_cluster_full_resyncs", OpenMetricsType::Counter),
    ("remote_cluster_resumes", OpenMetricsType::Counter),
    ("remote_cluster_refused_events", OpenMetricsType::Counter),
    ("remote_cluster_readiness_status", OpenMetricsType::Gauge),
    ("remote_cluster_connected", OpenMetricsType::Gauge),
    ("remote_cluster_last_failure_ts", OpenMetricsType::Gauge),
    ("remote_cluster_revision", OpenMetricsType::Gauge),
    ("remote_cluster_nodes", OpenMetricsType::Gauge),
    ("remote_cluster_endpoints", OpenMetricsType::Gauge),
    ("remote_cluster_identities", OpenMetricsType::Gauge),
    ("remote_cluster_services", OpenMetricsType::Gauge),
    (
        "remote_cluster_last_event_age_seconds",
        OpenMetricsType::Gauge,
    ),
    (
        "remote_cluster_heartbeat_age_seconds",
        OpenMetricsType::Gauge,
    ),
    (
        "remote_cluster_certificate_expiry_timestamp_seconds",
        OpenMetricsType::Gauge,
    ),
    (
        "remote_cluster_propagation_lag_seconds",
        OpenMetricsType::Histogram,
    ),
];

fn service_yaml(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: web\n  annotations:\n    service.cilium.io/global: \"true\"\nspec:\n  ports: [{{name: http, port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: web\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n- addresses: [{ip}]\n  conditions: {{ready: true}}\n"
    )
}

/// `name`'s apiserver config over a manifest directory, gRPC on `grpc_port` (0: any).
fn member_config(
    pki: &MeshPki,
    name: &str,
    id: u32,
    grpc_port: u16,
    allowed: &str,
) -> ApiserverConfig {
    let dir = pki.dir().join(name);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let ip = format!("10.{id}.0.1");
    std::fs::write(manifests.join("web.yaml"), service_yaml("api", &ip)).unwrap();
    // A pod: an endpoint and an identity to export.
    std::fs::write(
        manifests.join("pod.yaml"),
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: web}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: api-0, namespace: web, labels: {{app: api}}}}\n\
             spec: {{nodeName: node-1, containers: [{{name: api, image: api}}]}}\n\
             status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
        ),
    )
    .unwrap();
    let tls = pki.server_files(name);
    let text = format!(
        "cluster: {{name: {name}, id: {id}}}\nstore: {{kind: memory}}\nsource: {{manifests: {manifests:?}}}\n\
         grpc:\n  listen: \"127.0.0.1:{grpc_port}\"\n  tls: {{ca: {:?}, cert: {:?}, key: {:?}}}\n  allowedPeers: {allowed}\n\
         health: {{listen: \"127.0.0.1:0\"}}\n",
        tls.ca, tls.cert, tls.key
    );
    ApiserverConfig::parse(&text, &dir.join("apiserver.yaml")).unwrap()
}

async fn synced(mut apiserver: Apiserver) -> Apiserver {
    tokio::time::timeout(TIMEOUT, apiserver.synced())
        .await
        .unwrap()
        .unwrap();
    apiserver
}

/// The body of `GET path` on `addr`, and its content type.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (content_type, body.to_string())
}

/// One scrape: family name (prefix removed) → (type, samples as label map → value).
type Families = HashMap<String, (OpenMetricsType, Vec<(HashMap<String, String>, f64)>)>;

async fn scrape(addr: SocketAddr, prefix: &str) -> Families {
    let (content_type, text) = get(addr, "/metrics").await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let families = support::openmetrics::parse(&text)
        .unwrap_or_else(|e| panic!("not OpenMetrics: {e}\n{text}"));
    let mut out = Families::new();
    for (name, family) in families {
        let short = name
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{name} lacks the prefix {prefix}"))
            .to_string();
        // The sample that carries a family's value: a counter's total, a gauge's own,
        // a histogram's count.
        let main = match family.kind {
            OpenMetricsType::Counter => "_total",
            OpenMetricsType::Histogram => "_count",
            _ => "",
        };
        let samples = family
            .samples
            .into_iter()
            .filter(|s| s.suffix == main)
            .map(|s| (s.labels.into_iter().collect(), s.value))
            .collect();
        out.insert(short, (family.kind, samples));
    }
    out
}

/// Every expected family is in one of `scrapes` (a per-peer counter has samples only
/// where its event happened) with its type.
fn assert_all_present(scrapes: &[&Families], expected: &[(&str, OpenMetricsType)], who: &str) {
    for (name, kind) in expected {
        let got = scrapes
            .iter()
            .find_map(|f| f.get(*name))
            .unwrap_or_else(|| panic!("{who}: no metric {name}"));
        assert_eq!(&got.0, kind, "{who}: {name} has the wrong type");
    }
}

/// The value of `name`'s sample whose labels include `labels`, if there is one.
fn value(families: &Families, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (_, samples) = families.get(name)?;
    samples
        .iter()
        .find(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
}

#[tokio::test]
async fn both_metrics_endpoints_expose_every_metric_and_count_events() {
    let pki = MeshPki::new();
    // c3 refuses c1: its authorization refusals count c1.
    let c1 = synced(
        Apiserver::start(member_config(&pki, "c1", 1, 0, "[c1, c2, c3]"))
            .await
            .unwrap(),
    )
    .await;
    let c2 = synced(
        Apiserver::start(member_config(&pki, "c2", 2, 0, "[c1, c2, c3]"))
            .await
            .unwrap(),
    )
    .await;
    let c3 = synced(
        Apiserver::start(member_config(&pki, "c3", 3, 0, "[c2, c3]"))
            .await
            .unwrap(),
    )
    .await;

    let peers = [("c1", &c1), ("c2", &c2), ("c3", &c3)].map(|(n, m)| (n, m.grpc_addr.unwrap()));
    let agent = support::mesh::start_agent(&pki, "c1", 1, &peers, "").await;
    support::wait_until("c2's link to be ready", TIMEOUT, || {
        agent
            .statuses()
            .iter()
            .any(|s| s.cluster == "c2" && s.ready)
    })
    .await;

    // A live change in c2 after the link synced: its lag is observed.
    let manifests = pki.dir().join("c2/manifests");
    std::fs::write(
        manifests.join("more.yaml"),
        service_yaml("more", "10.2.0.9"),
    )
    .unwrap();
    support::wait_until("c2's new service at c1's agent", TIMEOUT, || {
        agent
            .statuses()
            .iter()
            .any(|s| s.cluster == "c2" && s.counts.services == 2)
    })
    .await;

    let agent_prefix = "fleetmesh_agent_";
    let api_prefix = "fleetmesh_apiserver_";
    let before = scrape(agent.api_addr, agent_prefix).await;
    assert_all_present(&[&before], AGENT_METRICS, "agent");
    assert_eq!(value(&before, "remote_clusters", &[]), Some(2.0));
    assert_eq!(
        value(
            &before,
            "remote_cluster_readiness_status",
            &[("target_cluster", "c2")]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &before,
            "remote_cluster_propagation_lag_seconds",
            &[("target_cluster", "c2")]
        )
        .unwrap()
            >= 1.0,
        "a live change observed"
    );
    assert_eq!(
        value(
            &before,
            "remote_cluster_services",
            &[("target_cluster", "c2")]
        ),
        Some(2.0)
    );
    assert!(
        value(
            &before,
            "remote_cluster_certificate_expiry_timestamp_seconds",
            &[("target_cluster", "c2"), ("end", "peer")]
        )
        .unwrap()
            > 0.0
    );

    let c2_before = scrape(c2.health_addr, api_prefix).await;
    assert_eq!(value(&c2_before, "watchers", &[("peer", "c1")]), Some(1.0));
    assert!(value(&c2_before, "frames_sent", &[]).unwrap() >= 1.0);
    assert!(value(&c2_before, "events_sent", &[]).unwrap() >= 1.0);
    assert!(value(&c2_before, "export_writes", &[("kind", "services")]).unwrap() >= 1.0);
    assert!(value(&c2_before, "export_writes", &[("kind", "endpoints")]).unwrap() >= 1.0);
    assert_eq!(
        value(&c2_before, "export_errors", &[("kind", "other")]),
        Some(0.0)
    );
    assert!(value(&c2_before, "identities_allocated", &[]).unwrap() >= 1.0);
    assert_eq!(value(&c2_before, "identities_quarantined", &[]), Some(0.0));
    assert_eq!(value(&c2_before, "canaries_written", &[]), Some(1.0));
    assert_eq!(
        value(&c2_before, "watch_starts", &[("mode", "full")]),
        Some(1.0)
    );
    assert!(
        value(
            &c2_before,
            "kvstore_operations_duration_seconds",
            &[("operation", "put")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(value(&c2_before, "certificate_expiry_timestamp_seconds", &[]).unwrap() > 0.0);

    // The same apiserver's status document, as `fleetmesh status --apiserver` reads it.
    let status = AgentClient::new(&format!("http://{}", c2.health_addr))
        .unwrap()
        .apiserver_status()
        .await
        .unwrap();
    assert_eq!(status.cluster, "c2");
    assert!(status.export.canary_written && status.export.writes > 0);
    let serving = status.serving.unwrap();
    assert!(serving.synced && serving.revision > 0 && serving.epoch.is_some());
    let watcher = serving.watchers.iter().find(|w| w.peer == "c1").unwrap();
    assert_eq!(watcher.resumed, Some(false));
    assert!(watcher.frames >= 1 && watcher.events >= 1);
    assert_eq!(watcher.behind, 0);

    // A watcher of c2 takes its first frame and stops reading while c2's endpoints churn:
    // cut off after the stall limit (it runs while the checks below do).
    let (mut stuck, stuck_conn) =
        support::stuck_watcher::raw_watch(&pki, c2.grpc_addr.unwrap(), "c2").await;
    assert!(!stuck.data().await.unwrap().unwrap().is_empty());
    let churn = support::stuck_watcher::churn_endpoints(c2.store.clone(), mk_cluster("c2", 2), 100);
    let stuck_at = std::time::Instant::now();

    // c3 refuses c1 by its topology: counted per peer.
    support::wait_until("c3's refusal of c1", TIMEOUT, || {
        c3.grpc_stats.as_ref().unwrap().permission_denied() > 0
    })
    .await;
    let c3_now = scrape(c3.health_addr, api_prefix).await;
    assert_all_present(&[&c2_before, &c3_now], APISERVER_METRICS, "apiserver");
    assert!(value(&c3_now, "authorization_refusals", &[("peer", "c1")]).unwrap() >= 1.0);
    assert!(
        value(
            &c3_now,
            "requests_refused",
            &[("reason", "permission_denied")]
        )
        .unwrap()
            >= 1.0
    );

    // A handshake with a certificate of another CA is refused and counted.
    let refused_before = value(&c2_before, "tls_handshakes", &[("outcome", "refused")]).unwrap();
    let other_ca = Ca::generate("another CA", Duration::from_secs(3600)).unwrap();
    let leaf = other_ca
        .issue_client(&mk_name("intruder"), Duration::from_secs(3600))
        .unwrap();
    let dir = pki.dir().join("intruder");
    let pem = fleetmesh::certs::files::write_pem_files(&dir, "intruder", &leaf).unwrap();
    let files = fleetmesh::tls::TlsFiles {
        cert: pem.cert,
        key: pem.key,
        ca: pki.dir().join("certs/ca.crt"),
    };
    let tls = fleetmesh::tls::load_client_config(&files).unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(tls);
    let channel =
        fleetmesh::tls::client::channel(&c2.grpc_addr.unwrap().to_string(), Some("localhost"), rx)
            .unwrap();
    let mut intruder = fleetmesh::proto::v1::mesh_client::MeshClient::new(channel);
    assert!(
        intruder
            .info(fleetmesh::proto::v1::InfoRequest {})
            .await
            .is_err()
    );
    let handshakes = c2.handshake_stats.clone().unwrap();
    support::wait_until("the refused handshake to be counted", TIMEOUT, || {
        handshakes.refused() as f64 > refused_before
    })
    .await;
    let c2_after = scrape(c2.health_addr, api_prefix).await;
    assert!(
        value(&c2_after, "tls_handshakes", &[("outcome", "refused")]).unwrap() > refused_before
    );
    assert_eq!(
        value(&c2_after, "tls_refusals", &[("reason", "bad_certificate")]),
        Some(value(&c2_before, "tls_refusals", &[("reason", "bad_certificate")]).unwrap() + 1.0),
        "the other CA's certificate is refused as a bad certificate"
    );

    // The stuck watcher is cut off and counted; c1's agent, which reads, is not.
    let grpc_stats = c2.grpc_stats.clone().unwrap();
    support::wait_until(
        "the stuck watcher to be cut off",
        STALL_LIMIT + Duration::from_secs(5),
        || grpc_stats.stalled() > 0,
    )
    .await;
    churn.abort();
    eprintln!("stuck watcher cut off after {:?}", stuck_at.elapsed());
    let c2_cut = scrape(c2.health_addr, api_prefix).await;
    assert_eq!(value(&c2_before, "watchers_stalled", &[]), Some(0.0));
    assert_eq!(value(&c2_cut, "watchers_stalled", &[]), Some(1.0));
    assert_eq!(value(&c2_cut, "watchers", &[("peer", "c1")]), Some(1.0));
    support::wait_until("the stuck watcher's connection to close", TIMEOUT, || {
        stuck_conn.is_finished()
    })
    .await;

    // c2's apiserver restarts on its port with its store: the agent reconnects and
    // resumes, and the new apiserver counts a resumed watch.
    let port = c2.grpc_addr.unwrap().port();
    let store = c2.store.clone();
    c2.stop(Duration::from_secs(1)).await;
    let c2 = synced(
        Apiserver::start_with_store(member_config(&pki, "c2", 2, port, "[c1, c2, c3]"), store)
            .await
            .unwrap(),
    )
    .await;
    support::wait_until("c1's link to c2 to resume", TIMEOUT, || {
        agent
            .statuses()
            .iter()
            .any(|s| s.cluster == "c2" && s.ready && s.resumes + s.full_resyncs > 0)
    })
    .await;
    let after = scrape(agent.api_addr, agent_prefix).await;
    assert!(
        value(
            &after,
            "remote_cluster_reconnects",
            &[("target_cluster", "c2")]
        )
        .unwrap()
            > value(
                &before,
                "remote_cluster_reconnects",
                &[("target_cluster", "c2")]
            )
            .unwrap()
    );
    let c2_restarted = scrape(c2.health_addr, api_prefix).await;
    let resumed = value(&c2_restarted, "watch_starts", &[("mode", "resumed")]).unwrap();
    let full = value(&c2_restarted, "watch_starts", &[("mode", "full")]).unwrap();
    assert_eq!(resumed + full, 1.0, "one watch since the restart");
    let status = AgentClient::new(&format!("http://{}", c2.health_addr))
        .unwrap()
        .apiserver_status()
        .await
        .unwrap();
    let watchers = status.serving.unwrap().watchers;
    assert_eq!(watchers.len(), 1);
    assert_eq!(watchers[0].resumed, Some(resumed == 1.0));
    assert_monitoring_uses_exported_metrics(&[
        ("fleetmesh_agent_", &[&before, &after]),
        (
            "fleetmesh_apiserver_",
            &[&c2_before, &c3_now, &c2_cut, &c2_restarted],
        ),
    ]);
    drop(agent);
}

/// The sample names a scrape's families produce: a counter's `_total`, a histogram's
/// `_bucket`, `_sum` and `_count`, a gauge's own name.
fn sample_names(prefix: &str, families: &Families, out: &mut std::collections::BTreeSet<String>) {
    for (name, (kind, _)) in families {
        let full = format!("{prefix}{name}");
        match kind {
            OpenMetricsType::Counter => {
                out.insert(format!("{full}_total"));
            }
            OpenMetricsType::Histogram => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{full}{suffix}"));
                }
            }
            _ => {
                out.insert(full);
            }
        }
    }
}

/// Every `fleetmesh_*` metric that deploy/monitoring's alert rules and dashboard name is
/// one the scraped binaries export.
fn assert_monitoring_uses_exported_metrics(scrapes: &[(&str, &[&Families])]) {
    let mut exported = std::collections::BTreeSet::new();
    for (prefix, families) in scrapes {
        for f in *families {
            sample_names(prefix, f, &mut exported);
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring");
    let mut referenced = 0;
    for file in ["alerts.yaml", "dashboard.json"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("fleetmesh_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exported.contains(&name),
                "{file} names {name}, which the binaries do not export"
            );
            referenced += 1;
            rest = &rest[at + name.len()..];
        }
    }
    assert!(referenced >= 20, "the rules and dashboard name metrics");
}

/// The parser itself: what it takes and what it refuses.
mod parser {
    use super::support::openmetrics::{MetricType, parse};

    #[test]
    fn families_samples_and_errors() {
        let good = "# HELP x_things Things.\n# TYPE x_things counter\nx_things_total{a=\"q\\\"\"} 3\n\
                    # TYPE x_lag histogram\nx_lag_bucket{le=\"1.0\"} 1\nx_lag_bucket{le=\"+Inf\"} 2\n\
                    x_lag_sum 3.5\nx_lag_count 2\n# EOF\n";
        let families = parse(good).unwrap();
        assert_eq!(families["x_things"].kind, MetricType::Counter);
        assert_eq!(families["x_things"].samples[0].labels["a"], "q\"");
        assert_eq!(families["x_lag"].samples.len(), 4);
        for bad in [
            "# TYPE x counter\nx 1\n# EOF\n",
            "# TYPE x gauge\nx_total 1\n# EOF\n",
            "# TYPE x gauge\nx 1\n",
            "y 1\n# EOF\n",
            "# TYPE x histogram\nx_bucket{le=\"+Inf\"} 2\nx_count 3\n# EOF\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
