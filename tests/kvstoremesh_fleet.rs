//! Issue 17's acceptance with real processes: a three-member mesh planned by `fleetmesh
//! fleet plan` with `etcdApi` and `kvstoremesh`, every apiserver and c1's agent a
//! `fleetmesh` process on the embedded store, and Debian's `etcdctl` reading c1's agent
//! with the local-role certificate the plan wrote for c1's Cilium agents
//! (`c1/cilium-kvstoremesh/`), and c2's and c3's apiservers with the remote-role one
//! (`c1/clustermesh/`), as c1's Cilium agents would without KVStoreMesh.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::etcd_api::etcdctl_env;
use support::etcdctl::{Etcdctl, Kvs, cache_key, cilium_config, values};
use support::fleet::{Fleet, FleetStore, Member};

const NAMES: [&str; 3] = ["c1", "c2", "c3"];
const PEERS: [&str; 2] = ["c2", "c3"];
const TIMEOUT: Duration = Duration::from_secs(20);
/// How long c1's agent keeps a removed peer's keys (KVStoreMesh: 3 minutes).
const DRAIN_GRACE: Duration = Duration::from_secs(4);
/// How long the watches are read after the cache matched, for late events.
const QUIET: Duration = Duration::from_millis(1500);

/// What member `i` runs at `step` (0: first, 1: a backend of `cart` fails, 2: written
/// while its apiserver is down): dual-stack nodes, a global service with two address
/// families, hostnames, zones, hints and a backend serving while terminating, a global
/// service it does not share, one it does not export, its MCS-API export, and pods of
/// two identities with named ports.
fn manifests(i: usize, step: u8) -> String {
    let backend_6_ready = step != 1;
    let gone_at_2 = step == 2;
    let node_b_pool = if step == 2 { "blue" } else { "green" };
    let node = |n: &str, host: u8, pool: &str| {
        format!(
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-{i}-{n}\n  \
             labels: {{kubernetes.io/hostname: node-{i}-{n}, topology.kubernetes.io/zone: zone-{n}, pool: {pool}}}\n\
             spec: {{podCIDRs: [10.{i}.{host}.0/24, \"fd00:10:{i}:{host}::/64\"]}}\n\
             status: {{addresses: [{{type: InternalIP, address: 172.18.{i}.{host}}}, \
             {{type: InternalIP, address: \"fd00:18:{i}::{host}\"}}, {{type: ExternalIP, address: 203.0.{i}.{host}}}, \
             {{type: Hostname, address: node-{i}-{n}}}]}}\n"
        )
    };
    let pod = |name: &str, app: &str, ip: u8, v6: bool| {
        let v6 = if v6 {
            format!(", {{ip: \"fd00:10:{i}:1::{ip}\"}}")
        } else {
            String::new()
        };
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {app}, tier: web}}}}\n\
             spec:\n  nodeName: node-{i}-a\n  serviceAccountName: {app}\n  containers:\n  \
             - {{name: main, image: {app}, ports: [{{name: http, containerPort: 8080}}, {{name: grpc, containerPort: 9090, protocol: TCP}}]}}\n  \
             - {{name: sidecar, image: proxy, ports: [{{name: metrics, containerPort: 15090, protocol: UDP}}]}}\n\
             status: {{phase: Running, hostIP: 172.18.{i}.1, podIP: 10.{i}.1.{ip}, podIPs: [{{ip: 10.{i}.1.{ip}}}{v6}]}}\n"
        )
    };
    let mut text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{team: shop}}}}\n\
         {}{}\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: cart\n  namespace: shop\n  labels: {{app: cart}}\n  \
         annotations: {{service.cilium.io/global: \"true\"}}\n\
         spec:\n  clusterIP: 10.96.{i}.10\n  clusterIPs: [10.96.{i}.10, \"fd00:96:{i}::10\"]\n  selector: {{app: cart}}\n  \
         ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: grpc, port: 9090, protocol: TCP}}]\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: cart-v4\n  namespace: shop\n  \
         labels: {{kubernetes.io/service-name: cart}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}, {{name: grpc, port: 9090, protocol: TCP}}]\nendpoints:\n\
         - addresses: [10.{i}.1.5]\n  hostname: cart-0\n  zone: zone-a\n  hints: {{forZones: [{{name: zone-a}}]}}\n  conditions: {{ready: true}}\n\
         - addresses: [10.{i}.1.6]\n  zone: zone-b\n  conditions: {{ready: {backend_6_ready}}}\n",
        node("a", 1, "green"),
        node("b", 2, node_b_pool),
    );
    if !gone_at_2 {
        text.push_str(&format!(
            "- addresses: [10.{i}.1.7]\n  conditions: {{ready: false, serving: true, terminating: true}}\n"
        ));
    }
    text.push_str(&format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: cart-v6\n  namespace: shop\n  \
         labels: {{kubernetes.io/service-name: cart}}\n\
         addressType: IPv6\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n\
         - addresses: [\"fd00:10:{i}:1::5\"]\n  conditions: {{ready: true}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: ledger\n  namespace: shop\n  \
         annotations: {{service.cilium.io/global: \"true\", service.cilium.io/shared: \"false\"}}\n\
         spec: {{clusterIP: 10.96.{i}.20, selector: {{app: ledger}}, ports: [{{port: 5432}}]}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: internal, namespace: shop}}\n\
         spec: {{clusterIP: 10.96.{i}.30, ports: [{{port: 80}}]}}\n\
         ---\napiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n\
         metadata: {{name: cart, namespace: shop, creationTimestamp: \"2026-01-10T12:00:00Z\"}}\n\
         spec: {{exportedLabels: {{tier: front}}, exportedAnnotations: {{owner: shop-team}}}}\n"
    ));
    text.push_str(&pod("cart-0", "cart", 5, true));
    text.push_str(&pod("cart-1", "cart", 6, false));
    if !gone_at_2 {
        text.push_str(&pod("cart-2", "cart", 7, false));
    }
    text.push_str(&pod("ledger-0", "ledger", 20, false));
    if step == 2 {
        // A new identity and its address.
        text.push_str(&pod("audit-0", "audit", 30, false));
    }
    text
}

/// As `member`'s Cilium agents read its agent (KVStoreMesh): the local-role files of
/// `<member>/cilium-kvstoremesh/`, named by its config for `peer` (mapped from Cilium's
/// mount path). The config dials the agent's Service; here it listens on loopback.
fn cache_of(member: &Member, peer: &str) -> Etcdctl {
    let (endpoints, files) = cilium_config(&member.dir.join("cilium-kvstoremesh"), peer);
    assert_eq!(endpoints, ["https://fleetmesh-agent.fleetmesh.svc:2380"]);
    let endpoint = format!("https://127.0.0.1:{}", member.agent_etcd_port.unwrap());
    Etcdctl {
        env: etcdctl_env(&endpoint, &files),
    }
}

/// As `member`'s Cilium agents read `peer`'s apiserver directly: its config file and
/// the remote-role files of `<member>/clustermesh/`.
fn state_of(member: &Member, peer: &str) -> Etcdctl {
    let (endpoints, files) = cilium_config(&member.dir.join("clustermesh"), peer);
    assert_eq!(endpoints.len(), 1);
    Etcdctl {
        env: etcdctl_env(&endpoints[0], &files),
    }
}

/// The mesh under test and the etcdctl views of it.
struct Mesh {
    fleet: Fleet,
    cache: Etcdctl,
    states: BTreeMap<&'static str, Etcdctl>,
}

impl Mesh {
    /// What c1's agent must serve of `peers`: their `cilium/state/` read through their
    /// own etcd APIs, re-keyed.
    async fn expected(&self, peers: &[&str]) -> BTreeMap<String, Vec<u8>> {
        let mut expected = BTreeMap::new();
        for peer in peers {
            let (state, _) = self.states[peer].get_prefix("cilium/state/").await;
            for (key, (value, _)) in state {
                expected.insert(cache_key(peer, &key), value);
            }
        }
        expected
    }

    /// Waits until c1's `cilium/cache/` is `peers`' state, key for key and byte for byte.
    async fn converged(&self, peers: &[&str]) -> Kvs {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let expected = self.expected(peers).await;
            let (served, _) = self.cache.get_prefix("cilium/cache/").await;
            let values = values(&served);
            if values == expected {
                return served;
            }
            if Instant::now() > deadline {
                panic!("{}", mismatch(&values, &expected));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `fleetmesh status -o json` of c1's agent.
    fn status(&self) -> Value {
        let out = self.fleetmesh_status("json");
        serde_json::from_str(&out).unwrap()
    }

    fn fleetmesh_status(&self, output: &str) -> String {
        let agent = format!("http://127.0.0.1:{}", self.fleet.member("c1").agent_port);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
            .args(["status", "--agent", &agent, "-o", output])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fleetmesh status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Which keys differ, and how.
fn mismatch(served: &BTreeMap<String, Vec<u8>>, expected: &BTreeMap<String, Vec<u8>>) -> String {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let mut out = String::from("c1's cilium/cache/ never matched its peers' state:\n");
    for (key, value) in expected {
        match served.get(key) {
            None => out.push_str(&format!("missing {key}\n")),
            Some(v) if v != value => out.push_str(&format!(
                "differs {key}\n  served   {}\n  expected {}\n",
                text(v),
                text(value)
            )),
            Some(_) => {}
        }
    }
    for key in served.keys().filter(|k| !expected.contains_key(*k)) {
        out.push_str(&format!("extra {key}\n"));
    }
    out
}

fn peer_status<'a>(status: &'a Value, peer: &str) -> &'a Value {
    status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["cluster"] == peer)
        .unwrap_or_else(|| panic!("no {peer} in the status: {status:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c1_s_agent_process_serves_its_peers_to_etcdctl_as_kvstoremesh_would() {
    let test_started = Instant::now();
    let mut fleet = Fleet::plan_serving_etcd(&NAMES, &FleetStore::Memory, "");
    for (i, name) in NAMES.iter().enumerate() {
        let member = fleet.member(name);
        let config = member.dir.join("apiserver.yaml");
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("{text}export: {{mcsApi: true}}\n")).unwrap();
        member.write_manifest("shop.yaml", &manifests(i + 1, 0));
        fleet.start_apiserver(name).await;
    }
    let agent = fleet.member("c1").dir.join("agent.yaml");
    let text = std::fs::read_to_string(&agent).unwrap();
    let grace = format!("etcdApi:\n  drainGraceSeconds: {}\n", DRAIN_GRACE.as_secs());
    std::fs::write(&agent, text.replace("etcdApi:\n", &grace)).unwrap();
    fleet.start_agent("c1").await;
    let c1 = fleet.member("c1");
    let mesh = Mesh {
        cache: cache_of(c1, "c2"),
        states: PEERS
            .iter()
            .map(|peer| (*peer, state_of(c1, peer)))
            .collect(),
        fleet,
    };

    // Key for key, byte for byte: c2's and c3's `cilium/state/`, re-keyed.
    let served = mesh.converged(&PEERS).await;
    for peer in PEERS {
        for resource in ["nodes", "services", "identities", "ip", "serviceexports"] {
            let start = format!("cilium/cache/{resource}/v1/{peer}/");
            assert!(
                served.keys().any(|k| k.starts_with(&start)),
                "no key under {start}"
            );
        }
    }
    // Canaries once each peer's kinds synced; no service exports canary (Cilium's
    // operator does not read exports from a cache).
    let (canaries, _) = mesh.cache.get_prefix("cilium/synced/").await;
    let names: Vec<&str> = canaries.keys().map(String::as_str).collect();
    let expected: Vec<String> = PEERS
        .iter()
        .flat_map(|peer| {
            ["identities", "ip", "nodes", "services"]
                .map(|res| format!("cilium/synced/{peer}/cilium/cache/{res}/v1"))
        })
        .collect();
    assert_eq!(names, expected);
    for (key, (value, _)) in &canaries {
        let text = std::str::from_utf8(value).unwrap();
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{key}: {text:?} is not RFC 3339: {e}"));
    }
    // Each peer's config as the peer serves it, marked cached.
    let (configs, _) = mesh.cache.get_prefix("cilium/cluster-config/").await;
    assert_eq!(configs.len(), 2, "c1 itself is not cached: {configs:?}");
    for (peer, id) in [("c2", 2), ("c3", 3)] {
        let key = format!("cilium/cluster-config/{peer}");
        let served: Value = serde_json::from_slice(&configs[&key].0).unwrap();
        let (own, _) = mesh.states[peer].get(&[&key]).await;
        let mut own: Value = serde_json::from_slice(&own[&key].0).unwrap();
        assert_eq!(own["id"], id);
        own["capabilities"]["cached"] = true.into();
        own["capabilities"]
            .as_object_mut()
            .unwrap()
            .remove("serviceExportsEnabled");
        assert_eq!(served, own, "{peer}'s cached config");
    }
    let (heartbeat, _) = mesh.cache.get_prefix("cilium/.heartbeat").await;
    assert_eq!(heartbeat.len(), 1);

    // A watch from a revision sees a change of c2's manifests within a second of c2's
    // own etcd API showing it.
    let (_, revision) = mesh.cache.get_prefix("cilium/cache/").await;
    let mut watch = mesh.cache.watch("cilium/cache/", revision + 1);
    let (_, c2_revision) = mesh.states["c2"].get_prefix("cilium/state/").await;
    let mut at_c2 = mesh.states["c2"].watch("cilium/state/", c2_revision + 1);
    // etcdctl connects before the change is made.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = Instant::now();
    mesh.fleet
        .member("c2")
        .write_manifest("shop.yaml", &manifests(2, 1));
    let service_key = "cilium/cache/services/v1/c2/shop/cart";
    let state_key = "cilium/state/services/v1/c2/shop/cart";
    at_c2
        .until("c2 export the change", TIMEOUT, |events| {
            events.iter().any(|e| e.key == state_key)
        })
        .await;
    watch
        .until("c1 serve the change", TIMEOUT, |events| {
            events.iter().any(|e| e.key == service_key)
        })
        .await;
    let exported = at_c2.events.iter().find(|e| e.key == state_key).unwrap();
    let seen = watch.events.iter().find(|e| e.key == service_key).unwrap();
    assert!(!seen.delete);
    assert_eq!(seen.value, exported.value, "the new value, byte for byte");
    let lag = seen.at.saturating_duration_since(exported.at);
    println!(
        "c2's manifest change: at c2's etcd API after {:?}, at c1's agent {lag:?} later",
        exported.at - written
    );
    assert!(
        lag < Duration::from_secs(1),
        "seen {lag:?} after c2 exported it"
    );
    drop(watch);
    drop(at_c2);
    let served = mesh.converged(&PEERS).await;

    // `fleetmesh status`: per peer the keys held, and the etcd clients connected (one
    // watch open now, none once it ends).
    let (_, revision) = mesh.cache.get_prefix("cilium/cache/").await;
    let watch = mesh.cache.watch("cilium/.heartbeat", revision + 1);
    let clients = |status: &Value| peer_status(status, "c2")["cache"]["etcdClients"].clone();
    let deadline = Instant::now() + TIMEOUT;
    while clients(&mesh.status()) != 1 {
        assert!(Instant::now() < deadline, "{:#}", mesh.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = mesh.status();
    for peer in PEERS {
        let cache = &peer_status(&status, peer)["cache"];
        let held = served
            .keys()
            .filter(|k| k.contains(&format!("/v1/{peer}/")))
            .count();
        assert_eq!(cache["keys"], held, "{peer}: {cache}");
        assert_eq!(cache["canaries"], 4, "{peer}: {cache}");
        assert_eq!(cache["config"], true, "{peer}: {cache}");
        assert_eq!(cache["etcdClients"], 1, "{peer}: {cache}");
    }
    let table = mesh.fleetmesh_status("table");
    assert!(table.contains("1 etcd client(s) connected"), "{table}");
    drop(watch);
    let deadline = Instant::now() + TIMEOUT;
    while clients(&mesh.status()) != 0 {
        assert!(Instant::now() < deadline, "{:#}", mesh.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kill -9 of c2's apiserver; its manifests change while it is down; it comes back on
    // a new (embedded) store: a new epoch, which c1's agent lists again.
    let resyncs = |mesh: &Mesh| peer_status(&mesh.status(), "c2")["fullResyncs"].clone();
    let resyncs_before = resyncs(&mesh).as_u64().unwrap();
    let (_, revision) = mesh.cache.get_prefix("cilium/cache/").await;
    let mut watch = mesh.cache.watch("cilium/cache/", revision + 1);
    let mut mesh = mesh;
    mesh.fleet.kill_apiserver("c2");
    mesh.fleet
        .member("c2")
        .write_manifest("shop.yaml", &manifests(2, 2));
    mesh.fleet.start_apiserver("c2").await;
    let deadline = Instant::now() + TIMEOUT;
    while resyncs(&mesh).as_u64().unwrap() <= resyncs_before {
        assert!(Instant::now() < deadline, "c1 never listed c2 again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = mesh.converged(&PEERS).await;
    watch.drain(QUIET).await;
    let events = &watch.events;
    for event in events {
        let old = served.get(&event.key).map(|(v, _)| v.as_slice());
        let new = after.get(&event.key).map(|(v, _)| v.as_slice());
        assert_ne!(
            old,
            new,
            "{} of {} whose value did not change",
            if event.delete { "DELETE" } else { "PUT" },
            event.key
        );
    }
    let mut changed = 0;
    let keys: std::collections::BTreeSet<&String> = served.keys().chain(after.keys()).collect();
    for key in keys {
        let (old, new) = (served.get(key), after.get(key));
        match (old, new) {
            (Some(old), Some(new)) if old.0 == new.0 => {
                assert_eq!(old.1, new.1, "{key} was rewritten");
            }
            (_, Some(new)) => {
                changed += 1;
                let last = events.iter().rfind(|e| e.key == *key);
                assert!(
                    last.is_some_and(|e| !e.delete && e.value == new.0),
                    "{key} changed but its new value was not watched: {last:?}"
                );
            }
            (Some(_), None) => {
                changed += 1;
                assert!(
                    events.iter().any(|e| e.key == *key && e.delete),
                    "{key} is gone but its delete was not watched"
                );
            }
            (None, None) => unreachable!(),
        }
    }
    // The service and a node changed, an identity and its address added, an address gone.
    assert_eq!(changed, 5, "{events:?}");
    println!(
        "c2 restarted: {changed} keys changed, {} watched events, {} keys untouched",
        events.len(),
        after.len() - changed
    );
    drop(watch);

    // Removing c3's remotes file: its cluster config goes at once, its keys and canaries
    // after the grace period; the status shows it draining meanwhile.
    let (held, revision) = mesh.cache.get_prefix("cilium/cache/").await;
    let c3_keys: Vec<&String> = held.keys().filter(|k| k.contains("/v1/c3/")).collect();
    let mut configs = mesh.cache.watch("cilium/cluster-config/", revision + 1);
    let mut keys = mesh.cache.watch("cilium/cache/", revision + 1);
    let mut synced = mesh.cache.watch("cilium/synced/c3/", revision + 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let removed = Instant::now();
    std::fs::remove_file(mesh.fleet.member("c1").dir.join("remotes/c3.yaml")).unwrap();
    configs
        .until("c3's config deleted", TIMEOUT, |events| {
            events
                .iter()
                .any(|e| e.delete && e.key == "cilium/cluster-config/c3")
        })
        .await;
    let config_gone = configs.events.last().unwrap().at;
    let status = mesh.status();
    let draining = &peer_status(&status, "c3")["cache"];
    assert_eq!(draining["config"], false, "{draining}");
    assert_eq!(draining["keys"], c3_keys.len(), "{draining}");
    assert_eq!(draining["draining"], true, "{draining}");
    // In the table: a row of the cache keys, no link.
    let table = mesh.fleetmesh_status("table");
    let rows: Vec<String> = table
        .lines()
        .filter(|l| l.starts_with("c3"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let row = format!("c3 (removed) {} 4 deleted 0", c3_keys.len());
    assert_eq!(rows, [row], "{table}");
    assert!(table.contains(", 2/2 links ready"), "{table}");
    println!("{table}");
    keys.until("c3's keys deleted", TIMEOUT + DRAIN_GRACE, |events| {
        events.iter().filter(|e| e.delete).count() == c3_keys.len()
    })
    .await;
    synced
        .until("c3's canaries deleted", TIMEOUT, |events| {
            events.iter().filter(|e| e.delete).count() == 4
        })
        .await;
    keys.drain(QUIET).await;
    let mut deleted: Vec<&String> = keys.events.iter().map(|e| &e.key).collect();
    deleted.sort();
    assert!(keys.events.iter().all(|e| e.delete), "{:?}", keys.events);
    assert_eq!(deleted, c3_keys, "c3's keys and nothing else");
    let first_key_gone = keys.events[0].at;
    let config_after = config_gone.saturating_duration_since(removed);
    let keys_after = first_key_gone.saturating_duration_since(config_gone);
    println!(
        "c3 removed: its config deleted after {config_after:?}, its keys {keys_after:?} later"
    );
    assert!(
        config_after < Duration::from_secs(3),
        "config deleted after {config_after:?}"
    );
    assert!(
        keys_after >= DRAIN_GRACE - Duration::from_millis(500),
        "keys deleted {keys_after:?} after the config"
    );
    mesh.converged(&["c2"]).await;
    let status = mesh.status();
    assert!(
        status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["cluster"] != "c3"),
        "{status:#}"
    );
    println!("test took {:?}", test_started.elapsed());
}
