//! The agent's etcd API: its Cilium cache keys served to the cluster's own Cilium agents
//! (KVStoreMesh's part), and the count of those connected, for the status.
//!
//! The local role: a client certificate naming this cluster (Cilium's `local-<cluster>`
//! user is the cluster itself; `fleet plan` writes one, `local-<cluster>.{crt,key}`).
//! Certificates of any other cluster are refused, and the local role reads only the
//! heartbeat, `cilium/cache/`, `cilium/cluster-config/` and `cilium/synced/`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use anyhow::Context as _;
use futures::StreamExt;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::transport::server::Connected;

use super::config::CacheApiConfig;
use crate::cache_keys::CacheKeys;
use crate::etcd_api::{EtcdApi, ReadRules};
use crate::grpc::AllowedPeers;
use crate::model::Cluster;
use crate::tls::server::{PeerInfo, TlsConn};
use crate::tls::spawn_reload;

/// Connections open now; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ClientCount(Arc<AtomicU64>);

impl ClientCount {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Starts the etcd API over `keys` on `tasks`; its address. Certificates must load now:
/// nothing is served before they do.
pub async fn start(
    config: &CacheApiConfig,
    cluster: &Cluster,
    keys: &Arc<CacheKeys>,
    clients: ClientCount,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<SocketAddr> {
    let tls = spawn_reload::<ServerConfig>(config.tls.clone(), crate::tls::RELOAD_INTERVAL)
        .context("cannot load the etcd API's certificates")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for the etcd API on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let api = EtcdApi::new(
        keys.key_cache(),
        AllowedPeers::Only([cluster.name.clone()].into()),
        ReadRules::local(&cluster.name),
    );
    let incoming = crate::tls::server::incoming(listener, tls.config_rx()).map(move |conn| {
        conn.map(|conn| {
            clients.0.fetch_add(1, Ordering::Relaxed);
            Counted {
                conn,
                clients: clients.clone(),
            }
        })
    });
    tasks.spawn(async move {
        let _tls = tls;
        api.serve(Box::pin(incoming), std::future::pending())
            .await
            .context("the etcd API stopped")
    });
    Ok(addr)
}

/// A connection counted in its [`ClientCount`] while it is open.
struct Counted {
    conn: TlsConn,
    clients: ClientCount,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.clients.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for Counted {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.conn.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.conn).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }
}
