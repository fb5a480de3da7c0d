//! Whole meshes end to end: real apiservers (one on a real etcd) exporting manifests and
//! serving them over mutual TLS, and a real agent merging them — convergence, affinity
//! with failover and fail-back, topology refusals, and refused certificates.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use fleetmesh::agent::Agent;
use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use fleetmesh::certs::files::write_pem_files;
use fleetmesh::certs::{Ca, LeafRole, Validity};
use fleetmesh::mesh::{SelectionReason, ServiceView};
use fleetmesh::model::ServiceName;
use support::mesh::{MeshPki, mk_name};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A global service `web/<name>` with the given backends (ip, ready).
fn service_yaml(name: &str, affinity: Option<&str>, backends: &[(&str, bool)]) -> String {
    let annotations: Vec<(&str, &str)> = affinity
        .map(|a| ("service.cilium.io/affinity", a))
        .into_iter()
        .collect();
    support::mesh::global_service_yaml(name, &annotations, backends)
}

/// c2's services in the convergence test: `api` with both backends ready or both not,
/// `all` with one ready backend and one not.
fn c2_web(api_ready: bool) -> String {
    service_yaml(
        "api",
        None,
        &[("10.2.0.1", api_ready), ("10.2.0.2", api_ready)],
    ) + "\n---\n"
        + &service_yaml("all", None, &[("10.2.0.3", true), ("10.2.0.4", false)])
}

struct Member {
    apiserver: Apiserver,
    manifests: std::path::PathBuf,
}

/// Starts `name`'s apiserver over `manifests` (file name → YAML); `store` is a YAML
/// store block, `allowed` an optional allowedPeers list.
async fn start_member(
    pki: &MeshPki,
    name: &str,
    id: u32,
    store: &str,
    allowed: Option<&str>,
    manifests: &[(&str, String)],
) -> Member {
    let dir = pki.dir().join(name);
    let manifests_dir = dir.join("manifests");
    std::fs::create_dir_all(&manifests_dir).unwrap();
    for (file, text) in manifests {
        std::fs::write(manifests_dir.join(file), text).unwrap();
    }
    let tls = pki.server_files(name);
    let allowed = allowed
        .map(|a| format!("  allowedPeers: {a}\n"))
        .unwrap_or_default();
    let text = format!(
        "cluster: {{name: {name}, id: {id}}}\nstore: {store}\nsource: {{manifests: {manifests_dir:?}}}\n\
         grpc:\n  listen: \"127.0.0.1:0\"\n  tls: {{ca: {:?}, cert: {:?}, key: {:?}}}\n{allowed}\
         health: {{listen: \"127.0.0.1:0\"}}\n",
        tls.ca, tls.cert, tls.key
    );
    let config = ApiserverConfig::parse(&text, &dir.join("apiserver.yaml")).unwrap();
    let mut apiserver = Apiserver::start(config).await.unwrap();
    tokio::time::timeout(TIMEOUT, apiserver.synced())
        .await
        .unwrap()
        .unwrap();
    Member {
        apiserver,
        manifests: manifests_dir,
    }
}

/// Starts `local`'s agent with one remote file per member.
async fn start_agent(pki: &MeshPki, local: &str, id: u32, members: &[(&str, &Member)]) -> Agent {
    let peers: Vec<_> = members
        .iter()
        .map(|(name, member)| (*name, member.apiserver.grpc_addr.unwrap()))
        .collect();
    support::mesh::start_agent(pki, local, id, &peers, "").await
}

async fn wait_for(what: &str, done: impl FnMut() -> bool) {
    support::wait_until(what, TIMEOUT, done).await;
}

fn view_of(agent: &Agent, name: &str) -> Option<ServiceView> {
    let name: ServiceName = name.parse().unwrap();
    agent.view.read().service(&name, Instant::now())
}

/// (cluster, ip) of the selected backends, sorted.
fn selected(view: &ServiceView) -> Vec<(String, String)> {
    let mut out: Vec<_> = view
        .selected
        .iter()
        .map(|b| (b.cluster.to_string(), b.ip.to_string()))
        .collect();
    out.sort();
    out
}

fn pair(cluster: &str, ip: &str) -> (String, String) {
    (cluster.to_string(), ip.to_string())
}

#[tokio::test]
async fn three_clusters_converge_and_fail_over_by_affinity() {
    let etcd = support::etcd().await;
    let pki = MeshPki::new();
    let etcd_store = format!(
        "{{kind: etcd, etcd: {{endpoints: {:?}, namespace: {:?}}}}}",
        etcd.endpoints,
        support::unique_prefix()
    );
    // c1 (on etcd) prefers remote backends for `api` and uses every cluster for `all`;
    // c3 backs only `all`; `local-only` is not global in c2.
    let c1 = start_member(
        &pki,
        "c1",
        1,
        &etcd_store,
        None,
        &[(
            "web.yaml",
            service_yaml("api", Some("remote"), &[("10.1.0.1", true)])
                + "\n---\n"
                + &service_yaml("all", None, &[("10.1.0.2", true)]),
        )],
    )
    .await;
    let c2 = start_member(
        &pki,
        "c2",
        2,
        "{kind: memory}",
        None,
        &[("web.yaml", c2_web(true))],
    )
    .await;
    let c3 = start_member(
        &pki,
        "c3",
        3,
        "{kind: memory}",
        None,
        &[("web.yaml", service_yaml("all", None, &[("10.3.0.1", true)]))],
    )
    .await;
    let agent = start_agent(&pki, "c1", 1, &[("c1", &c1), ("c2", &c2), ("c3", &c3)]).await;
    wait_for("three ready links", || {
        let s = agent.statuses();
        s.len() == 3 && s.iter().all(|s| s.ready)
    })
    .await;

    // Affinity none: every ready backend of every cluster (c2's unready one is left out).
    let all = view_of(&agent, "web/all").unwrap();
    assert_eq!(all.reason, SelectionReason::AllReady);
    assert_eq!(
        selected(&all),
        [
            pair("c1", "10.1.0.2"),
            pair("c2", "10.2.0.3"),
            pair("c3", "10.3.0.1")
        ]
    );
    // Affinity remote: c2's backends while one is ready.
    let api = view_of(&agent, "web/api").unwrap();
    assert_eq!(api.reason, SelectionReason::RemoteReady);
    assert_eq!(
        selected(&api),
        [pair("c2", "10.2.0.1"), pair("c2", "10.2.0.2")]
    );

    // c2's api backends fail: failover to the local ones; an update replaces only c2's
    // backends of that service.
    std::fs::write(c2.manifests.join("web.yaml"), c2_web(false)).unwrap();
    wait_for("failover to c1", || {
        view_of(&agent, "web/api").is_some_and(|v| v.reason == SelectionReason::FailoverToLocal)
    })
    .await;
    assert_eq!(
        selected(&view_of(&agent, "web/api").unwrap()),
        [pair("c1", "10.1.0.1")]
    );
    assert_eq!(
        selected(&view_of(&agent, "web/all").unwrap()),
        selected(&all)
    );

    // They recover: fail-back to c2.
    std::fs::write(c2.manifests.join("web.yaml"), c2_web(true)).unwrap();
    wait_for("fail-back to c2", || {
        view_of(&agent, "web/api").is_some_and(|v| v.reason == SelectionReason::RemoteReady)
    })
    .await;

    // c3 stops exporting `all`: only its backends leave the merged service.
    std::fs::write(c3.manifests.join("web.yaml"), "").unwrap();
    wait_for("c3's backends to leave", || {
        view_of(&agent, "web/all")
            .is_some_and(|v| selected(&v) == [pair("c1", "10.1.0.2"), pair("c2", "10.2.0.3")])
    })
    .await;
}

#[tokio::test]
async fn a_non_shared_service_consumes_without_exporting_and_a_service_without_local_backends_gets_remote_ones()
 {
    let pki = MeshPki::new();
    let not_shared = service_yaml("db", None, &[("10.1.0.9", true)]).replace(
        "service.cilium.io/global: \"true\"",
        "service.cilium.io/global: \"true\"\n    service.cilium.io/shared: \"false\"",
    );
    let c1 = start_member(
        &pki,
        "c1",
        1,
        "{kind: memory}",
        None,
        &[
            ("db.yaml", not_shared.clone()),
            ("front.yaml", service_yaml("front", None, &[])),
        ],
    )
    .await;
    let c2 = start_member(
        &pki,
        "c2",
        2,
        "{kind: memory}",
        None,
        &[
            ("db.yaml", not_shared.replace("10.1.0.9", "10.2.0.9")),
            (
                "front.yaml",
                service_yaml("front", None, &[("10.2.0.1", true)]),
            ),
        ],
    )
    .await;
    let agent = start_agent(&pki, "c1", 1, &[("c1", &c1), ("c2", &c2)]).await;
    wait_for("two ready links", || {
        let s = agent.statuses();
        s.len() == 2 && s.iter().all(|s| s.ready)
    })
    .await;
    // c2 does not share db: c1 sees only its own backend.
    assert_eq!(
        selected(&view_of(&agent, "web/db").unwrap()),
        [pair("c1", "10.1.0.9")]
    );
    // c1's front has no backend of its own and still gets c2's.
    assert_eq!(
        selected(&view_of(&agent, "web/front").unwrap()),
        [pair("c2", "10.2.0.1")]
    );
}

#[tokio::test]
async fn a_peer_the_topology_does_not_allow_gets_permission_denied_and_nothing() {
    let pki = MeshPki::new();
    let hub = start_member(
        &pki,
        "hub",
        1,
        "{kind: memory}",
        Some("[spoke1]"),
        &[("web.yaml", service_yaml("api", None, &[("10.1.0.1", true)]))],
    )
    .await;
    let agent = start_agent(&pki, "spoke2", 3, &[("hub", &hub)]).await;
    wait_for("a refusal", || {
        agent
            .statuses()
            .first()
            .is_some_and(|s| s.last_failure.is_some())
    })
    .await;
    let status = &agent.statuses()[0];
    assert!(!status.ready && !status.connected);
    let reason = &status.last_failure.as_ref().unwrap().reason;
    assert!(reason.contains("permission denied"), "{reason}");
    assert!(reason.contains("spoke2"), "{reason}");
    assert_eq!(agent.view.read().counts(&mk_name("hub")), None);
    assert!(
        hub.apiserver
            .grpc_stats
            .as_ref()
            .unwrap()
            .permission_denied()
            >= 1
    );
}

/// Writes a client certificate for `cluster` signed by `ca` with `validity` into `dir`.
fn client_files_from(
    pki: &MeshPki,
    ca: &Ca,
    name: &str,
    validity: Validity,
) -> fleetmesh::tls::TlsFiles {
    let leaf = ca
        .issue(&mk_name("intruder"), LeafRole::Client, validity)
        .unwrap();
    let files = write_pem_files(&pki.dir().join("bad"), name, &leaf).unwrap();
    fleetmesh::tls::TlsFiles {
        cert: files.cert,
        key: files.key,
        ca: pki.server_files("unused").ca,
    }
}

#[tokio::test]
async fn untrusted_or_expired_certificates_get_nothing_and_are_counted() {
    let pki = MeshPki::new();
    let member = start_member(
        &pki,
        "c1",
        1,
        "{kind: memory}",
        None,
        &[("web.yaml", service_yaml("api", None, &[("10.1.0.1", true)]))],
    )
    .await;
    let addr = member.apiserver.grpc_addr.unwrap();
    let handshakes = member.apiserver.handshake_stats.clone().unwrap();

    let other_ca = Ca::generate("another CA", Duration::from_secs(3600)).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let cases = [
        (
            "another-ca",
            client_files_from(
                &pki,
                &other_ca,
                "other",
                Validity::starting_now(Duration::from_secs(3600)).unwrap(),
            ),
        ),
        (
            "expired",
            client_files_from(
                &pki,
                pki.ca(),
                "expired",
                Validity::new(now - time::Duration::days(2), now - time::Duration::days(1))
                    .unwrap(),
            ),
        ),
    ];
    for (what, files) in cases {
        let before = handshakes.refused();
        let config = fleetmesh::tls::load_client_config(&files).unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(config);
        let channel =
            fleetmesh::tls::client::channel(&addr.to_string(), Some("localhost"), rx).unwrap();
        let mut client = fleetmesh::proto::v1::mesh_client::MeshClient::new(channel);
        let answer = client.info(fleetmesh::proto::v1::InfoRequest {}).await;
        assert!(answer.is_err(), "{what}: a client got an answer");
        wait_for("the refusal to be counted", || {
            handshakes.refused() > before
        })
        .await;
    }

    // A client that trusts the server but presents no certificate at all.
    let before = handshakes.refused();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(pem_der(
            pki.ca().cert_pem(),
        )))
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let (_tx, rx) = tokio::sync::watch::channel(std::sync::Arc::new(config));
    let channel =
        fleetmesh::tls::client::channel(&addr.to_string(), Some("localhost"), rx).unwrap();
    let mut client = fleetmesh::proto::v1::mesh_client::MeshClient::new(channel);
    assert!(
        client
            .info(fleetmesh::proto::v1::InfoRequest {})
            .await
            .is_err()
    );
    wait_for("the certificate-less refusal to be counted", || {
        handshakes.refused() > before
    })
    .await;
}

/// The DER bytes of the one certificate in `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn watchers_get_no_synced_marker_before_the_export_has_synced() {
    let pki = MeshPki::new();
    // The manifest directory does not exist yet: the source has no initial list, so the
    // export cannot sync and the store is empty.
    let dir = pki.dir().join("late");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let tls = pki.server_files("late");
    let text = format!(
        "cluster: {{name: late, id: 2}}\nsource: {{manifests: {manifests:?}}}\n\
         grpc:\n  listen: \"127.0.0.1:0\"\n  tls: {{ca: {:?}, cert: {:?}, key: {:?}}}\n\
         health: {{listen: \"127.0.0.1:0\"}}\n",
        tls.ca, tls.cert, tls.key
    );
    let config = ApiserverConfig::parse(&text, &dir.join("apiserver.yaml")).unwrap();
    let apiserver = Apiserver::start(config).await.unwrap();
    let member = Member {
        apiserver,
        manifests: manifests.clone(),
    };
    let agent = start_agent(&pki, "c1", 1, &[("late", &member)]).await;
    wait_for("the link to connect", || {
        agent.statuses().first().is_some_and(|s| s.connected)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = &agent.statuses()[0];
    assert!(!status.ready, "synced before the export: {status:?}");
    let held = agent
        .view
        .read()
        .counts(&mk_name("late"))
        .unwrap_or_default();
    assert_eq!(held, fleetmesh::mesh::Counts::default());

    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("web.yaml"),
        service_yaml("api", None, &[("10.2.0.1", true)]),
    )
    .unwrap();
    wait_for("the link to sync", || {
        agent.statuses().first().is_some_and(|s| s.ready)
    })
    .await;
    assert_eq!(
        selected(&view_of(&agent, "web/api").unwrap()),
        [pair("late", "10.2.0.1")]
    );
}
