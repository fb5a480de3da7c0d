//! The etcd API half of the apiserver: the store's `cilium/` keys → key cache → the
//! etcd v3 API over mTLS, for Cilium agents that read this cluster directly.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::EtcdApiConfig;
use crate::etcd_api::feed::{CILIUM_PREFIX, follow_store};
use crate::etcd_api::{EtcdApi, EtcdApiStats, KeyCache, KeyCacheSettings, ReadRules};
use crate::export::ExportStatus;
use crate::kvstore::Store;
use crate::model::Cluster;
use crate::tls::server::HandshakeStats;
use crate::tls::spawn_reload;

/// What the running etcd API exposes to the rest of the apiserver.
pub struct EtcdServing {
    pub addr: SocketAddr,
    pub stats: EtcdApiStats,
    pub handshakes: HandshakeStats,
}

/// Starts the key cache's feed and the etcd API on `tasks`. Certificates must load
/// now: nothing is served before they do (fail closed).
pub async fn start(
    config: &EtcdApiConfig,
    cluster: &Cluster,
    store: Arc<dyn Store>,
    mut export: watch::Receiver<ExportStatus>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<EtcdServing> {
    let tls = spawn_reload::<ServerConfig>(config.tls.clone(), config.tls_reload)
        .with_context(|| "cannot load the etcd API's certificates")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for the etcd API on {}", config.listen))?;
    let addr = listener.local_addr()?;

    let cache = Arc::new(KeyCache::new(
        member_id(cluster),
        KeyCacheSettings {
            log_capacity: config.history_events,
            ..KeyCacheSettings::default()
        },
    ));
    let feed = follow_store(store, cache.clone(), CILIUM_PREFIX);
    tasks.spawn(async move {
        // As for the gRPC API: nothing is listed before the export has written the
        // source's full state, or agents would drop what a half-written store lacks.
        export
            .wait_for(|s| s.synced)
            .await
            .context("the exporter stopped before it synced")?;
        feed.await;
        anyhow::bail!("the store watch feeding the etcd API stopped")
    });

    let api = EtcdApi::new(
        cache,
        config.allowed_peers.clone(),
        ReadRules::remote(&cluster.name),
    );
    let stats = api.stats();
    let incoming = crate::tls::server::incoming(listener, tls.config_rx());
    let handshakes = incoming.stats();
    tasks.spawn(async move {
        let _tls = tls;
        api.serve(incoming, std::future::pending())
            .await
            .context("etcd API server stopped")
    });
    Ok(EtcdServing {
        addr,
        stats,
        handshakes,
    })
}

/// The `member_id` headers name: stable for the cluster.
fn member_id(cluster: &Cluster) -> u64 {
    let digest = Sha256::digest(cluster.name.as_str().as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(id).max(1)
}
