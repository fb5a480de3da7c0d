//! A manifest file that no longer reads withdraws nothing: an object with a bad field
//! value keeps its last good version, a half-written file and an oversized one keep
//! everything they held. Measured as the backends the apiserver exports.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use serde_json::Value;

/// How long a test waits for an export before it fails.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(20);
const SERVICES: usize = 6;
const BACKENDS_PER_SERVICE: usize = 6;
/// The size limit the tests configure, far above their files.
const MAX_FILE_BYTES: u64 = 256 * 1024;

fn mk_config(dir: &Path) -> ApiserverConfig {
    let text = format!(
        "cluster: {{name: cluster1, id: 1}}\n\
         source: {{manifests: manifests, maxFileBytes: {MAX_FILE_BYTES}}}\n\
         health: {{listen: \"127.0.0.1:0\"}}\n"
    );
    let path = dir.join("apiserver.yaml");
    std::fs::write(&path, text).unwrap();
    ApiserverConfig::load(&path).unwrap()
}

/// A global service with one EndpointSlice of ready backends, in block YAML as
/// `kubectl get -o yaml` writes it.
fn service_yaml(name: &str, index: usize) -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\n  \
         annotations:\n    service.cilium.io/global: \"true\"\nspec:\n  clusterIP: 10.96.0.{}\n  \
         ports:\n  - name: http\n    port: 80\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abcde\n  \
         namespace: shop\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\n\
         ports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n",
        index + 1
    );
    for b in 0..BACKENDS_PER_SERVICE {
        text.push_str(&format!(
            "- addresses:\n  - 10.244.{index}.{}\n  conditions:\n    ready: true\n    \
             serving: true\n    terminating: false\n  nodeName: kind-worker\n",
            b + 1
        ));
    }
    text
}

fn services_yaml() -> String {
    (0..SERVICES)
        .map(|i| service_yaml(&format!("svc-{i}"), i))
        .collect::<Vec<_>>()
        .join("---\n")
}

struct Cluster {
    _dir: tempfile::TempDir,
    manifests: PathBuf,
    apiserver: Apiserver,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        std::fs::write(manifests.join("services.yaml"), services_yaml()).unwrap();
        let mut apiserver = Apiserver::start(mk_config(dir.path())).await.unwrap();
        tokio::time::timeout(EXPORT_TIMEOUT, apiserver.synced())
            .await
            .expect("the export did not sync in time")
            .unwrap();
        let cluster = Cluster {
            _dir: dir,
            manifests,
            apiserver,
        };
        assert_eq!(cluster.backends().await, SERVICES * BACKENDS_PER_SERVICE);
        cluster
    }

    /// The backends of every exported service (Cilium's keys: ready backends).
    async fn backends(&self) -> usize {
        let listed = self
            .apiserver
            .store
            .list("cilium/state/services/v1/cluster1/")
            .await
            .unwrap();
        listed
            .kvs
            .iter()
            .map(|kv| {
                let service: Value = serde_json::from_slice(&kv.value).unwrap();
                service["backends"].as_object().map_or(0, |b| b.len())
            })
            .sum()
    }

    /// Writes `text` into services.yaml in place, as a careless editor or a writer caught
    /// mid-way would, then waits until the source has read it: a marker service in another
    /// file, written after it, is exported.
    async fn break_services(&self, text: impl AsRef<[u8]>) {
        std::fs::write(self.manifests.join("services.yaml"), text).unwrap();
        std::fs::write(
            self.manifests.join("marker.yaml"),
            service_yaml("marker", 200),
        )
        .unwrap();
        let deadline = tokio::time::Instant::now() + EXPORT_TIMEOUT;
        loop {
            let marker = self
                .apiserver
                .store
                .get("cilium/state/services/v1/cluster1/shop/marker")
                .await
                .unwrap();
            if marker.is_some() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the marker service was not exported in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Backends withdrawn from the services of services.yaml.
    async fn withdrawn(&self) -> usize {
        SERVICES * BACKENDS_PER_SERVICE + BACKENDS_PER_SERVICE - self.backends().await
    }
}

#[tokio::test]
async fn a_bad_field_value_keeps_the_objects_last_good_version() {
    let cluster = Cluster::start().await;
    let text = services_yaml();
    // One endpoint of svc-3's slice: `ready: "yes"` is not a boolean.
    let slice = text.find("name: svc-3-abcde").unwrap();
    let ready = slice + text[slice..].find("ready: true").unwrap();
    let broken = format!("{}ready: \"yes\"{}", &text[..ready], &text[ready + 11..]);
    cluster.break_services(broken).await;
    assert_eq!(cluster.withdrawn().await, 0, "backends withdrawn");
}

#[tokio::test]
async fn a_half_written_file_keeps_everything_it_held() {
    let cluster = Cluster::start().await;
    let text = services_yaml();
    // Cut in the middle of a line, two thirds in: the slices after it are gone, and the
    // one it cuts ends early but still parses.
    let cut = text.len() * 2 / 3;
    let cut = cut + text[cut..].find("nodeName").unwrap() + 4;
    cluster.break_services(&text[..cut]).await;
    assert_eq!(cluster.withdrawn().await, 0, "backends withdrawn");
}

#[tokio::test]
async fn an_oversized_file_is_refused_and_keeps_everything_it_held() {
    let cluster = Cluster::start().await;
    // What it would say if it were read: svc-5 is gone.
    let mut text = services_yaml();
    text.truncate(
        text.find("apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-5")
            .unwrap(),
    );
    let padding = "# padding\n".repeat(MAX_FILE_BYTES as usize / 10 + 1);
    text.push_str(&padding);
    cluster.break_services(text).await;
    assert_eq!(cluster.withdrawn().await, 0, "backends withdrawn");
}
