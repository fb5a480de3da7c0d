//! The apiserver's etcd API through the `etcd-client` crate: Cilium's paged list at a
//! pinned revision, watches sharing one stream, the cluster id across reconnects and
//! epochs, and the refusals of peers that may not read.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use etcd_client::{GetOptions, WatchOptions};
use fleetmesh::kvstore::Store;
use fleetmesh::kvstore::memory::MemoryStore;
use support::etcd_api::EtcdApiServer;
use support::mesh::MeshPki;

const HISTORY: usize = 1000;
/// Cilium's page size (`etcd.limit`).
const PAGE: i64 = 256;
const PREFIX: &str = "cilium/state/etcdtest/v1/";

/// Waits until the cache behind `client` has reached `revision`.
async fn wait_for_revision(client: &etcd_client::Client, revision: i64) {
    support::wait_until_async("the etcd API to reach the revision", || {
        let mut client = client.clone();
        async move {
            let resp = client.get("cilium/.heartbeat", None).await.unwrap();
            resp.header().unwrap().revision() >= revision
        }
    })
    .await;
}

/// Lists `prefix` as Cilium does: pages of 256, the first at the latest revision, the
/// others pinned to it, each starting after the previous page's last key.
async fn cilium_list(
    client: &mut etcd_client::Client,
    prefix: &str,
    between_pages: impl AsyncFn(usize),
) -> (i64, Vec<(String, String, i64)>) {
    let end = format!("{}0", prefix.trim_end_matches('/'));
    let mut key = prefix.to_string();
    let mut revision = 0;
    let mut kvs = Vec::new();
    let mut page = 0;
    loop {
        let options = GetOptions::new()
            .with_range(end.as_str())
            .with_limit(PAGE)
            .with_revision(revision);
        let resp = client.get(key.as_str(), Some(options)).await.unwrap();
        if revision == 0 {
            revision = resp.header().unwrap().revision();
        }
        assert_eq!(resp.header().unwrap().revision(), revision);
        for kv in resp.kvs() {
            kvs.push((
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
                kv.mod_revision(),
            ));
        }
        if !resp.more() || resp.kvs().is_empty() {
            break;
        }
        key = format!("{}\0", kvs.last().unwrap().0);
        page += 1;
        between_pages(page).await;
    }
    (revision, kvs)
}

#[tokio::test]
async fn a_paged_list_pinned_to_a_revision_sees_that_revision_only() {
    let server = EtcdApiServer::start(&["c2"], HISTORY).await;
    let mut client = server.client(&server.pki.client_files("c2")).await;
    let mut last = 0;
    for i in 0..600 {
        last = server.put(&format!("{PREFIX}{i:04}"), "v1").await;
    }
    wait_for_revision(&client, last).await;
    let before = server.store.list(PREFIX).await.unwrap();

    // Between pages the store moves on: later keys change, vanish, appear.
    let writes = async |page: usize| {
        let i = 300 + page * 100;
        server.put(&format!("{PREFIX}{i:04}"), "v2").await;
        server
            .store
            .delete(&format!("{PREFIX}{:04}", i + 1))
            .await
            .unwrap();
        let last = server.put(&format!("{PREFIX}{i:04}x"), "new").await;
        wait_for_revision(&client, last).await;
    };
    let (revision, listed) = cilium_list(&mut client.clone(), PREFIX, writes).await;
    assert_eq!(u64::try_from(revision).unwrap(), before.revision);
    let expected: Vec<_> = before
        .kvs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                String::from_utf8(kv.value.to_vec()).unwrap(),
                i64::try_from(kv.mod_revision).unwrap(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 600);
    assert_eq!(listed, expected);

    // Unpaged: everything, count equal to the keys, `more` unset.
    let all = client
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(all.count(), i64::try_from(all.kvs().len()).unwrap());
    assert!(!all.more());
    // A missing key: nothing, count 0.
    let missing = client.get(format!("{PREFIX}nope"), None).await.unwrap();
    assert_eq!((missing.count(), missing.kvs().len()), (0, 0));
}

#[tokio::test]
async fn watches_share_one_stream_and_headers_never_run_ahead() {
    let server = EtcdApiServer::start(&["c2"], HISTORY).await;
    let mut client = server.client(&server.pki.client_files("c2")).await;
    let listed = client
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let cluster_id = listed.header().unwrap().cluster_id();
    let from = listed.header().unwrap().revision() + 1;

    let prefixes = ["a/", "b/", "c/"].map(|p| format!("{PREFIX}{p}"));
    let options = || WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = client
        .watch(prefixes[0].as_str(), Some(options()))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let created = stream.message().await.unwrap().unwrap();
        assert!(created.created(), "{created:?}");
        assert_eq!(created.header().unwrap().cluster_id(), cluster_id);
        ids.push(created.watch_id());
        if i < 2 {
            stream
                .watch(prefixes[i + 1].as_str(), Some(options()))
                .await
                .unwrap();
        }
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "increasing ids: {ids:?}"
    );

    let mut written = Vec::new();
    for (i, p) in [2, 0, 1, 0, 2].iter().enumerate() {
        let key = format!("{}k{i}", prefixes[*p]);
        let revision = server.put(&key, "v").await;
        written.push((ids[*p], key, revision));
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("events within 10 s")
            .unwrap()
            .unwrap();
        let header = resp.header().unwrap();
        assert_eq!(header.cluster_id(), cluster_id);
        for event in resp.events() {
            let kv = event.kv().unwrap();
            assert!(header.revision() >= kv.mod_revision());
            seen.push((
                resp.watch_id(),
                kv.key_str().unwrap().to_string(),
                kv.mod_revision(),
            ));
        }
        // This watch has every change of its range up to the header's revision.
        let id = resp.watch_id();
        let due = written
            .iter()
            .filter(|w| w.0 == id && w.2 <= header.revision())
            .count();
        let got = seen.iter().filter(|s| s.0 == id).count();
        assert_eq!(got, due, "watch {id}: {seen:?} at {}", header.revision());
    }
    // Each watch got its changes in revision order.
    for id in &ids {
        let of = |events: Vec<(i64, String, i64)>| -> Vec<_> {
            events.into_iter().filter(|e| e.0 == *id).collect()
        };
        let expected = of(written
            .iter()
            .map(|(i, k, r)| (*i, k.clone(), *r))
            .collect());
        assert_eq!(of(seen.clone()), expected);
    }

    // A cancel is answered; the others go on.
    stream.cancel(ids[0]).await.unwrap();
    let canceled = stream.message().await.unwrap().unwrap();
    assert!(canceled.canceled() && canceled.watch_id() == ids[0]);
    server.put(&format!("{}late", prefixes[0]), "v").await;
    let late = server.put(&format!("{}late", prefixes[1]), "v").await;
    let resp = stream.message().await.unwrap().unwrap();
    assert_eq!(resp.watch_id(), ids[1]);
    assert_eq!(resp.events()[0].kv().unwrap().mod_revision(), late);

    // A progress request reports the stream's revision.
    stream.request_progress().await.unwrap();
    let progress = stream.message().await.unwrap().unwrap();
    assert_eq!(progress.watch_id(), -1);
    assert!(progress.header().unwrap().revision() >= late);
}

#[tokio::test]
async fn the_cluster_id_holds_across_reconnects_and_changes_with_the_epoch() {
    let server = EtcdApiServer::start(&["c2"], HISTORY).await;
    let client_files = server.pki.client_files("c2");
    async fn cluster_id(server: &EtcdApiServer, files: &fleetmesh::tls::TlsFiles) -> u64 {
        let mut client = server.client(files).await;
        let resp = client.status().await.unwrap();
        let id = resp.header().unwrap().cluster_id();
        let get = client.get("cilium/.heartbeat", None).await.unwrap();
        assert_eq!(get.header().unwrap().cluster_id(), id);
        id
    }
    let first = cluster_id(&server, &client_files).await;
    assert_eq!(
        cluster_id(&server, &client_files).await,
        first,
        "a new connection"
    );

    let same_store = server.store.clone();
    let server = server.restart(same_store).await;
    assert_eq!(
        cluster_id(&server, &client_files).await,
        first,
        "a restart on the same store"
    );

    let server = server.restart(MemoryStore::new()).await;
    assert_ne!(
        cluster_id(&server, &client_files).await,
        first,
        "a new store: a new epoch"
    );
}

#[tokio::test]
async fn peers_that_may_not_read_get_nothing() {
    let server = EtcdApiServer::start(&["c2"], HISTORY).await;
    let stats = server.apiserver.etcd_api_stats.clone().unwrap();
    let handshakes = server.apiserver.etcd_api_handshakes.clone().unwrap();

    // A peer of the mesh outside allowedPeers: etcd's permission error on every call.
    let mut outsider = server.client(&server.pki.client_files("c3")).await;
    let err = outsider.get("cilium/.heartbeat", None).await.unwrap_err();
    assert!(
        err.to_string().contains("etcdserver: permission denied"),
        "{err}"
    );
    let err = outsider.status().await.unwrap_err();
    assert!(
        err.to_string().contains("etcdserver: permission denied"),
        "{err}"
    );
    let mut watch = outsider
        .watch("cilium/state/", Some(WatchOptions::new().with_prefix()))
        .await;
    let refused = match &mut watch {
        Ok(stream) => stream.message().await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "the watch is refused");
    assert!(stats.refused_peers() >= 3);

    // Another CA's certificate, or none: the handshake fails before any request.
    let refused_before = handshakes.refused();
    let other_pki = MeshPki::new();
    let other_ca = other_pki.client_files("c2");
    let mut files = server.pki.client_files("c2");
    files.cert = other_ca.cert;
    files.key = other_ca.key;
    let stranger = connect_or_fail(&server, &files).await;
    assert!(stranger.is_err(), "another CA's certificate is refused");

    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let no_cert = etcd_client::ConnectOptions::new()
        .with_tls(
            etcd_client::TlsOptions::new()
                .domain_name("localhost")
                .ca_certificate(etcd_client::Certificate::from_pem(read(&files.ca))),
        )
        .with_connect_timeout(Duration::from_secs(5));
    let anonymous = async {
        let mut client =
            etcd_client::Client::connect([server.endpoint.as_str()], Some(no_cert)).await?;
        client.get("cilium/.heartbeat", None).await
    }
    .await;
    assert!(anonymous.is_err(), "no certificate is refused");
    assert!(handshakes.refused() >= refused_before + 2);
}

/// Connects with `files` and reads the heartbeat.
async fn connect_or_fail(
    server: &EtcdApiServer,
    files: &fleetmesh::tls::TlsFiles,
) -> Result<etcd_client::GetResponse, etcd_client::Error> {
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let tls = etcd_client::TlsOptions::new()
        .domain_name("localhost")
        .ca_certificate(etcd_client::Certificate::from_pem(read(&files.ca)))
        .identity(etcd_client::Identity::from_pem(
            read(&files.cert),
            read(&files.key),
        ));
    let options = etcd_client::ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(5));
    let mut client =
        etcd_client::Client::connect([server.endpoint.as_str()], Some(options)).await?;
    client.get("cilium/.heartbeat", None).await
}
