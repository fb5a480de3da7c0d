//! The certificate lifecycle on a running mesh, without restarting anything: leaf
//! rotation and a full CA rollover under a steady stream of changes (with the status
//! warning about a peer on the retiring CA), the Kubernetes Secret-volume symlink swap
//! picked up by a running apiserver (bad material refused), and an agent link using a
//! renewed client certificate on its next connection.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fleetmesh::agent::{Agent, AgentConfig};
use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use fleetmesh::certs::Ca;
use fleetmesh::certs::files::{write_ca, write_pem_files};
use fleetmesh::certs::rotate::{RenewPolicy, RolloverOptions, retire_ca, rotate_ca, rotate_leaves};
use fleetmesh::mesh::PeerStatus;
use fleetmesh::model::ServiceName;
use fleetmesh::proto::v1;
use fleetmesh::proto::v1::mesh_client::MeshClient;
use fleetmesh::remote::LinkSettings;
use fleetmesh::tls::TlsFiles;
use fleetmesh::tls::client::{ServerCert, channel_to_cluster};
use support::mesh::mk_name;

const TIMEOUT: Duration = Duration::from_secs(10);
const DAY: Duration = Duration::from_secs(86_400);
/// The reload period configured everywhere (`tlsReloadSeconds: 1`) and how long to wait
/// for every member to have reloaded after a file change.
const RELOADED: Duration = Duration::from_millis(2_500);
/// How often the churning writer changes the manifest.
const CHURN_EVERY: Duration = Duration::from_millis(50);

/// A global service `web/churn` whose one backend's IP encodes `n`.
fn churn_yaml(n: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: churn\n  namespace: web\n  annotations:\n    service.cilium.io/global: \"true\"\nspec:\n  ports: [{{name: http, port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: churn-1\n  namespace: web\n  labels: {{kubernetes.io/service-name: churn}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n- addresses: [{}]\n  conditions: {{ready: true}}\n",
        ip_of(n)
    )
}

fn ip_of(n: u32) -> String {
    format!("10.200.{}.{}", n / 250, n % 250 + 1)
}

fn counter_of(ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            (a == 10 && b == 200).then(|| u32::from(c) * 250 + u32::from(d) - 1)
        }
        IpAddr::V6(_) => None,
    }
}

/// Writes `text` into `dir/file` through a rename from outside the directory, so the
/// manifest source never reads half a file.
fn write_manifest(dir: &Path, file: &str, text: &str) {
    let temp = dir.parent().unwrap().join(format!("{file}.tmp"));
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, dir.join(file)).unwrap();
}

/// One member's certificates as `fleetmesh fleet plan` lays them out: `<dir>/server.*`,
/// `<dir>/client.*`, the bundle `<dir>/ca.crt`.
fn mk_member_certs(dir: &Path, ca: &Ca, name: &str) {
    let ips = ["127.0.0.1".parse().unwrap()];
    let server = ca
        .issue_server(&mk_name(name), &["localhost".to_string()], &ips, DAY)
        .unwrap();
    write_pem_files(dir, "server", &server).unwrap();
    let client = ca.issue_client(&mk_name(name), DAY).unwrap();
    write_pem_files(dir, "client", &client).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
}

fn files(dir: &Path, leaf: &str) -> TlsFiles {
    TlsFiles {
        cert: dir.join(format!("{leaf}.crt")),
        key: dir.join(format!("{leaf}.key")),
        ca: dir.join("ca.crt"),
    }
}

/// Starts `name`'s apiserver over its manifests, reloading its TLS files every second.
async fn start_apiserver(dir: &Path, name: &str, id: u32, tls: &TlsFiles) -> Apiserver {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let text = format!(
        "cluster: {{name: {name}, id: {id}}}\nsource: {{manifests: {manifests:?}}}\n\
         grpc:\n  listen: \"127.0.0.1:0\"\n  tls: {{ca: {:?}, cert: {:?}, key: {:?}}}\n  tlsReloadSeconds: 1\n\
         health: {{listen: \"127.0.0.1:0\"}}\n",
        tls.ca, tls.cert, tls.key
    );
    let config = ApiserverConfig::parse(&text, &dir.join("apiserver.yaml")).unwrap();
    let mut apiserver = Apiserver::start(config).await.unwrap();
    tokio::time::timeout(TIMEOUT, apiserver.synced())
        .await
        .unwrap()
        .unwrap();
    apiserver
}

/// Starts `local`'s agent watching `peer` at `addr` with the member's client files.
async fn start_agent(dir: &Path, local: &str, id: u32, peer: &str, addr: SocketAddr) -> Agent {
    let remotes = dir.join("remotes");
    std::fs::create_dir_all(&remotes).unwrap();
    std::fs::write(
        remotes.join(format!("{peer}.yaml")),
        format!(
            "address: \"{addr}\"\ntls: {{ca: ../ca.crt, cert: ../client.crt, key: ../client.key}}\n"
        ),
    )
    .unwrap();
    let text = format!(
        "cluster: {{name: {local}, id: {id}}}\nremotesDir: remotes\napi: {{listen: \"127.0.0.1:0\"}}\n\
         tlsReloadSeconds: 1\n"
    );
    let mut config = AgentConfig::parse(&text, &dir.join("agent.yaml")).unwrap();
    assert_eq!(config.link.tls_reload, Duration::from_secs(1));
    config.link = LinkSettings {
        backoff_max: Duration::from_millis(500),
        ..config.link
    };
    Agent::start(config).await.unwrap()
}

/// A fresh connection to `addr` with `client`'s files, as a new peer would make: the
/// server certificate it was shown, or why it failed.
async fn probe(addr: SocketAddr, client: &TlsFiles, expected: &str) -> Result<ServerCert, String> {
    let config = fleetmesh::tls::load_client_config(client).map_err(|e| e.to_string())?;
    let (_keep, configs) = tokio::sync::watch::channel(config);
    let (channel, seen) =
        channel_to_cluster(&addr.to_string(), None, configs, &mk_name(expected)).unwrap();
    let answer = tokio::time::timeout(TIMEOUT, MeshClient::new(channel).info(v1::InfoRequest {}))
        .await
        .map_err(|_| "timed out".to_string())?;
    match answer {
        Ok(_) => Ok(seen.borrow().clone().unwrap()),
        Err(status) => Err(status.to_string()),
    }
}

fn der_of(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The churn counter `agent` sees from `peer`, if any.
fn seen_counter(agent: &Agent, peer: &str) -> Option<u32> {
    let name: ServiceName = "web/churn".parse().unwrap();
    let view = agent.view.read().service(&name, Instant::now())?;
    let cluster = view.clusters.iter().find(|c| c.cluster.as_str() == peer)?;
    match cluster.backends.as_slice() {
        [one] => counter_of(one.ip),
        _ => None,
    }
}

/// What must not change on a healthy link while certificates rotate.
fn health(status: &PeerStatus) -> (bool, u64, u64, u64, Option<String>) {
    (
        status.connected,
        status.reconnects,
        status.failures,
        status.full_resyncs,
        status.last_failure.as_ref().map(|f| f.reason.clone()),
    )
}

#[tokio::test]
async fn leaf_rotation_and_a_ca_rollover_under_load_need_no_restart() {
    let root = tempfile::tempdir().unwrap();
    let ca_dir = root.path().join("ca");
    let members = root.path().join("members");
    let old_ca = Ca::generate("old CA", 10 * DAY).unwrap();
    write_ca(&ca_dir, &old_ca).unwrap();
    let (d1, d2) = (members.join("c1"), members.join("c2"));
    for (dir, name) in [(&d1, "c1"), (&d2, "c2")] {
        std::fs::create_dir_all(dir).unwrap();
        mk_member_certs(dir, &old_ca, name);
    }
    std::fs::create_dir_all(d2.join("manifests")).unwrap();
    write_manifest(&d2.join("manifests"), "churn.yaml", &churn_yaml(0));
    let c1 = start_apiserver(&d1, "c1", 1, &files(&d1, "server")).await;
    let c2 = start_apiserver(&d2, "c2", 2, &files(&d2, "server")).await;
    let (addr1, addr2) = (c1.grpc_addr.unwrap(), c2.grpc_addr.unwrap());
    let agent1 = start_agent(&d1, "c1", 1, "c2", addr2).await;
    let agent2 = start_agent(&d2, "c2", 2, "c1", addr1).await;
    wait_for("both links ready", || {
        agent1.statuses()[0].ready && agent2.statuses()[0].ready
    })
    .await;
    wait_for("c1 to see the churned service", || {
        seen_counter(&agent1, "c2") == Some(0)
    })
    .await;
    let before = [health(&agent1.statuses()[0]), health(&agent2.statuses()[0])];
    let status = agent1.statuses()[0].clone();
    assert!(status.peer_cert_not_after.is_some() && status.own_cert_not_after.is_some());
    assert!(status.peer_cert_retiring_ca.is_none());

    // Events flow for the whole test: c2's manifest changes every 50 ms and c1's agent
    // records every value it sees.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU32::new(0));
    let writer = {
        let (stop, written, dir) = (stop.clone(), written.clone(), d2.join("manifests"));
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                write_manifest(&dir, "churn.yaml", &churn_yaml(n));
                written.store(n, Ordering::Relaxed);
                tokio::time::sleep(CHURN_EVERY).await;
            }
        })
    };
    let agent1 = Arc::new(agent1);
    let sampler = {
        let (stop, agent) = (stop.clone(), agent1.clone());
        tokio::spawn(async move {
            let mut seen: Vec<u32> = Vec::new();
            loop {
                if let Some(n) = seen_counter(&agent, "c2")
                    && seen.last() != Some(&n)
                {
                    seen.push(n);
                }
                if stop.load(Ordering::Relaxed) {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // 1. Leaf rotation on every member: a window longer than any lifetime renews all.
    let c1_client_on_old_ca = root.path().join("stale");
    std::fs::create_dir_all(&c1_client_on_old_ca).unwrap();
    let policy = RenewPolicy {
        within: 400 * DAY,
        lifetime: None,
    };
    let rotated =
        rotate_leaves(&members, &old_ca, policy, time::OffsetDateTime::now_utc()).unwrap();
    assert_eq!(rotated.renewed.len(), 4, "{rotated:?}");
    // A client certificate of the old CA, kept to show it is refused once retired.
    for ext in ["crt", "key"] {
        std::fs::copy(
            d1.join(format!("client.{ext}")),
            c1_client_on_old_ca.join(format!("client.{ext}")),
        )
        .unwrap();
    }
    std::fs::copy(d1.join("ca.crt"), c1_client_on_old_ca.join("ca.crt")).unwrap();
    tokio::time::sleep(RELOADED).await;
    let shown = probe(addr2, &files(&d1, "client"), "c2").await.unwrap();
    assert_eq!(
        shown.der,
        der_of(&d2.join("server.crt")),
        "c2 serves its new leaf"
    );

    // 2. CA rollover, in two phases: first every member trusts old + new...
    let options = RolloverOptions {
        ca_name: "new CA".to_string(),
        ca_lifetime: 10 * DAY,
        leaves: RenewPolicy::default(),
        bundles_only: true,
    };
    let rollover = rotate_ca(&ca_dir, &members, &options).unwrap();
    assert!(rollover.new_ca && rollover.leaves.is_none());
    assert_eq!(rollover.bundles_written.len(), 2);
    tokio::time::sleep(RELOADED).await;
    // A link that connects now sees c2 still presenting its old-CA leaf: the status warns.
    let observer = root.path().join("observer");
    std::fs::create_dir_all(&observer).unwrap();
    for file in ["client.crt", "client.key", "ca.crt"] {
        std::fs::copy(d1.join(file), observer.join(file)).unwrap();
    }
    let watcher = start_agent(&observer, "c1", 1, "c2", addr2).await;
    wait_for("the observer link to connect", || {
        watcher.statuses()[0].ready
    })
    .await;
    let status = watcher.statuses()[0].clone();
    assert_eq!(status.peer_cert_retiring_ca.as_deref(), Some("CN=old CA"));
    assert!(
        status
            .credential_warnings
            .iter()
            .any(|w| w.contains("being retired")),
        "{status:?}"
    );
    watcher.stop().await;

    // ...then every leaf is re-issued by the new CA (`certs rotate` does it, the bundle
    // next to each leaf trusting the new CA).
    let new_ca = fleetmesh::certs::files::load_ca(&ca_dir).unwrap();
    let reissued = rotate_leaves(
        &members,
        &new_ca,
        RenewPolicy::default(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(reissued.renewed.len(), 4, "{reissued:?}");
    tokio::time::sleep(RELOADED).await;
    let new_ca_der = der_of(&ca_dir.join("ca.crt"));
    let shown = probe(addr2, &files(&d1, "client"), "c2").await.unwrap();
    assert!(fleetmesh::certs::scan::signed_by(&shown.der, &new_ca_der));
    // During the rollover both CAs are trusted: the old-CA client still gets in.
    let during = files(&c1_client_on_old_ca, "client");
    let during = TlsFiles {
        ca: d1.join("ca.crt"),
        ..during
    };
    probe(addr2, &during, "c2").await.unwrap();

    // ...then the old CA is retired.
    let retired = retire_ca(&ca_dir, &members, false).unwrap();
    assert!(retired.previous_removed);
    tokio::time::sleep(RELOADED).await;
    let handshakes = c2.handshake_stats.clone().unwrap();
    let refused_before = handshakes.refused();
    let err = probe(addr2, &during, "c2").await.unwrap_err();
    assert!(!err.is_empty());
    wait_for("the refused handshake to be counted", || {
        handshakes.refused() > refused_before
    })
    .await;
    // A member with the new credentials still gets in.
    probe(addr2, &files(&d1, "client"), "c2").await.unwrap();

    // The churn stops; the agent ends on the last value written.
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let last = written.load(Ordering::Relaxed);
    wait_for("c1 to see the last value written", || {
        seen_counter(&agent1, "c2") == Some(last)
    })
    .await;
    let seen = sampler.await.unwrap();
    // Never an old value after a newer one (no replayed or duplicated event), values
    // kept arriving all along, and the end is the last write (nothing lost).
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "values went back: {seen:?}"
    );
    assert!(seen.len() > 5, "too few changes seen: {seen:?}");
    assert!(last > 50, "the writer was starved: {last}");

    // No watch stream between the valid peers failed, reconnected or re-listed.
    let after = [health(&agent1.statuses()[0]), health(&agent2.statuses()[0])];
    assert_eq!(after, before);
    assert!(after.iter().all(|h| h.0 && h.4.is_none()), "{after:?}");
}

/// Builds a Secret-volume layout in `dir` (`..data` → `..<generation>`, visible names symlinked
/// through `..data`) or switches it to a new generation the way kubelet does.
fn secret_generation(dir: &Path, generation: &str, files: &[(&str, &str)]) {
    let data = dir.join(format!("..{generation}"));
    std::fs::create_dir_all(&data).unwrap();
    for (name, contents) in files {
        std::fs::write(data.join(name), contents).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{generation}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(PathBuf::from("..data").join(name), &link).unwrap();
        }
    }
}

#[tokio::test]
async fn a_secret_volume_swap_reaches_new_handshakes_and_bad_material_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let ca = Ca::generate("CA", DAY).unwrap();
    let ips = ["127.0.0.1".parse().unwrap()];
    let mk_server = || ca.issue_server(&mk_name("c2"), &[], &ips, DAY).unwrap();
    let secret = root.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let first = mk_server();
    secret_generation(
        &secret,
        "gen1",
        &[
            ("tls.crt", &first.cert_pem),
            ("tls.key", &first.key_pem),
            ("ca.crt", ca.cert_pem()),
        ],
    );
    let tls = TlsFiles {
        cert: secret.join("tls.crt"),
        key: secret.join("tls.key"),
        ca: secret.join("ca.crt"),
    };
    let server = start_apiserver(&root.path().join("c2"), "c2", 2, &tls).await;
    let addr = server.grpc_addr.unwrap();
    let client_dir = root.path().join("client");
    let client = ca.issue_client(&mk_name("c1"), DAY).unwrap();
    write_pem_files(&client_dir, "client", &client).unwrap();
    std::fs::write(client_dir.join("ca.crt"), ca.cert_pem()).unwrap();
    let client = files(&client_dir, "client");
    let der = |pem: &str| {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    };
    assert_eq!(
        probe(addr, &client, "c2").await.unwrap().der,
        der(&first.cert_pem)
    );

    // kubelet switches `..data` to a new generation: new handshakes get the new leaf.
    let second = mk_server();
    secret_generation(
        &secret,
        "gen2",
        &[
            ("tls.crt", &second.cert_pem),
            ("tls.key", &second.key_pem),
            ("ca.crt", ca.cert_pem()),
        ],
    );
    let deadline = Instant::now() + TIMEOUT;
    while probe(addr, &client, "c2").await.unwrap().der != der(&second.cert_pem) {
        assert!(
            Instant::now() < deadline,
            "the swapped secret was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A generation whose key does not match its certificate, then one with garbage: both
    // are refused and the good material stays in use.
    let third = mk_server();
    let bad: [&[(&str, &str)]; 2] = [
        &[
            ("tls.crt", &third.cert_pem),
            ("tls.key", &first.key_pem),
            ("ca.crt", ca.cert_pem()),
        ],
        &[
            ("tls.crt", "garbage"),
            ("tls.key", &third.key_pem),
            ("ca.crt", ca.cert_pem()),
        ],
    ];
    for (i, generation) in bad.iter().enumerate() {
        secret_generation(&secret, &format!("bad{i}"), generation);
        tokio::time::sleep(RELOADED).await;
        assert_eq!(
            probe(addr, &client, "c2").await.unwrap().der,
            der(&second.cert_pem),
            "bad generation {i} replaced good material"
        );
    }
}

#[tokio::test]
async fn an_agent_link_uses_a_renewed_client_certificate_on_its_next_connection() {
    let root = tempfile::tempdir().unwrap();
    let ca = Ca::generate("CA", DAY).unwrap();
    let (d1, d2) = (root.path().join("c1"), root.path().join("c2"));
    mk_member_certs(&d1, &ca, "c1");
    mk_member_certs(&d2, &ca, "c2");
    // c1's agent starts with a client certificate from a CA nobody trusts.
    let stray = Ca::generate("stray CA", DAY).unwrap();
    let untrusted = stray.issue_client(&mk_name("c1"), DAY).unwrap();
    write_pem_files(&d1, "client", &untrusted).unwrap();
    let c2 = start_apiserver(&d2, "c2", 2, &files(&d2, "server")).await;
    let handshakes = c2.handshake_stats.clone().unwrap();
    let agent = start_agent(&d1, "c1", 1, "c2", c2.grpc_addr.unwrap()).await;
    wait_for("the untrusted certificate to be refused", || {
        handshakes.refused() > 0 && agent.statuses()[0].last_failure.is_some()
    })
    .await;
    assert!(!agent.statuses()[0].ready);

    // `certs rotate` re-issues it from the member's CA; no restart: the next attempt uses it.
    let renewed = ca.issue_client(&mk_name("c1"), DAY).unwrap();
    write_pem_files(&d1, "client", &renewed).unwrap();
    wait_for("the link to connect with the renewed certificate", || {
        agent.statuses()[0].ready
    })
    .await;
    let status = agent.statuses()[0].clone();
    let expected = renewed
        .not_after
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(status.own_cert_not_after, Some(expected));
}
