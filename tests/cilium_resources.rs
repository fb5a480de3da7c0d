//! Cilium's own resources as the source, against a real etcd: a manifest directory with
//! the CiliumIdentities, CiliumEndpoints and CiliumNodes of Cilium's clustermesh-apiserver
//! tests (`ciliumidentitites.txtar`, `ciliumendpoints.txtar`, `ciliumnodes.txtar`, cluster
//! `cluster3` with id 3) must leave etcd holding exactly the keys and values Cilium's
//! apiserver writes for them; objects of a non-global namespace, Pods and Nodes are not
//! exported.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use serde_json::{Value, json};
use support::EtcdHandle;

/// How long the test waits for the export to sync before it fails.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// Namespaces: `foo` and `bar` as in Cilium's tests, `private` kept out of the mesh.
const NAMESPACES: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: foo
---
apiVersion: v1
kind: Namespace
metadata:
  name: bar
---
apiVersion: v1
kind: Namespace
metadata:
  name: private
  annotations:
    clustermesh.cilium.io/global: \"false\"
";

/// `identity-1.yaml` and `identity-2.yaml` of `ciliumidentitites.txtar`, and one of the
/// non-global namespace.
const IDENTITIES: &str = "\
apiVersion: cilium.io/v2
kind: CiliumIdentity
metadata:
  name: \"196915\"
  labels:
    io.kubernetes.pod.namespace: bar
security-labels:
  k8s:app: baz
  k8s:io.cilium.k8s.policy.cluster: cluster3
  k8s:io.kubernetes.pod.namespace: bar
---
apiVersion: cilium.io/v2
kind: CiliumIdentity
metadata:
  name: \"199472\"
security-labels:
  k8s:app: baz
  k8s:io.cilium.k8s.policy.cluster: cluster3
  k8s:io.kubernetes.pod.namespace: foo
---
apiVersion: cilium.io/v2
kind: CiliumIdentity
metadata:
  name: \"199480\"
security-labels:
  k8s:app: secret
  k8s:io.cilium.k8s.policy.cluster: cluster3
  k8s:io.kubernetes.pod.namespace: private
";

/// `endpoint-1.yaml` and `endpoint-2.yaml` of `ciliumendpoints.txtar`, and one of the
/// non-global namespace.
const ENDPOINTS: &str = "\
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: cep-001
  namespace: foo
status:
  id: 1481
  identity:
    id: 199472
    labels:
    - k8s:app=bar
  networking:
    addressing:
    - ipv4: 10.244.1.79
      ipv6: fd00:10:244:1::d643
    node: 172.18.0.3
  service-account: default
  state: ready
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: cep-002
  namespace: bar
status:
  encryption:
    key: 5
  id: 1482
  identity:
    id: 199475
    labels:
    - k8s:app=qux
  networking:
    addressing:
    - ipv4: 10.244.2.74
      ipv6: fd00:10:244:2::e024
    node: 172.18.0.2
  service-account: default
  state: ready
---
apiVersion: cilium.io/v2
kind: CiliumEndpoint
metadata:
  name: cep-003
  namespace: private
status:
  identity:
    id: 199480
  networking:
    addressing:
    - ipv4: 10.244.2.99
    node: 172.18.0.2
  state: ready
";

/// `node-1.yaml` and `node-2.yaml` of `ciliumnodes.txtar`.
const NODES: &str = "\
apiVersion: cilium.io/v2
kind: CiliumNode
metadata:
  name: test-node-1
  labels:
    kubernetes.io/hostname: test-node-1
  annotations:
    network.cilium.io/wg-pub-key: VRksOB6ZNds4oXWIGfSVpvc0gBhcOWFmzvTDcyvULlI=
spec:
  addresses:
  - ip: 172.18.0.2
    type: InternalIP
  - ip: fc00:c111::2
    type: InternalIP
  - ip: 10.244.0.10
    type: CiliumInternalIP
  - ip: fd00:10:244::e2d6
    type: CiliumInternalIP
  bootid: 570d3fd1-93db-4862-ba99-6a3c2c10c38f
  health:
    ipv4: 10.244.0.134
    ipv6: fd00:10:244::d812
  ipam:
    podCIDRs:
    - 10.244.0.0/24
    - fd00:10:244::/64
---
apiVersion: cilium.io/v2
kind: CiliumNode
metadata:
  name: test-node-2
  labels:
    kubernetes.io/hostname: test-node-2
spec:
  addresses:
  - ip: 172.18.0.3
    type: InternalIP
  - ip: fc00:c111::3
    type: InternalIP
  - ip: 10.244.1.130
    type: CiliumInternalIP
  - ip: fd00:10:244:1::9089
    type: CiliumInternalIP
  bootid: c1d2cda2-aca0-4033-abca-3843298860b9
  encryption:
    key: 7
  health:
    ipv4: 10.244.1.153
    ipv6: fd00:10:244:1::835d
  ipam:
    podCIDRs:
    - 10.244.1.0/24
    - fd00:10:244:1::/64
";

/// A Pod and a Node: where Cilium runs, its resources replace them, so neither is
/// exported (no identity is allocated for the pod, no node record is written).
const KUBE_OBJECTS: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: bar
  labels: {app: web}
spec:
  containers: [{name: main, image: web}]
status:
  phase: Running
  hostIP: 172.18.0.2
  podIP: 10.244.2.50
  podIPs: [{ip: 10.244.2.50}]
---
apiVersion: v1
kind: Node
metadata:
  name: kind-worker
status:
  addresses: [{type: InternalIP, address: 172.18.0.9}]
";

fn write_manifests(dir: &Path) {
    for (file, text) in [
        ("namespaces.yaml", NAMESPACES),
        ("identities.yaml", IDENTITIES),
        ("endpoints.yaml", ENDPOINTS),
        ("nodes.yaml", NODES),
        ("kube.yaml", KUBE_OBJECTS),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }
}

fn mk_config(etcd: &EtcdHandle, namespace: &str, manifests: &Path) -> ApiserverConfig {
    let text = format!(
        "cluster: {{name: cluster3, id: 3}}\n\
         store: {{kind: etcd, etcd: {{endpoints: {endpoints:?}, namespace: {namespace:?}}}}}\n\
         source: {{manifests: {manifests:?}}}\n\
         health: {{listen: \"127.0.0.1:0\"}}\n\
         export: {{leaseTtlSeconds: 30, heartbeatSeconds: 10}}\n",
        endpoints = etcd.endpoints,
    );
    ApiserverConfig::parse(&text, Path::new("test-apiserver.yaml")).unwrap()
}

/// Every key under `namespace + prefix` with its value, the namespace stripped.
async fn etcd_dump(etcd: &EtcdHandle, namespace: &str, prefix: &str) -> BTreeMap<String, String> {
    let dump = etcd.dump(namespace, prefix).await;
    dump.into_iter()
        .map(|(key, kv)| (key, kv.value_str().unwrap().to_string()))
        .collect()
}

/// The JSON values Cilium's apiserver writes for these objects, key by key: the
/// `*.expected` files of the txtar tests, and the cluster config of `clusterconfig.txtar`.
fn expected_json_values() -> BTreeMap<&'static str, Value> {
    let ip = |ip: &str, host: &str, id: u32, key: u8, ns: &str, pod: &str| {
        json!({
            "IP": ip, "Mask": null, "HostIP": host, "ID": id, "Key": key, "Metadata": "",
            "K8sNamespace": ns, "K8sPodName": pod, "K8sServiceAccount": "default"
        })
    };
    BTreeMap::from([
        (
            "cilium/cluster-config/cluster3",
            json!({"id": 3, "capabilities": {"syncedCanaries": true, "maxConnectedClusters": 255,
                   "serviceExportsEnabled": false}}),
        ),
        (
            "cilium/state/nodes/v1/cluster3/test-node-1",
            json!({
                "Name": "test-node-1",
                "Cluster": "cluster3",
                "IPAddresses": [
                    {"Type": "InternalIP", "IP": "172.18.0.2"},
                    {"Type": "InternalIP", "IP": "fc00:c111::2"},
                    {"Type": "CiliumInternalIP", "IP": "10.244.0.10"},
                    {"Type": "CiliumInternalIP", "IP": "fd00:10:244::e2d6"}
                ],
                "IPv4AllocCIDR": {"IP": "10.244.0.0", "Mask": "////AA=="},
                "IPv4SecondaryAllocCIDRs": null,
                "IPv6AllocCIDR": {"IP": "fd00:10:244::", "Mask": "//////////8AAAAAAAAAAA=="},
                "IPv6SecondaryAllocCIDRs": null,
                "IPv4HealthIP": "10.244.0.134",
                "IPv6HealthIP": "fd00:10:244::d812",
                "IPv4IngressIP": "",
                "IPv6IngressIP": "",
                "ClusterID": 3,
                "Source": "custom-resource",
                "EncryptionKey": 0,
                "Labels": {"kubernetes.io/hostname": "test-node-1"},
                "Annotations": {
                    "network.cilium.io/wg-pub-key": "VRksOB6ZNds4oXWIGfSVpvc0gBhcOWFmzvTDcyvULlI="
                },
                "NodeIdentity": 0,
                "WireguardPubKey": "VRksOB6ZNds4oXWIGfSVpvc0gBhcOWFmzvTDcyvULlI=",
                "BootID": "570d3fd1-93db-4862-ba99-6a3c2c10c38f"
            }),
        ),
        (
            "cilium/state/nodes/v1/cluster3/test-node-2",
            json!({
                "Name": "test-node-2",
                "Cluster": "cluster3",
                "IPAddresses": [
                    {"Type": "InternalIP", "IP": "172.18.0.3"},
                    {"Type": "InternalIP", "IP": "fc00:c111::3"},
                    {"Type": "CiliumInternalIP", "IP": "10.244.1.130"},
                    {"Type": "CiliumInternalIP", "IP": "fd00:10:244:1::9089"}
                ],
                "IPv4AllocCIDR": {"IP": "10.244.1.0", "Mask": "////AA=="},
                "IPv4SecondaryAllocCIDRs": null,
                "IPv6AllocCIDR": {"IP": "fd00:10:244:1::", "Mask": "//////////8AAAAAAAAAAA=="},
                "IPv6SecondaryAllocCIDRs": null,
                "IPv4HealthIP": "10.244.1.153",
                "IPv6HealthIP": "fd00:10:244:1::835d",
                "IPv4IngressIP": "",
                "IPv6IngressIP": "",
                "ClusterID": 3,
                "Source": "custom-resource",
                "EncryptionKey": 7,
                "Labels": {"kubernetes.io/hostname": "test-node-2"},
                "Annotations": null,
                "NodeIdentity": 0,
                "WireguardPubKey": "",
                "BootID": "c1d2cda2-aca0-4033-abca-3843298860b9"
            }),
        ),
        (
            "cilium/state/ip/v1/default/10.244.1.79",
            ip("10.244.1.79", "172.18.0.3", 199_472, 0, "foo", "cep-001"),
        ),
        (
            "cilium/state/ip/v1/default/10.244.2.74",
            ip("10.244.2.74", "172.18.0.2", 199_475, 5, "bar", "cep-002"),
        ),
        (
            "cilium/state/ip/v1/default/fd00:10:244:1::d643",
            ip(
                "fd00:10:244:1::d643",
                "172.18.0.3",
                199_472,
                0,
                "foo",
                "cep-001",
            ),
        ),
        (
            "cilium/state/ip/v1/default/fd00:10:244:2::e024",
            ip(
                "fd00:10:244:2::e024",
                "172.18.0.2",
                199_475,
                5,
                "bar",
                "cep-002",
            ),
        ),
    ])
}

/// The label strings of `identities-1+2.expected`.
const EXPECTED_IDENTITIES: [(&str, &str); 2] = [
    (
        "cilium/state/identities/v1/id/196915",
        "k8s:app=baz;k8s:io.cilium.k8s.policy.cluster=cluster3;k8s:io.kubernetes.pod.namespace=bar;",
    ),
    (
        "cilium/state/identities/v1/id/199472",
        "k8s:app=baz;k8s:io.cilium.k8s.policy.cluster=cluster3;k8s:io.kubernetes.pod.namespace=foo;",
    ),
];

/// Every prefix's sync canary and the heartbeat: RFC 3339 times.
const TIMESTAMP_KEYS: [&str; 5] = [
    "cilium/synced/cluster3/cilium/state/identities/v1",
    "cilium/synced/cluster3/cilium/state/ip/v1",
    "cilium/synced/cluster3/cilium/state/nodes/v1",
    "cilium/synced/cluster3/cilium/state/services/v1",
    "cilium/.heartbeat",
];

#[tokio::test]
async fn etcd_holds_exactly_what_ciliums_apiserver_writes_for_cilium_resources() {
    let etcd = support::etcd().await;
    let ns = support::unique_prefix();
    let manifests = tempfile::tempdir().unwrap();
    write_manifests(manifests.path());
    let mut apiserver = Apiserver::start(mk_config(&etcd, &ns, manifests.path()))
        .await
        .unwrap();
    tokio::time::timeout(SYNC_TIMEOUT, apiserver.synced())
        .await
        .expect("the export did not sync in time")
        .unwrap();

    let dump = etcd_dump(&etcd, &ns, "cilium/").await;
    let json_values = expected_json_values();
    let mut expected_keys: BTreeSet<&str> = json_values.keys().copied().collect();
    expected_keys.extend(EXPECTED_IDENTITIES.iter().map(|(k, _)| *k));
    expected_keys.extend(TIMESTAMP_KEYS);
    let actual_keys: BTreeSet<&str> = dump.keys().map(String::as_str).collect();
    assert_eq!(actual_keys, expected_keys);

    for (key, expected) in &json_values {
        let actual: Value =
            serde_json::from_str(&dump[*key]).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"));
        assert_eq!(&actual, expected, "value of {key}");
    }
    for (key, expected) in EXPECTED_IDENTITIES {
        assert_eq!(dump[key], expected, "value of {key}");
    }
    for key in TIMESTAMP_KEYS {
        time::OffsetDateTime::parse(&dump[key], &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{key} is not an RFC 3339 time: {e}"));
    }
}
