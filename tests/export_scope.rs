//! What the apiserver exports beyond the basics, as Cilium's clustermesh-apiserver does,
//! against a real etcd read with a raw client: namespace scoping (global by annotation or
//! by default), CiliumEndpointSlices, and MCS-API service exports. Each test changes a
//! manifest directory step by step and checks the exact keys and values after each step,
//! and that a key whose value did not change was not rewritten (its mod revision stays).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use serde_json::{Value, json};
use support::EtcdHandle;

/// How long a step waits for etcd to hold what it expects before it fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A key's value (JSON parsed when it is JSON) and its mod revision.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    value: Value,
    mod_revision: i64,
}

/// An apiserver of cluster3 (id 3) exporting a manifest directory into its own etcd
/// prefix.
struct Exporting {
    etcd: EtcdHandle,
    ns: String,
    dir: tempfile::TempDir,
    apiserver: Option<Apiserver>,
}

impl Exporting {
    /// Writes `files` and starts an apiserver whose `export:` block is `export`.
    async fn start(export: &str, files: &[(&str, &str)]) -> Self {
        let etcd = support::etcd().await;
        let ns = support::unique_prefix();
        let dir = tempfile::tempdir().unwrap();
        let mut this = Self {
            etcd,
            ns,
            dir,
            apiserver: None,
        };
        for (file, text) in files {
            this.write(file, text);
        }
        this.restart(export).await;
        this
    }

    /// Stops the apiserver, if one runs, and starts one on the same etcd prefix and
    /// directory whose `export:` block is `export`.
    async fn restart(&mut self, export: &str) {
        self.apiserver = None;
        let this = &*self;
        let text = format!(
            "cluster: {{name: cluster3, id: 3}}\n\
             store: {{kind: etcd, etcd: {{endpoints: {endpoints:?}, namespace: {ns:?}}}}}\n\
             source: {{manifests: {dir:?}}}\n\
             health: {{listen: \"127.0.0.1:0\"}}\n\
             export: {{leaseTtlSeconds: 30, heartbeatSeconds: 10, {export}}}\n",
            endpoints = this.etcd.endpoints,
            ns = this.ns,
            dir = this.dir.path(),
        );
        let config = ApiserverConfig::parse(&text, Path::new("test-apiserver.yaml")).unwrap();
        let mut apiserver = Apiserver::start(config).await.unwrap();
        tokio::time::timeout(STEP_TIMEOUT, apiserver.synced())
            .await
            .expect("the export did not sync in time")
            .unwrap();
        self.apiserver = Some(apiserver);
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.dir.path().join(file), text).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.path().join(file)).unwrap();
    }

    /// Every key under `prefix`, values parsed as JSON where they are JSON.
    async fn dump(&self, prefix: &str) -> BTreeMap<String, Held> {
        self.etcd
            .dump(&self.ns, prefix)
            .await
            .into_iter()
            .map(|(key, kv)| {
                let text = kv.value_str().unwrap();
                let value = serde_json::from_str(text).unwrap_or(Value::String(text.into()));
                let held = Held {
                    value,
                    mod_revision: kv.mod_revision(),
                };
                (key, held)
            })
            .collect()
    }

    /// Waits until the keys under `prefix` are exactly `expected`; returns them with their
    /// revisions.
    async fn expect(
        &self,
        step: &str,
        prefix: &str,
        expected: &[(&str, Value)],
    ) -> BTreeMap<String, Held> {
        let expected: BTreeMap<String, Value> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let dump = self.dump(prefix).await;
            let values: BTreeMap<String, Value> = dump
                .iter()
                .map(|(k, h)| (k.clone(), h.value.clone()))
                .collect();
            if values == expected {
                return dump;
            }
            if tokio::time::Instant::now() > deadline {
                assert_eq!(values, expected, "{step}: etcd under {prefix}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Asserts that `key` kept its mod revision from `before` to `after`: not rewritten.
fn unchanged(before: &BTreeMap<String, Held>, after: &BTreeMap<String, Held>, key: &str) {
    assert_eq!(
        before[key].mod_revision, after[key].mod_revision,
        "{key} was rewritten though its value did not change"
    );
}

fn mk_namespace(name: &str, global: Option<&str>) -> String {
    match global {
        None => format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n---\n"),
        Some(value) => format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  annotations:\n    \
             clustermesh.cilium.io/global: {value:?}\n---\n"
        ),
    }
}

/// A CiliumIdentity `id` of namespace `ns`, and a CiliumEndpoint `pod` holding `ip` with it.
fn mk_workload(ns: &str, id: u32, pod: &str, ip: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumIdentity\nmetadata: {{name: \"{id}\"}}\n\
         security-labels:\n  k8s:app: {pod}\n  k8s:io.cilium.k8s.policy.cluster: cluster3\n  \
         k8s:io.kubernetes.pod.namespace: {ns}\n---\n\
         apiVersion: cilium.io/v2\nkind: CiliumEndpoint\nmetadata: {{name: {pod}, namespace: {ns}}}\n\
         status:\n  identity: {{id: {id}}}\n  networking:\n    addressing: [{{ipv4: {ip}}}]\n    \
         node: 172.18.0.2\n  service-account: default\n---\n"
    )
}

fn ipcache_value(ip: &str, id: u32, key: u8, ns: &str, pod: &str, sa: Option<&str>) -> Value {
    let mut value = json!({
        "IP": ip, "Mask": null, "HostIP": "172.18.0.2", "ID": id, "Key": key, "Metadata": "",
        "K8sNamespace": ns, "K8sPodName": pod,
    });
    if let Some(sa) = sa {
        value["K8sServiceAccount"] = json!(sa);
    }
    value
}

fn identity_value(ns: &str, pod: &str) -> Value {
    Value::String(format!(
        "k8s:app={pod};k8s:io.cilium.k8s.policy.cluster=cluster3;k8s:io.kubernetes.pod.namespace={ns};"
    ))
}

/// The identity and ipcache keys of one workload made by [`mk_workload`].
fn workload_keys(ns: &str, id: u32, pod: &str, ip: &str) -> [(String, Value); 2] {
    [
        (
            format!("cilium/state/identities/v1/id/{id}"),
            identity_value(ns, pod),
        ),
        (
            format!("cilium/state/ip/v1/default/{ip}"),
            ipcache_value(ip, id, 0, ns, pod, Some("default")),
        ),
    ]
}

fn as_refs(owned: &[(String, Value)]) -> Vec<(&str, Value)> {
    owned.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()
}

#[tokio::test]
async fn namespaces_are_global_by_annotation_with_the_default_off() {
    // bar says "TRUE" (global), odd says "yes" (not global), shop changes step by step.
    let workloads = format!(
        "{}{}{}",
        mk_workload("shop", 196_700, "web", "10.244.2.10"),
        mk_workload("bar", 196_701, "api", "10.244.2.11"),
        mk_workload("odd", 196_702, "job", "10.244.2.12"),
    );
    let others = format!(
        "{}{}",
        mk_namespace("bar", Some("TRUE")),
        mk_namespace("odd", Some("yes"))
    );
    let exporting = Exporting::start(
        "defaultGlobalNamespace: false",
        &[
            ("workloads.yaml", &workloads),
            ("others.yaml", &others),
            ("shop.yaml", &mk_namespace("shop", Some("true"))),
        ],
    )
    .await;
    let shop = workload_keys("shop", 196_700, "web", "10.244.2.10");
    let bar = workload_keys("bar", 196_701, "api", "10.244.2.11");
    let both: Vec<(String, Value)> = shop.iter().chain(&bar).cloned().collect();

    let annotated = exporting
        .expect("shop annotated global", "cilium/state/", &as_refs(&both))
        .await;

    exporting.write("shop.yaml", &mk_namespace("shop", None));
    let unannotated = exporting
        .expect("shop unannotated", "cilium/state/", &as_refs(&bar))
        .await;
    for (key, _) in &bar {
        unchanged(&annotated, &unannotated, key);
    }

    exporting.write("shop.yaml", &mk_namespace("shop", Some("True")));
    let again = exporting
        .expect("shop annotated again", "cilium/state/", &as_refs(&both))
        .await;
    for (key, _) in &bar {
        unchanged(&annotated, &again, key);
    }

    exporting.remove("shop.yaml");
    let deleted = exporting
        .expect("shop deleted", "cilium/state/", &as_refs(&bar))
        .await;
    for (key, _) in &bar {
        unchanged(&annotated, &deleted, key);
    }
}

#[tokio::test]
async fn the_default_makes_unannotated_namespaces_global_and_odd_values_are_not() {
    let workloads = format!(
        "{}{}{}",
        mk_workload("plain", 196_710, "web", "10.244.3.10"),
        mk_workload("odd", 196_711, "job", "10.244.3.11"),
        mk_workload("unknown", 196_712, "ghost", "10.244.3.12"),
    );
    let namespaces = format!(
        "{}{}",
        mk_namespace("plain", None),
        mk_namespace("odd", Some("yes"))
    );
    let exporting = Exporting::start(
        "defaultGlobalNamespace: true",
        &[("workloads.yaml", &workloads), ("ns.yaml", &namespaces)],
    )
    .await;
    // `unknown` has no Namespace: nothing of it is exported until it has one.
    let plain = workload_keys("plain", 196_710, "web", "10.244.3.10");
    exporting
        .expect("defaults", "cilium/state/", &as_refs(&plain))
        .await;

    exporting.write("unknown.yaml", &mk_namespace("unknown", None));
    let both: Vec<(String, Value)> = plain
        .iter()
        .chain(&workload_keys("unknown", 196_712, "ghost", "10.244.3.12"))
        .cloned()
        .collect();
    exporting
        .expect("the namespace is known", "cilium/state/", &as_refs(&both))
        .await;
}

/// A CiliumEndpointSlice of namespace `ns` with endpoints `(pod, ip, identity, key)`.
fn mk_slice(name: &str, ns: &str, endpoints: &[(&str, &str, u32, u8)]) -> String {
    let mut text = format!(
        "apiVersion: cilium.io/v2alpha1\nkind: CiliumEndpointSlice\nmetadata: {{name: {name}}}\n\
         namespace: {ns}\nendpoints:\n"
    );
    for (pod, ip, id, key) in endpoints {
        text.push_str(&format!(
            "- name: {pod}\n  id: {id}\n  networking:\n    addressing: [{{ipv4: {ip}}}]\n    \
             node: 172.18.0.2\n  encryption: {{key: {key}}}\n"
        ));
    }
    text
}

#[tokio::test]
async fn cilium_endpoint_slices_update_exactly_what_changed() {
    let ip_prefix = "cilium/state/ip/";
    // A CiliumEndpoint beside the slices is not read: slices replace them.
    let ignored = "apiVersion: cilium.io/v2\nkind: CiliumEndpoint\n\
                   metadata: {name: stray, namespace: bar}\n\
                   status: {identity: {id: 196800}, networking: {addressing: [{ipv4: 10.244.9.9}]}}\n";
    let exporting = Exporting::start(
        "",
        &[
            ("ns.yaml", &mk_namespace("bar", None)),
            ("cep.yaml", ignored),
            (
                "ces-a.yaml",
                &mk_slice(
                    "ces-a",
                    "bar",
                    &[
                        ("cep-1", "10.244.2.1", 196_801, 0),
                        ("cep-2", "10.244.2.2", 196_802, 5),
                    ],
                ),
            ),
        ],
    )
    .await;
    let k1 = "cilium/state/ip/v1/default/10.244.2.1";
    let k2 = "cilium/state/ip/v1/default/10.244.2.2";
    let v1 = ipcache_value("10.244.2.1", 196_801, 0, "bar", "cep-1", None);
    let first = exporting
        .expect(
            "two endpoints",
            ip_prefix,
            &[
                (k1, v1.clone()),
                (
                    k2,
                    ipcache_value("10.244.2.2", 196_802, 5, "bar", "cep-2", None),
                ),
            ],
        )
        .await;

    // One endpoint updated (new identity and key): only its key is rewritten.
    exporting.write(
        "ces-a.yaml",
        &mk_slice(
            "ces-a",
            "bar",
            &[
                ("cep-1", "10.244.2.1", 196_801, 0),
                ("cep-2", "10.244.2.2", 196_803, 7),
            ],
        ),
    );
    let v2 = ipcache_value("10.244.2.2", 196_803, 7, "bar", "cep-2", None);
    let updated = exporting
        .expect(
            "one endpoint updated",
            ip_prefix,
            &[(k1, v1.clone()), (k2, v2.clone())],
        )
        .await;
    unchanged(&first, &updated, k1);
    assert!(updated[k2].mod_revision > first[k2].mod_revision);

    // cep-2 moves to another slice: the same entries, nothing rewritten.
    exporting.write(
        "ces-a.yaml",
        &mk_slice("ces-a", "bar", &[("cep-1", "10.244.2.1", 196_801, 0)]),
    );
    exporting.write(
        "ces-b.yaml",
        &mk_slice("ces-b", "bar", &[("cep-2", "10.244.2.2", 196_803, 7)]),
    );
    // Give the directory a poll to be read before checking nothing moved.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let moved = exporting
        .expect(
            "an endpoint moved",
            ip_prefix,
            &[(k1, v1.clone()), (k2, v2.clone())],
        )
        .await;
    unchanged(&updated, &moved, k1);
    unchanged(&updated, &moved, k2);

    // The first slice deleted: only its endpoint goes.
    exporting.remove("ces-a.yaml");
    let deleted = exporting
        .expect("a slice deleted", ip_prefix, &[(k2, v2)])
        .await;
    unchanged(&updated, &deleted, k2);

    // The namespace turned non-global: the rest goes.
    exporting.write("ns.yaml", &mk_namespace("bar", Some("false")));
    exporting
        .expect("namespace not global", ip_prefix, &[])
        .await;
}

/// Services of namespace shop: `web` (ClusterIP, two ports, session affinity) and `db`
/// (headless).
const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  ipFamilies: [IPv4]
  ports:
  - {name: http, port: 80, protocol: TCP}
  - {name: grpc, port: 9090, protocol: TCP, appProtocol: grpc}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  internalTrafficPolicy: Cluster
  trafficDistribution: PreferClose
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  ipFamilies: [IPv4, IPv6]
  ports:
  - {name: pg, port: 5432}
";

/// Exports of web, db and `later` (whose Service does not exist yet).
const EXPORTS: &str = "\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: web, namespace: shop, creationTimestamp: \"2026-01-10T12:00:00Z\"}
spec:
  exportedLabels: {tier: front}
  exportedAnnotations: {owner: shop-team}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: db, namespace: shop, creationTimestamp: \"2026-01-11T08:30:00Z\"}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: later, namespace: shop, creationTimestamp: \"2026-01-12T00:00:00Z\"}
";

const LATER: &str = "\
apiVersion: v1
kind: Service
metadata: {name: later, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  ports:
  - {port: 8080, protocol: UDP}
";

fn web_export() -> Value {
    json!({
        "cluster": "cluster3", "name": "web", "namespace": "shop",
        "annotations": {"owner": "shop-team"}, "labels": {"tier": "front"},
        "Annotations": {"owner": "shop-team"}, "Labels": {"tier": "front"},
        "exportCreationTimestamp": "2026-01-10T12:00:00Z",
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 80},
            {"name": "grpc", "protocol": "TCP", "appProtocol": "grpc", "port": 9090}
        ],
        "type": "ClusterSetIP", "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
        "ipFamilies": ["IPv4"], "internalTrafficPolicy": "Cluster",
        "trafficDistribution": "PreferClose"
    })
}

fn db_export() -> Value {
    json!({
        "cluster": "cluster3", "name": "db", "namespace": "shop",
        "exportCreationTimestamp": "2026-01-11T08:30:00Z",
        "ports": [{"name": "pg", "protocol": "TCP", "port": 5432}],
        "type": "Headless", "sessionAffinity": "None", "ipFamilies": ["IPv4", "IPv6"]
    })
}

const WEB_KEY: &str = "cilium/state/serviceexports/v1/cluster3/shop/web";
const DB_KEY: &str = "cilium/state/serviceexports/v1/cluster3/shop/db";
const LATER_KEY: &str = "cilium/state/serviceexports/v1/cluster3/shop/later";
const EXPORTS_PREFIX: &str = "cilium/state/serviceexports/";
const CONFIG_KEY: &str = "cilium/cluster-config/cluster3";
const EXPORTS_CANARY: &str = "cilium/synced/cluster3/cilium/state/serviceexports/v1";

#[tokio::test]
async fn service_exports_follow_their_services_with_mcs_api_on() {
    let exporting = Exporting::start(
        "mcsApi: true",
        &[("services.yaml", SERVICES), ("exports.yaml", EXPORTS)],
    )
    .await;
    let config = exporting.dump(CONFIG_KEY).await;
    assert_eq!(
        config[CONFIG_KEY].value,
        json!({"id": 3, "capabilities": {"syncedCanaries": true, "maxConnectedClusters": 255,
               "serviceExportsEnabled": true}})
    );
    assert!(
        exporting
            .dump(EXPORTS_CANARY)
            .await
            .contains_key(EXPORTS_CANARY),
        "the service exports' sync canary is written"
    );
    let first = exporting
        .expect(
            "web and db exported, later's Service missing",
            EXPORTS_PREFIX,
            &[(WEB_KEY, web_export()), (DB_KEY, db_export())],
        )
        .await;

    exporting.write("later.yaml", LATER);
    let later = json!({
        "cluster": "cluster3", "name": "later", "namespace": "shop",
        "exportCreationTimestamp": "2026-01-12T00:00:00Z",
        "ports": [{"protocol": "UDP", "port": 8080}],
        "type": "ClusterSetIP", "sessionAffinity": "None"
    });
    let created = exporting
        .expect(
            "later's Service created",
            EXPORTS_PREFIX,
            &[
                (WEB_KEY, web_export()),
                (DB_KEY, db_export()),
                (LATER_KEY, later),
            ],
        )
        .await;
    unchanged(&first, &created, WEB_KEY);
    unchanged(&first, &created, DB_KEY);

    exporting.remove("later.yaml");
    let deleted = exporting
        .expect(
            "later's Service deleted",
            EXPORTS_PREFIX,
            &[(WEB_KEY, web_export()), (DB_KEY, db_export())],
        )
        .await;
    unchanged(&first, &deleted, WEB_KEY);
    unchanged(&first, &deleted, DB_KEY);
}

#[tokio::test]
async fn with_mcs_api_off_nothing_is_exported_and_the_config_says_so() {
    let exporting = Exporting::start(
        "mcsApi: false",
        &[("services.yaml", SERVICES), ("exports.yaml", EXPORTS)],
    )
    .await;
    let config = exporting.dump(CONFIG_KEY).await;
    assert_eq!(
        config[CONFIG_KEY].value,
        json!({"id": 3, "capabilities": {"syncedCanaries": true, "maxConnectedClusters": 255,
               "serviceExportsEnabled": false}})
    );
    assert!(exporting.dump(EXPORTS_PREFIX).await.is_empty());
    assert!(exporting.dump(EXPORTS_CANARY).await.is_empty());
}

#[tokio::test]
async fn turning_mcs_api_off_withdraws_the_exports_and_their_canary() {
    let mut exporting = Exporting::start(
        "mcsApi: true",
        &[("services.yaml", SERVICES), ("exports.yaml", EXPORTS)],
    )
    .await;
    exporting
        .expect(
            "exported",
            EXPORTS_PREFIX,
            &[(WEB_KEY, web_export()), (DB_KEY, db_export())],
        )
        .await;
    assert!(
        exporting
            .dump(EXPORTS_CANARY)
            .await
            .contains_key(EXPORTS_CANARY)
    );

    exporting.restart("mcsApi: false").await;
    exporting.expect("withdrawn", EXPORTS_PREFIX, &[]).await;
    assert!(exporting.dump(EXPORTS_CANARY).await.is_empty());
    let config = exporting.dump(CONFIG_KEY).await;
    assert_eq!(
        config[CONFIG_KEY].value["capabilities"]["serviceExportsEnabled"],
        false
    );
}
