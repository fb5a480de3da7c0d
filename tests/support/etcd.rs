//! A real etcd for tests: the one named by `FLEETMESH_TEST_ETCD`, or a throwaway one
//! started from the `etcd` binary on `PATH`, once per test process.

use fleetmesh::kvstore::etcd::{EtcdConfig, EtcdStore};
use fleetmesh::testkit;
use tokio::sync::OnceCell;

/// Names an etcd to use instead of starting one, e.g. `http://127.0.0.1:2379`
/// (comma-separated for several endpoints).
pub const ETCD_ENV: &str = "FLEETMESH_TEST_ETCD";

/// An etcd a test can use.
#[derive(Clone, Debug)]
pub struct EtcdHandle {
    pub endpoints: Vec<String>,
}

impl EtcdHandle {
    /// A store configuration for this etcd with keys under `namespace`.
    pub fn config(&self, namespace: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints: self.endpoints.clone(),
            namespace: namespace.to_owned(),
            ..EtcdConfig::default()
        }
    }

    /// A plain etcd-client, for what the store does not offer (compaction, raw keys).
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(&self.endpoints, None)
            .await
            .expect("connecting to the test etcd")
    }

    /// Every key under `namespace + prefix` as etcd holds it, read with a raw client, by
    /// key with the namespace stripped.
    pub async fn dump(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> std::collections::BTreeMap<String, etcd_client::KeyValue> {
        let full = format!("{namespace}{prefix}");
        let options = etcd_client::GetOptions::new().with_prefix();
        let resp = self
            .client()
            .await
            .get(full.as_str(), Some(options))
            .await
            .expect("reading the test etcd");
        resp.kvs()
            .iter()
            .map(|kv| {
                let key = kv.key_str().expect("a UTF-8 key")[namespace.len()..].to_string();
                (key, kv.clone())
            })
            .collect()
    }
}

/// The shared etcd's endpoints, and the process if this test process started it.
type SharedEtcd = (Vec<String>, Option<LocalEtcd>);

/// The etcd shared by the tests of this process.
pub async fn etcd() -> EtcdHandle {
    static SHARED: OnceCell<Result<SharedEtcd, String>> = OnceCell::const_new();
    let shared = SHARED
        .get_or_init(|| async {
            if let Ok(endpoints) = std::env::var(ETCD_ENV) {
                let endpoints = endpoints.split(',').map(str::to_owned).collect();
                return Ok((endpoints, None));
            }
            let local = LocalEtcd::start(None).await?;
            Ok((local.handle().endpoints, Some(local)))
        })
        .await;
    match shared {
        Ok((endpoints, _)) => EtcdHandle {
            endpoints: endpoints.clone(),
        },
        Err(message) => panic!("{message}"),
    }
}

/// A store on the shared etcd, in a namespace of its own.
pub async fn mk_etcd_store() -> EtcdStore {
    EtcdStore::connect(etcd().await.config(&super::unique_prefix()))
        .await
        .expect("connecting to the test etcd")
}

/// PEM files for an etcd served over mutual TLS.
pub use fleetmesh::testkit::EtcdServerTls as ServerTls;

/// An etcd process of one test's own (for what must not touch the shared one): the test
/// kit's [`testkit::LocalEtcd`], with failures as messages naming how to get etcd, and
/// an [`EtcdHandle`]. Stopped, and its data removed, when dropped.
pub struct LocalEtcd(testkit::LocalEtcd);

impl LocalEtcd {
    /// Starts etcd from `PATH` on free loopback ports, over mutual TLS if `tls` is given.
    pub async fn start(tls: Option<&ServerTls>) -> Result<Self, String> {
        let settings = testkit::LocalEtcdSettings {
            tls: tls.cloned(),
            ..testkit::LocalEtcdSettings::default()
        };
        testkit::LocalEtcd::start_with(settings)
            .await
            .map(Self)
            .map_err(|err| match err {
                testkit::LocalEtcdError::NotFound => {
                    format!("{err} or set {ETCD_ENV} (scripts/test does both)")
                }
                err => err.to_string(),
            })
    }

    /// This etcd's endpoint.
    pub fn handle(&self) -> EtcdHandle {
        EtcdHandle {
            endpoints: vec![self.0.endpoint().to_string()],
        }
    }

    /// See [`testkit::LocalEtcd::wipe_and_restart`].
    pub async fn wipe_and_restart(&mut self, new_cluster_id: bool) -> Result<(), String> {
        self.0
            .wipe_and_restart(new_cluster_id)
            .await
            .map_err(|err| err.to_string())
    }

    /// kill -9 of etcd, keeping its data directory (see [`testkit::LocalEtcd::kill`]).
    pub fn kill(&mut self) {
        self.0.kill().expect("killing etcd");
    }

    /// Starts etcd again on its ports and data after [`LocalEtcd::kill`].
    pub async fn restart(&mut self) {
        self.0.restart().await.expect("restarting etcd on its data");
    }
}
