//! A watcher that stops reading, and churn to make its frames pile up: a raw HTTP/2
//! client opens a Watch and, once its caller stops taking the body, never releases its
//! flow-control window while still answering pings (its connection task keeps running).
//! The server cuts such a watcher off after its stall limit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fleetmesh::kvstore::{Store, codec, keys};
use fleetmesh::model::{Cluster, Endpoint, IdentityId, IpPrefix};
use fleetmesh::proto::v1;
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::mesh::MeshPki;

/// A gRPC Watch of everything over raw HTTP/2 to `addr`, as `client`: the response body,
/// and the task running the connection (it ends when the server closes it).
pub async fn raw_watch(
    pki: &MeshPki,
    addr: SocketAddr,
    client: &str,
) -> (
    h2::RecvStream,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let files = pki.client_files(client);
    let config = fleetmesh::tls::load_client_config(&files).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (h2_client, connection) = h2::client::handshake(tls).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut h2_client = h2_client.ready().await.unwrap();
    let request = http::Request::post(format!("https://{addr}/fleetmesh.v1.Mesh/Watch"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = h2_client.send_request(request, false).unwrap();
    let message = v1::WatchRequest::default().encode_to_vec();
    let mut framed = BytesMut::new();
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    send.send_data(framed.freeze(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    (response.into_body(), connection)
}

/// Flips the identity of `pods` endpoints of `cluster` in `store` over and over (about
/// 2,000 changes a second) until aborted.
pub fn churn_endpoints(
    store: Arc<dyn Store>,
    cluster: Cluster,
    pods: u32,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for round in 0u32.. {
            for i in 0..pods {
                let ip = format!("10.{}.{}.{}", cluster.id.get(), 200 + i / 250, i % 250 + 1);
                let local = 1 + (i + round) % 2;
                let id = IdentityId::new(cluster.identity_range().first() + local).unwrap();
                let mut e = Endpoint::new(IpPrefix::host(ip.parse().unwrap()), id);
                e.namespace = Some("test".into());
                e.pod = Some(format!("pod-{ip}"));
                store
                    .put(&keys::ip(e.prefix), codec::encode_endpoint(&e), None)
                    .await
                    .unwrap();
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    })
}
