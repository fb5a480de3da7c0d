//! A throwaway etcd for `--store etcd` and `--baseline etcd-direct` without `--etcd`:
//! Debian's `etcd` from `PATH`, on free loopback ports, in a directory of the bench's,
//! with compaction and a quota (etcd 3.4 has neither by default and would grow without
//! bound); stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::kvstore::etcd::{EtcdConfig, EtcdStore};

/// A fresh etcd answers well within this.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Caps the database at 4 GiB: enough for the largest bench, bounded as production
/// should be.
const QUOTA_BACKEND_BYTES: &str = "4294967296";
/// Between attempts to reach the starting etcd.
const POLL: Duration = Duration::from_millis(50);

/// A running etcd owned by the bench.
pub struct LocalEtcd {
    child: Child,
    endpoint: String,
}

impl LocalEtcd {
    /// Starts etcd with its data under `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let binary = find_on_path("etcd")
            .context("etcd not found on PATH: install Debian's etcd-server or pass --etcd URL")?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.join("etcd.log")).context("cannot create etcd.log")?;
        let child = Command::new(binary)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("etcd-data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .args(["--auto-compaction-retention=1"])
            .args(["--quota-backend-bytes", QUOTA_BACKEND_BYTES])
            .args(["--logger=zap", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start etcd")?;
        let mut etcd = Self { child, endpoint };
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    /// The client URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let config = EtcdConfig {
            endpoints: vec![self.endpoint.clone()],
            dial_timeout: Duration::from_secs(1),
            ..EtcdConfig::default()
        };
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("etcd exited with {status} (see etcd.log)");
            }
            match EtcdStore::connect(config.clone()).await {
                Ok(_) => return Ok(()),
                Err(err) if Instant::now() > deadline => {
                    return Err(err).context(format!("etcd at {} never answered", self.endpoint));
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        // It may have exited already; there is nothing else to do about either error.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}
