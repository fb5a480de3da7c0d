//! A member cluster's apiserver for agent-side tests, built from the real pieces: an
//! embedded store, the state watch feeding the watch cache, and the gRPC server on
//! 127.0.0.1 behind mutual TLS with certificates minted per test.
//!
//! Each server is the test kit's [`LocalApiserver`]: stopping it is a process dying. Its
//! store outlives it, so a test can restart a peer that keeps its store — or give it a
//! new, empty one (a new epoch).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleetmesh::certs::Ca;
use fleetmesh::grpc::AllowedPeers;
use fleetmesh::kvstore::memory::MemoryStore;
use fleetmesh::kvstore::{Epoch, Store, codec, keys};
use fleetmesh::model::{
    CLUSTER_LABEL, Cluster, ClusterId, ClusterName, Endpoint, Event, IdMode, Identity, IdentityId,
    IpPrefix, Label, Labels, Node, Resource, ResourceKey, Revision,
};
use fleetmesh::remote::PeerConfig;
use fleetmesh::testkit::{LocalApiserver, Pki, ServeOptions};
use fleetmesh::tls::TlsFiles;

/// Certificates live this long: longer than any test.
const DAY: Duration = Duration::from_secs(86_400);

pub fn mk_name(name: &str) -> ClusterName {
    ClusterName::new(name).unwrap()
}

/// A cluster in the normal id mode (255 clusters).
pub fn mk_cluster(name: &str, id: u32) -> Cluster {
    mk_cluster_in(name, id, IdMode::Normal)
}

pub fn mk_cluster_in(name: &str, id: u32, mode: IdMode) -> Cluster {
    Cluster::new(mk_name(name), ClusterId::new(id, mode).unwrap(), mode)
}

/// A CA and a directory for the files of one test's mesh: the test kit's [`Pki`], with
/// clusters named by strings and failures as panics.
pub struct MeshPki(Pki);

impl MeshPki {
    pub fn new() -> Self {
        // A name of its own: two test meshes' CAs are told apart by name first.
        let name = format!("test CA {:08x}", rand::random::<u32>());
        Self(Pki::temporary("fleetmesh-test-", &name, DAY).unwrap())
    }

    pub fn dir(&self) -> &Path {
        self.0.dir()
    }

    /// The mesh's CA, to mint unusual certificates (expired ones, say).
    pub fn ca(&self) -> &Ca {
        self.0.ca()
    }

    /// An apiserver certificate naming `cluster`, valid for 127.0.0.1 and localhost.
    pub fn server_files(&self, cluster: &str) -> TlsFiles {
        self.0.server_files(&mk_name(cluster)).unwrap()
    }

    /// A client certificate naming `cluster` (an agent of that cluster).
    pub fn client_files(&self, cluster: &str) -> TlsFiles {
        self.0.client_files(&mk_name(cluster)).unwrap()
    }

    /// Writes `remotes/<peer>.yaml` pointing at `addr` with `client`'s files (paths
    /// relative to the file, as a fleet plan writes them) and loads it.
    pub fn peer_config(&self, peer: &str, addr: SocketAddr, client: &TlsFiles) -> PeerConfig {
        let remotes = self.dir().join("remotes");
        std::fs::create_dir_all(&remotes).unwrap();
        let rel = |p: &PathBuf| format!("../certs/{}", p.file_name().unwrap().to_str().unwrap());
        let text = format!(
            "address: \"{addr}\"\ntls:\n  ca: {}\n  cert: {}\n  key: {}\n",
            rel(&client.ca),
            rel(&client.cert),
            rel(&client.key),
        );
        let path = remotes.join(format!("{peer}.yaml"));
        std::fs::write(&path, text).unwrap();
        PeerConfig::load(&path).unwrap()
    }
}

/// One member's apiserver serving `cluster`'s state from `store`: the test kit's
/// [`LocalApiserver`], which keeps its store for a restart.
pub struct PeerServer {
    pub addr: SocketAddr,
    pub cluster: Cluster,
    pub store: Arc<MemoryStore>,
    server: LocalApiserver,
}

impl PeerServer {
    /// Starts serving on 127.0.0.1:`port` (0 for any free port) with the server
    /// certificate `tls`, to the peers `allowed` names.
    pub async fn start(
        cluster: Cluster,
        store: Arc<MemoryStore>,
        tls: TlsFiles,
        allowed: AllowedPeers,
        port: u16,
    ) -> Self {
        let options = ServeOptions {
            addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            allowed,
            ..ServeOptions::default()
        };
        let server = LocalApiserver::start(cluster.clone(), store.clone(), tls, options)
            .await
            .unwrap();
        Self {
            addr: server.addr,
            cluster,
            store,
            server,
        }
    }

    /// Stops the server as if its process died; returns its store and its port.
    pub async fn stop(self) -> (Arc<MemoryStore>, u16) {
        let mut server = self.server;
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .unwrap();
        (self.store, self.addr.port())
    }
}

/// Writes `resource` of `cluster` into `store` under its Cilium/fleetmesh key.
pub async fn put(store: &MemoryStore, cluster: &Cluster, resource: &Resource) {
    let (key, value) = match resource {
        Resource::Node(n) => (keys::node(&cluster.name, n.name()), codec::encode_node(n)),
        Resource::Service(s) => (
            keys::fleetmesh_service(&cluster.name, &s.name),
            codec::encode_fleetmesh_service(s),
        ),
        Resource::Identity(i) => (keys::identity(i.id()), codec::encode_identity(i)),
        Resource::Endpoint(e) => (keys::ip(e.prefix), codec::encode_endpoint(e)),
        Resource::ServiceExport(e) => (
            keys::service_export(&cluster.name, &e.name),
            codec::encode_service_export(e),
        ),
    };
    store.put(&key, value, None).await.unwrap();
}

/// Deletes what `key` names of `cluster` from `store`.
pub async fn delete(store: &MemoryStore, cluster: &Cluster, key: &ResourceKey) {
    let key = match key {
        ResourceKey::Node(n) => keys::node(&cluster.name, n),
        ResourceKey::Service(s) => keys::fleetmesh_service(&cluster.name, s),
        ResourceKey::Identity(i) => keys::identity(*i),
        ResourceKey::Endpoint(p) => keys::ip(*p),
        ResourceKey::ServiceExport(s) => keys::service_export(&cluster.name, s),
    };
    assert!(store.delete(&key).await.unwrap(), "{key} was not stored");
}

pub fn mk_node(cluster: &Cluster, name: &str) -> Resource {
    Resource::Node(Node::new(name, cluster.name.clone(), cluster.id).unwrap())
}

/// Identity `local` of `cluster`'s range, labelled for it.
pub fn mk_identity(cluster: &Cluster, local: u32) -> Resource {
    let id = IdentityId::new(cluster.identity_range().first() + local).unwrap();
    let labels: Labels = [
        Label::k8s("app", &format!("app-{local}")).unwrap(),
        Label::k8s(CLUSTER_LABEL, cluster.name.as_str()).unwrap(),
    ]
    .into_iter()
    .collect();
    Resource::Identity(Identity::new(cluster, id, labels).unwrap())
}

/// A pod at `ip` with identity `local` of `owner`'s range (normally the serving
/// cluster's; another cluster's makes an entry the agent must refuse).
pub fn mk_endpoint(owner: &Cluster, ip: &str, local: u32) -> Resource {
    let identity = IdentityId::new(owner.identity_range().first() + local).unwrap();
    let mut e = Endpoint::new(IpPrefix::host(ip.parse().unwrap()), identity);
    e.namespace = Some("test".into());
    e.pod = Some(format!("pod-{ip}"));
    Resource::Endpoint(e)
}

/// A small cluster state: one node, two identities, `endpoints` pods in 10.<id>.0.0/16.
pub fn mk_state(cluster: &Cluster, endpoints: u32) -> Vec<Resource> {
    let mut state = vec![
        mk_node(cluster, "node-1"),
        mk_identity(cluster, 1),
        mk_identity(cluster, 2),
    ];
    state.extend((0..endpoints).map(|i| {
        let ip = format!("10.{}.{}.{}", cluster.id.get(), i / 250, i % 250 + 1);
        mk_endpoint(cluster, &ip, 1 + i % 2)
    }));
    state
}

/// A new store holding `state` of `cluster`.
pub async fn mk_store(cluster: &Cluster, state: &[Resource]) -> Arc<MemoryStore> {
    let store = MemoryStore::new();
    for resource in state {
        put(&store, cluster, resource).await;
    }
    store
}

/// A global service `web/<name>` with `annotations` besides the global one and the given
/// backends (ip, ready), as manifest YAML.
pub fn global_service_yaml(
    name: &str,
    annotations: &[(&str, &str)],
    backends: &[(&str, bool)],
) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let endpoints: String = backends
        .iter()
        .map(|(ip, ready)| format!("- addresses: [{ip}]\n  conditions: {{ready: {ready}}}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: web\n  annotations:\n    service.cilium.io/global: \"true\"\n{annotations}spec:\n  ports: [{{name: http, port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: web\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n{endpoints}"
    )
}

/// How soon an in-process agent's links retry: tests wait for reconnections.
const AGENT_BACKOFF_MAX: Duration = Duration::from_millis(300);

/// Starts `local`'s agent (cluster id `id`) in-process: writes a remotes file for each of
/// `peers` (name, gRPC address) with `local`'s client certificate, next to those written
/// before, and appends `extra` to its config; its links retry within 300 ms.
pub async fn start_agent(
    pki: &MeshPki,
    local: &str,
    id: u32,
    peers: &[(&str, SocketAddr)],
    extra: &str,
) -> fleetmesh::agent::Agent {
    use fleetmesh::agent::{Agent, AgentConfig};
    use fleetmesh::remote::LinkSettings;
    let client = pki.client_files(local);
    for (name, addr) in peers {
        pki.peer_config(name, *addr, &client);
    }
    let text = format!(
        "cluster: {{name: {local}, id: {id}}}\nremotesDir: {:?}\napi: {{listen: \"127.0.0.1:0\"}}\n{extra}",
        pki.dir().join("remotes")
    );
    let mut config = AgentConfig::parse(&text, &pki.dir().join("agent.yaml")).unwrap();
    config.link = LinkSettings {
        backoff_max: AGENT_BACKOFF_MAX,
        ..LinkSettings::default()
    };
    Agent::start(config).await.unwrap()
}

/// Starts the real apiserver of `name` on the embedded store with `web.yaml` holding
/// `manifests` (when given), gRPC and health on free ports, and waits until it synced;
/// returns it and its manifest directory.
pub async fn start_manifest_member(
    pki: &MeshPki,
    name: &str,
    id: u32,
    manifests: Option<&str>,
) -> (fleetmesh::apiserver::Apiserver, PathBuf) {
    start_manifest_member_with(pki, name, id, manifests, "").await
}

/// [`start_manifest_member`] with `extra` (YAML lines) added to its config.
pub async fn start_manifest_member_with(
    pki: &MeshPki,
    name: &str,
    id: u32,
    manifests: Option<&str>,
    extra: &str,
) -> (fleetmesh::apiserver::Apiserver, PathBuf) {
    use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
    let dir = pki.dir().join(name);
    let manifests_dir = dir.join("manifests");
    std::fs::create_dir_all(&manifests_dir).unwrap();
    if let Some(text) = manifests {
        std::fs::write(manifests_dir.join("web.yaml"), text).unwrap();
    }
    let tls = pki.server_files(name);
    let text = format!(
        "cluster: {{name: {name}, id: {id}}}\nstore: {{kind: memory}}\nsource: {{manifests: {manifests_dir:?}}}\n\
         grpc:\n  listen: \"127.0.0.1:0\"\n  tls: {{ca: {:?}, cert: {:?}, key: {:?}}}\n\
         health: {{listen: \"127.0.0.1:0\"}}\n{extra}",
        tls.ca, tls.cert, tls.key
    );
    let config = ApiserverConfig::parse(&text, &dir.join("apiserver.yaml")).unwrap();
    let mut apiserver = Apiserver::start(config).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), apiserver.synced())
        .await
        .unwrap()
        .unwrap();
    (apiserver, manifests_dir)
}
