//! An apiserver on the embedded store serving the etcd API over mTLS, and the clients
//! nobody here wrote that read it: `etcdctl` (Go's clientv3) and the `etcd-client`
//! crate.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use fleetmesh::kvstore::Store;
use fleetmesh::kvstore::memory::MemoryStore;
use fleetmesh::tls::TlsFiles;

use super::mesh::MeshPki;

/// The etcdctl the tests run (Debian's etcd-client).
pub const ETCDCTL: &str = "etcdctl";
/// How long a test waits for the apiserver to sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// Cluster `c1`'s apiserver with its etcd API; `c2` is allowed to read it.
pub struct EtcdApiServer {
    pub apiserver: Apiserver,
    pub store: Arc<MemoryStore>,
    pub pki: MeshPki,
    pub endpoint: String,
    config: ApiserverConfig,
}

impl EtcdApiServer {
    /// Serves `c1` to `allowed` peers, keeping `history` changes in the revision log.
    pub async fn start(allowed: &[&str], history: usize) -> Self {
        let pki = MeshPki::new();
        let store = MemoryStore::new();
        let config = mk_config(&pki, allowed, history, 0);
        Self::start_on(pki, store, config).await
    }

    async fn start_on(pki: MeshPki, store: Arc<MemoryStore>, config: ApiserverConfig) -> Self {
        let mut apiserver = Apiserver::start_with_store(config.clone(), store.clone())
            .await
            .unwrap();
        tokio::time::timeout(SYNC_TIMEOUT, apiserver.synced())
            .await
            .expect("the export did not sync in time")
            .unwrap();
        let addr = apiserver.etcd_api_addr.expect("the etcd API is configured");
        Self {
            apiserver,
            store,
            pki,
            endpoint: format!("https://127.0.0.1:{}", addr.port()),
            config,
        }
    }

    /// Stops the apiserver and starts it again on the same port, on `store` (the same
    /// store: the same epoch; a new one: a new epoch).
    pub async fn restart(self, store: Arc<MemoryStore>) -> Self {
        let port = self.apiserver.etcd_api_addr.unwrap().port();
        drop(self.apiserver);
        let mut config = self.config;
        config.etcd_api.as_mut().unwrap().listen = ([127, 0, 0, 1], port).into();
        // The old listener closes with its runtime's tasks; wait for the port.
        for _ in 0..100 {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self::start_on(self.pki, store, config).await
    }

    /// Writes `key` straight into the store; returns its revision.
    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let revision = self
            .store
            .put(key, value.to_owned().into(), None)
            .await
            .unwrap();
        i64::try_from(revision).unwrap()
    }

    /// Runs etcdctl (API v3) against the etcd API with `client`'s certificate.
    pub async fn etcdctl(&self, client: &TlsFiles, args: &[&str]) -> Output {
        tokio::process::Command::new(ETCDCTL)
            .envs(etcdctl_env(&self.endpoint, client))
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {ETCDCTL} (Debian's etcd-client): {e}"))
    }

    /// An etcd-client connected with `client`'s certificate.
    pub async fn client(&self, client: &TlsFiles) -> etcd_client::Client {
        let read = |p: &Path| std::fs::read(p).unwrap();
        let tls = etcd_client::TlsOptions::new()
            .domain_name("localhost")
            .ca_certificate(etcd_client::Certificate::from_pem(read(&client.ca)))
            .identity(etcd_client::Identity::from_pem(
                read(&client.cert),
                read(&client.key),
            ));
        let options = etcd_client::ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(Duration::from_secs(5));
        etcd_client::Client::connect([self.endpoint.as_str()], Some(options))
            .await
            .expect("connecting to the etcd API")
    }
}

/// The environment that points etcdctl at `endpoint` with `client`'s files.
pub fn etcdctl_env(endpoint: &str, client: &TlsFiles) -> Vec<(&'static str, String)> {
    let path = |p: &PathBuf| p.display().to_string();
    vec![
        ("ETCDCTL_API", "3".to_string()),
        ("ETCDCTL_ENDPOINTS", endpoint.to_string()),
        ("ETCDCTL_CACERT", path(&client.ca)),
        ("ETCDCTL_CERT", path(&client.cert)),
        ("ETCDCTL_KEY", path(&client.key)),
        ("ETCDCTL_DIAL_TIMEOUT", "5s".to_string()),
        ("ETCDCTL_COMMAND_TIMEOUT", "10s".to_string()),
    ]
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifests")
}

fn mk_config(pki: &MeshPki, allowed: &[&str], history: usize, port: u16) -> ApiserverConfig {
    let server = pki.server_files("c1");
    let text = format!(
        "cluster: {{name: c1, id: 1}}\n\
         source: {{manifests: {manifests:?}}}\n\
         health: {{listen: \"127.0.0.1:0\"}}\n\
         etcdApi:\n  listen: \"127.0.0.1:{port}\"\n  allowedPeers: {allowed:?}\n  historyEvents: {history}\n  \
         tls: {{ca: {ca:?}, cert: {cert:?}, key: {key:?}}}\n",
        manifests = examples_dir(),
        ca = server.ca,
        cert = server.cert,
        key = server.key,
    );
    ApiserverConfig::parse(&text, Path::new("test-apiserver.yaml")).unwrap()
}
