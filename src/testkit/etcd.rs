//! A throwaway etcd: Debian's `etcd` from `PATH` on free loopback ports, its data in a
//! temporary directory, with compaction and a quota (etcd 3.4 has neither by default and
//! would grow without bound). It can be killed and restarted on its data, or wiped.
//!
//! etcd runs under a small shell reaper that stops it and removes its directory when the
//! owner's end of a pipe closes: when the [`LocalEtcd`] is dropped, and also when the
//! process owning it dies of anything (a panicking test, a kill -9), so no etcd outlives
//! its owner.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kvstore::StoreError;
use crate::kvstore::etcd::{EtcdConfig, EtcdStore, EtcdTls};

/// How long a fresh etcd may take to answer (it usually takes well under a second).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Attempts at starting etcd: a free port found by binding can be taken by someone else
/// before etcd binds it.
const START_ATTEMPTS: usize = 3;

/// Attempts at restarting on the old ports, which the old listeners may hold a moment.
const RESTART_ATTEMPTS: usize = 30;

/// Between attempts to start, and to reach the starting etcd.
const POLL: Duration = Duration::from_millis(50);

/// etcd's own default `--initial-cluster-token`, given explicitly so that a restart with
/// the same flags is plainly the same.
const DEFAULT_CLUSTER_TOKEN: &str = "etcd-cluster";

/// Caps the database at 1 GiB by default, as production should.
const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 1 << 30;

/// Runs etcd (the arguments after the directory) and stops it when its owner goes, however
/// it goes: the owner holds the write end of this script's stdin, and a watcher subshell
/// stops etcd and removes the directory when that pipe reaches end-of-file. If etcd exits
/// by itself (or is killed), the directory stays: for its log, or to start again on its
/// data. The script writes nothing to stderr: that pipe may be gone, and writing to it
/// would kill it.
const REAPER: &str = r#"
exec 2>/dev/null
dir="$1"; shift
exec 3<&0
"$@" 3<&- </dev/null >"$dir/etcd.log" 2>&1 &
pid=$!
echo "$pid" >"$dir/etcd.pid"
( cat <&3 >/dev/null; touch "$dir/stopping"; kill "$pid" ) &
watcher=$!
exec 3<&-
wait "$pid"
status=$?
if [ -e "$dir/stopping" ]; then rm -rf "$dir"; else kill "$watcher"; fi
exit "$status"
"#;

/// What can go wrong running a local etcd.
#[derive(Debug, thiserror::Error)]
pub enum LocalEtcdError {
    #[error("etcd not found on PATH: install Debian's etcd-server")]
    NotFound,
    #[error("cannot {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd exited with {status}:\n{log}")]
    Exited {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("etcd at {endpoint} never answered")]
    NoAnswer {
        endpoint: String,
        #[source]
        source: StoreError,
    },
    #[error("etcd did not start: {}", .failures.join("\n---\n"))]
    Attempts { failures: Vec<String> },
}

/// PEM files for an etcd served over mutual TLS (the server's certificate also serves as
/// the client certificate that checks it answers).
#[derive(Clone, Debug)]
pub struct EtcdServerTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// How to run a [`LocalEtcd`].
#[derive(Clone, Debug)]
pub struct LocalEtcdSettings {
    /// Serve clients over mutual TLS with these files.
    pub tls: Option<EtcdServerTls>,
    /// etcd's `--quota-backend-bytes`.
    pub quota_backend_bytes: u64,
}

impl Default for LocalEtcdSettings {
    fn default() -> Self {
        Self {
            tls: None,
            quota_backend_bytes: DEFAULT_QUOTA_BACKEND_BYTES,
        }
    }
}

/// A running etcd of its owner's; stopped, and its data removed, when dropped.
pub struct LocalEtcd {
    child: Child,
    endpoint: String,
    dir: PathBuf,
    /// The client and peer ports, kept across a restart or a wipe.
    ports: (u16, u16),
    settings: LocalEtcdSettings,
    /// Killed and not restarted: the reaper is gone, the directory is the owner's to remove.
    killed: bool,
}

impl LocalEtcd {
    /// Starts a plain etcd (no TLS, default quota) and waits until it answers.
    pub async fn start() -> Result<Self, LocalEtcdError> {
        Self::start_with(LocalEtcdSettings::default()).await
    }

    /// Starts etcd as `settings` say and waits until it answers.
    pub async fn start_with(settings: LocalEtcdSettings) -> Result<Self, LocalEtcdError> {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let ports = super::free_ports(2)
                .map(|ports| (ports[0], ports[1]))
                .map_err(|source| LocalEtcdError::Io {
                    what: "find free ports",
                    source,
                })?;
            let dir = fresh_dir()?;
            match Self::start_once(&settings, ports, DEFAULT_CLUSTER_TOKEN, dir.clone()).await {
                Ok(local) => return Ok(local),
                Err(failure) => {
                    // Nothing of a failed start is worth keeping.
                    let _ = std::fs::remove_dir_all(&dir);
                    failures.push(failure.to_string());
                }
            }
        }
        Err(LocalEtcdError::Attempts { failures })
    }

    /// The client URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The directory holding etcd's data (`data/`) and its log (`etcd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A store configuration for this etcd with keys under `namespace` (no TLS).
    pub fn config(&self, namespace: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.endpoint.clone()],
            namespace: namespace.to_owned(),
            ..EtcdConfig::default()
        }
    }

    /// kill -9: etcd ends with no goodbye, its data directory stays as the crash left it.
    /// [`LocalEtcd::restart`] starts it again on that data.
    pub fn kill(&mut self) -> Result<(), LocalEtcdError> {
        let pid = std::fs::read_to_string(self.dir.join("etcd.pid")).map_err(|source| {
            LocalEtcdError::Io {
                what: "read etcd's pid",
                source,
            }
        })?;
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .map_err(|source| LocalEtcdError::Io {
                what: "run kill",
                source,
            })?;
        if !status.success() {
            return Err(LocalEtcdError::Io {
                what: "kill etcd",
                source: std::io::Error::other(format!("kill -KILL {} said {status}", pid.trim())),
            });
        }
        // The reaper sees etcd die without being told to stop: it keeps the directory. Its
        // stdin stays open until it has exited (`wait` would close it first: that is the
        // signal to stop and remove everything).
        let stdin = self.child.stdin.take();
        let reaped = self.child.wait();
        drop(stdin);
        reaped.map_err(|source| LocalEtcdError::Io {
            what: "reap etcd",
            source,
        })?;
        self.killed = true;
        Ok(())
    }

    /// Starts etcd again on its old ports and its old data (after [`LocalEtcd::kill`]):
    /// the same cluster, its keys, revisions and leases as the crash left them.
    pub async fn restart(&mut self) -> Result<(), LocalEtcdError> {
        // A stop signal the old reaper's watcher may have left would make the new reaper
        // remove the data when this etcd next exits.
        let _ = std::fs::remove_file(self.dir.join("stopping"));
        self.start_again(DEFAULT_CLUSTER_TOKEN.to_string(), self.dir.clone())
            .await
    }

    /// Stops etcd, deletes its data and starts a new one on the same ports: with the same
    /// flags it comes back under the same cluster id (etcd derives it from the member's
    /// name, peer URLs and cluster token), with `new_cluster_id` under another one.
    /// Nothing of the old history survives either way: keys, leases and revisions.
    pub async fn wipe_and_restart(&mut self, new_cluster_id: bool) -> Result<(), LocalEtcdError> {
        // End-of-file on the reaper's stdin stops etcd and removes its directory (after a
        // kill, the reaper is gone already and the directory is removed here).
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        if std::mem::take(&mut self.killed) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        let token = if new_cluster_id {
            format!("wiped-{:08x}", rand::random::<u32>())
        } else {
            DEFAULT_CLUSTER_TOKEN.to_string()
        };
        self.start_again(token, fresh_dir()?).await
    }

    /// Starts etcd on this one's ports in `dir`, retrying while the ports are still held.
    async fn start_again(&mut self, token: String, dir: PathBuf) -> Result<(), LocalEtcdError> {
        let mut failures = Vec::new();
        for _ in 0..RESTART_ATTEMPTS {
            match Self::start_once(&self.settings, self.ports, &token, dir.clone()).await {
                Ok(started) => {
                    // The old one's child is reaped already, and its directory may be the
                    // new one's: dropping it must not remove that.
                    self.killed = false;
                    *self = started;
                    return Ok(());
                }
                Err(failure) => failures.push(failure.to_string()),
            }
            tokio::time::sleep(POLL * 2).await;
        }
        Err(LocalEtcdError::Attempts { failures })
    }

    async fn start_once(
        settings: &LocalEtcdSettings,
        (client_port, peer_port): (u16, u16),
        token: &str,
        dir: PathBuf,
    ) -> Result<Self, LocalEtcdError> {
        let binary = find_on_path("etcd").ok_or(LocalEtcdError::NotFound)?;
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let endpoint = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut command = Command::new("sh");
        command
            .args(["-c", REAPER, "sh"])
            .arg(&dir)
            .arg(binary)
            .args(["--name", "local", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("local={peer}")])
            .args(["--initial-cluster-token", token])
            .args(["--auto-compaction-retention=1"])
            .arg(format!(
                "--quota-backend-bytes={}",
                settings.quota_backend_bytes
            ))
            .args(["--logger=zap", "--log-level=warn"]);
        if let Some(tls) = &settings.tls {
            command
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file);
        }
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| LocalEtcdError::Io {
                what: "start etcd",
                source,
            })?;
        let mut local = LocalEtcd {
            child,
            endpoint,
            dir,
            ports: (client_port, peer_port),
            settings: settings.clone(),
            killed: false,
        };
        local.wait_ready().await?;
        Ok(local)
    }

    /// Waits until etcd answers, or reports its log if it exits first.
    async fn wait_ready(&mut self) -> Result<(), LocalEtcdError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut config = self.config("");
        config.dial_timeout = Duration::from_secs(1);
        config.tls = self.settings.tls.as_ref().map(|tls| EtcdTls {
            ca_file: tls.ca_file.clone(),
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
        });
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                return Err(LocalEtcdError::Exited { status, log });
            }
            match EtcdStore::connect(config.clone()).await {
                Ok(_) => return Ok(()),
                Err(source) if Instant::now() > deadline => {
                    return Err(LocalEtcdError::NoAnswer {
                        endpoint: self.endpoint.clone(),
                        source,
                    });
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        // End-of-file on the reaper's stdin stops etcd and removes its directory; after a
        // kill without a restart the reaper is gone and the directory is removed here. If
        // etcd exited by itself, its directory stays for its log.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        if self.killed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A new directory for etcd, kept after this returns (the reaper removes it).
fn fresh_dir() -> Result<PathBuf, LocalEtcdError> {
    tempfile::Builder::new()
        .prefix("fleetmesh-etcd-")
        .tempdir()
        .map(tempfile::TempDir::keep)
        .map_err(|source| LocalEtcdError::Io {
            what: "create etcd's directory",
            source,
        })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}
