//! The apiserver's serving path end to end: an embedded store, read by
//! `kvstore::state_watch::follow` into a `cache::WatchCache`, served by `grpc::GrpcServer`
//! on 127.0.0.1:0 over mutual TLS with certificates minted per test; clients are the
//! generated `MeshClient` over `tls::client::channel`.

// Test helpers outside `#[test]` functions panic on failure too, by design.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetmesh::apiserver::CacheSink;
use fleetmesh::cache::{CacheSettings, WatchCache};
use fleetmesh::certs::Ca;
use fleetmesh::certs::files::write_pem_files;
use fleetmesh::grpc::{AllowedPeers, GrpcServer, GrpcStats};
use fleetmesh::kvstore::codec::{
    encode_endpoint, encode_fleetmesh_service, encode_identity, encode_node,
};
use fleetmesh::kvstore::memory::MemoryStore;
use fleetmesh::kvstore::state_watch::{StateWatchStats, follow};
use fleetmesh::kvstore::{Store, keys};
use fleetmesh::model::{
    Affinity, Backend, BackendConditions, CLUSTER_LABEL, Change, Cluster, ClusterId, ClusterName,
    Endpoint, Event, IdMode, Identity, IdentityId, Label, Labels, Node, Resource, ResourceKey,
    Revision, Service, ServiceName,
};
use fleetmesh::proto::v1::mesh_client::MeshClient;
use fleetmesh::proto::{self, WatchFrame, v1};
use fleetmesh::tls::{self, TlsFiles};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const DAY: Duration = Duration::from_secs(86_400);
/// How long a test waits for a frame before failing.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------- the serving cluster's state ----------

fn mk_c1() -> Cluster {
    Cluster::new(
        ClusterName::new("c1").unwrap(),
        ClusterId::new(1, IdMode::Normal).unwrap(),
        IdMode::Normal,
    )
}

fn mk_endpoint(c1: &Cluster, ip: &str) -> Endpoint {
    let identity = IdentityId::new(c1.identity_range().first() + 7).unwrap();
    let mut ep = Endpoint::new(ip.parse().unwrap(), identity);
    ep.host_ip = Some("172.18.0.2".parse().unwrap());
    ep.namespace = Some("shop".into());
    ep.pod = Some(format!("cart-{ip}"));
    ep
}

/// A node, a global service with a ready and a terminating backend, an identity and two
/// endpoints: what cluster c1 exports at first.
fn mk_initial_state(c1: &Cluster) -> Vec<Resource> {
    let mut node = Node::new("worker-1", c1.name.clone(), c1.id).unwrap();
    node.ipv4_alloc_cidr = Some("10.244.1.0/24".parse().unwrap());
    let terminating = BackendConditions {
        ready: false,
        serving: true,
        terminating: true,
    };
    let backend = |conditions| Backend {
        conditions,
        ..Backend::default()
    };
    let svc = Service {
        cluster: c1.name.clone(),
        cluster_id: c1.id,
        name: ServiceName::new("shop", "cart").unwrap(),
        frontends: Default::default(),
        backends: [
            (
                "10.244.1.5".parse().unwrap(),
                backend(BackendConditions::READY),
            ),
            ("10.244.1.6".parse().unwrap(), backend(terminating)),
        ]
        .into(),
        labels: Default::default(),
        selector: Default::default(),
        include_external: true,
        shared: true,
        affinity: Affinity::Local,
    };
    let labels: Labels = [
        Label::k8s("app", "cart").unwrap(),
        Label::k8s(CLUSTER_LABEL, "c1").unwrap(),
    ]
    .into_iter()
    .collect();
    let id = IdentityId::new(c1.identity_range().first() + 7).unwrap();
    let identity = Identity::new(c1, id, labels).unwrap();
    vec![
        Resource::Node(node),
        Resource::Service(svc),
        Resource::Identity(identity),
        Resource::Endpoint(mk_endpoint(c1, "10.244.1.5")),
        Resource::Endpoint(mk_endpoint(c1, "10.244.1.6")),
    ]
}

/// Writes a resource as the exporter would.
async fn put(store: &dyn Store, c1: &Cluster, resource: &Resource) -> Revision {
    let (key, value): (String, Bytes) = match resource {
        Resource::Node(n) => (keys::node(&c1.name, n.name()), encode_node(n)),
        Resource::Service(s) => (
            keys::fleetmesh_service(&c1.name, &s.name),
            encode_fleetmesh_service(s),
        ),
        Resource::Identity(i) => (keys::identity(i.id()), encode_identity(i)),
        Resource::Endpoint(e) => (keys::ip(e.prefix), encode_endpoint(e)),
        Resource::ServiceExport(e) => (
            keys::service_export(&c1.name, &e.name),
            fleetmesh::kvstore::codec::encode_service_export(e),
        ),
    };
    store.put(&key, value, None).await.unwrap()
}

// ---------- certificates, server and clients ----------

/// A running apiserver for cluster c1 that allows only c2, with its store and the CA
/// that clients' certificates come from.
struct Served {
    c1: Cluster,
    store: Arc<MemoryStore>,
    cache: Arc<WatchCache>,
    addr: SocketAddr,
    stats: GrpcStats,
    ca: Ca,
    dir: tempfile::TempDir,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn mk_files(dir: &Path, name: &str, leaf: &fleetmesh::certs::IssuedCert, ca: &Ca) -> TlsFiles {
    let pem = write_pem_files(dir, name, leaf).unwrap();
    let ca_path = dir.join("ca.crt");
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    TlsFiles {
        cert: pem.cert,
        key: pem.key,
        ca: ca_path,
    }
}

async fn serve() -> Served {
    let c1 = mk_c1();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("mesh CA", DAY).unwrap();
    let ips = ["127.0.0.1".parse().unwrap()];
    let leaf = ca.issue_server(&c1.name, &[], &ips, DAY).unwrap();
    let server_files = mk_files(dir.path(), "server", &leaf, &ca);
    let (_, server_configs) = watch::channel(tls::load_server_config(&server_files).unwrap());

    let store = MemoryStore::new();
    for resource in mk_initial_state(&c1) {
        put(store.as_ref(), &c1, &resource).await;
    }
    let cache = Arc::new(WatchCache::new(
        proto::encode_event,
        CacheSettings::default(),
    ));
    let feed = tokio::spawn(follow(
        store.clone(),
        c1.clone(),
        CacheSink(cache.clone()),
        StateWatchStats::default(),
    ));

    let allowed = AllowedPeers::Only(BTreeSet::from([ClusterName::new("c2").unwrap()]));
    let grpc = GrpcServer::new(cache.clone(), c1.clone(), allowed);
    let stats = grpc.stats();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tls::server::incoming(listener, server_configs);
    let server = tokio::spawn(async move {
        grpc.serve(incoming, std::future::pending()).await.unwrap();
    });
    Served {
        c1,
        store,
        cache,
        addr,
        stats,
        ca,
        dir,
        tasks: vec![feed, server],
    }
}

impl Served {
    /// A client presenting a certificate of cluster `name`.
    fn client(&self, name: &str) -> MeshClient<Channel> {
        let cluster = ClusterName::new(name).unwrap();
        let leaf = self.ca.issue_client(&cluster, DAY).unwrap();
        let files = mk_files(self.dir.path(), &format!("client-{name}"), &leaf, &self.ca);
        let (_, configs) = watch::channel(tls::load_client_config(&files).unwrap());
        let channel = tls::client::channel(&self.addr.to_string(), None, configs).unwrap();
        MeshClient::new(channel)
    }

    fn epoch(&self) -> String {
        self.store.epoch().0
    }

    /// Waits until the cache has read the store up to `revision`.
    async fn cached(&self, revision: Revision) {
        let wait = async {
            while self.cache.stats().revision < revision {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .expect("the cache catches up with the store");
    }
}

fn mk_request(kinds: &[v1::Kind], resume: Option<(String, Revision)>) -> v1::WatchRequest {
    v1::WatchRequest {
        kinds: kinds.iter().map(|k| i32::from(*k)).collect(),
        resume: resume.map(|(epoch, revision)| v1::ResumePoint { epoch, revision }),
    }
}

async fn next_frame(stream: &mut Streaming<WatchFrame>) -> WatchFrame {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a frame in time")
        .expect("no error")
        .expect("the stream goes on")
}

fn decode(c1: &Cluster, frame: &WatchFrame) -> Vec<Event> {
    frame
        .events
        .iter()
        .map(|bytes| proto::decode_event(bytes.clone(), c1).unwrap())
        .collect()
}

/// Reads a full state up to its synced frame: the resources, and the synced frame.
async fn read_full_state(
    c1: &Cluster,
    stream: &mut Streaming<WatchFrame>,
) -> (Vec<Resource>, WatchFrame) {
    let mut resources = Vec::new();
    loop {
        let frame = next_frame(stream).await;
        assert!(!frame.resumed);
        for event in decode(c1, &frame) {
            let Change::Upsert(resource) = event.change else {
                panic!("a full state holds upserts only: {event:?}");
            };
            resources.push(resource);
        }
        if frame.synced {
            return (resources, frame);
        }
    }
}

fn sorted_keys(resources: &[Resource]) -> Vec<ResourceKey> {
    let mut keys: Vec<ResourceKey> = resources.iter().map(Resource::key).collect();
    keys.sort();
    keys
}

fn upsert(revision: Revision, resource: Resource) -> Event {
    Event {
        revision,
        change: Change::Upsert(resource),
    }
}

// ---------- the cases ----------

#[tokio::test]
async fn a_watcher_gets_the_full_state_then_deltas_and_resumes_with_what_it_missed() {
    let served = serve().await;
    let c1 = &served.c1;
    let mut client = served.client("c2");

    let info = client.info(v1::InfoRequest {}).await.unwrap().into_inner();
    let info = proto::server_info_from_wire(info).unwrap();
    assert_eq!(info.cluster, *c1);
    assert_eq!(info.protocol_version, proto::PROTOCOL_VERSION);
    assert!(info.capabilities.contains(&proto::CAP_RESUME.to_string()));

    let mut stream = client
        .watch(mk_request(&[], None))
        .await
        .unwrap()
        .into_inner();
    let (resources, synced) = read_full_state(c1, &mut stream).await;
    assert_eq!(sorted_keys(&resources), sorted_keys(&mk_initial_state(c1)));
    for expected in mk_initial_state(c1) {
        assert!(
            resources.contains(&expected),
            "{expected:?} is not as exported"
        );
    }
    assert_eq!(synced.epoch, served.epoch());
    // The epoch Info reports is the one the stream's revisions belong to.
    assert_eq!(info.epoch, served.epoch());

    // A delta arrives with the revision that made it.
    let ep3 = mk_endpoint(c1, "10.244.1.7");
    let rev3 = put(served.store.as_ref(), c1, &Resource::Endpoint(ep3.clone())).await;
    let frame = next_frame(&mut stream).await;
    assert_eq!(decode(c1, &frame), [upsert(rev3, Resource::Endpoint(ep3))]);
    assert_eq!(frame.revision, rev3);
    assert!(!frame.synced && !frame.resumed);
    drop(stream);

    // While it is away: an upsert and a delete.
    let ep4 = mk_endpoint(c1, "10.244.1.8");
    let rev4 = put(served.store.as_ref(), c1, &Resource::Endpoint(ep4.clone())).await;
    served
        .store
        .delete(&keys::ip("10.244.1.5".parse().unwrap()))
        .await
        .unwrap();
    let deleted = Event {
        revision: rev4 + 1,
        change: Change::Delete(ResourceKey::Endpoint("10.244.1.5".parse().unwrap())),
    };

    served.cached(rev4 + 1).await;

    // Resuming from the last revision it saw, it gets exactly what it missed.
    let mut stream = client
        .watch(mk_request(&[], Some((served.epoch(), rev3))))
        .await
        .unwrap()
        .into_inner();
    let mut missed = Vec::new();
    loop {
        let frame = next_frame(&mut stream).await;
        assert!(frame.resumed, "no full state when resuming");
        missed.extend(decode(c1, &frame));
        if frame.synced {
            assert_eq!(frame.revision, rev4 + 1);
            break;
        }
    }
    assert_eq!(
        missed,
        [upsert(rev4, Resource::Endpoint(ep4)), deleted.clone()]
    );
    // …and then the deltas after it.
    let ep5 = mk_endpoint(c1, "10.244.1.9");
    let rev5 = put(served.store.as_ref(), c1, &Resource::Endpoint(ep5.clone())).await;
    let frame = next_frame(&mut stream).await;
    assert_eq!(decode(c1, &frame), [upsert(rev5, Resource::Endpoint(ep5))]);

    // A resume point from another epoch is worthless: full state.
    let mut stream = client
        .watch(mk_request(&[], Some(("another-epoch".into(), rev3))))
        .await
        .unwrap()
        .into_inner();
    let (resources, _) = read_full_state(c1, &mut stream).await;
    assert_eq!(resources.len(), 7, "5 exported, 3 added, 1 deleted");
    assert_eq!(served.stats.watches(), 3);
}

#[tokio::test]
async fn a_watcher_gets_only_the_kinds_it_asks_for() {
    let served = serve().await;
    let c1 = &served.c1;
    let mut client = served.client("c2");

    let mut stream = client
        .watch(mk_request(&[v1::Kind::Service], None))
        .await
        .unwrap()
        .into_inner();
    let (resources, _) = read_full_state(c1, &mut stream).await;
    let [Resource::Service(svc)] = resources.as_slice() else {
        panic!("expected the service alone: {resources:?}");
    };
    // Per-backend conditions travel with the service.
    let conditions: Vec<bool> = svc.backends.values().map(|b| b.conditions.ready).collect();
    assert_eq!(conditions, [true, false]);

    // An endpoint changes, then the service: only the service comes.
    put(
        served.store.as_ref(),
        c1,
        &Resource::Endpoint(mk_endpoint(c1, "10.244.1.7")),
    )
    .await;
    let mut changed = svc.clone();
    changed.affinity = Affinity::Remote;
    let rev = put(
        served.store.as_ref(),
        c1,
        &Resource::Service(changed.clone()),
    )
    .await;
    let frame = next_frame(&mut stream).await;
    assert_eq!(
        decode(c1, &frame),
        [upsert(rev, Resource::Service(changed))]
    );

    let err = client
        .watch(v1::WatchRequest {
            kinds: vec![42],
            resume: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("unknown kind"), "{err:?}");
    assert_eq!(served.stats.invalid_requests(), 1);
}

#[tokio::test]
async fn a_peer_outside_allowed_peers_is_denied() {
    let served = serve().await;
    let mut intruder = served.client("c3");

    let err = intruder.info(v1::InfoRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "cluster \"c3\" may not query cluster \"c1\": not in allowedPeers [c2]"
    );
    let err = intruder.watch(mk_request(&[], None)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "cluster \"c3\" may not watch cluster \"c1\": not in allowedPeers [c2]"
    );
    assert_eq!(served.stats.permission_denied(), 2);
    assert_eq!(served.stats.watches(), 0);
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_other_streams_go_on() {
    let served = serve().await;
    let c1 = &served.c1;
    let mut client = served.client("c2");
    let mut stream = client
        .watch(mk_request(&[], None))
        .await
        .unwrap()
        .into_inner();
    read_full_state(c1, &mut stream).await;

    // Thousands of kinds: far beyond what a real request holds.
    let huge = v1::WatchRequest {
        kinds: vec![i32::from(v1::Kind::Endpoint); 10_000],
        resume: None,
    };
    let err = client.clone().watch(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // The first stream, on the same connection, is unharmed.
    let ep = mk_endpoint(c1, "10.244.1.7");
    let rev = put(served.store.as_ref(), c1, &Resource::Endpoint(ep.clone())).await;
    let frame = next_frame(&mut stream).await;
    assert_eq!(decode(c1, &frame), [upsert(rev, Resource::Endpoint(ep))]);
}

/// An export of `shop/web` by c1.
fn mk_service_export(c1: &Cluster) -> fleetmesh::model::ServiceExport {
    use fleetmesh::model::{ExportPort, ExportType, Protocol, SessionAffinity};
    fleetmesh::model::ServiceExport {
        cluster: c1.name.clone(),
        name: "shop/web".parse().unwrap(),
        export_created_unix: 1_768_046_400,
        ports: vec![ExportPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            app_protocol: None,
            port: 80,
        }],
        export_type: ExportType::ClusterSetIp,
        session_affinity: SessionAffinity::None,
        session_affinity_timeout_seconds: None,
        ip_families: vec![],
        labels: Default::default(),
        annotations: Default::default(),
        internal_traffic_policy: None,
        traffic_distribution: None,
    }
}

#[tokio::test]
async fn service_exports_go_only_to_watchers_that_name_them() {
    let served = serve().await;
    let c1 = &served.c1;
    let export = mk_service_export(c1);
    let rev = put(
        served.store.as_ref(),
        c1,
        &Resource::ServiceExport(export.clone()),
    )
    .await;
    served.cached(rev).await;
    let mut client = served.client("c2");
    let info = client.info(v1::InfoRequest {}).await.unwrap().into_inner();
    assert!(
        info.capabilities.iter().any(|c| c == "service-exports"),
        "{info:?}"
    );

    // A watcher that names no kind (every peer before service exports) gets the
    // original four kinds only: nothing it could not decode.
    let mut old = client
        .watch(mk_request(&[], None))
        .await
        .unwrap()
        .into_inner();
    let (resources, _) = read_full_state(c1, &mut old).await;
    assert_eq!(
        sorted_keys(&resources),
        sorted_keys(&mk_initial_state(c1)),
        "no service export in the full state"
    );

    let mut new = client
        .watch(mk_request(&[v1::Kind::ServiceExport], None))
        .await
        .unwrap()
        .into_inner();
    let (resources, _) = read_full_state(c1, &mut new).await;
    assert_eq!(resources, [Resource::ServiceExport(export.clone())]);

    // Its deletion reaches only the watcher that named the kind; an endpoint change
    // after it reaches the other, whose next frame holds that change alone.
    let key = keys::service_export(&c1.name, &export.name);
    served.store.delete(&key).await.unwrap();
    let ep = Resource::Endpoint(mk_endpoint(c1, "10.244.1.8"));
    let ep_rev = put(served.store.as_ref(), c1, &ep).await;
    let frame = next_frame(&mut new).await;
    let events = decode(c1, &frame);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].change,
        Change::Delete(ResourceKey::ServiceExport(export.name.clone()))
    );
    let frame = next_frame(&mut old).await;
    assert_eq!(decode(c1, &frame), [upsert(ep_rev, ep)]);
}
