//! The agents a scenario runs: the agent's own code (`remote::spawn_link` into a
//! `MeshView`), started at once, and the wait until each link is ready, timed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::progress::Progress;
use crate::mesh::{MeshView, StalePolicy};
use crate::model::Cluster;
use crate::remote::{IdRegistry, LinkSettings, PeerConfig, PeerLink, SharedView, spawn_link};

/// One agent of `local`: its own view and one link to `peer` into it.
pub(super) fn spawn_agent(
    peer: &PeerConfig,
    local: &Cluster,
    settings: LinkSettings,
) -> (SharedView, PeerLink) {
    let view = new_view(local);
    let link = spawn_link(
        peer.clone(),
        local.clone(),
        view.clone(),
        IdRegistry::new(local),
        settings,
    );
    (view, link)
}

/// `count` agents of `local` linked to `peer`, each with its own view, started at once;
/// `settings` gives each link its settings.
pub(super) fn spawn_agents(
    peer: &PeerConfig,
    local: &Cluster,
    count: u32,
    mut settings: impl FnMut() -> LinkSettings,
) -> Vec<(SharedView, PeerLink)> {
    (0..count)
        .map(|_| spawn_agent(peer, local, settings()))
        .collect()
}

/// One agent of `local` merging `peers`: one view, a link to each peer into it, the
/// cluster ids shared between the links as an agent shares them.
/// `sink`, if any, follows every link as the agent's Cilium cache keys do.
pub(super) fn spawn_merging(
    local: &Cluster,
    peers: &[PeerConfig],
    sink: Option<crate::remote::SharedSink>,
) -> (SharedView, Vec<PeerLink>) {
    let view = new_view(local);
    let ids = IdRegistry::new(local);
    let links = peers
        .iter()
        .map(|peer| {
            spawn_link(
                peer.clone(),
                local.clone(),
                view.clone(),
                ids.clone(),
                LinkSettings {
                    sink: sink.clone(),
                    ..LinkSettings::default()
                },
            )
        })
        .collect();
    (view, links)
}

/// Every link's time from `since` to ready (which means every kind synced), in the
/// order of `links`. Fails when a link ends first or when they are not all ready within
/// `timeout`. `progress` names the progress line shown meanwhile, if any.
pub(super) async fn wait_ready<'a>(
    links: impl IntoIterator<Item = &'a PeerLink>,
    since: Instant,
    progress: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let links: Vec<&PeerLink> = links.into_iter().collect();
    let ready = Arc::new(AtomicUsize::new(0));
    let shown = Progress::start(
        progress.is_some(),
        progress.unwrap_or_default(),
        links.len(),
        ready.clone(),
    );
    let waits = links.iter().map(|link| {
        let mut status = link.status_rx();
        let ready = ready.clone();
        async move {
            status
                .wait_for(|s| s.ready)
                .await
                .context("a link ended before it synced")?;
            ready.fetch_add(1, Ordering::Relaxed);
            Ok::<_, anyhow::Error>(since.elapsed())
        }
    });
    let times = tokio::time::timeout(timeout, futures::future::try_join_all(waits)).await;
    shown.stop().await;
    match times {
        Ok(times) => times,
        Err(_) => bail!(
            "only {} of {} links synced within {timeout:?}",
            ready.load(Ordering::Relaxed),
            links.len()
        ),
    }
}

/// An agent's view before any link wrote into it.
fn new_view(local: &Cluster) -> SharedView {
    Arc::new(parking_lot::RwLock::new(MeshView::new(
        local.clone(),
        StalePolicy::default(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterId, ClusterName, IdMode};
    use crate::tls::TlsFiles;

    #[tokio::test]
    async fn a_link_that_never_syncs_times_out_and_none_is_ready_at_once() {
        let mode = IdMode::Normal;
        let local = Cluster::new(
            ClusterName::new("local").unwrap(),
            ClusterId::new(1, mode).unwrap(),
            mode,
        );
        // Nothing listens there and the certificate files do not exist: never ready.
        let peer = PeerConfig {
            name: ClusterName::new("nowhere").unwrap(),
            address: "127.0.0.1:1".into(),
            server_name: None,
            tls: TlsFiles {
                cert: "/nonexistent/cert.pem".into(),
                key: "/nonexistent/key.pem".into(),
                ca: "/nonexistent/ca.pem".into(),
            },
        };
        let agents = spawn_agents(&peer, &local, 2, LinkSettings::default);
        let links = agents.iter().map(|(_, link)| link);
        let err = wait_ready(links, Instant::now(), None, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "only 0 of 2 links synced within 100ms");
        let none: [PeerLink; 0] = [];
        assert!(
            wait_ready(&none, Instant::now(), None, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
