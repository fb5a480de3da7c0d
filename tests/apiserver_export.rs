//! The apiserver's export path against a real etcd: the exact Cilium keys and values, the
//! order of sync canaries, cluster config enforcement, restarts that rewrite nothing, and
//! identity allocation shared by two allocators.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use fleetmesh::export::IdentityAllocator;
use fleetmesh::kvstore::Store;
use fleetmesh::model::{Cluster, ClusterId, ClusterName, IdMode, Label, Labels};
use serde_json::{Value, json};
use support::EtcdHandle;

/// How long a test waits for the export to sync before it fails.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifests")
}

fn mk_config(etcd: &EtcdHandle, namespace: &str, manifests: &Path) -> ApiserverConfig {
    let text = format!(
        "cluster: {{name: cluster1, id: 1}}\n\
         store: {{kind: etcd, etcd: {{endpoints: {endpoints:?}, namespace: {namespace:?}}}}}\n\
         source: {{manifests: {manifests:?}}}\n\
         health: {{listen: \"127.0.0.1:0\"}}\n\
         export: {{leaseTtlSeconds: 30, heartbeatSeconds: 10}}\n",
        endpoints = etcd.endpoints,
    );
    ApiserverConfig::parse(&text, Path::new("test-apiserver.yaml")).unwrap()
}

async fn start_synced(config: ApiserverConfig) -> Apiserver {
    let mut apiserver = Apiserver::start(config).await.unwrap();
    tokio::time::timeout(SYNC_TIMEOUT, apiserver.synced())
        .await
        .expect("the export did not sync in time")
        .unwrap();
    apiserver
}

/// A key as etcd holds it: value and revisions, read with a raw etcd client.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raw {
    value: String,
    create_revision: i64,
    mod_revision: i64,
}

/// Every key under `namespace + prefix`, with the namespace stripped.
async fn etcd_dump(etcd: &EtcdHandle, namespace: &str, prefix: &str) -> BTreeMap<String, Raw> {
    let dump = etcd.dump(namespace, prefix).await;
    dump.into_iter()
        .map(|(key, kv)| {
            let raw = Raw {
                value: kv.value_str().unwrap().to_string(),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
            };
            (key, raw)
        })
        .collect()
}

/// The JSON values the example manifests must produce, key by key.
fn expected_json_values() -> BTreeMap<&'static str, Value> {
    let node = |name: &str, ip: &str, cidr: &str, zone: &str| {
        json!({
            "Name": name, "Cluster": "cluster1",
            "IPAddresses": [{"Type": "InternalIP", "IP": ip}],
            "IPv4AllocCIDR": {"IP": cidr, "Mask": "////AA=="},
            "IPv4SecondaryAllocCIDRs": null, "IPv6AllocCIDR": null, "IPv6SecondaryAllocCIDRs": null,
            "IPv4HealthIP": "", "IPv6HealthIP": "", "IPv4IngressIP": "", "IPv6IngressIP": "",
            "ClusterID": 1, "Source": "kubernetes", "EncryptionKey": 0,
            "Labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "topology.kubernetes.io/zone": zone},
            "Annotations": null, "NodeIdentity": 0, "WireguardPubKey": "", "BootID": ""
        })
    };
    let endpoint =
        |ip: &str, host: &str, id: u32, ns: &str, pod: &str, sa: &str, port: (&str, u16)| {
            json!({
                "IP": ip, "Mask": null, "HostIP": host, "ID": id, "Key": 0, "Metadata": "",
                "K8sNamespace": ns, "K8sPodName": pod, "K8sServiceAccount": sa,
                "NamedPorts": [{"Name": port.0, "Port": port.1, "Protocol": "TCP"}]
            })
        };
    BTreeMap::from([
        (
            "cilium/cluster-config/cluster1",
            json!({"id": 1, "capabilities": {"syncedCanaries": true, "maxConnectedClusters": 255,
                   "serviceExportsEnabled": false}}),
        ),
        (
            "cilium/state/nodes/v1/cluster1/kind-worker",
            node("kind-worker", "172.18.0.2", "10.244.1.0", "zone-a"),
        ),
        (
            "cilium/state/nodes/v1/cluster1/kind-worker2",
            node("kind-worker2", "172.18.0.3", "10.244.2.0", "zone-b"),
        ),
        (
            // Global and shared: exported with its ready backends only (10.244.2.11 is
            // neither ready nor serving). payments/ledger is not shared: not here at all.
            "cilium/state/services/v1/cluster1/shop/checkout",
            json!({
                "cluster": "cluster1", "namespace": "shop", "name": "checkout",
                "frontends": {"10.96.100.10": {"http": {"Protocol": "TCP", "Port": 80}}},
                "backends": {
                    "10.244.1.10": {"http": {"Protocol": "TCP", "Port": 8080}},
                    "10.244.2.10": {"http": {"Protocol": "TCP", "Port": 8080}}
                },
                "zones": {
                    "10.244.1.10": {"zone": "zone-a"},
                    "10.244.2.10": {"zone": "zone-b"}
                },
                "labels": {"app": "checkout"}, "selector": {"app": "checkout"},
                "includeExternal": true, "shared": true, "clusterID": 1
            }),
        ),
        (
            "cilium/state/ip/v1/default/10.244.1.10",
            endpoint(
                "10.244.1.10",
                "172.18.0.2",
                65537,
                "shop",
                "checkout-7d4b9c-abcde",
                "checkout",
                ("http", 8080),
            ),
        ),
        (
            "cilium/state/ip/v1/default/10.244.1.20",
            endpoint(
                "10.244.1.20",
                "172.18.0.2",
                65538,
                "shop",
                "internal-5f6d8-pqrst",
                "default",
                ("http", 8080),
            ),
        ),
        (
            "cilium/state/ip/v1/default/10.244.2.10",
            endpoint(
                "10.244.2.10",
                "172.18.0.3",
                65537,
                "shop",
                "checkout-7d4b9c-fghij",
                "checkout",
                ("http", 8080),
            ),
        ),
        (
            "cilium/state/ip/v1/default/10.244.2.11",
            endpoint(
                "10.244.2.11",
                "172.18.0.3",
                65537,
                "shop",
                "checkout-7d4b9c-klmno",
                "checkout",
                ("http", 8080),
            ),
        ),
        (
            "cilium/state/ip/v1/default/10.244.2.30",
            endpoint(
                "10.244.2.30",
                "172.18.0.3",
                65536,
                "payments",
                "ledger-0",
                "ledger",
                ("postgres", 5432),
            ),
        ),
    ])
}

/// The identity label strings, allocated in workload order (payments/ledger-0 first)
/// from the start of cluster 1's range, 65536.
fn expected_identities() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        (
            "cilium/state/identities/v1/id/65536",
            "k8s:app=ledger;\
             k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=payments;\
             k8s:io.cilium.k8s.namespace.labels.team=payments;\
             k8s:io.cilium.k8s.policy.cluster=cluster1;\
             k8s:io.cilium.k8s.policy.serviceaccount=ledger;\
             k8s:io.kubernetes.pod.namespace=payments;",
        ),
        (
            "cilium/state/identities/v1/id/65537",
            "k8s:app=checkout;\
             k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop;\
             k8s:io.cilium.k8s.namespace.labels.team=shop;\
             k8s:io.cilium.k8s.policy.cluster=cluster1;\
             k8s:io.cilium.k8s.policy.serviceaccount=checkout;\
             k8s:io.kubernetes.pod.namespace=shop;\
             k8s:tier=web;",
        ),
        (
            "cilium/state/identities/v1/id/65538",
            "k8s:app=internal;\
             k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop;\
             k8s:io.cilium.k8s.namespace.labels.team=shop;\
             k8s:io.cilium.k8s.policy.cluster=cluster1;\
             k8s:io.cilium.k8s.policy.serviceaccount=default;\
             k8s:io.kubernetes.pod.namespace=shop;",
        ),
    ])
}

const CANARIES: [&str; 4] = [
    "cilium/synced/cluster1/cilium/state/identities/v1",
    "cilium/synced/cluster1/cilium/state/ip/v1",
    "cilium/synced/cluster1/cilium/state/nodes/v1",
    "cilium/synced/cluster1/cilium/state/services/v1",
];

#[tokio::test]
async fn etcd_holds_exactly_ciliums_keys_and_values() {
    let etcd = support::etcd().await;
    let ns = support::unique_prefix();
    let _apiserver = start_synced(mk_config(&etcd, &ns, &examples_dir())).await;

    let dump = etcd_dump(&etcd, &ns, "cilium/").await;
    let json_values = expected_json_values();
    let identities = expected_identities();
    let mut expected_keys: BTreeSet<&str> = json_values.keys().copied().collect();
    expected_keys.extend(identities.keys().copied());
    expected_keys.extend(CANARIES);
    expected_keys.insert("cilium/.heartbeat");
    let actual_keys: BTreeSet<&str> = dump.keys().map(String::as_str).collect();
    assert_eq!(actual_keys, expected_keys);

    for (key, expected) in &json_values {
        let actual: Value = serde_json::from_str(&dump[*key].value)
            .unwrap_or_else(|e| panic!("{key} is not JSON: {e}"));
        assert_eq!(&actual, expected, "value of {key}");
    }
    for (key, expected) in &identities {
        assert_eq!(dump[*key].value, *expected, "value of {key}");
    }
    for key in CANARIES.iter().chain(&["cilium/.heartbeat"]) {
        time::OffsetDateTime::parse(
            &dump[*key].value,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("{key} is not an RFC 3339 time: {e}"));
    }

    // fleetmesh's own service keys carry every global service, the non-shared one too,
    // with the backend conditions Cilium's format cannot express.
    let ours = etcd_dump(&etcd, &ns, "fleetmesh/state/").await;
    let keys: Vec<&str> = ours.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "fleetmesh/state/services/v1/cluster1/payments/ledger",
            "fleetmesh/state/services/v1/cluster1/shop/checkout",
        ]
    );
    let checkout: Value = serde_json::from_str(&ours[keys[1]].value).unwrap();
    assert_eq!(checkout["affinity"], "local");
    assert_eq!(
        checkout["backends"]["10.244.2.11"]["conditions"],
        json!({"ready": false, "serving": false, "terminating": false})
    );
    let ledger: Value = serde_json::from_str(&ours[keys[0]].value).unwrap();
    assert_eq!(ledger["shared"], false);
}

#[tokio::test]
async fn canaries_are_written_after_every_key_of_their_prefix() {
    let etcd = support::etcd().await;
    let ns = support::unique_prefix();
    let _apiserver = start_synced(mk_config(&etcd, &ns, &examples_dir())).await;

    let dump = etcd_dump(&etcd, &ns, "cilium/").await;
    for (canary, data_prefix) in [
        (CANARIES[0], "cilium/state/identities/v1/"),
        (CANARIES[1], "cilium/state/ip/v1/"),
        (CANARIES[2], "cilium/state/nodes/v1/"),
        (CANARIES[3], "cilium/state/services/v1/"),
    ] {
        let canary_rev = dump[canary].create_revision;
        let data: Vec<_> = dump
            .iter()
            .filter(|(k, _)| k.starts_with(data_prefix))
            .collect();
        assert!(!data.is_empty(), "nothing under {data_prefix}");
        for (key, raw) in data {
            assert!(
                raw.create_revision < canary_rev,
                "{key} (revision {}) was written after its canary (revision {canary_rev})",
                raw.create_revision
            );
        }
    }
}

#[tokio::test]
async fn a_foreign_change_of_the_cluster_config_is_reverted_within_a_second() {
    let etcd = support::etcd().await;
    let ns = support::unique_prefix();
    let _apiserver = start_synced(mk_config(&etcd, &ns, &examples_dir())).await;
    let key = format!("{ns}cilium/cluster-config/cluster1");
    let mut client = etcd.client().await;
    let original = client.get(key.as_str(), None).await.unwrap().kvs()[0]
        .value_str()
        .unwrap()
        .to_string();

    let restored_within_a_second = |mut client: etcd_client::Client, key: String, want: String| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let resp = client.get(key.as_str(), None).await.unwrap();
            if resp.kvs().first().map(|kv| kv.value_str().unwrap()) == Some(want.as_str()) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    client.put(key.as_str(), r#"{"id":5}"#, None).await.unwrap();
    assert!(restored_within_a_second(client.clone(), key.clone(), original.clone()).await);
    client.delete(key.as_str(), None).await.unwrap();
    assert!(restored_within_a_second(client.clone(), key.clone(), original.clone()).await);
}

#[tokio::test]
async fn a_restart_over_the_same_store_rewrites_nothing_unchanged() {
    let etcd = support::etcd().await;
    let ns = support::unique_prefix();
    let first = start_synced(mk_config(&etcd, &ns, &examples_dir())).await;
    let before = etcd_dump(&etcd, &ns, "").await;
    drop(first);

    let _second = start_synced(mk_config(&etcd, &ns, &examples_dir())).await;
    // Give a wrongly eager writer time to show itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = etcd_dump(&etcd, &ns, "").await;

    let changed: Vec<&String> = after
        .iter()
        .filter(|(key, raw)| key.as_str() != "cilium/.heartbeat" && before.get(*key) != Some(raw))
        .map(|(key, _)| key)
        .collect();
    assert!(changed.is_empty(), "rewritten on restart: {changed:?}");
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_malformed_manifest_is_skipped_and_everything_else_exported() {
    let etcd = support::etcd().await;
    let ns = support::unique_prefix();
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.path().join("broken.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: [not, a, map]\n",
    )
    .unwrap();
    let _apiserver = start_synced(mk_config(&etcd, &ns, dir.path())).await;

    let dump = etcd_dump(&etcd, &ns, "cilium/state/").await;
    assert!(dump.contains_key("cilium/state/services/v1/cluster1/shop/checkout"));
    assert!(dump.contains_key("cilium/state/nodes/v1/cluster1/kind-worker"));
    assert_eq!(
        dump.keys()
            .filter(|k| k.starts_with("cilium/state/ip/"))
            .count(),
        5
    );
}

#[tokio::test]
async fn two_allocators_on_one_store_never_share_an_id() {
    let store: Arc<dyn Store> = Arc::new(support::mk_etcd_store().await);
    let cluster = Cluster::new(
        ClusterName::new("alloc").unwrap(),
        ClusterId::new(7, IdMode::Normal).unwrap(),
        IdMode::Normal,
    );
    let label_sets: Vec<Labels> = (0..30)
        .map(|i| {
            [
                Label::k8s("app", &format!("app-{i}")).unwrap(),
                Label::k8s("io.cilium.k8s.policy.cluster", "alloc").unwrap(),
            ]
            .into_iter()
            .collect()
        })
        .collect();

    let run = |order: Vec<Labels>| {
        let store = store.clone();
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut allocator = IdentityAllocator::load(store, cluster).await.unwrap();
            let mut out = BTreeMap::new();
            for labels in order {
                let id = allocator.allocate(&labels).await.unwrap();
                out.insert(labels.to_kvstore_string(), id);
            }
            out
        })
    };
    let mut reversed = label_sets.clone();
    reversed.reverse();
    let (a, b) = tokio::join!(run(label_sets.clone()), run(reversed));
    let (a, b) = (a.unwrap(), b.unwrap());

    assert_eq!(a, b, "one label set got two ids");
    let ids: BTreeSet<_> = a.values().collect();
    assert_eq!(ids.len(), label_sets.len(), "two label sets share an id");
    let range = cluster.identity_range();
    assert!(a.values().all(|id| range.contains(*id)));

    // A later allocator (a restart) finds the same ids.
    let mut again = IdentityAllocator::load(store.clone(), cluster.clone())
        .await
        .unwrap();
    for labels in &label_sets {
        assert_eq!(
            again.allocate(labels).await.unwrap(),
            a[&labels.to_kvstore_string()]
        );
    }
}

#[test]
fn an_invalid_config_stops_the_start_naming_file_and_field_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apiserver.yaml");
    let cases = [
        (
            "cluster: {name: cluster1, id: 300}\nsource: {manifests: m}\n",
            "cluster.id",
        ),
        (
            "cluster: {name: cluster1, id: 1}\nsource: {manifests: m}\ncolour: blue\n",
            "unknown field `colour`",
        ),
    ];
    for (text, field) in cases {
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
            .args(["apiserver", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
        assert_eq!(
            stderr.matches(field).count(),
            1,
            "{field} not once in: {stderr}"
        );
    }
}
