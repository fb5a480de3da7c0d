//! A wiped etcd under a running apiserver and a connected agent (issue 15, defect 2): the
//! store comes back empty — under the same cluster id (same flags: every lease gone, the
//! revision back to the start) or under a new one — and the apiserver must notice, say
//! "not ready", rewrite every key on fresh leases, and make the agent resync to exactly
//! the state it held, without withdrawing anything meanwhile.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleetmesh::agent::Agent;
use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use fleetmesh::mesh::Counts;
use support::LocalEtcd;
use support::mesh::{MeshPki, mk_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(30);
/// Pods exported: enough keys that a rewrite takes a while to notice.
const PODS: usize = 120;

/// A global service over `PODS` pods in four label sets, on one node.
fn manifests() -> String {
    // Pods are exported only once their namespace is known (and global).
    let mut text = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nspec: {podCIDR: 10.1.0.0/16}\n\
         status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  \
         annotations: {service.cilium.io/global: \"true\"}\nspec: {ports: [{name: http, port: 80}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: shop\n  \
         labels: {kubernetes.io/service-name: web}\naddressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints:\n",
    );
    for i in 0..8 {
        text += &format!(
            "- addresses: [10.1.0.{}]\n  conditions: {{ready: true}}\n",
            i + 1
        );
    }
    for i in 0..PODS {
        text += &format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: web-{i}, namespace: shop, labels: {{app: web-{}}}}}\n\
             spec: {{nodeName: node-1, containers: [{{name: web, image: web}}]}}\n\
             status: {{phase: Running, podIP: 10.1.{}.{}, podIPs: [{{ip: 10.1.{}.{}}}]}}\n",
            i % 4,
            i / 200,
            i % 200 + 1,
            i / 200,
            i % 200 + 1,
        );
    }
    text
}

/// c1's apiserver config: its manifests in `c1/manifests`, its keys under `namespace`.
fn mk_config(pki: &MeshPki, etcd: &LocalEtcd, namespace: &str) -> ApiserverConfig {
    let dir = pki.dir().join("c1");
    let manifests_dir = dir.join("manifests");
    let tls = pki.server_files("c1");
    let text = format!(
        "cluster: {{name: c1, id: 1}}\n\
         store: {{kind: etcd, etcd: {{endpoints: {:?}, namespace: {namespace:?}}}}}\n\
         source: {{manifests: {manifests_dir:?}}}\n\
         grpc:\n  listen: \"127.0.0.1:0\"\n  tls: {{ca: {:?}, cert: {:?}, key: {:?}}}\n\
         health: {{listen: \"127.0.0.1:0\"}}\n\
         export: {{leaseTtlSeconds: 60, heartbeatSeconds: 10}}\n",
        etcd.handle().endpoints,
        tls.ca,
        tls.cert,
        tls.key
    );
    ApiserverConfig::parse(&text, &dir.join("apiserver.yaml")).unwrap()
}

/// Writes c1's manifests and starts its apiserver in a namespace of its own, synced.
async fn start_apiserver(pki: &MeshPki, etcd: &LocalEtcd) -> (Apiserver, String) {
    let manifests_dir = pki.dir().join("c1/manifests");
    std::fs::create_dir_all(&manifests_dir).unwrap();
    std::fs::write(manifests_dir.join("web.yaml"), manifests()).unwrap();
    let namespace = support::unique_prefix();
    let mut apiserver = Apiserver::start(mk_config(pki, etcd, &namespace))
        .await
        .unwrap();
    tokio::time::timeout(TIMEOUT, apiserver.synced())
        .await
        .unwrap()
        .unwrap();
    (apiserver, namespace)
}

async fn start_agent(pki: &MeshPki, apiserver: &Apiserver) -> Agent {
    let peers = [("c1", apiserver.grpc_addr.unwrap())];
    support::mesh::start_agent(pki, "c2", 2, &peers, "").await
}

/// The status line of `GET path` on `addr`, e.g. `HTTP/1.1 200 OK`, and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let code = answer.split(' ').nth(1).unwrap().parse().unwrap();
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

/// Everything the agent holds of c1, to compare before and after.
fn agent_state(agent: &Agent) -> (Option<Counts>, String) {
    let view = agent.view.read();
    let detail = format!("{:?}\n{:?}", view.services(Instant::now()), view.nodes());
    let mut lookups = String::new();
    for i in 0..PODS {
        let ip = format!("10.1.{}.{}", i / 200, i % 200 + 1).parse().unwrap();
        lookups += &format!("{:?}\n", view.lookup(ip));
    }
    (view.counts(&mk_name("c1")), detail + &lookups)
}

/// Every key the apiserver keeps under `cilium/` and `fleetmesh/state/`, but the
/// heartbeat and the canaries (timestamps), with their values.
async fn exported(etcd: &LocalEtcd, namespace: &str) -> BTreeMap<String, String> {
    let mut keys = BTreeMap::new();
    for prefix in [
        "cilium/state/",
        "cilium/cluster-config/",
        "fleetmesh/state/",
    ] {
        for (key, kv) in etcd.handle().dump(namespace, prefix).await {
            keys.insert(key, kv.value_str().unwrap().to_string());
        }
    }
    keys
}

async fn a_wiped_etcd_is_rewritten_and_the_agent_resyncs(new_cluster_id: bool) {
    let mut etcd = LocalEtcd::start(None).await.unwrap();
    let pki = MeshPki::new();
    let (apiserver, namespace) = start_apiserver(&pki, &etcd).await;
    let agent = start_agent(&pki, &apiserver).await;
    support::wait_until("the agent to hold c1's state", TIMEOUT, || {
        let counts = agent.view.read().counts(&mk_name("c1")).unwrap_or_default();
        counts.endpoints == PODS && agent.statuses().iter().any(|s| s.synced.all())
    })
    .await;
    let full = agent.view.read().counts(&mk_name("c1")).unwrap();
    assert!(
        full.identities >= 4 && full.services == 1 && full.nodes == 1,
        "{full:?}"
    );
    let before_state = agent_state(&agent);
    let before_keys = exported(&etcd, &namespace).await;
    let ip_keys = before_keys
        .keys()
        .filter(|k| k.starts_with("cilium/state/ip/"));
    assert_eq!(ip_keys.count(), PODS);
    let before_epoch = agent.statuses()[0].epoch.clone().unwrap();
    let before_resyncs = agent.statuses()[0].full_resyncs;

    // The flap detector: whatever the agent holds of c1 never shrinks.
    let view = agent.view.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let watching = stop.clone();
    let flaps = tokio::spawn(async move {
        let mut lowest = full;
        while !watching.load(Ordering::Relaxed) {
            if let Some(c) = view.read().counts(&mk_name("c1")) {
                lowest.nodes = lowest.nodes.min(c.nodes);
                lowest.endpoints = lowest.endpoints.min(c.endpoints);
                lowest.identities = lowest.identities.min(c.identities);
                lowest.services = lowest.services.min(c.services);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lowest
    });
    // Every readiness the exporter reports from now on.
    let mut status = apiserver.status.clone();
    status.mark_unchanged();
    let readiness = tokio::spawn(async move {
        let mut seen = Vec::new();
        while status.changed().await.is_ok() {
            seen.push(status.borrow_and_update().synced);
        }
        seen
    });

    let wiped = Instant::now();
    etcd.wipe_and_restart(new_cluster_id).await.unwrap();
    let back = Instant::now();

    // Ready again, and every key back with its value.
    let deadline = Instant::now() + TIMEOUT;
    let ready_at = loop {
        let (code, body) = http_get(apiserver.health_addr, "/readyz").await;
        if code == 200 && info_epoch(&pki, &apiserver).await != before_epoch {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "never ready again: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The cluster config is the enforcer's, which starts over beside the export.
    let deadline = Instant::now() + Duration::from_secs(5);
    let rewritten_at = loop {
        let after_keys = exported(&etcd, &namespace).await;
        let differ: Vec<&String> = before_keys
            .keys()
            .chain(after_keys.keys())
            .filter(|k| before_keys.get(*k) != after_keys.get(*k))
            .collect();
        if differ.is_empty() {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "keys not rewritten as they were: {differ:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Each key on a live lease of the new store.
    let mut client = etcd.handle().client().await;
    for (key, kv) in etcd.handle().dump(&namespace, "cilium/state/").await {
        let ttl = client.lease_time_to_live(kv.lease(), None).await.unwrap();
        assert!(
            ttl.ttl() > 0,
            "{key} is on lease {} which is gone",
            kv.lease()
        );
    }

    // The agent resyncs to the new epoch and exactly the state it held.
    let new_epoch = info_epoch(&pki, &apiserver).await;
    support::wait_until("the agent to resync to the new epoch", TIMEOUT, || {
        agent
            .statuses()
            .iter()
            .any(|s| s.epoch.as_deref() == Some(new_epoch.as_str()) && s.synced.all())
    })
    .await;
    let resynced_at = Instant::now();
    assert_eq!(agent_state(&agent), before_state);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        flaps.await.unwrap(),
        full,
        "the agent withdrew some of c1's state"
    );
    let statuses = agent.statuses();
    assert!(statuses[0].full_resyncs > before_resyncs, "{statuses:#?}");

    // The export said "not ready" until it had rewritten the store.
    drop(apiserver);
    let seen = readiness.await.unwrap();
    assert!(seen.contains(&false), "never said not ready: {seen:?}");
    assert_eq!(seen.last(), Some(&true));
    eprintln!(
        "wipe ({}): etcd back after {:?}; then ready after {:?}, every key back after {:?}, \
         the agent resynced after {:?}",
        if new_cluster_id {
            "new cluster id"
        } else {
            "same cluster id"
        },
        back - wiped,
        ready_at - back,
        rewritten_at - back,
        resynced_at - back,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_etcd_with_the_same_cluster_id_loses_every_lease_and_is_rewritten() {
    a_wiped_etcd_is_rewritten_and_the_agent_resyncs(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_etcd_with_a_new_cluster_id_is_a_new_epoch_and_is_rewritten() {
    a_wiped_etcd_is_rewritten_and_the_agent_resyncs(true).await;
}

/// `Info` from c1's apiserver, as an agent of c3 asks it (c2's files are the agent's).
async fn info_epoch(pki: &MeshPki, apiserver: &Apiserver) -> String {
    let files = pki.client_files("c3");
    let (_, configs) =
        tokio::sync::watch::channel(fleetmesh::tls::load_client_config(&files).unwrap());
    let addr = apiserver.grpc_addr.unwrap().to_string();
    let channel = fleetmesh::tls::client::channel(&addr, None, configs).unwrap();
    let mut client = fleetmesh::proto::v1::mesh_client::MeshClient::new(channel);
    let info = client
        .info(fleetmesh::proto::v1::InfoRequest {})
        .await
        .unwrap();
    info.into_inner().epoch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_names_the_store_epoch_after_a_restart_before_the_export_syncs() {
    let etcd = LocalEtcd::start(None).await.unwrap();
    let pki = MeshPki::new();
    let (apiserver, namespace) = start_apiserver(&pki, &etcd).await;
    let epoch = info_epoch(&pki, &apiserver).await;
    assert!(!epoch.is_empty());
    drop(apiserver);

    // The restarted apiserver cannot read its source (the directory is gone), so its
    // export never syncs; `Info` still names the epoch of the store it serves.
    std::fs::rename(pki.dir().join("c1/manifests"), pki.dir().join("c1/gone")).unwrap();
    let apiserver = Apiserver::start(mk_config(&pki, &etcd, &namespace))
        .await
        .unwrap();
    assert!(!apiserver.status.borrow().synced);
    assert_eq!(info_epoch(&pki, &apiserver).await, epoch);
}
