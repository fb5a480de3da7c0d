//! Mutual TLS end to end: certificates minted per test with `certs`, a real tonic server
//! on 127.0.0.1:0 behind `tls::server::incoming`, and tonic channels from
//! `tls::client::channel`. A tiny hand-written gRPC service answers with the cluster the
//! server read from the caller's certificate.

// Test helpers outside `#[test]` functions panic on failure too, by design.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fleetmesh::certs::files::{CERT_MODE, write_atomic, write_pem_files};
use fleetmesh::certs::{Ca, LeafRole, Validity, bundle::trust_bundle};
use fleetmesh::model::ClusterName;
use fleetmesh::tls::server::{HandshakeStats, PeerInfo};
use fleetmesh::tls::{self, ReloadingServerConfig, TlsFiles, spawn_reload};
use futures::future::BoxFuture;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

const DAY: Duration = Duration::from_secs(86_400);
/// How long a test waits for something asynchronous before failing.
const PATIENCE: Duration = Duration::from_secs(10);
/// Reload poll period in tests: fast, so a reload shows up quickly.
const RELOAD: Duration = Duration::from_millis(50);

// ---------- a tiny gRPC service: "which cluster am I?" ----------

/// `/fleetmesh.test.PeerEcho/WhoAmI`: answers with the cluster the caller's certificate
/// names, read from the `PeerInfo` that `tls::server::incoming` attached.
#[derive(Clone)]
struct PeerEcho;

impl tonic::server::NamedService for PeerEcho {
    const NAME: &'static str = "fleetmesh.test.PeerEcho";
}

impl tower::Service<http::Request<Body>> for PeerEcho {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let who_am_i = tower::service_fn(|req: Request<()>| async move {
            match req.extensions().get::<PeerInfo>() {
                Some(PeerInfo {
                    cluster: Ok(cluster),
                    cert_not_after: Some(_),
                    ..
                }) => Ok(Response::new(cluster.to_string())),
                Some(peer) => Err(Status::permission_denied(format!("{peer:?}"))),
                None => Err(Status::internal("no PeerInfo in the request")),
            }
        });
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<String, ()>::default());
            Ok(grpc.unary(who_am_i, req).await)
        })
    }
}

async fn who_am_i(channel: Channel) -> Result<String, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static("/fleetmesh.test.PeerEcho/WhoAmI");
    let codec = ProstCodec::<(), String>::default();
    Ok(grpc
        .unary(Request::new(()), path, codec)
        .await?
        .into_inner())
}

// ---------- certificates and servers ----------

fn mk_cluster(name: &str) -> ClusterName {
    ClusterName::new(name).unwrap()
}

fn mk_ca(name: &str) -> Ca {
    Ca::generate(name, DAY).unwrap()
}

/// Writes `<name>.crt`, `<name>.key` and `<name>-ca.crt` (the trusted bundle) under `dir`.
fn mk_files(dir: &Path, name: &str, leaf: &fleetmesh::certs::IssuedCert, trust: &str) -> TlsFiles {
    let pem = write_pem_files(dir, name, leaf).unwrap();
    let ca = dir.join(format!("{name}-ca.crt"));
    write_atomic(&ca, trust.as_bytes(), CERT_MODE).unwrap();
    TlsFiles {
        cert: pem.cert,
        key: pem.key,
        ca,
    }
}

/// Server files for cluster "hub" on 127.0.0.1, issued by `ca`, trusting `trust`.
fn mk_server_files(dir: &Path, ca: &Ca, trust: &str) -> TlsFiles {
    let ips = ["127.0.0.1".parse().unwrap()];
    let leaf = ca
        .issue_server(&mk_cluster("hub"), &["localhost".to_string()], &ips, DAY)
        .unwrap();
    mk_files(dir, "server", &leaf, trust)
}

/// Client files for `cluster`, issued by `ca` with `validity`, trusting `trust`.
fn mk_client_files(
    dir: &Path,
    cluster: &str,
    ca: &Ca,
    validity: Validity,
    trust: &str,
) -> TlsFiles {
    let leaf = ca
        .issue(&mk_cluster(cluster), LeafRole::Client, validity)
        .unwrap();
    mk_files(dir, &format!("client-{cluster}"), &leaf, trust)
}

fn valid_now() -> Validity {
    Validity::starting_now(DAY).unwrap()
}

fn fixed<C>(config: Arc<C>) -> watch::Receiver<Arc<C>> {
    watch::channel(config).1
}

/// A tonic server with `PeerEcho` behind `tls::server::incoming` on 127.0.0.1:0.
async fn start_server(configs: watch::Receiver<Arc<ServerConfig>>) -> (SocketAddr, HandshakeStats) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tls::server::incoming(listener, configs);
    let stats = incoming.stats();
    tokio::spawn(
        Server::builder()
            .add_service(PeerEcho)
            .serve_with_incoming(incoming),
    );
    (addr, stats)
}

fn mk_channel(addr: SocketAddr, config: Arc<ClientConfig>) -> Channel {
    tls::client::channel(&format!("https://{addr}"), None, fixed(config)).unwrap()
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let wait = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(PATIENCE, wait).await.is_err() {
        panic!("timed out waiting until {what}");
    }
}

/// Asserts that a call with `client` fails and that the server counted one refusal.
async fn assert_refused(addr: SocketAddr, stats: &HandshakeStats, client: Arc<ClientConfig>) {
    let result = who_am_i(mk_channel(addr, client)).await;
    assert!(result.is_err(), "call succeeded: {result:?}");
    eventually("the refusal is counted", || stats.refused() == 1).await;
    assert_eq!(stats.accepted(), 0);
}

// ---------- the cases ----------

#[tokio::test]
async fn a_good_client_is_served_and_the_handler_sees_its_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca("mesh CA");
    let server = mk_server_files(dir.path(), &ca, ca.cert_pem());
    let client = mk_client_files(dir.path(), "east", &ca, valid_now(), ca.cert_pem());
    let (addr, stats) = start_server(fixed(tls::load_server_config(&server).unwrap())).await;

    let channel = mk_channel(addr, tls::load_client_config(&client).unwrap());
    assert_eq!(who_am_i(channel.clone()).await.unwrap(), "east");
    // The same connection serves the next call.
    assert_eq!(who_am_i(channel).await.unwrap(), "east");
    assert_eq!(stats.accepted(), 1);
    assert_eq!(stats.refused(), 0);
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca("mesh CA");
    let server = mk_server_files(dir.path(), &ca, ca.cert_pem());
    let client = mk_client_files(dir.path(), "east", &ca, valid_now(), ca.cert_pem());
    let (addr, _) = start_server(fixed(tls::load_server_config(&server).unwrap())).await;

    let mut grpc =
        tonic::client::Grpc::new(mk_channel(addr, tls::load_client_config(&client).unwrap()));
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/fleetmesh.test.Nothing/Here");
    let status = grpc
        .unary(Request::new(()), path, ProstCodec::<(), ()>::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca("mesh CA");
    let server = mk_server_files(dir.path(), &ca, ca.cert_pem());
    let (addr, stats) = start_server(fixed(tls::load_server_config(&server).unwrap())).await;

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.cert_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut anonymous =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];
    assert_refused(addr, &stats, Arc::new(anonymous)).await;
}

#[tokio::test]
async fn a_client_of_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca("mesh CA");
    // Same subject name as the real CA: only the key tells them apart.
    let impostor = mk_ca("mesh CA");
    let server = mk_server_files(dir.path(), &ca, ca.cert_pem());
    let client = mk_client_files(dir.path(), "east", &impostor, valid_now(), ca.cert_pem());
    let (addr, stats) = start_server(fixed(tls::load_server_config(&server).unwrap())).await;
    assert_refused(addr, &stats, tls::load_client_config(&client).unwrap()).await;
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca("mesh CA");
    let now = time::OffsetDateTime::now_utc();
    let expired =
        Validity::new(now - time::Duration::days(2), now - time::Duration::days(1)).unwrap();
    let server = mk_server_files(dir.path(), &ca, ca.cert_pem());
    let client = mk_client_files(dir.path(), "east", &ca, expired, ca.cert_pem());
    let (addr, stats) = start_server(fixed(tls::load_server_config(&server).unwrap())).await;
    assert_refused(addr, &stats, tls::load_client_config(&client).unwrap()).await;
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_others() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca("mesh CA");
    let server = mk_server_files(dir.path(), &ca, ca.cert_pem());
    let client = mk_client_files(dir.path(), "east", &ca, valid_now(), ca.cert_pem());
    let (addr, stats) = start_server(fixed(tls::load_server_config(&server).unwrap())).await;

    // Connects and says nothing: its handshake stays pending.
    let silent = TcpStream::connect(addr).await.unwrap();
    let channel = mk_channel(addr, tls::load_client_config(&client).unwrap());
    assert_eq!(who_am_i(channel).await.unwrap(), "east");
    // A half-sent ClientHello followed by a close is refused and counted.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"\x16\x03\x01 definitely not TLS")
        .await
        .unwrap();
    drop(garbage);
    eventually("the garbage is refused", || stats.refused() == 1).await;
    assert_eq!(stats.accepted(), 1);
    drop(silent);
}

#[tokio::test]
async fn a_trust_bundle_accepts_clients_of_the_old_and_the_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    let old = mk_ca("mesh CA");
    let new = mk_ca("mesh CA 2");
    let bundle = trust_bundle([old.cert_pem(), new.cert_pem()]).unwrap();
    let server = mk_server_files(dir.path(), &old, &bundle);
    let east = mk_client_files(dir.path(), "east", &old, valid_now(), &bundle);
    let west = mk_client_files(dir.path(), "west", &new, valid_now(), &bundle);
    let (addr, stats) = start_server(fixed(tls::load_server_config(&server).unwrap())).await;

    let east = mk_channel(addr, tls::load_client_config(&east).unwrap());
    let west = mk_channel(addr, tls::load_client_config(&west).unwrap());
    assert_eq!(who_am_i(east).await.unwrap(), "east");
    assert_eq!(who_am_i(west).await.unwrap(), "west");
    assert_eq!(stats.refused(), 0);
}

#[tokio::test]
async fn reloaded_server_material_applies_to_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = mk_ca("mesh CA");
    let new = mk_ca("mesh CA 2");
    let server_files = mk_server_files(dir.path(), &old, old.cert_pem());
    let reloading: ReloadingServerConfig = spawn_reload(server_files.clone(), RELOAD).unwrap();
    let mut configs = reloading.config_rx();
    let first = reloading.current();
    let (addr, stats) = start_server(reloading.config_rx()).await;

    let old_client = mk_client_files(dir.path(), "east", &old, valid_now(), old.cert_pem());
    let new_client = mk_client_files(dir.path(), "west", &new, valid_now(), new.cert_pem());
    let old_client = tls::load_client_config(&old_client).unwrap();
    let new_client = tls::load_client_config(&new_client).unwrap();

    let established = mk_channel(addr, old_client.clone());
    assert_eq!(who_am_i(established.clone()).await.unwrap(), "east");
    assert!(
        who_am_i(mk_channel(addr, new_client.clone()))
            .await
            .is_err()
    );
    eventually("the new-CA client is refused", || stats.refused() == 1).await;

    // Switch the server to the new CA only: leaf and trust.
    mk_server_files(dir.path(), &new, new.cert_pem());
    let reloaded = configs.wait_for(|c| !Arc::ptr_eq(c, &first));
    tokio::time::timeout(PATIENCE, reloaded)
        .await
        .unwrap()
        .unwrap();

    assert_eq!(
        who_am_i(mk_channel(addr, new_client)).await.unwrap(),
        "west"
    );
    // A new connection with the old CA's client is refused now...
    assert!(who_am_i(mk_channel(addr, old_client)).await.is_err());
    eventually("the old-CA client is refused", || stats.refused() == 2).await;
    // ...but the connection made before the reload keeps working.
    assert_eq!(who_am_i(established).await.unwrap(), "east");
}

#[tokio::test]
async fn a_bad_server_file_keeps_the_old_material_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca("mesh CA");
    let server_files = mk_server_files(dir.path(), &ca, ca.cert_pem());
    let reloading: ReloadingServerConfig = spawn_reload(server_files.clone(), RELOAD).unwrap();
    let (addr, _) = start_server(reloading.config_rx()).await;
    let client = mk_client_files(dir.path(), "east", &ca, valid_now(), ca.cert_pem());
    let client = tls::load_client_config(&client).unwrap();

    write_atomic(&server_files.cert, b"garbage", CERT_MODE).unwrap();
    tokio::time::sleep(RELOAD * 5).await;
    assert_eq!(who_am_i(mk_channel(addr, client)).await.unwrap(), "east");
}

#[tokio::test]
async fn a_reloaded_client_certificate_is_used_on_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca("mesh CA");
    let server = mk_server_files(dir.path(), &ca, ca.cert_pem());
    let (addr, _) = start_server(fixed(tls::load_server_config(&server).unwrap())).await;
    let client_files = mk_client_files(dir.path(), "east", &ca, valid_now(), ca.cert_pem());
    let reloading: tls::ReloadingClientConfig = spawn_reload(client_files.clone(), RELOAD).unwrap();
    let mut configs = reloading.config_rx();
    let first = reloading.current();
    let channel =
        tls::client::channel(&addr.to_string(), Some("localhost"), reloading.config_rx()).unwrap();
    assert_eq!(who_am_i(channel).await.unwrap(), "east");

    // Same file names, a certificate for another cluster.
    let leaf = ca.issue_client(&mk_cluster("east-2"), DAY).unwrap();
    let written = write_pem_files(dir.path(), "client-east", &leaf).unwrap();
    assert_eq!(written.cert, client_files.cert);
    let reloaded = configs.wait_for(|c| !Arc::ptr_eq(c, &first));
    tokio::time::timeout(PATIENCE, reloaded)
        .await
        .unwrap()
        .unwrap();

    let channel =
        tls::client::channel(&addr.to_string(), Some("localhost"), reloading.config_rx()).unwrap();
    assert_eq!(who_am_i(channel).await.unwrap(), "east-2");
}

#[tokio::test]
async fn the_client_checks_the_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = mk_ca("mesh CA");
    let server = mk_server_files(dir.path(), &ca, ca.cert_pem());
    let client = mk_client_files(dir.path(), "east", &ca, valid_now(), ca.cert_pem());
    let (addr, _) = start_server(fixed(tls::load_server_config(&server).unwrap())).await;
    let config = fixed(tls::load_client_config(&client).unwrap());
    let channel =
        tls::client::channel(&addr.to_string(), Some("elsewhere.example"), config).unwrap();
    let status = who_am_i(channel).await.unwrap_err();
    assert!(status.to_string().contains("certificate"), "{status}");
}
