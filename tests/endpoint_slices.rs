//! The agent's EndpointSlice writer end to end: real apiservers exporting manifests over
//! mutual TLS, a real agent merging them, and the in-test Kubernetes API server
//! (`support::fake_kube`) as the local cluster's API, reached through a kubeconfig.
//! The slices must follow the mesh's selection (affinity, failover and back, remote
//! changes, drains, services that stop being global), be updated in place, be repaired
//! when someone else deletes them, and leave every slice that is not the agent's alone.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fleetmesh::agent::{
    Agent, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, SOURCE_CLUSTER_LABEL,
};
use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use support::fake_kube::FakeKube;
use support::mesh::MeshPki;

const TIMEOUT: Duration = Duration::from_secs(20);
const SLICE_API: &str = "discovery.k8s.io/v1";
const SLICE_KIND: &str = "EndpointSlice";
/// The Kubernetes EndpointSlice controller's managed-by value.
const K8S_CONTROLLER: &str = "endpointslice-controller.k8s.io";

/// A Service `web/<name>` (global unless `global` is false) and its EndpointSlice with
/// the given backends (ip, ready).
fn service_yaml(
    name: &str,
    global: bool,
    affinity: Option<&str>,
    backends: &[(&str, bool)],
) -> String {
    let mut annotations = String::new();
    if global {
        annotations.push_str("    service.cilium.io/global: \"true\"\n");
    }
    if let Some(a) = affinity {
        annotations.push_str(&format!("    service.cilium.io/affinity: {a}\n"));
    }
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{annotations}")
    };
    let endpoints: String = backends
        .iter()
        .map(|(ip, ready)| format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: {ready}}}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: web\n{annotations}spec:\n  ports: [{{name: http, port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: web\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{endpoints}"
    )
}

struct Member {
    apiserver: Apiserver,
    manifests: std::path::PathBuf,
}

impl Member {
    /// Replaces the member's manifests with `yaml`.
    fn serve(&self, yaml: &str) {
        std::fs::write(self.manifests.join("web.yaml"), yaml).unwrap();
    }
}

/// Starts `name`'s apiserver (embedded store) over `yaml`.
async fn start_member(pki: &MeshPki, name: &str, id: u32, yaml: &str) -> Member {
    let dir = pki.dir().join(name);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("web.yaml"), yaml).unwrap();
    let tls = pki.server_files(name);
    let text = format!(
        "cluster: {{name: {name}, id: {id}}}\nsource: {{manifests: {manifests:?}}}\n\
         grpc:\n  listen: \"127.0.0.1:0\"\n  tls: {{ca: {:?}, cert: {:?}, key: {:?}}}\n\
         health: {{listen: \"127.0.0.1:0\"}}\n",
        tls.ca, tls.cert, tls.key
    );
    let config = ApiserverConfig::parse(&text, &dir.join("apiserver.yaml")).unwrap();
    let mut apiserver = Apiserver::start(config).await.unwrap();
    tokio::time::timeout(TIMEOUT, apiserver.synced())
        .await
        .unwrap()
        .unwrap();
    Member {
        apiserver,
        manifests,
    }
}

/// Starts `c1`'s agent with one remote file per member and EndpointSlices written to
/// `kube`, checked again every second.
async fn start_agent(pki: &MeshPki, kube: &FakeKube, members: &[(&str, &Member)]) -> Agent {
    let client = pki.client_files("c1");
    for (name, member) in members {
        pki.peer_config(name, member.apiserver.grpc_addr.unwrap(), &client);
    }
    start_agent_with(pki, kube).await
}

async fn start_agent_with(pki: &MeshPki, kube: &FakeKube) -> Agent {
    let kubeconfig = pki.dir().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig);
    let extra = format!(
        "endpointSlices: {{enabled: true, kubeconfig: {kubeconfig:?}, resyncSeconds: 1}}\n"
    );
    support::mesh::start_agent(pki, "c1", 1, &[], &extra).await
}

async fn wait_for(what: &str, done: impl FnMut() -> bool) {
    support::wait_until(what, TIMEOUT, done).await;
}

/// Every slice labelled as the agent's.
fn ours(kube: &FakeKube) -> Vec<EndpointSlice> {
    kube.list_json(SLICE_API, SLICE_KIND)
        .into_iter()
        .map(|v| serde_json::from_value::<EndpointSlice>(v).unwrap())
        .filter(|s| label(s, MANAGED_BY_LABEL) == MANAGED_BY)
        .collect()
}

fn label<'a>(slice: &'a EndpointSlice, key: &str) -> &'a str {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map_or("", String::as_str)
}

/// (service, source cluster, addresses) of the agent's slices, sorted.
fn summary(kube: &FakeKube) -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<_> = ours(kube)
        .iter()
        .map(|s| {
            let ips = s
                .endpoints
                .iter()
                .flatten()
                .flat_map(|e| e.addresses.clone())
                .collect();
            (
                label(s, SERVICE_NAME_LABEL).to_string(),
                label(s, SOURCE_CLUSTER_LABEL).to_string(),
                ips,
            )
        })
        .collect();
    out.sort();
    out
}

fn row(service: &str, cluster: &str, ips: &[&str]) -> (String, String, Vec<String>) {
    (
        service.to_string(),
        cluster.to_string(),
        ips.iter().map(|s| s.to_string()).collect(),
    )
}

/// The agent's slice of `service` from `cluster`.
fn slice_of(kube: &FakeKube, service: &str, cluster: &str) -> Option<EndpointSlice> {
    ours(kube).into_iter().find(|s| {
        label(s, SERVICE_NAME_LABEL) == service && label(s, SOURCE_CLUSTER_LABEL) == cluster
    })
}

/// A slice that is not the agent's: the Kubernetes controller's, for `service`.
fn foreign_slice(name: &str, service: &str, ip: &str) -> Value {
    json!({
        "apiVersion": SLICE_API, "kind": SLICE_KIND,
        "metadata": {"name": name, "namespace": "web", "labels": {
            SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: K8S_CONTROLLER,
        }},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
    })
}

fn get_slice(kube: &FakeKube, name: &str) -> Option<Value> {
    kube.get_json(SLICE_API, SLICE_KIND, Some("web"), name)
}

/// c1's services: `api` (affinity local, its one backend ready or not), `all` (global
/// unless `all_global` is false, no local backend) and `plain` (not global).
fn c1_web(api_ready: bool, all_global: bool) -> String {
    [
        service_yaml("api", true, Some("local"), &[("10.1.0.1", api_ready)]),
        service_yaml("all", all_global, None, &[]),
        service_yaml("plain", false, None, &[("10.1.0.9", true)]),
    ]
    .join("\n---\n")
}

fn c2_web(all_backends: &[(&str, bool)]) -> String {
    [
        service_yaml("api", true, None, &[("10.2.0.1", true), ("10.2.0.2", true)]),
        service_yaml("all", true, None, all_backends),
    ]
    .join("\n---\n")
}

#[tokio::test]
async fn slices_follow_the_mesh_and_nothing_else_is_touched() {
    let pki = MeshPki::new();
    let kube = FakeKube::start().await;
    // Before the agent: the controller's slices of a global and of a non-global service,
    // and a slice of the agent's own left from an earlier run that nothing backs now.
    kube.apply_json(foreign_slice("all-k8s01", "all", "10.1.0.7"));
    kube.apply_json(foreign_slice("plain-k8s01", "plain", "10.1.0.9"));
    let mut leftover = foreign_slice("all-c9-0000000000", "all", "10.9.0.1");
    leftover["metadata"]["labels"][MANAGED_BY_LABEL] = json!(MANAGED_BY);
    leftover["metadata"]["labels"][SOURCE_CLUSTER_LABEL] = json!("c9");
    kube.apply_json(leftover);
    let foreign_before = [
        get_slice(&kube, "all-k8s01").unwrap(),
        get_slice(&kube, "plain-k8s01").unwrap(),
    ];

    let c1 = start_member(&pki, "c1", 1, &c1_web(true, true)).await;
    let c2 = start_member(&pki, "c2", 2, &c2_web(&[("10.2.0.3", true)])).await;
    let c3 = start_member(
        &pki,
        "c3",
        3,
        &service_yaml("all", true, None, &[("10.3.0.1", true)]),
    )
    .await;
    let agent = start_agent(&pki, &kube, &[("c1", &c1), ("c2", &c2), ("c3", &c3)]).await;

    // `all` gets one slice per remote cluster; `api` prefers its ready local backend and
    // gets none; the leftover is deleted.
    let first = [
        row("all", "c2", &["10.2.0.3"]),
        row("all", "c3", &["10.3.0.1"]),
    ];
    wait_for("the first slices", || summary(&kube) == first).await;
    let c2_all = slice_of(&kube, "all", "c2").unwrap();
    assert_eq!(c2_all.metadata.namespace.as_deref(), Some("web"));
    assert_eq!(c2_all.address_type, "IPv4");
    let port = &c2_all.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (Some("http"), Some(8080), Some("TCP"))
    );
    let conditions = c2_all.endpoints.as_ref().unwrap()[0]
        .conditions
        .clone()
        .unwrap();
    assert_eq!(
        (conditions.ready, conditions.serving, conditions.terminating),
        (Some(true), Some(true), Some(false))
    );
    assert!(get_slice(&kube, "all-c9-0000000000").is_none());

    // A remote backend change: the same slice (name and uid) is updated in place.
    c2.serve(&c2_web(&[("10.2.0.3", true), ("10.2.0.4", true)]));
    wait_for("c2's new backend", || {
        slice_of(&kube, "all", "c2").is_some_and(|s| s.endpoints.iter().flatten().count() == 2)
    })
    .await;
    let updated = slice_of(&kube, "all", "c2").unwrap();
    assert_eq!(updated.metadata.name, c2_all.metadata.name);
    assert_eq!(updated.metadata.uid, c2_all.metadata.uid);
    assert_ne!(
        updated.metadata.resource_version,
        c2_all.metadata.resource_version
    );

    // c1's only api backend becomes unready: failover to c2, whose slice appears; and
    // back once it is ready again.
    c1.serve(&c1_web(false, true));
    wait_for("failover to c2", || {
        slice_of(&kube, "api", "c2").is_some_and(|s| s.endpoints.iter().flatten().count() == 2)
    })
    .await;
    c1.serve(&c1_web(true, true));
    wait_for("fail-back to c1", || slice_of(&kube, "api", "c2").is_none()).await;

    // Someone deletes one of the agent's slices: the next resync puts it back.
    let c3_all = slice_of(&kube, "all", "c3").unwrap();
    let c3_name = c3_all.metadata.name.clone().unwrap();
    assert!(kube.delete(SLICE_API, SLICE_KIND, Some("web"), &c3_name));
    wait_for("the deleted slice to be recreated", || {
        get_slice(&kube, &c3_name).is_some()
    })
    .await;

    // Someone takes one of the agent's slices over (relabels it as another manager's):
    // it is no longer the agent's, so the agent leaves it alone, though it wants the name.
    let mut taken = get_slice(&kube, &c3_name).unwrap();
    taken["metadata"]["labels"][MANAGED_BY_LABEL] = json!(K8S_CONTROLLER);
    kube.apply_json(taken);
    let taken = get_slice(&kube, &c3_name).unwrap();
    let since_takeover = kube.requests().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let attempts = kube.requests()[since_takeover..]
        .iter()
        .filter(|r| r.starts_with("POST /apis/discovery.k8s.io/v1/namespaces/web/endpointslices"))
        .count();
    assert!(attempts >= 1, "the agent did not try to recreate its slice");
    assert_eq!(get_slice(&kube, &c3_name).unwrap(), taken);

    // Someone edits one: the next resync puts back what the mesh selects, in place.
    let c2_name = updated.metadata.name.clone().unwrap();
    let mut edited = get_slice(&kube, &c2_name).unwrap();
    edited["endpoints"] = json!([{"addresses": ["10.66.0.1"]}]);
    kube.apply_json(edited);
    let c2_now = || row("all", "c2", &["10.2.0.3", "10.2.0.4"]);
    wait_for("the edited slice to be repaired", || {
        summary(&kube).contains(&c2_now())
    })
    .await;
    assert_eq!(
        slice_of(&kube, "all", "c2").unwrap().metadata.uid,
        c2_all.metadata.uid
    );

    // c3's peer file is removed: the agent wants no slice of c3's any more (the one taken
    // over stays, being someone else's), c2's stay.
    std::fs::remove_file(pki.dir().join("remotes").join("c3.yaml")).unwrap();
    wait_for("c3's slices to go", || summary(&kube) == [c2_now()]).await;

    // `all` stops being global in c1: its slices go.
    c1.serve(&c1_web(true, false));
    wait_for("all's slices to go", || ours(&kube).is_empty()).await;

    // The other slices were never written to, deleted or re-created.
    let foreign_after = [
        get_slice(&kube, "all-k8s01").unwrap(),
        get_slice(&kube, "plain-k8s01").unwrap(),
    ];
    assert_eq!(foreign_after, foreign_before);
    assert_eq!(get_slice(&kube, &c3_name).unwrap(), taken);
    let requests = kube.requests();
    let writes_to_foreign: Vec<&String> = requests
        .iter()
        .filter(|r| !r.starts_with("GET ") && r.contains("k8s01"))
        .chain(
            requests[since_takeover..]
                .iter()
                .filter(|r| !r.starts_with("GET ") && r.contains(&c3_name)),
        )
        .collect();
    assert!(writes_to_foreign.is_empty(), "{writes_to_foreign:?}");
    agent.stop().await;
}

#[tokio::test]
async fn nothing_is_written_or_deleted_before_the_local_link_has_synced() {
    let pki = MeshPki::new();
    let kube = FakeKube::start().await;
    let mut kept = foreign_slice("all-c2-0000000000", "all", "10.2.0.3");
    kept["metadata"]["labels"][MANAGED_BY_LABEL] = json!(MANAGED_BY);
    kube.apply_json(kept);
    // The local apiserver does not answer (nothing listens on port 1).
    let client = pki.client_files("c1");
    pki.peer_config("c1", "127.0.0.1:1".parse().unwrap(), &client);
    let agent = start_agent_with(&pki, &kube).await;

    // Well past the writer's first poll and a resync period.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(get_slice(&kube, "all-c2-0000000000").is_some());
    let slice_requests: Vec<String> = kube
        .requests()
        .into_iter()
        .filter(|r| r.contains("endpointslices"))
        .collect();
    assert!(slice_requests.is_empty(), "{slice_requests:?}");
    agent.stop().await;
}
