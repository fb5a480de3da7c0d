//! The kube source against the in-test API server: changes in the cluster reach the store
//! exactly as the manifest source would write the same objects, a `410 Gone` re-lists
//! without withdrawing anything, readiness waits for every initial list, a malformed
//! object is skipped (one read before keeps its last readable version exported), and
//! with Cilium installed the store holds what Cilium's clustermesh-apiserver writes.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use fleetmesh::export::{IdentityAllocator, render};
use fleetmesh::k8s::convert::desired_state;
use fleetmesh::k8s::kube::{KubeOptions, KubeSource};
use fleetmesh::k8s::{Snapshot, manifests};
use fleetmesh::kvstore::memory::MemoryStore;
use fleetmesh::kvstore::{Store, WatchEvent, WatchStart, keys};
use fleetmesh::model::{Cluster, ClusterId, ClusterName, IdMode};
use futures::StreamExt;
use serde_json::{Value, json};
use support::fake_kube::FakeKube;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// Long enough for a re-list after the watcher's backoff (about a second), short enough
/// to fail fast.
const WAIT: Duration = Duration::from_secs(20);
/// How often a waiting test looks again.
const POLL: Duration = Duration::from_millis(50);

/// Every kind the fake API server may hold, as the manifest source would read them.
const KINDS: [(&str, &str); 8] = [
    ("v1", "Namespace"),
    ("v1", "Node"),
    ("v1", "Pod"),
    ("v1", "Service"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("cilium.io/v2", "CiliumIdentity"),
    ("cilium.io/v2", "CiliumEndpoint"),
    ("cilium.io/v2", "CiliumNode"),
];

fn mk_cluster(name: &str, id: u32) -> Cluster {
    Cluster::new(
        ClusterName::new(name).unwrap(),
        ClusterId::new(id, IdMode::Normal).unwrap(),
        IdMode::Normal,
    )
}

fn mk_namespace(name: &str, global: Option<&str>) -> Value {
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    if let Some(global) = global {
        ns["metadata"]["annotations"] = json!({"clustermesh.cilium.io/global": global});
    }
    ns
}

fn mk_service(namespace: &str, name: &str, global: bool) -> Value {
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": "10.96.0.10", "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    });
    if global {
        svc["metadata"]["annotations"] = json!({"service.cilium.io/global": "true"});
    }
    svc
}

fn mk_slice(namespace: &str, service: &str, name: &str, ips: &[&str]) -> Value {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn mk_pod(namespace: &str, name: &str, app: &str, ip: &str, host_ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": host_ip},
    })
}

fn mk_node(name: &str, ip: &str, pod_cidr: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    })
}

/// Two namespaces, two nodes, a service in each namespace (`shop/web` not global yet,
/// `legacy/old` global) with one slice and one pod each.
fn apply_small_cluster(fake: &FakeKube) {
    fake.apply_json(mk_namespace("shop", None));
    fake.apply_json(mk_namespace("legacy", None));
    fake.apply_json(mk_node("worker-1", "172.18.0.2", "10.244.1.0/24"));
    fake.apply_json(mk_node("worker-2", "172.18.0.3", "10.244.2.0/24"));
    fake.apply_json(mk_service("shop", "web", false));
    fake.apply_json(mk_slice("shop", "web", "web-abc", &["10.244.1.10"]));
    fake.apply_json(mk_pod("shop", "web-1", "web", "10.244.1.10", "172.18.0.2"));
    fake.apply_json(mk_service("legacy", "old", true));
    fake.apply_json(mk_slice("legacy", "old", "old-abc", &["10.244.2.10"]));
    fake.apply_json(mk_pod(
        "legacy",
        "old-1",
        "old",
        "10.244.2.10",
        "172.18.0.3",
    ));
}

/// An apiserver on the embedded store whose source is `fake`, through a kubeconfig file.
async fn start_apiserver(fake: &FakeKube, cluster: &Cluster) -> (Apiserver, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    fake.write_kubeconfig(&dir.path().join("kubeconfig"));
    let text = format!(
        "cluster: {{name: {}, id: {}}}\n\
         source: {{kube: {{kubeconfig: kubeconfig}}}}\n\
         health: {{listen: \"127.0.0.1:0\"}}\n",
        cluster.name,
        cluster.id.get()
    );
    let config = ApiserverConfig::parse(&text, &dir.path().join("apiserver.yaml")).unwrap();
    (Apiserver::start(config).await.unwrap(), dir)
}

async fn wait_synced(apiserver: &mut Apiserver) {
    tokio::time::timeout(WAIT, apiserver.synced())
        .await
        .expect("the export did not sync in time")
        .unwrap();
}

/// Every key the exporter owns in `store`, with its value.
async fn exported(store: &Arc<dyn Store>, cluster: &Cluster) -> BTreeMap<String, String> {
    let prefixes = [
        keys::nodes_of(&cluster.name),
        keys::services_of(&cluster.name),
        keys::fleetmesh_services_of(&cluster.name),
        keys::IDENTITIES_ID_PREFIX.to_string(),
        keys::IP_PREFIX.to_string(),
    ];
    let mut out = BTreeMap::new();
    for prefix in prefixes {
        for kv in store.list(&prefix).await.unwrap().kvs {
            out.insert(kv.key, text(&kv.value));
        }
    }
    out
}

fn text(value: &Bytes) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// What the manifest source exports for the objects `fake` holds now: each object in its
/// own file of a manifest directory, loaded, converted and rendered. Identity ids come
/// from the allocations the apiserver keeps in the cluster (ConfigMaps), copied into a
/// scratch store: the same labels get the same ids as in the export under test, whatever
/// the order they were allocated in, and nothing is allocated into that export's ledger.
async fn manifest_export(fake: &FakeKube, cluster: &Cluster) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let objects = KINDS
        .iter()
        .flat_map(|(api_version, kind)| fake.list_json(api_version, kind));
    for (i, object) in objects.enumerate() {
        std::fs::write(dir.path().join(format!("{i:04}.json")), object.to_string()).unwrap();
    }
    let loaded = manifests::load(dir.path()).unwrap();
    let (state, _) = desired_state(cluster, &loaded.objects);

    // The numbers the apiserver allocated, kept in the cluster as one ConfigMap each.
    let scratch = MemoryStore::new();
    for allocation in fake.list_json("v1", "ConfigMap") {
        let id: u32 = allocation["metadata"]["name"]
            .as_str()
            .and_then(|n| n.strip_prefix("fleetmesh-identity-"))
            .unwrap()
            .parse()
            .unwrap();
        let labels = allocation["data"]["labels"].as_str().unwrap().to_string();
        let value_key = format!("{}{labels}", keys::ALLOC_VALUE_PREFIX);
        scratch
            .put(&value_key, Bytes::from(id.to_string()), None)
            .await
            .unwrap();
        let id_key = format!("{}{id}", keys::ALLOC_ID_PREFIX);
        scratch
            .put(&id_key, Bytes::from(labels), None)
            .await
            .unwrap();
    }
    let mut allocator = IdentityAllocator::load(scratch, cluster.clone())
        .await
        .unwrap();
    let rendered = render(cluster, &state, false, &mut allocator)
        .await
        .unwrap();
    rendered
        .by_kind
        .into_values()
        .flatten()
        .map(|(key, value)| (key, text(&value)))
        .collect()
}

/// Waits until the store holds exactly what the manifest source would export for the
/// objects `fake` holds now, and returns it.
async fn wait_export_matches(
    fake: &FakeKube,
    apiserver: &Apiserver,
    cluster: &Cluster,
) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let expected = manifest_export(fake, cluster).await;
        let actual = exported(&apiserver.store, cluster).await;
        if actual == expected {
            return actual;
        }
        if tokio::time::Instant::now() > deadline {
            assert_eq!(
                actual, expected,
                "the export never matched the manifest source's"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn json_at(export: &BTreeMap<String, String>, key: &str) -> Value {
    let value = export
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {export:#?}"));
    serde_json::from_str(value).unwrap()
}

fn service_key(namespace: &str, name: &str) -> String {
    format!("cilium/state/services/v1/cluster1/{namespace}/{name}")
}

fn backend_ips(export: &BTreeMap<String, String>, service: &str) -> Vec<String> {
    let value = json_at(export, service);
    value["backends"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn kube_changes_reach_the_store_as_the_manifest_source_writes_them() {
    let fake = FakeKube::start().await;
    apply_small_cluster(&fake);
    let cluster = mk_cluster("cluster1", 1);
    let (mut apiserver, _dir) = start_apiserver(&fake, &cluster).await;
    wait_synced(&mut apiserver).await;

    let export = wait_export_matches(&fake, &apiserver, &cluster).await;
    for key in [
        "cilium/state/nodes/v1/cluster1/worker-1",
        "cilium/state/nodes/v1/cluster1/worker-2",
        "cilium/state/ip/v1/default/10.244.1.10",
        "cilium/state/ip/v1/default/10.244.2.10",
        &service_key("legacy", "old"),
    ] {
        assert!(export.contains_key(key), "{key} missing: {export:#?}");
    }
    assert!(!export.contains_key(&service_key("shop", "web")));

    // A Service made global.
    fake.apply_json(mk_service("shop", "web", true));
    let export = wait_export_matches(&fake, &apiserver, &cluster).await;
    let web = service_key("shop", "web");
    assert_eq!(backend_ips(&export, &web), ["10.244.1.10"]);

    // Its EndpointSlices changed: a second backend.
    fake.apply_json(mk_slice(
        "shop",
        "web",
        "web-abc",
        &["10.244.1.10", "10.244.1.11"],
    ));
    let export = wait_export_matches(&fake, &apiserver, &cluster).await;
    assert_eq!(backend_ips(&export, &web), ["10.244.1.10", "10.244.1.11"]);

    // A pod relabelled: a new identity for its address.
    let ip_key = "cilium/state/ip/v1/default/10.244.1.10";
    let old_id = json_at(&export, ip_key)["ID"].as_u64().unwrap();
    fake.apply_json(mk_pod(
        "shop",
        "web-1",
        "frontend",
        "10.244.1.10",
        "172.18.0.2",
    ));
    let export = wait_export_matches(&fake, &apiserver, &cluster).await;
    let new_id = json_at(&export, ip_key)["ID"].as_u64().unwrap();
    assert_ne!(new_id, old_id);
    let labels = &export[&format!("cilium/state/identities/v1/id/{new_id}")];
    assert!(labels.contains("k8s:app=frontend;"), "{labels}");
    assert!(!export.contains_key(&format!("cilium/state/identities/v1/id/{old_id}")));

    // A node removed.
    assert!(fake.delete("v1", "Node", None, "worker-2"));
    let export = wait_export_matches(&fake, &apiserver, &cluster).await;
    assert!(!export.contains_key("cilium/state/nodes/v1/cluster1/worker-2"));
    assert!(export.contains_key("cilium/state/nodes/v1/cluster1/worker-1"));

    // A namespace made non-global: its service and pod leave the export.
    fake.apply_json(mk_namespace("legacy", Some("false")));
    let export = wait_export_matches(&fake, &apiserver, &cluster).await;
    assert!(!export.contains_key(&service_key("legacy", "old")));
    assert!(!export.contains_key("cilium/state/ip/v1/default/10.244.2.10"));
    assert!(export.contains_key(&web));
}

/// The list requests of one collection (not watches), as the fake API server saw them.
fn lists_of(fake: &FakeKube, collection: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| {
            let (path, query) = r.split_once('?').unwrap_or((r, ""));
            path == format!("GET {collection}") && !query.contains("watch=true")
        })
        .count()
}

const WATCHED_WITHOUT_CILIUM: [&str; 5] = [
    "/api/v1/services",
    "/apis/discovery.k8s.io/v1/endpointslices",
    "/api/v1/namespaces",
    "/api/v1/pods",
    "/api/v1/nodes",
];

#[tokio::test]
async fn a_410_gone_relists_without_deleting_what_still_exists() {
    let fake = FakeKube::start().await;
    apply_small_cluster(&fake);
    let cluster = mk_cluster("cluster1", 1);
    let (mut apiserver, _dir) = start_apiserver(&fake, &cluster).await;
    wait_synced(&mut apiserver).await;
    let before = wait_export_matches(&fake, &apiserver, &cluster).await;

    // Every delete the store sees from now on.
    let revision = apiserver
        .store
        .list("cilium/state/")
        .await
        .unwrap()
        .revision;
    let mut events = apiserver
        .store
        .watch("cilium/state/", WatchStart::After(revision))
        .await
        .unwrap();
    let (deleted_tx, deleted) = watch::channel(BTreeSet::new());
    tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            if let WatchEvent::Delete { key, .. } = event {
                deleted_tx.send_modify(|d| {
                    d.insert(key);
                });
            }
        }
    });

    let lists_before: Vec<usize> = WATCHED_WITHOUT_CILIUM
        .iter()
        .map(|c| lists_of(&fake, c))
        .collect();
    fake.expire_watches();
    // Deleted while no watch is open: only the re-list can tell.
    assert!(fake.delete("v1", "Pod", Some("legacy"), "old-1"));

    let deadline = tokio::time::Instant::now() + WAIT;
    while WATCHED_WITHOUT_CILIUM
        .iter()
        .zip(&lists_before)
        .any(|(c, before)| lists_of(&fake, c) <= *before)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every kind re-listed: {:#?}",
            fake.requests()
        );
        tokio::time::sleep(POLL).await;
    }
    let after = wait_export_matches(&fake, &apiserver, &cluster).await;

    let gone: BTreeSet<String> = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .cloned()
        .collect();
    assert!(
        gone.contains("cilium/state/ip/v1/default/10.244.2.10"),
        "{gone:?}"
    );
    assert!(
        gone.iter().all(|k| k.starts_with("cilium/state/ip/")
            || k.starts_with("cilium/state/identities/")),
        "{gone:?}"
    );
    // Let a delete that is on its way arrive, then check nothing else was ever deleted.
    tokio::time::sleep(POLL * 4).await;
    assert_eq!(*deleted.borrow(), gone);
}

/// `/readyz` as a load balancer sees it: the status code.
async fn readyz(apiserver: &Apiserver) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(apiserver.health_addr)
        .await
        .unwrap();
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: fleetmesh\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap();
    status.parse().unwrap()
}

#[tokio::test]
async fn the_apiserver_is_ready_only_after_every_initial_list() {
    let fake = FakeKube::start().await;
    apply_small_cluster(&fake);
    // Metadata no client can read fails the whole Services list: that kind's initial
    // list cannot complete while every other kind's does.
    let mut unreadable = mk_service("shop", "broken", true);
    unreadable["metadata"]["labels"] = json!(5);
    fake.apply_json(unreadable);
    let cluster = mk_cluster("cluster1", 1);
    let (apiserver, _dir) = start_apiserver(&fake, &cluster).await;

    // Services listed (and failed) twice, every other kind listed.
    let deadline = tokio::time::Instant::now() + WAIT;
    while lists_of(&fake, "/api/v1/services") < 2
        || WATCHED_WITHOUT_CILIUM
            .iter()
            .any(|c| lists_of(&fake, c) == 0)
    {
        assert!(tokio::time::Instant::now() < deadline, "no list retried");
        tokio::time::sleep(POLL).await;
    }
    tokio::time::sleep(settle()).await;
    assert_eq!(readyz(&apiserver).await, 503);
    assert!(!apiserver.status.borrow().synced);
    assert_eq!(exported(&apiserver.store, &cluster).await, BTreeMap::new());

    fake.apply_json(mk_service("shop", "broken", true));
    let mut status = apiserver.status.clone();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.synced))
        .await
        .expect("not ready after the list could complete")
        .unwrap();
    assert_eq!(readyz(&apiserver).await, 200);
    let export = exported(&apiserver.store, &cluster).await;
    assert!(export.contains_key(&service_key("shop", "broken")));
    assert!(export.contains_key("cilium/state/nodes/v1/cluster1/worker-1"));
}

/// Longer than the source's coalescing window: anything it would publish by now, it has.
fn settle() -> Duration {
    fleetmesh::k8s::kube::COALESCE * 3
}

async fn next_snapshot(rx: &mut watch::Receiver<Option<Snapshot>>) -> Snapshot {
    tokio::time::timeout(WAIT, async {
        loop {
            rx.changed().await.unwrap();
            if let Some(snapshot) = rx.borrow_and_update().clone() {
                return snapshot;
            }
        }
    })
    .await
    .expect("no snapshot in time")
}

fn mk_malformed_pod(name: &str) -> Value {
    let mut pod = mk_pod("shop", name, "web", "10.244.1.66", "172.18.0.2");
    pod["spec"]["containers"] = json!(3);
    pod
}

#[tokio::test]
async fn a_malformed_object_is_skipped_and_the_rest_exported() {
    let fake = FakeKube::start().await;
    apply_small_cluster(&fake);
    fake.apply_json(mk_malformed_pod("broken-1"));
    let cluster = mk_cluster("cluster1", 1);

    // The source names it.
    let mut rx = KubeSource::new(fake.client(), cluster.clone()).watch_rx();
    let snapshot = next_snapshot(&mut rx).await;
    assert_eq!(snapshot.problems.len(), 1, "{:?}", snapshot.problems);
    assert!(
        snapshot.problems[0].starts_with("Pod shop/broken-1: invalid type: integer `3`"),
        "{}",
        snapshot.problems[0]
    );
    assert_eq!(snapshot.state.workloads.len(), 2);

    // One arriving through the watch is skipped the same way.
    fake.apply_json(mk_malformed_pod("broken-2"));
    let snapshot = next_snapshot(&mut rx).await;
    assert_eq!(snapshot.problems.len(), 2, "{:?}", snapshot.problems);
    assert!(snapshot.problems[1].starts_with("Pod shop/broken-2: "));
    assert_eq!(snapshot.state.workloads.len(), 2);
    drop(rx);

    // And the apiserver exports everything else.
    let (mut apiserver, _dir) = start_apiserver(&fake, &cluster).await;
    wait_synced(&mut apiserver).await;
    let export = wait_export_matches(&fake, &apiserver, &cluster).await;
    assert!(export.contains_key("cilium/state/ip/v1/default/10.244.1.10"));
    assert!(!export.contains_key("cilium/state/ip/v1/default/10.244.1.66"));
}

#[tokio::test]
async fn an_object_turned_unreadable_stays_exported_as_last_read() {
    let fake = FakeKube::start().await;
    apply_small_cluster(&fake);
    let mut rx = KubeSource::new(fake.client(), mk_cluster("cluster1", 1)).watch_rx();
    let first = next_snapshot(&mut rx).await;
    assert_eq!(first.problems, Vec::<String>::new());
    let pods: Vec<&str> = first
        .state
        .workloads
        .iter()
        .map(|w| w.pod.as_str())
        .collect();
    assert_eq!(pods, ["old-1", "web-1"]);

    // The new version of web-1 cannot be read: it is reported, and what web-1 last said
    // is still exported rather than withdrawn.
    let mut broken = mk_malformed_pod("web-1");
    broken["status"]["podIP"] = json!("10.244.1.99");
    fake.apply_json(broken);
    let snapshot = next_snapshot(&mut rx).await;
    assert_eq!(snapshot.problems.len(), 1, "{:?}", snapshot.problems);
    assert!(
        snapshot.problems[0].starts_with("Pod shop/web-1: invalid type: integer `3`"),
        "{}",
        snapshot.problems[0]
    );
    assert!(
        snapshot.problems[0].ends_with("(its last readable version is still exported)"),
        "{}",
        snapshot.problems[0]
    );
    assert_eq!(snapshot.state, first.state);
}

/// Cilium's objects as its agents and operator write them, shaped to produce the
/// reference's examples (Cilium's clustermesh-apiserver test data, cluster3 id 3).
fn apply_cilium_objects(fake: &FakeKube) {
    fake.apply_json(mk_namespace("bar", None));
    fake.apply_json(json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumIdentity",
        "metadata": {"name": "196915", "labels": {"io.kubernetes.pod.namespace": "bar"}},
        "security-labels": {
            "k8s:app": "baz",
            "k8s:io.cilium.k8s.policy.cluster": "cluster3",
            "k8s:io.kubernetes.pod.namespace": "bar",
        },
    }));
    fake.apply_json(json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumEndpoint",
        "metadata": {"name": "cep-002", "namespace": "bar"},
        "status": {
            "identity": {"id": 199475, "labels": ["k8s:app=qux"]},
            "networking": {"addressing": [{"ipv4": "10.244.2.74"}], "node": "172.18.0.2"},
            "encryption": {"key": 5},
            "service-account": "default",
            "state": "ready",
        },
    }));
    fake.apply_json(json!({
        "apiVersion": "cilium.io/v2", "kind": "CiliumNode",
        "metadata": {
            "name": "test-node-1",
            "labels": {"kubernetes.io/hostname": "test-node-1"},
            "annotations": {"network.cilium.io/wg-pub-key": "VRksOB6Z...="},
        },
        "spec": {
            "addresses": [{"type": "InternalIP", "ip": "172.18.0.2"},
                          {"type": "CiliumInternalIP", "ip": "10.244.0.10"}],
            "health": {"ipv4": "10.244.0.134"},
            "encryption": {},
            "ipam": {"podCIDRs": ["10.244.0.0/24"]},
            "bootid": "570d3fd1-93db-4862-ba99-6a3c2c10c38f",
        },
    }));
}

#[tokio::test]
async fn with_cilium_the_store_holds_what_clustermesh_apiserver_writes() {
    let fake = FakeKube::start().await;
    fake.install_cilium_crds();
    apply_cilium_objects(&fake);
    // Read from Pods and Nodes these would add keys; with Cilium they are not read.
    fake.apply_json(mk_pod("bar", "cep-002", "baz", "10.244.2.99", "172.18.0.2"));
    fake.apply_json(mk_node("test-node-2", "172.18.0.3", "10.244.1.0/24"));
    let cluster = mk_cluster("cluster3", 3);
    let (mut apiserver, _dir) = start_apiserver(&fake, &cluster).await;
    wait_synced(&mut apiserver).await;
    let export = wait_export_matches(&fake, &apiserver, &cluster).await;

    let state: BTreeMap<String, String> = apiserver
        .store
        .list("cilium/state/")
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, text(&kv.value)))
        .collect();
    let keys: Vec<&str> = state.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "cilium/state/identities/v1/id/196915",
            "cilium/state/ip/v1/default/10.244.2.74",
            "cilium/state/nodes/v1/cluster3/test-node-1",
        ]
    );
    assert_eq!(
        state["cilium/state/identities/v1/id/196915"],
        "k8s:app=baz;k8s:io.cilium.k8s.policy.cluster=cluster3;k8s:io.kubernetes.pod.namespace=bar;"
    );
    assert_eq!(
        json_at(&export, "cilium/state/ip/v1/default/10.244.2.74"),
        json!({ "IP": "10.244.2.74", "Mask": null, "HostIP": "172.18.0.2", "ID": 199475,
                "Key": 5, "Metadata": "", "K8sNamespace": "bar", "K8sPodName": "cep-002",
                "K8sServiceAccount": "default" })
    );
    assert_eq!(
        json_at(&export, "cilium/state/nodes/v1/cluster3/test-node-1"),
        json!({
            "Name": "test-node-1", "Cluster": "cluster3",
            "IPAddresses": [ {"Type": "InternalIP", "IP": "172.18.0.2"},
                             {"Type": "CiliumInternalIP", "IP": "10.244.0.10"} ],
            "IPv4AllocCIDR": {"IP": "10.244.0.0", "Mask": "////AA=="},
            "IPv4SecondaryAllocCIDRs": null, "IPv6AllocCIDR": null, "IPv6SecondaryAllocCIDRs": null,
            "IPv4HealthIP": "10.244.0.134", "IPv6HealthIP": "", "IPv4IngressIP": "", "IPv6IngressIP": "",
            "ClusterID": 3, "Source": "custom-resource", "EncryptionKey": 0,
            "Labels": {"kubernetes.io/hostname": "test-node-1"},
            "Annotations": {"network.cilium.io/wg-pub-key": "VRksOB6Z...="},
            "NodeIdentity": 0, "WireguardPubKey": "VRksOB6Z...=",
            "BootID": "570d3fd1-93db-4862-ba99-6a3c2c10c38f"
        })
    );

    // Pods and Nodes were never even listed.
    let requests = fake.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/pods") || r.starts_with("GET /api/v1/nodes")),
        "{requests:#?}"
    );
    for collection in [
        "/apis/cilium.io/v2/ciliumidentities",
        "/apis/cilium.io/v2/ciliumendpoints",
        "/apis/cilium.io/v2/ciliumnodes",
    ] {
        assert!(
            lists_of(&fake, collection) >= 1,
            "{collection} never listed"
        );
    }

    // A change to a Cilium resource reaches the store too.
    assert!(fake.delete("cilium.io/v2", "CiliumEndpoint", Some("bar"), "cep-002"));
    let export = wait_export_matches(&fake, &apiserver, &cluster).await;
    assert!(!export.contains_key("cilium/state/ip/v1/default/10.244.2.74"));
}

/// With the embedded store, identity numbers are kept in the cluster: an apiserver started
/// again (with an empty store) gives every label set the number it had, even after other
/// label sets came and went; a second replica agrees.
#[tokio::test]
async fn identity_numbers_are_kept_in_the_cluster_across_a_restart() {
    let fake = FakeKube::start().await;
    let cluster = mk_cluster("cluster1", 1);
    fake.apply_json(mk_namespace("shop", None));
    for i in 0..5 {
        let ip = format!("10.244.1.{}", 100 + i);
        fake.apply_json(mk_pod(
            "shop",
            &format!("gone-{i}"),
            &format!("gone-{i}"),
            &ip,
            "172.18.0.2",
        ));
    }
    let (mut first, _dir) = start_apiserver(&fake, &cluster).await;
    wait_synced(&mut first).await;
    for i in 0..5 {
        fake.delete("v1", "Pod", Some("shop"), &format!("gone-{i}"));
        let ip = format!("10.244.1.{i}");
        fake.apply_json(mk_pod(
            "shop",
            &format!("kept-{i}"),
            &format!("kept-{i}"),
            &ip,
            "172.18.0.2",
        ));
    }
    let before = wait_export_matches(&fake, &first, &cluster).await;
    let numbers = |export: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        export
            .iter()
            .filter_map(|(key, value)| {
                let id = key.strip_prefix(keys::IDENTITIES_ID_PREFIX)?;
                Some((value.clone(), id.to_string()))
            })
            .collect()
    };
    let before = numbers(&before);
    assert_eq!(before.len(), 5, "{before:?}");
    assert_eq!(
        fake.list_json("v1", "ConfigMap").len(),
        10,
        "the label sets that went keep their numbers for the quarantine"
    );
    drop(first);

    let (mut again, _dir2) = start_apiserver(&fake, &cluster).await;
    wait_synced(&mut again).await;
    let after = numbers(&exported(&again.store, &cluster).await);
    let kept: Vec<_> = after
        .iter()
        .filter(|(labels, _)| labels.contains("app=kept-"))
        .collect();
    assert_eq!(kept.len(), 5, "{after:?}");
    for (labels, id) in kept {
        assert_eq!(before.get(labels), Some(id), "{labels} got another number");
    }
}
/// Log lines written while it is in scope, on this thread (a `#[tokio::test]` runs every
/// task it spawns on it).
struct CapturedLogs {
    lines: Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl CapturedLogs {
    fn start() -> Self {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Arc::clone(&lines);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        Self {
            lines,
            _guard: guard,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).into_owned()
    }
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A CiliumEndpointSlice of namespace bar whose one endpoint holds `ip`.
fn mk_cilium_endpoint_slice(name: &str, pod: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumEndpointSlice",
        "metadata": {"name": name},
        "namespace": "bar",
        "endpoints": [{"name": pod, "id": 199475,
                       "networking": {"addressing": [{"ipv4": ip}], "node": "172.18.0.2"}}],
    })
}

fn mk_service_export(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": namespace,
                     "creationTimestamp": "2026-01-10T12:00:00Z"},
    })
}

fn endpoint_ips(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .state
        .endpoints
        .iter()
        .map(|e| e.prefix.to_string())
        .collect()
}

#[tokio::test]
async fn served_endpoint_slices_and_service_exports_are_discovered_and_read() {
    let fake = FakeKube::start().await;
    fake.install_cilium_crds();
    fake.install_cilium_endpoint_slice_crd();
    fake.install_mcs_crds();
    apply_cilium_objects(&fake);
    fake.apply_json(mk_cilium_endpoint_slice("ces-1", "cep-010", "10.244.2.10"));
    fake.apply_json(mk_service("bar", "web", false));
    fake.apply_json(mk_service_export("bar", "web"));
    let options = KubeOptions {
        service_exports: true,
        ..KubeOptions::default()
    };
    let mut rx = KubeSource::new(fake.client(), mk_cluster("cluster3", 3))
        .with_options(options)
        .watch_rx();
    let snapshot = next_snapshot(&mut rx).await;
    // The slice's endpoint, not the CiliumEndpoint's (10.244.2.74).
    assert_eq!(endpoint_ips(&snapshot), ["10.244.2.10"]);
    let exports: Vec<String> = snapshot
        .state
        .service_exports
        .iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(exports, ["bar/web"]);
    assert!(lists_of(&fake, "/apis/cilium.io/v2alpha1/ciliumendpointslices") >= 1);
    assert!(lists_of(&fake, "/apis/multicluster.x-k8s.io/v1alpha1/serviceexports") >= 1);
    assert_eq!(lists_of(&fake, "/apis/cilium.io/v2/ciliumendpoints"), 0);

    // A slice changed through the watch reaches the next snapshot.
    fake.apply_json(mk_cilium_endpoint_slice("ces-1", "cep-010", "10.244.2.11"));
    let snapshot = next_snapshot(&mut rx).await;
    assert_eq!(endpoint_ips(&snapshot), ["10.244.2.11"]);
}

#[tokio::test]
async fn absent_apis_start_no_watcher_and_say_why() {
    let logs = CapturedLogs::start();
    let fake = FakeKube::start().await;
    fake.install_cilium_crds();
    apply_cilium_objects(&fake);
    let options = KubeOptions {
        service_exports: true,
        ..KubeOptions::default()
    };
    let mut rx = KubeSource::new(fake.client(), mk_cluster("cluster3", 3))
        .with_options(options)
        .watch_rx();
    let snapshot = next_snapshot(&mut rx).await;
    assert_eq!(endpoint_ips(&snapshot), ["10.244.2.74"]);
    assert!(snapshot.state.service_exports.is_empty());
    let requests = fake.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("/ciliumendpointslices") || r.contains("/serviceexports")),
        "{requests:#?}"
    );
    let text = logs.text();
    assert!(
        text.contains(
            "multicluster.x-k8s.io/v1alpha1 does not serve serviceexports (the MCS-API CRDs are \
             not installed): no ServiceExport is read, none is exported"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "cilium.io/v2alpha1 does not serve ciliumendpointslices: ipcache entries come from \
             CiliumEndpoints"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn options_force_endpoint_slices_off_and_keep_service_exports_unread() {
    let logs = CapturedLogs::start();
    let fake = FakeKube::start().await;
    fake.install_cilium_crds();
    fake.install_cilium_endpoint_slice_crd();
    fake.install_mcs_crds();
    apply_cilium_objects(&fake);
    fake.apply_json(mk_cilium_endpoint_slice("ces-1", "cep-010", "10.244.2.10"));
    fake.apply_json(mk_service_export("bar", "web"));
    let options = KubeOptions {
        endpoint_slices: Some(false),
        service_exports: false,
        ..KubeOptions::default()
    };
    let mut rx = KubeSource::new(fake.client(), mk_cluster("cluster3", 3))
        .with_options(options)
        .watch_rx();
    let snapshot = next_snapshot(&mut rx).await;
    assert_eq!(endpoint_ips(&snapshot), ["10.244.2.74"]);
    assert_eq!(
        lists_of(&fake, "/apis/cilium.io/v2alpha1/ciliumendpointslices"),
        0
    );
    assert_eq!(
        lists_of(&fake, "/apis/multicluster.x-k8s.io/v1alpha1/serviceexports"),
        0
    );
    let text = logs.text();
    assert!(
        text.contains(
            "MCS-API service exports are off (export.mcsApi): ServiceExports are not read"
        ),
        "{text}"
    );
    assert!(
        text.contains("set by source.kube.ciliumEndpointSlices"),
        "{text}"
    );
}
