//! A real etcd for tests: the one named by `FLEETMESH_TEST_ETCD`, or a throwaway one
//! started from the `etcd` binary on `PATH`, once per test process.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetmesh::kvstore::etcd::{EtcdConfig, EtcdStore, EtcdTls};
use tokio::sync::OnceCell;

/// Names an etcd to use instead of starting one, e.g. `http://127.0.0.1:2379`
/// (comma-separated for several endpoints).
pub const ETCD_ENV: &str = "FLEETMESH_TEST_ETCD";

/// How long a fresh etcd may take to answer (it usually takes well under a second).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Attempts at starting etcd: a free port found by binding can be taken by someone else
/// before etcd binds it.
const START_ATTEMPTS: usize = 3;

/// etcd's own default `--initial-cluster-token`, given explicitly so that a restart with
/// the same flags is plainly the same.
const DEFAULT_CLUSTER_TOKEN: &str = "etcd-cluster";

/// Caps the throwaway database (1 GiB), as production should; see performance.md.
const QUOTA_BACKEND_BYTES: &str = "1073741824";

/// Runs etcd (the arguments after the directory) and stops it when the test process dies,
/// however it dies: the test holds the write end of this script's stdin, and a watcher
/// subshell stops etcd and removes the directory when that pipe reaches end-of-file. If
/// etcd exits by itself, the directory stays so the test can read `etcd.log`. The script
/// writes nothing to stderr: that pipe may be gone, and writing to it would kill it.
const REAPER: &str = r#"
exec 2>/dev/null
dir="$1"; shift
exec 3<&0
"$@" 3<&- </dev/null >"$dir/etcd.log" 2>&1 &
pid=$!
( cat <&3 >/dev/null; touch "$dir/stopping"; kill "$pid" ) &
watcher=$!
exec 3<&-
wait "$pid"
status=$?
if [ -e "$dir/stopping" ]; then rm -rf "$dir"; else kill "$watcher"; fi
exit "$status"
"#;

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
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// An etcd process of one test's own (for what must not touch the shared one); stopped
/// when dropped.
pub struct LocalEtcd {
    child: Child,
    endpoint: String,
    dir: PathBuf,
    /// The client and peer ports, kept across a wipe.
    ports: (u16, u16),
}

impl LocalEtcd {
    /// Starts etcd from `PATH` on free loopback ports, over mutual TLS if `tls` is given.
    pub async fn start(tls: Option<&ServerTls>) -> Result<Self, String> {
        let binary = find_on_path("etcd").ok_or_else(|| {
            format!(
                "etcd not found: install Debian's etcd-server or set {ETCD_ENV} \
                 (scripts/test does both)"
            )
        })?;
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let ports = (free_port()?, free_port()?);
            match Self::start_once(&binary, tls, ports, DEFAULT_CLUSTER_TOKEN).await {
                Ok(local) => return Ok(local),
                Err(failure) => failures.push(failure),
            }
        }
        Err(format!("etcd did not start: {}", failures.join("\n---\n")))
    }

    /// This etcd's endpoint.
    pub fn handle(&self) -> EtcdHandle {
        EtcdHandle {
            endpoints: vec![self.endpoint.clone()],
        }
    }

    /// Stops etcd, deletes its data and starts a new one on the same ports: with the same
    /// flags it comes back under the same cluster id (etcd derives it from the member's
    /// name, peer URLs and cluster token), with `new_cluster_id` under another one.
    /// Nothing of the old history survives either way: keys, leases and revisions.
    pub async fn wipe_and_restart(&mut self, new_cluster_id: bool) -> Result<(), String> {
        let binary = find_on_path("etcd").ok_or("etcd not found")?;
        // End-of-file on the reaper's stdin stops etcd and removes its directory.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        let token = if new_cluster_id {
            format!("wiped-{:08x}", rand::random::<u32>())
        } else {
            DEFAULT_CLUSTER_TOKEN.to_string()
        };
        let mut failures = Vec::new();
        // The old listeners' ports may take a moment to be free again.
        for _ in 0..START_ATTEMPTS * 10 {
            match Self::start_once(&binary, None, self.ports, &token).await {
                Ok(fresh) => {
                    // The old one's child is reaped and its directory gone already.
                    *self = fresh;
                    return Ok(());
                }
                Err(failure) => failures.push(failure),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "etcd did not restart: {}",
            failures.join("\n---\n")
        ))
    }

    async fn start_once(
        binary: &Path,
        tls: Option<&ServerTls>,
        (client_port, peer_port): (u16, u16),
        token: &str,
    ) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("fleetmesh-etcd-")
            .tempdir()
            .map_err(|err| format!("creating etcd's directory: {err}"))?
            .keep();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut command = Command::new("sh");
        command
            .args(["-c", REAPER, "sh"])
            .arg(&dir)
            .arg(binary)
            .args(["--name", "test", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--initial-cluster-token", token])
            .args(["--auto-compaction-retention=1"])
            .args(["--quota-backend-bytes", QUOTA_BACKEND_BYTES])
            .args(["--logger=zap", "--log-level=warn"]);
        if let Some(tls) = tls {
            command
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file);
        }
        let spawned = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("starting etcd: {err}"));
            }
        };
        let mut local = LocalEtcd {
            child,
            endpoint,
            dir,
            ports: (client_port, peer_port),
        };
        local.wait_ready(tls).await?;
        Ok(local)
    }

    /// Waits until etcd answers, or reports its log if it exits first.
    async fn wait_ready(&mut self, tls: Option<&ServerTls>) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut config = self.handle().config("");
        config.dial_timeout = Duration::from_secs(1);
        config.tls = tls.map(|tls| EtcdTls {
            ca_file: tls.ca_file.clone(),
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
        });
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&self.dir);
                return Err(format!("etcd exited with {status}:\n{log}"));
            }
            match EtcdStore::connect(config.clone()).await {
                Ok(_) => return Ok(()),
                Err(err) if Instant::now() > deadline => {
                    return Err(format!("etcd at {} never answered: {err}", self.endpoint));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        // End-of-file on the reaper's stdin stops etcd and removes its directory.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|err| format!("finding a free port: {err}"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}
