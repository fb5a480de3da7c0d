//! The agent as KVStoreMesh, end to end: a three-member full mesh planned by `fleetmesh
//! fleet plan` on loopback, every apiserver and agent started in-process from the
//! generated files (embedded stores), and `etcdctl` (Go's clientv3) reading cluster c1's
//! agent with the local-role certificate the plan wrote for c1's own Cilium agents.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetmesh::agent::{Agent, AgentConfig};
use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use fleetmesh::kvstore::Store;
use fleetmesh::remote::LinkSettings;
use fleetmesh::tls::TlsFiles;
use serde_json::Value;
use support::etcd_api::{ETCDCTL, etcdctl_env};
use support::etcdctl::{Etcdctl, Kvs, cache_key, cilium_config, values};
use tokio::process::Command;
use tokio::sync::oneshot;

const TIMEOUT: Duration = Duration::from_secs(20);
/// How long a removed peer's keys stay here (KVStoreMesh: 3 minutes).
const DRAIN_GRACE_SECONDS: u64 = 2;
const MEMBERS: [&str; 3] = ["c1", "c2", "c3"];

/// Member `i`'s cluster: a node, two pods of a global service and its slice, with
/// addresses of its own. `ready_backends` of the two are ready.
fn manifests(i: usize, ready_backends: usize) -> String {
    let endpoints: String = (0..2)
        .map(|b| {
            format!(
                "- addresses: [10.{i}.1.{}]\n  conditions: {{ready: {}}}\n",
                b + 5,
                b < ready_backends
            )
        })
        .collect();
    let pods: String = (0..2)
        .map(|b| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: cart-{b}, namespace: shop, labels: {{app: cart}}}}\n\
                 spec: {{nodeName: node-{i}, containers: [{{name: cart, image: cart}}]}}\n\
                 status: {{phase: Running, hostIP: 172.18.{i}.2, podIP: 10.{i}.1.{ip}, podIPs: [{{ip: 10.{i}.1.{ip}}}]}}\n",
                ip = b + 5
            )
        })
        .collect();
    // Pods are exported only once their namespace is known (and global).
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata: {{name: node-{i}}}\n\
         spec: {{podCIDR: 10.{i}.1.0/24, podCIDRs: [10.{i}.1.0/24]}}\n\
         status: {{addresses: [{{type: InternalIP, address: 172.18.{i}.2}}]}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: cart\n  namespace: shop\n  \
         annotations: {{service.cilium.io/global: \"true\"}}\n\
         spec: {{clusterIP: 10.96.0.10, selector: {{app: cart}}, ports: [{{name: http, port: 80}}]}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: cart-1\n  namespace: shop\n  \
         labels: {{kubernetes.io/service-name: cart}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{endpoints}{pods}"
    )
}

/// The mesh under test: c1's agent is the one read; c2 and c3 are its peers.
struct Mesh {
    out: PathBuf,
    apiservers: BTreeMap<&'static str, ApiserverProcess>,
    agents: BTreeMap<&'static str, Agent>,
}

impl Mesh {
    async fn start(out: &Path) -> Self {
        let mut apiservers = BTreeMap::new();
        for (i, name) in MEMBERS.iter().enumerate() {
            let dir = out.join(name);
            std::fs::write(dir.join("manifests/cart.yaml"), manifests(i + 1, 2)).unwrap();
            apiservers.insert(*name, start_apiserver(&dir).await);
        }
        let mut agents = BTreeMap::new();
        for name in MEMBERS {
            let mut config = AgentConfig::load(&out.join(name).join("agent.yaml")).unwrap();
            config.api.listen = "127.0.0.1:0".parse().unwrap();
            let etcd_api = config
                .etcd_api
                .as_mut()
                .expect("the plan configures etcdApi");
            etcd_api.listen = "127.0.0.1:0".parse().unwrap();
            etcd_api.drain_grace = Duration::from_secs(DRAIN_GRACE_SECONDS);
            config.link = LinkSettings {
                backoff_min: Duration::from_millis(50),
                backoff_max: Duration::from_millis(300),
                ..config.link
            };
            agents.insert(name, Agent::start(config).await.unwrap());
        }
        Self {
            out: out.to_path_buf(),
            apiservers,
            agents,
        }
    }

    /// `etcdctl` pointed at c1's agent with the files its Cilium config for `peer`
    /// names (mapped from Cilium's mount path to the plan's directory).
    fn etcdctl_env(&self, peer: &str) -> Vec<(&'static str, String)> {
        let (endpoints, files) = cilium_config(&self.out.join("c1/cilium-kvstoremesh"), peer);
        assert_eq!(
            endpoints,
            ["https://fleetmesh-agent.fleetmesh.svc:2379"],
            "Cilium dials the agent's Service"
        );
        let addr = self.agents["c1"].etcd_api_addr.unwrap();
        etcdctl_env(&format!("https://127.0.0.1:{}", addr.port()), &files)
    }

    /// `get --prefix` through etcdctl: the keys, and the header revision.
    async fn get_prefix(&self, prefix: &str) -> (Kvs, i64) {
        self.etcdctl().get_prefix(prefix).await
    }

    fn etcdctl(&self) -> Etcdctl {
        Etcdctl {
            env: self.etcdctl_env("c2"),
        }
    }

    /// What c1's agent must serve: c2's and c3's `cilium/state/` re-keyed as KVStoreMesh
    /// does, read straight from their stores.
    async fn expected_cache(&self, peers: &[&str]) -> BTreeMap<String, Vec<u8>> {
        let mut expected = BTreeMap::new();
        for peer in peers {
            let store = &self.apiservers[peer].store;
            let listing = store.list("cilium/state/").await.unwrap();
            for kv in listing.kvs {
                let key = cache_key(peer, &kv.key);
                expected.insert(key, kv.value.to_vec());
            }
        }
        expected
    }

    async fn wait_for_cache(&self, peers: &[&str]) -> Kvs {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let expected = self.expected_cache(peers).await;
            let (served, _) = self.get_prefix("cilium/cache/").await;
            let values = values(&served);
            if values == expected {
                return served;
            }
            assert!(
                Instant::now() < deadline,
                "c1's cache keys never matched its peers' state:\nserved {:#?}\nexpected {:#?}",
                text(&values),
                text(&expected)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An apiserver on a thread with its own runtime, so that stopping it is a process
/// dying: every connection closes at once and open watch streams break.
struct ApiserverProcess {
    store: Arc<dyn Store>,
    stop_tx: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ApiserverProcess {
    async fn stop(self) {
        self.stop_tx.send(()).unwrap();
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
    }
}

async fn start_apiserver(dir: &Path) -> ApiserverProcess {
    let mut config = ApiserverConfig::load(&dir.join("apiserver.yaml")).unwrap();
    config.health.listen = "127.0.0.1:0".parse().unwrap();
    let (store_tx, store_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut apiserver = Apiserver::start(config).await.unwrap();
            tokio::time::timeout(TIMEOUT, apiserver.synced())
                .await
                .unwrap()
                .unwrap();
            let _ = store_tx.send(apiserver.store.clone());
            let _ = stop_rx.await;
        });
        drop(runtime);
    });
    ApiserverProcess {
        store: store_rx.await.unwrap(),
        stop_tx,
        thread,
    }
}

fn text(kvs: &BTreeMap<String, Vec<u8>>) -> BTreeMap<&str, String> {
    kvs.iter()
        .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn plan(dir: &Path) -> PathBuf {
    let out = dir.join("out");
    let members: String = MEMBERS
        .iter()
        .zip(fleetmesh::testkit::free_ports(MEMBERS.len()).unwrap())
        .map(|(name, port)| format!("  - {{name: {name}, address: \"127.0.0.1:{port}\"}}\n"))
        .collect();
    let profile = dir.join("profile.yaml");
    std::fs::write(
        &profile,
        format!("mesh: km\nmembers:\n{members}topology: {{kind: full-mesh}}\nkvstoremesh: {{}}\n"),
    )
    .unwrap();
    support::fleet::run_plan(&profile, &out);
    out
}

#[tokio::test]
async fn c1_s_agent_serves_its_peers_as_kvstoremesh_would() {
    let dir = tempfile::tempdir().unwrap();
    let out = plan(dir.path());
    let mut cilium_files: Vec<String> = std::fs::read_dir(out.join("c1/cilium-kvstoremesh"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cilium_files.sort();
    assert_eq!(
        cilium_files,
        [
            "c2",
            "c3",
            "local-etcd-client-ca.crt",
            "local-etcd-client.crt",
            "local-etcd-client.key"
        ]
    );
    let mut mesh = Mesh::start(&out).await;

    // Key for key, byte for byte: c2's and c3's `cilium/state/`, re-keyed.
    let served = mesh.wait_for_cache(&["c2", "c3"]).await;
    for peer in ["c2", "c3"] {
        for prefix in ["nodes/v1", "services/v1", "identities/v1", "ip/v1"] {
            let start = format!("cilium/cache/{prefix}/{peer}/");
            assert!(
                served.keys().any(|k| k.starts_with(&start)),
                "no key under {start}"
            );
        }
    }
    // Canaries for every kind of every peer, once synced; configs say `cached`.
    let (canaries, _) = mesh.get_prefix("cilium/synced/").await;
    let names: Vec<&str> = canaries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "cilium/synced/c2/cilium/cache/identities/v1",
            "cilium/synced/c2/cilium/cache/ip/v1",
            "cilium/synced/c2/cilium/cache/nodes/v1",
            "cilium/synced/c2/cilium/cache/services/v1",
            "cilium/synced/c3/cilium/cache/identities/v1",
            "cilium/synced/c3/cilium/cache/ip/v1",
            "cilium/synced/c3/cilium/cache/nodes/v1",
            "cilium/synced/c3/cilium/cache/services/v1",
        ]
    );
    let (configs, _) = mesh.get_prefix("cilium/cluster-config/").await;
    assert_eq!(configs.len(), 2, "c1 itself is not cached: {configs:?}");
    for (peer, id) in [("c2", 2), ("c3", 3)] {
        let config: Value =
            serde_json::from_slice(&configs[&format!("cilium/cluster-config/{peer}")].0).unwrap();
        assert_eq!(config["id"], id);
        assert_eq!(config["capabilities"]["cached"], true);
        assert_eq!(config["capabilities"]["syncedCanaries"], true);
    }
    let (heartbeat, _) = mesh.get_prefix("cilium/.heartbeat").await;
    assert_eq!(heartbeat.len(), 1);

    // The local role reads the cache and nothing else; another cluster's certificate
    // reads nothing.
    let state = mesh
        .etcdctl()
        .run(&["get", "--prefix", "cilium/state/"])
        .await;
    assert!(!state.status.success(), "the local role read cilium/state/");
    let c2_client = TlsFiles {
        ca: out.join("c2/certs/ca.crt"),
        cert: out.join("c2/certs/client-c2.crt"),
        key: out.join("c2/certs/client-c2.key"),
    };
    let addr = mesh.agents["c1"].etcd_api_addr.unwrap();
    let foreign = Command::new(ETCDCTL)
        .envs(etcdctl_env(
            &format!("https://127.0.0.1:{}", addr.port()),
            &c2_client,
        ))
        .args(["get", "--prefix", "cilium/cache/"])
        .output()
        .await
        .unwrap();
    assert!(
        !foreign.status.success(),
        "c2's certificate read c1's cache"
    );
    assert!(
        String::from_utf8_lossy(&foreign.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&foreign.stderr)
    );

    // `fleetmesh status`: the cache keys held per peer.
    let statuses = mesh.agents["c1"].statuses();
    let c2_held = served.keys().filter(|k| k.contains("/v1/c2/")).count() as u64;
    let c2_status = statuses.iter().find(|s| s.cluster == "c2").unwrap();
    let cache = c2_status.cache.as_ref().expect("the cache keys are shown");
    assert_eq!(
        (cache.keys, cache.canaries, cache.config),
        (c2_held, 4, true)
    );

    // A watch from a revision sees a change in c2's manifests.
    let (_, revision) = mesh.get_prefix("cilium/cache/").await;
    let mut watch = mesh.etcdctl().watch("cilium/cache/", revision + 1);
    let service_key = "cilium/cache/services/v1/c2/shop/cart";
    let before = served[service_key].0.clone();
    std::fs::write(out.join("c2/manifests/cart.yaml"), manifests(2, 1)).unwrap();
    let c2_store = mesh.apiservers["c2"].store.clone();
    let exported = tokio::spawn(async move {
        loop {
            let value = c2_store
                .get("cilium/state/services/v1/c2/shop/cart")
                .await
                .unwrap()
                .map(|kv| kv.value.to_vec());
            if value.as_deref() != Some(before.as_slice()) {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    watch
        .until("the change", TIMEOUT, |events| !events.is_empty())
        .await;
    let event = &watch.events[0];
    let seen = event.at;
    let exported = exported.await.unwrap();
    assert!(!event.delete, "{event:?}");
    assert_eq!(event.key, service_key);
    let lag = seen.saturating_duration_since(exported);
    assert!(
        lag < Duration::from_secs(1),
        "seen {lag:?} after c2 exported it"
    );
    let served = mesh.wait_for_cache(&["c2", "c3"]).await;

    // c2's apiserver restarts on a new store (a new epoch), with one backend back.
    let (_, revision) = mesh.get_prefix("cilium/cache/").await;
    let mut watch = mesh.etcdctl().watch("cilium/cache/", revision + 1);
    let old_epoch = mesh.apiservers["c2"].store.epoch();
    let resyncs = |mesh: &Mesh| {
        mesh.agents["c1"]
            .statuses()
            .iter()
            .find(|s| s.cluster == "c2")
            .map(|s| (s.full_resyncs, s.ready))
            .unwrap()
    };
    let resyncs_before = resyncs(&mesh).0;
    mesh.apiservers.remove("c2").unwrap().stop().await;
    std::fs::write(out.join("c2/manifests/cart.yaml"), manifests(2, 2)).unwrap();
    let restarted = start_apiserver(&out.join("c2")).await;
    assert_ne!(restarted.store.epoch(), old_epoch, "a new epoch");
    mesh.apiservers.insert("c2", restarted);
    support::wait_until("c1 to list the restarted c2 again", TIMEOUT, || {
        let (count, ready) = resyncs(&mesh);
        count > resyncs_before && ready
    })
    .await;
    let after = mesh.wait_for_cache(&["c2", "c3"]).await;
    watch.drain(Duration::from_millis(500)).await;
    let events = &watch.events;
    for event in events {
        let key = &event.key;
        let old = served.get(key).map(|(v, _)| v.as_slice());
        let new = after.get(key).map(|(v, _)| v.as_slice());
        assert_ne!(old, new, "{event:?}: its value did not change");
        if event.delete {
            assert_eq!(new, None, "{key} was deleted but c2 still has it");
        } else {
            assert_eq!(Some(event.value.as_slice()), new);
        }
    }
    for (key, (value, mod_revision)) in &after {
        match served.get(key) {
            Some((old, old_revision)) if old == value => {
                assert_eq!(mod_revision, old_revision, "{key} was rewritten")
            }
            _ => assert!(
                events.iter().any(|e| !e.delete && e.key == *key),
                "{key} changed but no PUT was watched"
            ),
        }
    }
    assert!(
        events.iter().any(|e| !e.delete && e.key == service_key),
        "the service's backend change was watched: {events:?}"
    );

    // Removing c3's remotes file drains its cluster config at once, its keys later.
    let removed_at = Instant::now();
    std::fs::remove_file(out.join("c1/remotes/c3.yaml")).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (configs, _) = mesh.get_prefix("cilium/cluster-config/").await;
        if !configs.contains_key("cilium/cluster-config/c3") {
            break;
        }
        assert!(Instant::now() < deadline, "c3's cluster config stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (c3_keys, _) = mesh.get_prefix("cilium/cache/ip/v1/c3/").await;
    if removed_at.elapsed() < Duration::from_secs(DRAIN_GRACE_SECONDS) {
        assert!(
            !c3_keys.is_empty(),
            "c3's keys went with its cluster config"
        );
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (cache, _) = mesh.get_prefix("cilium/cache/").await;
        let (canaries, _) = mesh.get_prefix("cilium/synced/c3/").await;
        if !cache.keys().any(|k| k.contains("/v1/c3/")) && canaries.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "c3's keys were never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(removed_at.elapsed() >= Duration::from_secs(DRAIN_GRACE_SECONDS));
    mesh.wait_for_cache(&["c2"]).await;

    for (_, agent) in mesh.agents {
        agent.stop().await;
    }
    for (_, apiserver) in mesh.apiservers {
        apiserver.stop().await;
    }
}
