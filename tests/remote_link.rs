//! The agent's link to a peer against a real peer apiserver (embedded store → state
//! watch → watch cache → gRPC over mTLS on 127.0.0.1): full sync, resume across a peer
//! restart, full resync after the peer's store was emptied, validation of who the peer
//! is and of what it sends, and precise failure reasons.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fleetmesh::grpc::AllowedPeers;
use fleetmesh::mesh::{Counts, MeshView, StalePolicy};
use fleetmesh::model::{Cluster, IdMode, Resource};
use fleetmesh::remote::{IdRegistry, LinkSettings, PeerLink, PeerStatus, SharedView, spawn_link};
use support::mesh::*;
use tokio::sync::watch;

/// How long a test waits for a link to reach a state before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// Fast retries: the tests restart peers and fix conflicts, and wait for the link.
fn mk_settings() -> LinkSettings {
    LinkSettings {
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..LinkSettings::default()
    }
}

fn mk_local() -> Cluster {
    mk_cluster("local", 1)
}

fn mk_view(local: &Cluster) -> SharedView {
    Arc::new(parking_lot::RwLock::new(MeshView::new(
        local.clone(),
        StalePolicy::default(),
    )))
}

/// The agent side of one test: the local cluster, its view, its id registry.
struct Agent {
    local: Cluster,
    view: SharedView,
    ids: IdRegistry,
}

impl Agent {
    fn new() -> Self {
        let local = mk_local();
        Self {
            view: mk_view(&local),
            ids: IdRegistry::new(&local),
            local,
        }
    }

    /// A link to the peer `name` at `server`, with the agent's client certificate.
    fn link(&self, pki: &MeshPki, name: &str, server: &PeerServer) -> PeerLink {
        let client = pki.client_files(self.local.name.as_str());
        let config = pki.peer_config(name, server.addr, &client);
        spawn_link(
            config,
            self.local.clone(),
            self.view.clone(),
            self.ids.clone(),
            mk_settings(),
        )
    }

    fn counts(&self, cluster: &Cluster) -> Counts {
        self.view.read().counts(&cluster.name).unwrap_or_default()
    }

    /// The endpoint IPs the view holds from `cluster`, out of `candidates`.
    fn held_ips(&self, cluster: &Cluster, candidates: &[Resource]) -> BTreeSet<String> {
        let view = self.view.read();
        candidates
            .iter()
            .filter_map(|r| match r {
                Resource::Endpoint(e) => Some(e.prefix.addr()),
                _ => None,
            })
            .filter(|ip| view.lookup(*ip).is_some_and(|e| e.cluster == cluster.name))
            .map(|ip| ip.to_string())
            .collect()
    }
}

/// The endpoint IPs of `state`.
fn ips(state: &[Resource]) -> BTreeSet<String> {
    state
        .iter()
        .filter_map(|r| match r {
            Resource::Endpoint(e) => Some(e.prefix.addr().to_string()),
            _ => None,
        })
        .collect()
}

/// Waits until the status satisfies `done`; fails with the last status otherwise.
async fn wait_for(
    rx: &mut watch::Receiver<PeerStatus>,
    what: &str,
    done: impl FnMut(&PeerStatus) -> bool,
) -> PeerStatus {
    let waited = tokio::time::timeout(PATIENCE, rx.wait_for(done))
        .await
        .map(|status| status.unwrap().clone());
    match waited {
        Ok(status) => status,
        Err(_) => panic!("link never became {what}: {:#?}", *rx.borrow()),
    }
}

/// Waits for a failure whose reason contains `expected`; the link must not be ready.
async fn wait_for_failure(rx: &mut watch::Receiver<PeerStatus>, expected: &str) -> PeerStatus {
    let status = wait_for(rx, &format!("failed with {expected:?}"), |s| {
        s.last_failure
            .as_ref()
            .is_some_and(|f| f.reason.contains(expected))
    })
    .await;
    assert!(!status.ready, "{status:#?}");
    status
}

async fn start_peer(pki: &MeshPki, cluster: &Cluster, state: &[Resource]) -> PeerServer {
    let store = mk_store(cluster, state).await;
    let tls = pki.server_files(cluster.name.as_str());
    PeerServer::start(cluster.clone(), store, tls, AllowedPeers::Any, 0).await
}

fn expected_counts(endpoints: usize) -> Counts {
    Counts {
        nodes: 1,
        endpoints,
        identities: 2,
        services: 0,
        service_exports: 0,
    }
}

#[tokio::test]
async fn a_link_syncs_the_peers_full_state_into_the_view() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c2 = mk_cluster("c2", 2);
    let state = mk_state(&c2, 600);
    let server = start_peer(&pki, &c2, &state).await;

    let link = agent.link(&pki, "c2", &server);
    let mut rx = link.status_rx();
    let status = wait_for(&mut rx, "ready", |s| s.ready).await;
    assert!(status.connected && status.synced.all() && !status.local);
    assert_eq!(status.cluster, "c2");
    assert_eq!(status.cluster_id, Some(2));
    assert_eq!(status.counts, expected_counts(600));
    assert_eq!(status.counts, agent.counts(&c2));
    assert_eq!(agent.held_ips(&c2, &state), ips(&state));
    assert_eq!((status.full_resyncs, status.resumes), (0, 0));
    assert_eq!(status.refused_events, 0);
    assert!(status.last_failure.is_none(), "{status:#?}");
    assert!(status.epoch.is_some() && status.revision > 0);
    assert!(status.last_event_unix_ms.is_some());
    let not_after = status
        .peer_cert_not_after
        .expect("the server certificate's expiry");
    assert!(
        time::OffsetDateTime::parse(&not_after, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "{not_after}"
    );

    // Deltas follow.
    let added = mk_endpoint(&c2, "10.2.9.9", 1);
    put(&server.store, &c2, &added).await;
    wait_for(&mut rx, "updated", |s| s.counts.endpoints == 601).await;
    delete(&server.store, &c2, &state[0].key()).await;
    wait_for(&mut rx, "updated", |s| s.counts.nodes == 0).await;

    link.stop().await;
    let status = rx.borrow().clone();
    assert!(!status.connected && !status.ready);
    // Stopping keeps what the link put in the view: draining is the caller's decision.
    assert_eq!(agent.counts(&c2).endpoints, 601);
    server.stop().await;
}

#[tokio::test]
async fn a_peer_restart_with_its_store_resumes_without_a_full_resync() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c2 = mk_cluster("c2", 2);
    let state = mk_state(&c2, 50);
    let server = start_peer(&pki, &c2, &state).await;
    let link = agent.link(&pki, "c2", &server);
    let mut rx = link.status_rx();
    let before = wait_for(&mut rx, "ready", |s| s.ready).await;

    let (store, port) = server.stop().await;
    let down = wait_for(&mut rx, "disconnected", |s| !s.connected).await;
    assert!(!down.ready);
    assert!(down.last_failure.is_some(), "{down:#?}");
    // Nothing is deleted because the peer went away.
    assert_eq!(agent.counts(&c2), expected_counts(50));

    let tls = pki.server_files("c2");
    let server = PeerServer::start(c2.clone(), store, tls, AllowedPeers::Any, port).await;
    let after = wait_for(&mut rx, "ready again", |s| s.ready).await;
    assert_eq!(after.resumes, 1, "{after:#?}");
    assert_eq!(after.full_resyncs, 0, "{after:#?}");
    assert!(after.reconnects >= 1);
    assert_eq!(after.epoch, before.epoch);
    assert_eq!(agent.counts(&c2), expected_counts(50));

    // The resumed stream carries the deltas.
    put(&server.store, &c2, &mk_endpoint(&c2, "10.2.7.7", 2)).await;
    let status = wait_for(&mut rx, "updated", |s| s.counts.endpoints == 51).await;
    assert_eq!(status.resumes, 1);

    link.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_restart_with_an_emptied_store_resyncs_and_never_drops_unchanged_entries() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c2 = mk_cluster("c2", 2);
    let state = mk_state(&c2, 400);
    let server = start_peer(&pki, &c2, &state).await;
    let link = agent.link(&pki, "c2", &server);
    let mut rx = link.status_rx();
    let before = wait_for(&mut rx, "ready", |s| s.ready).await;

    // While the peer restarts with a new store, watch the entries it keeps: they must
    // be in the view at every moment.
    let kept_ip = "10.2.0.1".parse().unwrap();
    let sampling = Arc::new(AtomicBool::new(true));
    let (misses, samples) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (view, sampling) = (agent.view.clone(), sampling.clone());
        let (misses, samples, c2) = (misses.clone(), samples.clone(), c2.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                {
                    let view = view.read();
                    let node_held = view.counts(&c2.name).is_some_and(|c| c.nodes == 1);
                    if view.lookup(kept_ip).is_none() || !node_held {
                        misses.fetch_add(1, Ordering::Relaxed);
                    }
                }
                samples.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };

    let (_, port) = server.stop().await;
    wait_for(&mut rx, "disconnected", |s| !s.connected).await;
    // The new store: the last endpoint is gone, one is new, the rest is unchanged.
    let mut new_state = state.clone();
    new_state.pop();
    new_state.push(mk_endpoint(&c2, "10.2.200.1", 2));
    let store = mk_store(&c2, &new_state).await;
    let tls = pki.server_files("c2");
    let server = PeerServer::start(c2.clone(), store, tls, AllowedPeers::Any, port).await;

    let after = wait_for(&mut rx, "ready again", |s| s.ready).await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_ne!(after.epoch, before.epoch);
    assert_eq!(after.full_resyncs, 1, "{after:#?}");
    assert_eq!(after.resumes, 0, "{after:#?}");
    assert!(samples.load(Ordering::Relaxed) > 0);
    assert_eq!(
        misses.load(Ordering::Relaxed),
        0,
        "an unchanged entry left the view"
    );
    // Afterwards the view holds exactly the peer's state.
    assert_eq!(agent.counts(&c2), expected_counts(400));
    let all: Vec<Resource> = state.iter().chain(new_state.last()).cloned().collect();
    assert_eq!(agent.held_ips(&c2, &all), ips(&new_state));

    link.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_peer_whose_id_changed_is_drained_and_read_again() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c2 = mk_cluster("c2", 2);
    let server = start_peer(&pki, &c2, &mk_state(&c2, 5)).await;
    let link = agent.link(&pki, "c2", &server);
    let mut rx = link.status_rx();
    wait_for(&mut rx, "ready", |s| s.ready).await;
    assert_eq!(agent.ids.holder(c2.id), Some(c2.name.clone()));

    // The peer comes back as id 3, with its state re-exported under that id.
    let (_, port) = server.stop().await;
    wait_for(&mut rx, "disconnected", |s| !s.connected).await;
    let c2_as_3 = mk_cluster("c2", 3);
    let state = mk_state(&c2_as_3, 4);
    let store = mk_store(&c2_as_3, &state).await;
    let tls = pki.server_files("c2");
    let server = PeerServer::start(c2_as_3.clone(), store, tls, AllowedPeers::Any, port).await;

    let status = wait_for(&mut rx, "ready as id 3", |s| {
        s.ready && s.cluster_id == Some(3)
    })
    .await;
    assert_eq!(agent.ids.holder(c2.id), None);
    assert_eq!(agent.ids.holder(c2_as_3.id), Some(c2.name.clone()));
    assert_eq!(status.counts, expected_counts(4));
    assert_eq!(agent.held_ips(&c2_as_3, &state), ips(&state));
    // Nothing of the old id is left: its identities and endpoints are gone.
    let old_identity = fleetmesh::model::IdentityId::new(c2.identity_range().first() + 1).unwrap();
    assert!(agent.view.read().identity(old_identity).is_none());
    assert!(
        agent
            .view
            .read()
            .lookup("10.2.0.1".parse().unwrap())
            .is_none()
    );

    link.stop().await;
    assert_eq!(agent.ids.holder(c2_as_3.id), None, "stop releases the id");
    server.stop().await;
}

#[tokio::test]
async fn a_duplicate_cluster_id_is_refused_until_the_other_peer_is_gone() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c2 = mk_cluster("c2", 2);
    let c3 = mk_cluster("c3", 2);
    let s2 = start_peer(&pki, &c2, &mk_state(&c2, 3)).await;
    let s3 = start_peer(&pki, &c3, &mk_state(&c3, 3)).await;

    let l2 = agent.link(&pki, "c2", &s2);
    wait_for(&mut l2.status_rx(), "ready", |s| s.ready).await;
    let l3 = agent.link(&pki, "c3", &s3);
    let mut rx3 = l3.status_rx();
    let refused = wait_for_failure(
        &mut rx3,
        "peer \"c3\" cannot be accepted: cluster id 2 is already used by peer \"c2\"",
    )
    .await;
    assert!(!refused.connected);
    assert_eq!(agent.view.read().counts(&c3.name), None);
    // Retried, and refused each time.
    wait_for(&mut rx3, "retried", |s| s.failures >= 2).await;
    assert!(!rx3.borrow().ready);

    // Once c2's link is stopped, its id is free and c3 gets in on a retry.
    l2.stop().await;
    let status = wait_for(&mut rx3, "ready", |s| s.ready).await;
    assert_eq!(status.cluster_id, Some(2));
    assert_eq!(agent.counts(&c3).endpoints, 3);

    l3.stop().await;
    s2.stop().await;
    s3.stop().await;
}

#[tokio::test]
async fn a_peer_claiming_the_local_id_is_refused() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c4 = mk_cluster("c4", 1);
    let server = start_peer(&pki, &c4, &mk_state(&c4, 2)).await;
    let link = agent.link(&pki, "c4", &server);
    wait_for_failure(
        &mut link.status_rx(),
        "peer \"c4\" cannot be accepted: cluster id 1 is the local cluster's (\"local\")",
    )
    .await;
    assert_eq!(agent.view.read().counts(&c4.name), None);
    link.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_server_certificate_for_another_cluster_is_refused() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c3 = mk_cluster("c3", 3);
    let server = start_peer(&pki, &c3, &mk_state(&c3, 2)).await;
    // The file says c2, the address is c3's apiserver.
    let link = agent.link(&pki, "c2", &server);
    let status = wait_for_failure(
        &mut link.status_rx(),
        "the server's certificate names cluster \"c3\", not \"c2\"",
    )
    .await;
    let reason = status.last_failure.unwrap().reason;
    assert!(reason.starts_with("TLS handshake failed: "), "{reason}");
    assert_eq!(agent.view.read().counts(&c3.name), None);
    link.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn an_apiserver_announcing_another_name_than_its_certificate_is_refused() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c3 = mk_cluster("c3", 3);
    // A misconfigured apiserver: certificate for c2, but it serves as c3.
    let store = mk_store(&c3, &mk_state(&c3, 2)).await;
    let tls = pki.server_files("c2");
    let server = PeerServer::start(c3.clone(), store, tls, AllowedPeers::Any, 0).await;
    let link = agent.link(&pki, "c2", &server);
    wait_for_failure(
        &mut link.status_rx(),
        "says it is cluster \"c3\", but the peer file is \"c2\"",
    )
    .await;
    assert!(
        agent
            .view
            .read()
            .clusters()
            .iter()
            .all(|c| c.as_str() == "local")
    );
    link.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn another_id_mode_is_refused() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c5 = mk_cluster_in("c5", 300, IdMode::Extended);
    let server = start_peer(&pki, &c5, &[mk_node(&c5, "node-1")]).await;
    let link = agent.link(&pki, "c5", &server);
    wait_for_failure(
        &mut link.status_rx(),
        "peer \"c5\" uses max-connected-clusters 511, this mesh 255",
    )
    .await;
    link.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn an_identity_outside_the_peers_range_is_refused_and_counted() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c2 = mk_cluster("c2", 2);
    let c9 = mk_cluster("c9", 9);
    let mut state = mk_state(&c2, 3);
    // An ipcache entry of c2's that claims an identity of c9's range.
    state.push(mk_endpoint(&c9, "10.2.66.66", 1));
    let server = start_peer(&pki, &c2, &state).await;
    let link = agent.link(&pki, "c2", &server);
    let mut rx = link.status_rx();

    let status = wait_for(&mut rx, "ready", |s| s.ready).await;
    assert_eq!(status.refused_events, 1, "{status:#?}");
    assert_eq!(
        status.refused_by_reason,
        [("invalid_value".to_string(), 1)].into(),
        "counted by reason for the metrics"
    );
    let reason = status.last_failure.unwrap().reason;
    assert!(
        reason.contains("endpoint.identity") && reason.contains("outside cluster 2's range"),
        "{reason}"
    );
    assert_eq!(agent.counts(&c2).endpoints, 3);
    assert!(
        agent
            .view
            .read()
            .lookup("10.2.66.66".parse().unwrap())
            .is_none()
    );

    // Refused as a delta too, and the rest of the state is untouched.
    put(&server.store, &c2, &mk_endpoint(&c9, "10.2.66.67", 1)).await;
    let status = wait_for(&mut rx, "refusing again", |s| s.refused_events == 2).await;
    assert!(status.ready);
    assert_eq!(agent.counts(&c2).endpoints, 3);

    link.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_peer_reads_as_a_connect_failure() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c2 = mk_cluster("c2", 2);
    // A port nothing listens on any more.
    let server = start_peer(&pki, &c2, &[]).await;
    let client = pki.client_files("local");
    let config = pki.peer_config("c2", server.addr, &client);
    server.stop().await;
    let link = spawn_link(
        config,
        agent.local.clone(),
        agent.view.clone(),
        agent.ids.clone(),
        mk_settings(),
    );
    let status = wait_for_failure(&mut link.status_rx(), "connect failed: 127.0.0.1:").await;
    assert!(!status.connected);
    link.stop().await;
}

#[tokio::test]
async fn a_peer_that_denies_this_cluster_reads_as_permission_denied() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c2 = mk_cluster("c2", 2);
    let store = mk_store(&c2, &mk_state(&c2, 1)).await;
    let allowed = AllowedPeers::Only([mk_name("hub")].into());
    let server = PeerServer::start(c2.clone(), store, pki.server_files("c2"), allowed, 0).await;
    let link = agent.link(&pki, "c2", &server);
    wait_for_failure(
        &mut link.status_rx(),
        "permission denied by c2: cluster \"local\" may not query cluster \"c2\"",
    )
    .await;
    link.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn an_untrusted_server_reads_as_a_tls_handshake_failure() {
    let pki = MeshPki::new();
    let other = MeshPki::new();
    let agent = Agent::new();
    let c2 = mk_cluster("c2", 2);
    let store = mk_store(&c2, &[]).await;
    let tls = other.server_files("c2");
    let server = PeerServer::start(c2.clone(), store, tls, AllowedPeers::Any, 0).await;
    let link = agent.link(&pki, "c2", &server);
    let status = wait_for_failure(&mut link.status_rx(), "TLS handshake failed: ").await;
    let reason = status.last_failure.unwrap().reason;
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    link.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn the_local_link_feeds_the_local_cluster() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let local = agent.local.clone();
    let server = start_peer(&pki, &local, &mk_state(&local, 4)).await;
    let link = agent.link(&pki, "local", &server);
    let status = wait_for(&mut link.status_rx(), "ready", |s| s.ready).await;
    assert!(status.local);
    assert_eq!(status.cluster_id, Some(1));
    assert_eq!(agent.counts(&local), expected_counts(4));
    // The local cluster's id is never a peer's reservation.
    assert_eq!(agent.ids.holder(local.id), None);
    link.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_server_that_does_not_trust_this_agent_reads_as_a_tls_handshake_failure() {
    let pki = MeshPki::new();
    let other = MeshPki::new();
    let agent = Agent::new();
    let c2 = mk_cluster("c2", 2);
    let store = mk_store(&c2, &[]).await;
    // The server trusts only its own CA; the agent's certificate is from another one.
    let tls = other.server_files("c2");
    let server = PeerServer::start(c2.clone(), store, tls.clone(), AllowedPeers::Any, 0).await;
    let mut config = pki.peer_config("c2", server.addr, &pki.client_files("local"));
    config.tls.ca = tls.ca;
    let link = spawn_link(
        config,
        agent.local.clone(),
        agent.view.clone(),
        agent.ids.clone(),
        mk_settings(),
    );
    let status = wait_for_failure(&mut link.status_rx(), "TLS handshake failed: 127.0.0.1:").await;
    let reason = status.last_failure.unwrap().reason;
    assert!(
        reason.contains("the peer ended the TLS session: received fatal alert: UnknownCA"),
        "{reason}"
    );
    link.stop().await;
    server.stop().await;
}

/// A ClusterSetIP export of `shop/web` by `cluster`, every field set.
fn mk_service_export(cluster: &Cluster) -> fleetmesh::model::ServiceExport {
    use fleetmesh::model::{
        ExportPort, ExportType, InternalTrafficPolicy, IpFamily, Protocol, SessionAffinity,
        TrafficDistribution,
    };
    fleetmesh::model::ServiceExport {
        cluster: cluster.name.clone(),
        name: "shop/web".parse().unwrap(),
        export_created_unix: 1_768_046_400,
        ports: vec![ExportPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            app_protocol: Some("http".into()),
            port: 80,
        }],
        export_type: ExportType::ClusterSetIp,
        session_affinity: SessionAffinity::ClientIp,
        session_affinity_timeout_seconds: Some(600),
        ip_families: vec![IpFamily::V4],
        labels: [("tier".to_string(), "front".to_string())].into(),
        annotations: Default::default(),
        internal_traffic_policy: Some(InternalTrafficPolicy::Cluster),
        traffic_distribution: Some(TrafficDistribution::PreferClose),
    }
}

#[tokio::test]
async fn a_peers_service_exports_reach_the_view_and_its_status() {
    let pki = MeshPki::new();
    let agent = Agent::new();
    let c2 = mk_cluster("c2", 2);
    let export = mk_service_export(&c2);
    let mut state = mk_state(&c2, 5);
    state.push(Resource::ServiceExport(export.clone()));
    let server = start_peer(&pki, &c2, &state).await;

    let link = agent.link(&pki, "c2", &server);
    let mut rx = link.status_rx();
    let status = wait_for(&mut rx, "ready", |s| s.ready).await;
    assert!(status.synced.service_exports, "{status:#?}");
    assert_eq!(status.counts.service_exports, 1);
    assert_eq!(status.refused_events, 0);
    let held = agent
        .view
        .read()
        .service_exports(&c2.name)
        .cloned()
        .unwrap();
    assert_eq!(held.values().collect::<Vec<_>>(), [&export]);

    // Withdrawn at the peer: withdrawn from the view.
    delete(
        &server.store,
        &c2,
        &fleetmesh::model::ResourceKey::ServiceExport(export.name.clone()),
    )
    .await;
    wait_for(&mut rx, "the export withdrawn", |s| {
        s.counts.service_exports == 0
    })
    .await;
    assert!(
        agent
            .view
            .read()
            .service_exports(&c2.name)
            .unwrap()
            .is_empty()
    );
}
