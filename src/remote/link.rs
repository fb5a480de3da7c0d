//! One link: the task that keeps this agent connected to one peer's apiserver.
//!
//! Each attempt dials (mTLS; the server certificate must name the peer), calls `Info`,
//! validates it, reserves the peer's cluster id and opens a `Watch` that resumes from
//! the last revision when the link has one. The stream's frames go into the view through
//! [`WatchState`]. When the stream ends the peer is marked unreachable — its entries
//! stay — and the link retries after a jittered backoff, or at once when the peer said
//! this agent fell behind.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use super::backoff::Retry;
use super::credentials::credentials;
use super::observer::ApplyObserver;
use super::sink::{Both, PeerSink};
use super::status::{Reporter, unix_ms, unix_ms_of};
use super::sync::{FrameReport, WatchState};
use super::validate::check_info;
use super::{
    Failure, IdRegistry, LinkError, PeerConfig, PeerStatus, SharedObserver, SharedSink, SharedView,
    ValidationError,
};
use crate::exposition::MeanHistogram;
use crate::model::{Cluster, ClusterId, Kind};
use crate::proto::v1::mesh_client::MeshClient;
use crate::proto::{
    CAP_RESUME, CAP_SERVICE_EXPORTS, WatchFrame, kind_to_wire, server_info_from_wire, v1,
};
use crate::report::error_chain;
use crate::tls::client::{Keepalive, ServerCert, channel_to_cluster_with};
use crate::tls::{RELOAD_INTERVAL, ReloadingClientConfig, spawn_reload};

/// First retry delay after a failed dial: quick enough that a peer coming up is noticed
/// within a fraction of a second, long enough that a peer refusing at once is not dialed
/// in a tight loop. (After a broken stream the first retry is spread wider:
/// `backoff::BROKEN_STREAM_SPREAD`.)
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest retry delay: a peer that is down for long is noticed back within 30 s, and
/// thousands of agents retrying stay a trickle (Cilium caps its retries at 30 s too).
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A stream that stayed up this long was healthy: the next failure starts the backoff
/// over instead of continuing a streak from long ago.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// `Info` and opening the `Watch` include dialing and the TLS handshake (bounded at 10 s
/// in `tls::client`); beyond this a peer that accepted but does not answer counts as
/// failed, so a first connection never hangs (Cilium #45417 waited 15 minutes).
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How a link retries; the defaults suit production, tests shorten them.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    /// First retry delay.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// A stream up at least this long resets the backoff.
    pub stable_after: Duration,
    /// Longest wait for `Info` or for the `Watch` stream to open.
    pub call_timeout: Duration,
    /// How often the peer's TLS files are checked for changes; a new client certificate
    /// is used from the next connection on.
    pub tls_reload: Duration,
    /// How a silent peer is noticed (a partition): within its interval plus timeout.
    pub keepalive: Keepalive,
    /// Told about every change applied to the view (benchmarks); `None` in production.
    pub observer: Option<SharedObserver>,
    /// Follows what the link does to the view (the agent's Cilium cache keys); `None`
    /// when the agent serves no etcd API.
    pub sink: Option<SharedSink>,
    /// Where each live frame's propagation lag is observed, per `target_cluster` (the
    /// agent's metrics show it).
    pub propagation_lag: MeanHistogram,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
            stable_after: STABLE_AFTER,
            call_timeout: CALL_TIMEOUT,
            tls_reload: RELOAD_INTERVAL,
            keepalive: Keepalive::default(),
            observer: None,
            sink: None,
            propagation_lag: MeanHistogram::new("target_cluster"),
        }
    }
}

/// A running link to one peer.
pub struct PeerLink {
    status_rx: watch::Receiver<PeerStatus>,
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl PeerLink {
    /// The link's status, updated on every change.
    pub fn status_rx(&self) -> watch::Receiver<PeerStatus> {
        self.status_rx.clone()
    }

    /// Stops the task and waits for it; the peer's cluster id is released. What the link
    /// put in the view stays: the caller drains it (`view.write().drain(&name)`) when
    /// the peer was removed. Dropping a `PeerLink` stops the task too, without waiting.
    pub async fn stop(self) {
        // An error means the task already ended; there is nothing to tell it then.
        let _ = self.stop_tx.send(());
        if let Err(e) = self.task.await {
            warn!(error = %e, "a link task failed while stopping");
        }
    }
}

/// Starts the link to the peer of `config`. A peer file named like the local cluster is
/// the link to the agent's own apiserver: its data is the local cluster's.
pub fn spawn_link(
    config: PeerConfig,
    local: Cluster,
    view: SharedView,
    ids: IdRegistry,
    settings: LinkSettings,
) -> PeerLink {
    let is_local = config.name == local.name;
    let (status, status_rx) = Reporter::new(PeerStatus {
        cluster: config.name.to_string(),
        local: is_local,
        ..PeerStatus::default()
    });
    let (stop_tx, mut stop_rx) = oneshot::channel();
    let span = info_span!("remote", peer = %config.name);
    let mut link = Link {
        retry: Retry::new(
            settings.backoff_min,
            settings.backoff_max,
            settings.stable_after,
        ),
        config,
        local,
        is_local,
        view,
        ids,
        settings,
        status,
        tls: None,
        reserved: None,
        resume: None,
        synced_once: false,
        exports_watched: false,
        connected_before: false,
        last_logged: None,
    };
    let task = tokio::spawn(
        async move {
            tokio::select! {
                // Sent by `stop`, or the `PeerLink` was dropped.
                _ = &mut stop_rx => {}
                () = link.run() => {}
            }
            link.stopped();
        }
        .instrument(span),
    );
    PeerLink {
        status_rx,
        stop_tx,
        task,
    }
}

/// The state of one link across its connections.
struct Link {
    config: PeerConfig,
    local: Cluster,
    is_local: bool,
    view: SharedView,
    ids: IdRegistry,
    settings: LinkSettings,
    status: Reporter,
    retry: Retry,
    /// The client config, loaded on the first attempt that finds the files.
    tls: Option<ReloadingClientConfig>,
    /// The cluster id this link holds in the registry.
    reserved: Option<ClusterId>,
    /// Where the next stream resumes: the view holds everything up to it.
    resume: Option<v1::ResumePoint>,
    /// A stream has delivered a complete state before: a new full listing is a resync.
    synced_once: bool,
    /// The last stream watched service exports too: a resume point only covers the
    /// kinds its stream watched.
    exports_watched: bool,
    /// A Watch stream has opened before: the next one is a reconnection.
    connected_before: bool,
    /// The last failure logged at warn level, so a peer that stays down with the same
    /// error is logged once, not every retry.
    last_logged: Option<String>,
}

/// What one attempt learnt before it ended.
#[derive(Default)]
struct Attempt {
    /// When the Watch stream opened.
    streaming_since: Option<Instant>,
}

impl Link {
    /// Attempts forever; only cancelled from outside.
    async fn run(&mut self) {
        loop {
            let mut attempt = Attempt::default();
            let Err(err) = self.attempt(&mut attempt).await;
            self.disconnected(&err);
            let streamed_for = attempt.streaming_since.map(|since| since.elapsed());
            let fell_behind = matches!(err, LinkError::FellBehind { .. });
            let delay = self
                .retry
                .delay(streamed_for, fell_behind, &mut rand::rng());
            self.log_failure(&err, delay);
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection: dial, `Info`, validate, `Watch` until the stream ends.
    async fn attempt(&mut self, attempt: &mut Attempt) -> Result<Infallible, LinkError> {
        let name = self.config.name.clone();
        let address = self.config.address.clone();
        let configs = self.client_configs()?;
        let (channel, server_cert) = channel_to_cluster_with(
            &address,
            self.config.server_name.as_deref(),
            configs,
            &name,
            self.settings.keepalive,
        )
        .map_err(|source| LinkError::Dial {
            peer: name.clone(),
            source,
        })?;
        let mut client = MeshClient::new(channel);
        let timeout = self.settings.call_timeout;
        let failed = |call| {
            let (name, address) = (name.clone(), address.clone());
            move |status| LinkError::from_status(status, &name, &address, call)
        };
        let timed_out = |call| {
            let name = name.clone();
            move |_| LinkError::Timeout {
                peer: name,
                call,
                after: timeout,
            }
        };

        let info = tokio::time::timeout(timeout, client.info(v1::InfoRequest {}))
            .await
            .map_err(timed_out("Info"))?
            .map_err(failed("Info"))?
            .into_inner();
        let info = server_info_from_wire(info).map_err(|source| LinkError::Info {
            peer: name.clone(),
            source,
        })?;
        let peer = self.accept(check_info(&info, &name, &self.local, self.is_local)?)?;
        if let Some(sink) = self.sink() {
            sink.accepted(&peer);
        }
        self.status.set_validated(true);
        let (cert_not_after, credentials) = {
            let seen = server_cert.borrow();
            (
                seen.as_ref().and_then(format_not_after),
                credentials(&self.config.tls, seen.as_ref()),
            )
        };
        self.status.update(|s| {
            s.cluster_id = Some(peer.id.get());
            s.peer_cert_not_after = cert_not_after;
            s.own_cert_not_after = credentials.own_not_after;
            s.peer_cert_retiring_ca = credentials.retiring_ca;
            s.credential_warnings = s.credential_warnings(unix_ms());
        });

        // A peer that serves service exports is asked for every kind; one that predates
        // them for none, which means the original four.
        let exports = info.capabilities.iter().any(|c| c == CAP_SERVICE_EXPORTS);
        let resume = if info.capabilities.iter().any(|c| c == CAP_RESUME)
            && exports == self.exports_watched
        {
            self.resume.clone()
        } else {
            None
        };
        self.exports_watched = exports;
        let kinds = if exports {
            Kind::ALL
                .iter()
                .map(|k| i32::from(kind_to_wire(*k)))
                .collect()
        } else {
            Vec::new()
        };
        let request = v1::WatchRequest {
            kinds,
            resume: resume.clone(),
        };
        let mut stream = tokio::time::timeout(timeout, client.watch(request))
            .await
            .map_err(timed_out("Watch"))?
            .map_err(failed("Watch"))?
            .into_inner();
        attempt.streaming_since = Some(Instant::now());
        self.view.write().set_reachable(&name, true, Instant::now());
        let again = std::mem::replace(&mut self.connected_before, true);
        self.status.update(|s| {
            s.connected = true;
            if again {
                s.reconnects += 1;
            }
        });
        info!(
            cluster_id = peer.id.get(),
            epoch = %info.epoch,
            resume_from = resume.as_ref().map(|r| r.revision),
            "connected"
        );
        self.last_logged = None;

        let mut state = WatchState::Start;
        loop {
            match stream.message().await {
                Ok(Some(frame)) => self.on_frame(&mut state, frame, &peer),
                Ok(None) => return Err(LinkError::StreamEnded { peer: name }),
                Err(status) => return Err(failed("Watch")(status)),
            }
        }
    }

    /// The sink, unless this is the link to the agent's own apiserver (whose data is
    /// the local cluster's, not a peer's).
    fn sink(&self) -> Option<&dyn PeerSink> {
        self.settings.sink.as_deref().filter(|_| !self.is_local)
    }

    /// The client config of the peer's TLS files, loading them on first use; until they
    /// load, every attempt fails with the reason.
    fn client_configs(&mut self) -> Result<watch::Receiver<Arc<ClientConfig>>, LinkError> {
        if let Some(tls) = &self.tls {
            return Ok(tls.config_rx());
        }
        let tls = spawn_reload::<ClientConfig>(self.config.tls.clone(), self.settings.tls_reload)
            .map_err(|source| LinkError::TlsFiles {
            peer: self.config.name.clone(),
            source,
        })?;
        Ok(self.tls.insert(tls).config_rx())
    }

    /// Reserves the validated peer's id. A peer whose id changed is drained before its
    /// data is read again (Cilium does the same): everything held came from the old id.
    fn accept(&mut self, peer: Cluster) -> Result<Cluster, ValidationError> {
        if self.is_local {
            return Ok(peer);
        }
        self.ids
            .reserve(peer.id, &peer.name)
            .map_err(|source| ValidationError::Id {
                peer: peer.name.clone(),
                source,
            })?;
        if let Some(old) = self.reserved.filter(|old| *old != peer.id) {
            warn!(
                old_id = old.get(),
                new_id = peer.id.get(),
                "the peer changed its cluster id: dropping what it sent before re-reading it"
            );
            self.ids.release(old, &peer.name);
            self.view.write().drain(&peer.name);
            if let Some(sink) = self.sink() {
                sink.drained(&peer.name);
            }
            self.resume = None;
        }
        self.reserved = Some(peer.id);
        Ok(peer)
    }

    fn on_frame(&mut self, state: &mut WatchState, frame: WatchFrame, peer: &Cluster) {
        let revision = frame.revision;
        // Copied into the status only when it changed: it is the same on every frame of
        // a stream, and this runs for each of them.
        let epoch = (!self.status.has_epoch(&frame.epoch)).then(|| frame.epoch.clone());
        let events = frame.events.len();
        let sink = self.sink().map(|s| s as &dyn ApplyObserver);
        let both;
        let observer = match (sink, self.settings.observer.as_deref()) {
            (Some(sink), Some(observer)) => {
                both = Both(sink, observer);
                Some(&both as &dyn ApplyObserver)
            }
            (sink, observer) => sink.or(observer),
        };
        let changed_at = frame.changed_at();
        let heartbeat = frame.heartbeat_at().map(unix_ms_of);
        let report = state.on_frame(frame, peer, &self.view, observer);
        // A clock behind the server's gives no reading rather than a false one. One
        // reading per change, so the histogram's mean is the changes' mean lag, not the
        // frames' (a busy spell's frames carry many changes each).
        if let Some(lag) = changed_at.and_then(|t| t.elapsed().ok()) {
            for _ in 0..events {
                self.settings
                    .propagation_lag
                    .observe(peer.name.as_str(), lag.as_secs_f64());
            }
        }
        for err in &report.refused {
            warn!(reason = %error_chain(err), revision, "refused an event from the peer");
        }
        let FrameReport {
            refused,
            resumed,
            listing,
            synced,
            resume_point,
        } = report;
        if listing {
            if self.synced_once {
                info!(
                    revision,
                    "the peer could not resume this link: reading its full state"
                );
            }
        } else if resumed {
            debug!(revision, "resumed");
        }
        if synced {
            info!(revision, "synced");
        }
        let counts = self.view.read().counts(&peer.name).unwrap_or_default();
        let resync = listing && self.synced_once;
        // Shown as the link's last failure: the link stays up, but the status must say
        // why some of the peer's data is missing, not only count it.
        let refusal = refused.last().map(|err| Failure {
            reason: format!(
                "refused {} event(s) of {} at revision {revision}: {}",
                refused.len(),
                peer.name,
                error_chain(err)
            ),
            at_unix_ms: unix_ms(),
        });
        self.status.update(|s| {
            s.revision = revision;
            if refusal.is_some() {
                s.last_failure = refusal;
            }
            if epoch.is_some() {
                s.epoch = epoch;
            }
            s.counts = counts;
            s.refused_events += refused.len() as u64;
            for err in &refused {
                *s.refused_by_reason
                    .entry(err.reason().to_string())
                    .or_default() += 1;
            }
            if events > 0 || synced {
                s.last_event_unix_ms = Some(unix_ms());
            }
            if heartbeat.is_some() {
                s.heartbeat_unix_ms = heartbeat;
            }
            if resumed {
                s.resumes += 1;
            }
            if resync {
                s.full_resyncs += 1;
            }
            if synced {
                // Service exports too when the peer serves none: nothing to wait for.
                for kind in Kind::ALL {
                    s.synced.set(kind, true);
                }
            }
        });
        if synced {
            self.synced_once = true;
            if let Some(sink) = self.sink() {
                sink.synced(&peer.name);
            }
        }
        if resume_point.is_some() {
            self.resume = resume_point;
        }
    }

    /// The attempt ended with `err`: the peer is unreachable, its entries stay.
    fn disconnected(&mut self, err: &LinkError) {
        if self.status.current().connected {
            self.view
                .write()
                .set_reachable(&self.config.name, false, Instant::now());
        }
        if err.is_failure() {
            self.status.down(error_chain(err));
            self.status.update(|s| s.failures += 1);
        } else {
            self.status.reconnecting();
        }
    }

    fn log_failure(&mut self, err: &LinkError, retry_in: Duration) {
        let reason = error_chain(err);
        if !err.is_failure() {
            info!(%reason, ?retry_in, "reconnecting");
            return;
        }
        if self.last_logged.as_ref() == Some(&reason) {
            debug!(%reason, ?retry_in, "link still failing");
        } else {
            warn!(%reason, ?retry_in, "link failed");
            self.last_logged = Some(reason);
        }
    }

    /// The task is ending: the id is free for another peer, the link reads as down.
    fn stopped(&mut self) {
        if let Some(id) = self.reserved.take() {
            self.ids.release(id, &self.config.name);
        }
        if self.status.current().connected {
            self.view
                .write()
                .set_reachable(&self.config.name, false, Instant::now());
        }
        self.status.set_validated(false);
        self.status.update(|s| {
            s.connected = false;
            s.synced = Default::default();
        });
        info!("link stopped");
    }
}

/// A certificate's expiry as RFC 3339, for the status.
fn format_not_after(cert: &ServerCert) -> Option<String> {
    cert.not_after.and_then(|t| t.format(&Rfc3339).ok())
}
