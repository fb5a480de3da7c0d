//! The processes `bench memory` measures: `fleetmesh bench probe …`, the bench's own
//! binary run again in another role, so that each process's resident memory is its
//! role's alone.
//!
//! A probe talks to the bench by lines: on stdout it says `ready [address [etcd API
//! address]]` once it holds its whole state, and `correctness <json>` when asked `check` on stdin; it
//! exits when its stdin closes.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;

use super::watchers::{check_watchers, open_watchers};
use crate::bench::agents::{spawn_merging, wait_ready};
use crate::bench::correctness::{Correctness, check_view};
use crate::bench::workload::{Sizes, Workload};
use crate::kvstore::Store;
use crate::kvstore::memory::MemoryStore;
use crate::model::{Cluster, ClusterId, ClusterName, IdMode};
use crate::remote::{PeerConfig, PeerLink, SharedView};
use crate::testkit::{LocalApiserver, ServeOptions};
use crate::tls::TlsFiles;

/// What a probe process does.
#[derive(Clone, Debug)]
pub enum Probe {
    /// An apiserver serving a generated workload from its embedded store.
    Apiserver {
        source: ProbePeer,
        /// Its server certificate.
        tls: TlsFiles,
        /// Also serve the etcd API.
        etcd_api: bool,
    },
    /// `count` idle etcd clients with Cilium's watches open on the etcd API at
    /// `source.address`.
    EtcdWatchers {
        source: ProbePeer,
        count: u32,
        /// The clients' certificate.
        tls: TlsFiles,
    },
    /// `views` agent views of cluster `local`, each linked to every peer.
    Agent {
        local: (String, u32),
        views: u32,
        peers: Vec<ProbePeer>,
        /// The agent's client certificate.
        tls: TlsFiles,
    },
}

/// A cluster whose state is the generated workload of `endpoints` in `slot`, and where
/// its apiserver listens (empty for an apiserver yet to listen).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePeer {
    pub name: String,
    pub id: u32,
    pub endpoints: u32,
    pub slot: u32,
    pub address: String,
}

impl ProbePeer {
    /// The cluster (ids in normal mode).
    pub fn cluster(&self) -> anyhow::Result<Cluster> {
        cluster(&self.name, self.id)
    }

    /// Its state.
    pub fn workload(&self) -> anyhow::Result<Workload> {
        let cluster = self.cluster()?;
        Workload::generate_at(
            &cluster,
            Sizes::for_endpoints(self.endpoints, &cluster),
            self.slot,
        )
    }
}

/// `name:id:endpoints:slot@address`, the form on the probe's command line.
impl std::fmt::Display for ProbePeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            name,
            id,
            endpoints,
            slot,
            address,
        } = self;
        write!(f, "{name}:{id}:{endpoints}:{slot}@{address}")
    }
}

impl FromStr for ProbePeer {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (spec, address) = s.split_once('@').unwrap_or((s, ""));
        let parts: Vec<&str> = spec.split(':').collect();
        let [name, id, endpoints, slot] = parts[..] else {
            bail!("expected name:id:endpoints:slot@address, got {s:?}");
        };
        let number = |what: &str, v: &str| {
            v.parse::<u32>()
                .with_context(|| format!("{what} {v:?} in {s:?} is not a number"))
        };
        Ok(Self {
            name: name.to_string(),
            id: number("id", id)?,
            endpoints: number("endpoints", endpoints)?,
            slot: number("slot", slot)?,
            address: address.to_string(),
        })
    }
}

/// Runs a probe until its stdin closes.
pub async fn run_probe(probe: Probe) -> anyhow::Result<()> {
    match probe {
        Probe::Apiserver {
            source,
            tls,
            etcd_api,
        } => {
            let cluster = source.cluster()?;
            let store: Arc<dyn Store> = MemoryStore::new();
            let sizes = Sizes::for_endpoints(source.endpoints, &cluster);
            Workload::write_generated(&cluster, sizes, source.slot, &store).await?;
            let (synced_tx, synced_rx) = oneshot::channel();
            let options = ServeOptions {
                synced_tx: Some(synced_tx),
                etcd_api,
                ..ServeOptions::default()
            };
            let server = LocalApiserver::start(cluster, store, tls, options).await?;
            synced_rx
                .await
                .context("the apiserver stopped before it synced")?;
            match server.etcd_api_addr {
                Some(etcd_api) => say(&format!("ready {} {etcd_api}", server.addr)).await?,
                None => say(&format!("ready {}", server.addr)).await?,
            }
            serve_commands(|| async { Ok(Correctness::default()) }).await
        }
        Probe::EtcdWatchers { source, count, tls } => {
            let watchers = open_watchers(&source, count, &tls).await?;
            say("ready").await?;
            serve_commands(|| async { check_watchers(&watchers, &source) }).await
        }
        Probe::Agent {
            local,
            views,
            peers,
            tls,
        } => {
            let local = cluster(&local.0, local.1)?;
            let agents = link_views(&local, views, &peers, &tls)?;
            // No timeout of its own: the bench times out waiting for the `ready` line.
            wait_ready(
                agents.iter().flat_map(|(_, links)| links),
                Instant::now(),
                None,
                Duration::MAX,
            )
            .await?;
            say("ready").await?;
            serve_commands(|| check_views(&agents, &peers)).await
        }
    }
}

/// `views` views, each with one link per peer.
fn link_views(
    local: &Cluster,
    views: u32,
    peers: &[ProbePeer],
    tls: &TlsFiles,
) -> anyhow::Result<Vec<(SharedView, Vec<PeerLink>)>> {
    let configs = peers
        .iter()
        .map(|p| {
            Ok(PeerConfig {
                name: ClusterName::new(&p.name)?,
                address: p.address.clone(),
                server_name: None,
                tls: tls.clone(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((0..views)
        .map(|_| spawn_merging(local, &configs, None))
        .collect())
}

/// Every view compared with every peer's workload; a link that is not ready, or
/// reconnected, flapped.
async fn check_views(
    agents: &[(SharedView, Vec<PeerLink>)],
    peers: &[ProbePeer],
) -> anyhow::Result<Correctness> {
    let workloads = peers
        .iter()
        .map(ProbePeer::workload)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut correctness = Correctness::default();
    for (view, links) in agents {
        let view = view.read();
        for workload in &workloads {
            correctness.add(&check_view(&view, workload));
        }
        for link in links {
            let status = link.status_rx().borrow().clone();
            correctness.flaps += status.reconnects + u64::from(!status.ready);
        }
    }
    Ok(correctness)
}

/// Answers `check` lines with the probe's correctness until stdin closes.
async fn serve_commands<F, Fut>(check: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Correctness>>,
{
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("cannot read stdin")? {
        match line.trim() {
            "check" => {
                let correctness = check().await?;
                let json = serde_json::to_string(&correctness)
                    .context("cannot write the correctness as JSON")?;
                say(&format!("correctness {json}")).await?;
            }
            other => bail!("unknown probe command {other:?}"),
        }
    }
    Ok(())
}

/// One line on stdout, flushed at once: the bench waits for it.
async fn say(line: &str) -> anyhow::Result<()> {
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("{line}\n").as_bytes())
        .await
        .context("cannot write to stdout")?;
    stdout.flush().await.context("cannot write to stdout")
}

fn cluster(name: &str, id: u32) -> anyhow::Result<Cluster> {
    let mode = IdMode::Normal;
    Ok(Cluster::new(
        ClusterName::new(name)?,
        ClusterId::new(id, mode)?,
        mode,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_spec_round_trips_and_bad_ones_say_why() {
        let peer = ProbePeer {
            name: "bench-c3".into(),
            id: 5,
            endpoints: 25_000,
            slot: 3,
            address: "127.0.0.1:4000".into(),
        };
        let text = peer.to_string();
        assert_eq!(text, "bench-c3:5:25000:3@127.0.0.1:4000");
        assert_eq!(text.parse::<ProbePeer>().unwrap(), peer);
        let unplaced: ProbePeer = "c:2:10:0".parse().unwrap();
        assert_eq!(unplaced.address, "");
        let err = "c:2:ten:0@a:1".parse::<ProbePeer>().unwrap_err();
        assert!(err.to_string().contains("endpoints \"ten\""), "{err}");
        assert!("c:2:10@a:1".parse::<ProbePeer>().is_err());
    }
}
