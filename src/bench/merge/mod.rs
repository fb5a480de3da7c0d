//! `bench merge`: one agent merging C clusters of N endpoints each. Every cluster has its
//! own apiserver — embedded store, watch cache and gRPC server behind mutual TLS, its own
//! name, id and certificate — and the agent runs one link per cluster (the agent's own
//! `remote::spawn_link`) into one shared mesh view. Measured: the time until it is
//! synced with every cluster, and how much the process grew while it merged.
//!
//! The view must then hold exactly every cluster's state, under that cluster's name.

mod cache_keys;
mod table;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::oneshot;

pub use self::cache_keys::CacheKeysReport;
pub use self::table::merge_table;

use super::agents::{spawn_merging, wait_ready};
use super::correctness::{Correctness, check_view};
use super::memory::rss_kib;
use super::pki::bench_pki;
use super::progress::Progress;
use super::setup::BenchOptions;
use super::stats::Percentiles;
use super::workload::{Sizes, Workload};
use crate::kvstore::Store;
use crate::kvstore::memory::MemoryStore;
use crate::model::{Cluster, ClusterId, ClusterName, IdMode};
use crate::remote::PeerConfig;
use crate::testkit::Pki;
use crate::testkit::{LocalApiserver, ServeOptions};

/// Clusters when `--clusters` is not given: a run of seconds.
pub const DEFAULT_CLUSTERS: u32 = 32;
/// Endpoints per cluster when `--endpoints` is not given (the target's size).
pub const DEFAULT_ENDPOINTS: u32 = 1_000;
/// Apiservers started at once: each writes its store and mints a certificate.
const STARTS_IN_FLIGHT: usize = 8;
/// The merging agent's cluster; the others take the ids after it.
const AGENT: (&str, u32) = ("bench-agent", 1);
/// The target: 255 clusters of 1,000 endpoints merged within 10 s.
const TARGET_SIZE: (u32, u32) = (255, 1_000);
const TARGET: Duration = Duration::from_secs(10);
/// The agent as KVStoreMesh (`--etcd-api`, issue 17): 255 × 10,000 synced with its
/// cache keys within 20 s, in at most 1 GiB, and paged through within 10 s.
const CACHE_KEYS_TARGET_SIZE: (u32, u32) = (255, 10_000);
const CACHE_KEYS_TARGET: Duration = Duration::from_secs(20);
const CACHE_KEYS_TARGET_MIB: f64 = 1024.0;
const CACHE_KEYS_LIST_TARGET: Duration = Duration::from_secs(10);

/// What `bench merge` measures.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    pub clusters: u32,
    /// Endpoints per cluster.
    pub endpoints: u32,
    pub bench: BenchOptions,
    /// The agent also keeps every cluster's Cilium cache keys, and they are listed.
    pub etcd_api: bool,
}

/// The report of one `bench merge` run.
#[derive(Clone, Debug, Serialize)]
pub struct MergeReport {
    pub scenario: &'static str,
    pub clusters: u32,
    /// `normal` (up to 255 clusters) or `extended` (511), picked by the cluster count.
    pub id_mode: &'static str,
    /// Each cluster's state.
    pub sizes: Sizes,
    /// Endpoints merged from all clusters.
    pub merged_endpoints: u64,
    /// Starting every apiserver with its state (not part of the merge).
    pub apiservers_ready_ms: f64,
    /// Links started to synced, per cluster.
    pub synced: Percentiles,
    /// Until the last cluster was synced.
    pub all_synced_ms: f64,
    pub objects_per_s: f64,
    /// The whole process's RSS growth while merging, in MiB: an upper bound of the
    /// view's size (it includes the apiservers' per-connection state and the decode
    /// buffers); `bench memory` measures an agent process alone.
    pub rss_growth_mib: f64,
    /// The same per 100,000 merged endpoints.
    pub rss_growth_mib_per_100k: f64,
    /// 255 × 1,000 merged within 10 s; `None` for a run of another size (the target is
    /// for that size).
    pub target_met: Option<bool>,
    /// With `--etcd-api` at 255 × 10,000: synced within 20 s, RSS growth within 1 GiB
    /// and the paged list within 10 s; `None` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_keys_target_met: Option<bool>,
    /// With `--etcd-api`: the cache keys and their paged list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_keys: Option<CacheKeysReport>,
    pub correctness: Correctness,
}

impl MergeReport {
    /// Every correctness counter is zero.
    pub fn is_correct(&self) -> bool {
        self.correctness.is_clean()
    }
}

/// One simulated cluster: its state and its running apiserver.
pub(super) struct Member {
    pub(super) workload: Workload,
    pub(super) peer: PeerConfig,
    _server: LocalApiserver,
}

/// Runs the scenario.
pub async fn run(options: &MergeOptions) -> anyhow::Result<MergeReport> {
    if options.clusters == 0 || options.endpoints == 0 {
        bail!("--clusters and --endpoints must be at least 1");
    }
    let mode = if options.clusters < IdMode::Normal.max_cluster_id() {
        IdMode::Normal
    } else {
        IdMode::Extended
    };
    if options.clusters >= mode.max_cluster_id() {
        bail!(
            "at most {} clusters besides the agent's own",
            mode.max_cluster_id() - 1
        );
    }
    let pki = bench_pki()?;
    let local = cluster(AGENT.0, AGENT.1, mode)?;
    let client = pki.client_files(&local.name)?;
    let started = Instant::now();
    let members = start_members(&pki, options, mode, &client).await?;
    let apiservers_ready = started.elapsed();
    let sizes = members
        .first()
        .map(|m| Sizes::for_endpoints(options.endpoints, &m.workload.cluster))
        .unwrap_or_default();

    let peers: Vec<PeerConfig> = members.iter().map(|m| m.peer.clone()).collect();
    let rss_before = rss_kib(None)?;
    let mut correctness = Correctness::default();
    let merging = Instant::now();
    let keys = options.etcd_api.then(|| cache_keys::new_cache_keys(&local));
    let sink = keys.clone().map(|k| k as crate::remote::SharedSink);
    let (view, links) = spawn_merging(&local, &peers, sink);
    let times = wait_ready(
        &links,
        merging,
        options.bench.progress.then_some("merge: clusters synced"),
        options.bench.timeout,
    )
    .await
    .context("the agent did not sync with every cluster")?;
    // The links are synced; the cache keys are once their writer wrote what they queued.
    let written = match &keys {
        Some(keys) => {
            keys.written().await;
            Some(merging.elapsed())
        }
        None => None,
    };
    let rss_after = rss_kib(None)?;
    let cache_keys = match &keys {
        Some(keys) => {
            let report = cache_keys::measure(keys, written.unwrap_or_default())?;
            // Every merged endpoint is one ipcache key.
            let expected = u64::from(sizes.endpoints) * members.len() as u64;
            correctness.lost += expected.saturating_sub(report.ip_keys);
            correctness.phantom += report.ip_keys.saturating_sub(expected);
            Some(report)
        }
        None => None,
    };

    {
        let view = view.read();
        for m in &members {
            correctness.add(&check_view(&view, &m.workload));
        }
        // Nothing under a cluster that is not a member (the local one holds nothing).
        let strays = view
            .clusters()
            .into_iter()
            .filter(|c| members.iter().all(|m| m.workload.cluster.name != *c))
            .filter_map(|c| view.counts(&c))
            .map(|c| (c.endpoints + c.identities + c.nodes + c.services) as u64)
            .sum::<u64>();
        correctness.phantom += strays;
    }
    for link in links {
        let status = link.status_rx().borrow().clone();
        correctness.flaps += status.reconnects + u64::from(!status.ready);
        link.stop().await;
    }

    let merged_endpoints = u64::from(sizes.endpoints) * members.len() as u64;
    let all_synced = times
        .iter()
        .copied()
        .chain(written)
        .max()
        .unwrap_or_default();
    let growth_mib = rss_after.saturating_sub(rss_before) as f64 / 1024.0;
    let per_100k = growth_mib * 100_000.0 / (merged_endpoints.max(1) as f64);
    Ok(MergeReport {
        scenario: "merge",
        clusters: options.clusters,
        id_mode: match mode {
            IdMode::Normal => "normal",
            IdMode::Extended => "extended",
        },
        sizes,
        merged_endpoints,
        apiservers_ready_ms: apiservers_ready.as_secs_f64() * 1000.0,
        synced: Percentiles::of(&times),
        all_synced_ms: all_synced.as_secs_f64() * 1000.0,
        objects_per_s: sizes.total() as f64 * members.len() as f64
            / all_synced.as_secs_f64().max(f64::MIN_POSITIVE),
        rss_growth_mib: growth_mib,
        rss_growth_mib_per_100k: per_100k,
        target_met: (options.clusters >= TARGET_SIZE.0 && options.endpoints == TARGET_SIZE.1)
            .then_some(all_synced <= TARGET),
        cache_keys_target_met: cache_keys.as_ref().and_then(|cache| {
            (options.clusters >= CACHE_KEYS_TARGET_SIZE.0
                && options.endpoints == CACHE_KEYS_TARGET_SIZE.1)
                .then(|| {
                    all_synced <= CACHE_KEYS_TARGET
                        && growth_mib <= CACHE_KEYS_TARGET_MIB
                        && cache.list_ms <= CACHE_KEYS_LIST_TARGET.as_secs_f64() * 1000.0
                })
        }),
        cache_keys,
        correctness,
    })
}

/// Every cluster's apiserver, serving its whole state, a few started at once.
async fn start_members(
    pki: &Pki,
    options: &MergeOptions,
    mode: IdMode,
    client: &crate::tls::TlsFiles,
) -> anyhow::Result<Vec<Member>> {
    let ready = Arc::new(AtomicUsize::new(0));
    let progress = Progress::start(
        options.bench.progress,
        "merge: apiservers ready",
        options.clusters as usize,
        ready.clone(),
    );
    let starts = (0..options.clusters).map(|k| {
        let ready = ready.clone();
        async move {
            let member = start_member(pki, options.endpoints, k, mode, client).await?;
            ready.fetch_add(1, Ordering::Relaxed);
            Ok::<_, anyhow::Error>(member)
        }
    });
    let members = futures::stream::iter(starts)
        .buffered(STARTS_IN_FLIGHT)
        .try_collect()
        .await;
    progress.stop().await;
    members
}

/// The `k`-th cluster (id k + 2): its state written into its own store and served once
/// its cache holds all of it.
pub(super) async fn start_member(
    pki: &Pki,
    endpoints: u32,
    k: u32,
    mode: IdMode,
    client: &crate::tls::TlsFiles,
) -> anyhow::Result<Member> {
    let cluster = cluster(&format!("bench-c{k}"), AGENT.1 + 1 + k, mode)?;
    let sizes = Sizes::for_endpoints(endpoints, &cluster);
    let workload = Workload::generate_at(&cluster, sizes, k)?;
    let store: Arc<dyn Store> = MemoryStore::new();
    workload
        .write(&store)
        .await
        .with_context(|| format!("cannot write {}'s state", cluster.name))?;
    let (synced_tx, synced_rx) = oneshot::channel();
    let options = ServeOptions {
        synced_tx: Some(synced_tx),
        ..ServeOptions::default()
    };
    let tls = pki.server_files(&cluster.name)?;
    let server = LocalApiserver::start(cluster.clone(), store, tls, options).await?;
    synced_rx
        .await
        .with_context(|| format!("{}'s apiserver stopped before it synced", cluster.name))?;
    let peer = PeerConfig {
        name: cluster.name.clone(),
        address: server.addr.to_string(),
        server_name: None,
        tls: client.clone(),
    };
    Ok(Member {
        workload,
        peer,
        _server: server,
    })
}

fn cluster(name: &str, id: u32, mode: IdMode) -> anyhow::Result<Cluster> {
    Ok(Cluster::new(
        ClusterName::new(name)?,
        ClusterId::new(id, mode)?,
        mode,
    ))
}
