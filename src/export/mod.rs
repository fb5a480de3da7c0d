//! The apiserver's writer: desired state → store.
//!
//! [`Exporter::run`] takes snapshots of the cluster's desired state from a source and
//! makes the store match them with minimal writes ([`writer`]), allocating identities
//! ([`allocator`]). Once the source's first snapshot and every write before it have
//! succeeded it writes one sync canary per kind — never earlier, so a consumer that sees
//! a canary knows that prefix is complete (Cilium's rule). Beside it run the cluster
//! config enforcement and the heartbeat. Every key is leased and kept alive; keys of a
//! lease that expired anyway are rewritten.
//!
//! Every [`HISTORY_CHECK`] it asks the store whether its history restarted (a wiped or
//! replaced etcd). If it did, or a lease the exporter writes with is gone, it starts over
//! at once in the new epoch — adopting what the store holds, which after a wipe is
//! nothing, and rewriting everything else on fresh leases — and reports itself not synced
//! until that rewrite and the canaries are done.

mod allocator;
mod cluster_config;
mod heartbeat;
mod leases;
pub mod ledger;
mod render;
mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use thiserror::Error;
use tokio::sync::watch;

pub use allocator::{AllocError, IdentityAllocator};
pub use heartbeat::HEARTBEAT_INTERVAL;
pub use ledger::{IdentityLedger, KubeLedger, LedgerError, RedbLedger, StoreLedger};
pub use render::{RenderedState, render};
pub use writer::{KindWrites, StateWriter, WriteStats};

use crate::kvstore::{Epoch, Store, StoreError, codec, keys};
use crate::model::{Cluster, DesiredState, Kind};
use crate::report::error_chain;
use leases::LeasePool;

/// Cilium's default `--kvstore-lease-ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15 * 60);
/// First wait after a failed write; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// How often the exporter asks the store whether its history restarted: a wiped store is
/// rewritten within about this long of its return. One small read each time.
pub const HISTORY_CHECK: Duration = Duration::from_secs(1);

/// A part that ran this long before failing starts again without waiting long.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// Runs a part that only ends on a store error, again and again, with backoff.
async fn retry_forever<F, Fut>(what: &'static str, mut start: F) -> std::convert::Infallible
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut backoff = FIRST_RETRY;
    loop {
        let started = tokio::time::Instant::now();
        let lost = match start().await {
            Ok(()) => false,
            Err(err) => {
                tracing::warn!(part = what, error = %error_chain(&err), retry_in = ?backoff,
                    "store error; starting again");
                matches!(
                    err,
                    StoreError::LeaseNotFound(_) | StoreError::EpochChanged { .. }
                )
            }
        };
        if lost || started.elapsed() > STABLE_RUN {
            // What the part wrote is gone (a wiped store): it is rewritten promptly,
            // once the epoch check has pinned the store's new history.
            backoff = FIRST_RETRY;
        }
        tokio::time::sleep(backoff).await;
        if !lost {
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }
}

/// Tunables of the exporter.
#[derive(Clone, Debug)]
pub struct ExportSettings {
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// How long an identity no workload uses keeps its number before the number may name
    /// other labels; at least `lease_ttl`.
    pub identity_quarantine: Duration,
    /// MCS-API service exports are written (Cilium's `--clustermesh-enable-mcs-api`),
    /// and the cluster config says so.
    pub mcs_api: bool,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            lease_ttl: DEFAULT_LEASE_TTL,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            identity_quarantine: DEFAULT_LEASE_TTL,
            mcs_api: false,
        }
    }
}

/// What the exporter reports, for readiness and status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStatus {
    /// Every sync canary is written: the store holds the source's full state.
    pub synced: bool,
    /// Keys written by the last successful reconcile.
    pub keys: usize,
    pub last_write: WriteStats,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// The store epoch the export writes in (`synced` is about this epoch), once known.
    pub epoch: Option<Epoch>,
    /// Everything the exporter wrote, deleted and failed since it started (carried from
    /// report to report, so a reader that misses reports misses no counts).
    pub totals: ExportTotals,
    /// Identities allocated after the last reconcile.
    pub identities: IdentityCounts,
}

/// Cumulative counts of the exporter's work per kind of key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportTotals {
    /// Per kind, in the order of [`Kind::ALL`].
    per_kind: [KindTotals; Kind::ALL.len()],
    /// Failures not of one kind's write: leases, the store's epoch, identity allocation
    /// or a canary.
    pub other_errors: u64,
}

/// One kind's writes, deletes and failed writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindTotals {
    pub writes: u64,
    pub deletes: u64,
    pub errors: u64,
}

impl ExportTotals {
    pub fn of(&self, kind: Kind) -> KindTotals {
        self.per_kind[kind_index(kind)]
    }

    /// Every kind's writes (or deletes, or errors, by `pick`), failures of no kind excluded.
    pub fn sum(&self, pick: fn(&KindTotals) -> u64) -> u64 {
        self.per_kind.iter().map(pick).sum()
    }

    fn add_writes(&mut self, stats: &WriteStats) {
        for kind in Kind::ALL {
            let done = stats.of(kind);
            let t = &mut self.per_kind[kind_index(kind)];
            t.writes += done.puts as u64;
            t.deletes += done.deletes as u64;
        }
    }

    fn add_error(&mut self, kind: Option<Kind>) {
        match kind {
            Some(kind) => self.per_kind[kind_index(kind)].errors += 1,
            None => self.other_errors += 1,
        }
    }
}

fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// The identity numbers the exporter holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityCounts {
    /// Numbers allocated, those in quarantine included.
    pub allocated: usize,
    /// Numbers whose labels no workload uses, kept until their quarantine runs out.
    pub quarantined: usize,
}

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("store error while exporting")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error("the source stopped")]
    SourceClosed,
    #[error("store history restarted: epoch {old} is now {new}")]
    HistoryRestarted { old: Epoch, new: Epoch },
}

impl ExportError {
    /// The store no longer holds what the export wrote (its history restarted, or a
    /// lease of its keys is gone): start over now, not after a backoff.
    fn starts_over(&self) -> bool {
        matches!(
            self,
            Self::HistoryRestarted { .. }
                | Self::Store(StoreError::LeaseNotFound(_) | StoreError::EpochChanged { .. })
                | Self::Alloc(AllocError::Ledger(LedgerError::Store(
                    StoreError::LeaseNotFound(_) | StoreError::EpochChanged { .. }
                )))
        )
    }
}

/// Exports one cluster's state into a store.
pub struct Exporter {
    store: Arc<dyn Store>,
    cluster: Cluster,
    settings: ExportSettings,
    identities: Arc<dyn IdentityLedger>,
    /// When the heartbeat was last written, for the gRPC server to tell its watchers.
    heartbeat: Arc<watch::Sender<Option<SystemTime>>>,
}

impl Exporter {
    /// An exporter whose identity allocations are kept in `store` itself.
    pub fn new(store: Arc<dyn Store>, cluster: Cluster, settings: ExportSettings) -> Self {
        Self {
            identities: Arc::new(StoreLedger::new(store.clone())),
            store,
            cluster,
            settings,
            heartbeat: Arc::new(watch::channel(None).0),
        }
    }

    /// When the heartbeat was last written (`None` before the first write).
    pub fn heartbeat_rx(&self) -> watch::Receiver<Option<SystemTime>> {
        self.heartbeat.subscribe()
    }

    /// Keeps identity allocations in `ledger` instead (where the store is not durable).
    pub fn with_identity_ledger(mut self, ledger: Arc<dyn IdentityLedger>) -> Self {
        self.identities = ledger;
        self
    }

    /// The prefixes whose content the exporter owns entirely.
    fn managed_prefixes(&self) -> Vec<String> {
        let c = &self.cluster.name;
        vec![
            keys::nodes_of(c),
            keys::services_of(c),
            keys::fleetmesh_services_of(c),
            keys::IDENTITIES_ID_PREFIX.to_string(),
            keys::IP_PREFIX.to_string(),
            // Managed with MCS-API exports off too, so that turning them off withdraws
            // what an earlier run wrote.
            keys::service_exports_of(c),
        ]
    }

    /// Runs until the source closes. Store errors never end it: each part (export,
    /// cluster config, heartbeat) backs off and starts again, keeping what it wrote.
    /// `source` publishes `None` until the source's initial list is complete.
    pub async fn run(
        self,
        source: watch::Receiver<Option<DesiredState>>,
        status: watch::Sender<ExportStatus>,
    ) -> Result<(), ExportError> {
        let ttl = self.settings.lease_ttl;
        let (store, cluster) = (self.store.clone(), self.cluster.clone());
        let beat = self.settings.heartbeat_interval;
        let mcs_api = self.settings.mcs_api;
        tokio::select! {
            result = self.export_retrying(source, &status) => result,
            never = retry_forever("cluster config", || {
                cluster_config::enforce(store.clone(), cluster.clone(), mcs_api, ttl)
            }) => match never {},
            never = retry_forever("heartbeat", || {
                heartbeat::beat(store.clone(), beat, ttl, &self.heartbeat)
            }) => {
                match never {}
            }
        }
    }

    /// The export loop, started again after any error but a closed source.
    async fn export_retrying(
        &self,
        source: watch::Receiver<Option<DesiredState>>,
        status: &watch::Sender<ExportStatus>,
    ) -> Result<(), ExportError> {
        let mut backoff = FIRST_RETRY;
        // Kept across restarts of the loop: what it holds is written back to a ledger that
        // lost it (a wiped store).
        let mut allocator = None;
        loop {
            let started = tokio::time::Instant::now();
            match self
                .export_loop(source.clone(), status, &mut allocator)
                .await
            {
                Err(ExportError::SourceClosed) => return Err(ExportError::SourceClosed),
                Ok(()) => return Ok(()),
                Err(err) if err.starts_over() => {
                    let reason = error_chain(&err);
                    tracing::warn!(error = %reason, "the store lost what was exported; starting over");
                    status.send_modify(|s| {
                        s.last_error = Some(reason);
                        s.totals.add_error(None);
                    });
                    continue;
                }
                Err(err) => {
                    let reason = error_chain(&err);
                    tracing::warn!(error = %reason, retry_in = ?backoff, "export stopped; starting again");
                    status.send_modify(|s| {
                        s.last_error = Some(reason);
                        s.totals.add_error(None);
                    });
                }
            }
            if started.elapsed() > STABLE_RUN {
                backoff = FIRST_RETRY;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }

    async fn export_loop(
        &self,
        mut source: watch::Receiver<Option<DesiredState>>,
        status: &watch::Sender<ExportStatus>,
        allocator: &mut Option<IdentityAllocator>,
    ) -> Result<(), ExportError> {
        let epoch = self.store.check_epoch().await?;
        status.send_if_modified(|s| {
            if s.epoch.as_ref() == Some(&epoch) {
                return false;
            }
            if let Some(old) = &s.epoch {
                tracing::warn!(%old, new = %epoch, "store history restarted: rewriting every key");
                s.last_error = Some(format!(
                    "store history restarted (epoch {old} is now {epoch}): rewriting every key"
                ));
            }
            s.synced = false;
            s.epoch = Some(epoch.clone());
            true
        });
        let leases = LeasePool::new(self.store.clone(), self.settings.lease_ttl);
        let canaries = [keys::synced_of(&self.cluster.name)];
        let mut writer = StateWriter::adopt(
            self.store.clone(),
            leases,
            self.managed_prefixes(),
            &canaries,
        )
        .await?;
        let allocator = match allocator {
            Some(allocator) => {
                allocator.resync().await?;
                allocator
            }
            None => allocator.insert(
                IdentityAllocator::open(
                    self.identities.clone(),
                    self.cluster.clone(),
                    self.settings.identity_quarantine,
                )
                .await?,
            ),
        };
        let mut renew = tokio::time::interval(writer.leases().renew_interval());
        let mut history = tokio::time::interval(HISTORY_CHECK);
        history.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry = FIRST_RETRY;
        let mut failing = false;
        let mut dirty = false;
        loop {
            tokio::select! {
                changed = source.changed() => {
                    changed.map_err(|_| ExportError::SourceClosed)?;
                    dirty = true;
                }
                _ = renew.tick() => match writer.keep_alive().await {
                    Ok(lost) => dirty |= lost,
                    Err(err) => {
                        tracing::warn!(error = %error_chain(&err), "lease renewal failed");
                        failing = true;
                    }
                },
                _ = tokio::time::sleep(retry), if failing => dirty = true,
                _ = history.tick() => match self.store.check_epoch().await {
                    Ok(now) if now != epoch => {
                        return Err(ExportError::HistoryRestarted { old: epoch, new: now });
                    }
                    Ok(_) => {}
                    // The store is unreachable: the writes say so, at their own pace.
                    Err(err) => tracing::debug!(error = %error_chain(&err), "epoch check failed"),
                },
            }
            if !dirty {
                continue;
            }
            let Some(state) = source.borrow_and_update().clone() else {
                continue;
            };
            match self
                .export_once(&state, &epoch, &mut writer, allocator)
                .await
            {
                Ok(mut report) => {
                    dirty = false;
                    failing = false;
                    retry = FIRST_RETRY;
                    status.send_modify(|s| {
                        report.totals = std::mem::take(&mut s.totals);
                        report.totals.add_writes(&report.last_write);
                        *s = report;
                    });
                }
                // Counted by `export_retrying`, which starts over.
                Err(err) if err.starts_over() => return Err(err),
                Err(err) => {
                    tracing::warn!(error = %error_chain(&err), retry_in = ?retry, "export failed");
                    failing = true;
                    retry = (retry * 2).min(MAX_RETRY);
                    let kind = writer.take_failed_kind();
                    status.send_modify(|s| {
                        s.last_error = Some(error_chain(&err));
                        s.totals.add_error(kind);
                    });
                }
            }
        }
    }

    async fn export_once(
        &self,
        state: &DesiredState,
        epoch: &Epoch,
        writer: &mut StateWriter,
        allocator: &mut IdentityAllocator,
    ) -> Result<ExportStatus, ExportError> {
        let rendered = render(&self.cluster, state, self.settings.mcs_api, allocator).await?;
        let desired: BTreeMap<&str, &bytes::Bytes> = rendered
            .by_kind
            .values()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
            .collect();
        let last_write = writer.reconcile(&desired).await?;
        // Only once the store no longer serves an unused identity does its quarantine run.
        let in_use = state.workloads.iter().map(|w| &w.labels).collect();
        allocator.sweep(&in_use, std::time::Instant::now()).await?;
        if last_write != WriteStats::default() {
            tracing::info!(
                puts = last_write.puts,
                deletes = last_write.deletes,
                "exported"
            );
        }
        // Only now is every key queued before this point written: the canaries may go,
        // one per kind rendered (service exports only with MCS-API exports on, as Cilium
        // writes their canary only then).
        for kind in Kind::ALL {
            let key = keys::synced_canary(&self.cluster.name, kind);
            if !rendered.by_kind.contains_key(&kind) {
                // A kind turned off (service exports) is no longer announced as synced.
                if writer.withdraw_pinned(&key).await? {
                    tracing::info!(%key, "sync canary of a kind no longer written withdrawn");
                }
            } else if !writer.holds_key(&key) {
                let now = codec::encode_timestamp(time::OffsetDateTime::now_utc());
                writer.put_pinned(&key, now).await?;
                tracing::info!(%key, "sync canary written");
            }
        }
        Ok(ExportStatus {
            synced: true,
            keys: rendered.len(),
            last_write,
            last_error: None,
            epoch: Some(epoch.clone()),
            totals: ExportTotals::default(),
            identities: allocator.counts(),
        })
    }
}
