//! The apiserver's etcd API as etcdctl (Go's clientv3, Debian's etcd-client) sees it,
//! over mutual TLS, on the embedded store.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use fleetmesh::kvstore::Store;
use serde_json::Value;
use support::etcd_api::{ETCDCTL, EtcdApiServer, etcdctl_env};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Revision log of the servers here: enough for every test but the compaction one.
const HISTORY: usize = 1000;
/// Longest a test waits for one line of etcdctl's output.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "etcdctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// An `etcdctl watch` running in the background, read line by line.
struct Watching {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Watching {
    fn start(server: &EtcdApiServer, client: &fleetmesh::tls::TlsFiles, args: &[&str]) -> Self {
        let mut child = Command::new(ETCDCTL)
            .envs(etcdctl_env(&server.endpoint, client))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {ETCDCTL} (Debian's etcd-client): {e}"));
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, lines }
    }

    async fn line(&mut self) -> String {
        match tokio::time::timeout(LINE_TIMEOUT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = self.child.start_kill();
                let output = self.child.wait_with_output_ref().await;
                panic!("no line from etcdctl watch ({other:?}); stderr: {output}")
            }
        }
    }

    /// The next event as etcdctl prints it: type, key, value.
    async fn event(&mut self) -> (String, String, String) {
        (self.line().await, self.line().await, self.line().await)
    }
}

trait WaitRef {
    async fn wait_with_output_ref(&mut self) -> String;
}

impl WaitRef for Child {
    async fn wait_with_output_ref(&mut self) -> String {
        let mut stderr = String::new();
        if let Some(mut err) = self.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = err.read_to_string(&mut stderr).await;
        }
        stderr
    }
}

fn put(key: &str, value: &str) -> (String, String, String) {
    ("PUT".into(), key.into(), value.into())
}

#[tokio::test]
async fn get_prefix_returns_the_stores_keys_values_and_revisions() {
    let server = EtcdApiServer::start(&["c2"], HISTORY).await;
    let client = server.pki.client_files("c2");
    server.put("cilium/state/etcdtest/v1/a", "1").await;
    let last = server.put("cilium/state/etcdtest/v1/b", "2").await;

    // The cache follows the store: read until it holds the last write.
    let json = loop {
        let out = server
            .etcdctl(&client, &["get", "--prefix", "cilium/state/", "-w", "json"])
            .await;
        let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
        if json["header"]["revision"].as_i64().unwrap() >= last {
            break json;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let listing = server.store.list("cilium/state/").await.unwrap();
    let kvs = json["kvs"].as_array().unwrap();
    assert!(kvs.len() > 2, "the export's keys are served too: {json}");
    assert_eq!(json["count"].as_u64().unwrap() as usize, kvs.len());
    assert_eq!(
        json["header"]["revision"].as_u64().unwrap(),
        listing.revision
    );
    assert_ne!(json["header"]["cluster_id"].as_u64().unwrap(), 0);
    let served: Vec<(String, String, u64, u64)> = kvs
        .iter()
        .map(|kv| {
            let text = |field: &str| {
                String::from_utf8(B64.decode(kv[field].as_str().unwrap()).unwrap()).unwrap()
            };
            (
                text("key"),
                text("value"),
                kv["create_revision"].as_u64().unwrap(),
                kv["mod_revision"].as_u64().unwrap(),
            )
        })
        .collect();
    let stored: Vec<(String, String, u64, u64)> = listing
        .kvs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                String::from_utf8(kv.value.to_vec()).unwrap(),
                kv.create_revision,
                kv.mod_revision,
            )
        })
        .collect();
    assert_eq!(served, stored);

    let single = server
        .etcdctl(
            &client,
            &["get", "cilium/state/etcdtest/v1/b", "--print-value-only"],
        )
        .await;
    assert_eq!(stdout(&single), "2\n");
}

#[tokio::test]
async fn watch_from_a_revision_replays_then_streams_live_changes() {
    let server = EtcdApiServer::start(&["c2"], HISTORY).await;
    let client = server.pki.client_files("c2");
    let first = server.put("cilium/state/etcdtest/v1/a", "1").await;
    server.put("cilium/state/etcdtest/v1/b", "2").await;
    server
        .store
        .delete("cilium/state/etcdtest/v1/a")
        .await
        .unwrap();
    let rev = first.to_string();
    let mut watch = Watching::start(
        &server,
        &client,
        &["watch", "--prefix", "cilium/state/etcdtest/", "--rev", &rev],
    );
    assert_eq!(watch.event().await, put("cilium/state/etcdtest/v1/a", "1"));
    assert_eq!(watch.event().await, put("cilium/state/etcdtest/v1/b", "2"));
    // A deletion has no value.
    assert_eq!(
        watch.event().await,
        (
            "DELETE".into(),
            "cilium/state/etcdtest/v1/a".into(),
            String::new()
        )
    );
    server.put("cilium/state/etcdtest/v1/c", "3").await;
    assert_eq!(watch.event().await, put("cilium/state/etcdtest/v1/c", "3"));
    // Keys outside the prefix are not sent.
    server.put("cilium/state/other/v1/x", "x").await;
    server.put("cilium/state/etcdtest/v1/d", "4").await;
    assert_eq!(watch.event().await, put("cilium/state/etcdtest/v1/d", "4"));
}

#[tokio::test]
async fn a_revision_older_than_the_log_is_compacted() {
    let server = EtcdApiServer::start(&["c2"], 4).await;
    let client = server.pki.client_files("c2");
    let first = server.put("cilium/state/etcdtest/v1/k0", "0").await;
    let mut last = first;
    for i in 1..10 {
        last = server
            .put(&format!("cilium/state/etcdtest/v1/k{i}"), "v")
            .await;
    }
    // Wait for the cache to hold the last write.
    let etcd = server.client(&client).await;
    support::wait_until_async("the cache to catch up", || {
        let mut etcd = etcd.clone();
        async move {
            let resp = etcd.get("cilium/state/etcdtest/v1/k9", None).await.unwrap();
            resp.header().unwrap().revision() >= last
        }
    })
    .await;

    let rev = first.to_string();
    let out = tokio::time::timeout(
        LINE_TIMEOUT,
        server.etcdctl(
            &client,
            &["watch", "--prefix", "cilium/state/etcdtest/", "--rev", &rev],
        ),
    )
    .await
    .expect("etcdctl watch ends when the server cancels it");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("required revision has been compacted"),
        "stderr: {stderr}"
    );
    // A read pinned there is refused the same way.
    let out = server
        .etcdctl(
            &client,
            &["get", "--prefix", "cilium/state/etcdtest/", "--rev", &rev],
        )
        .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted"),
        "{out:?}"
    );
}

#[tokio::test]
async fn three_watches_on_one_stream_get_their_events_in_order() {
    let server = EtcdApiServer::start(&["c2"], HISTORY).await;
    let client = server.pki.client_files("c2");
    let mut watch = Watching::start(&server, &client, &["watch", "-i"]);
    let stdin = watch.child.stdin.as_mut().unwrap();
    for prefix in ["a", "b", "c"] {
        let line = format!("watch --prefix cilium/state/etcdtest/{prefix}/\n");
        stdin.write_all(line.as_bytes()).await.unwrap();
    }
    stdin.flush().await.unwrap();
    // The watches are created one after another: wait until the last one exists.
    let stats = server.apiserver.etcd_api_stats.clone().unwrap();
    support::wait_until("three watches", Duration::from_secs(10), || {
        stats.watches_created() >= 3
    })
    .await;

    // etcdctl prints each watch from its own goroutine, so the order across watches
    // shows only when each change is printed before the next is made.
    for (i, prefix) in ["c", "a", "b", "a", "c"].iter().enumerate() {
        let key = format!("cilium/state/etcdtest/{prefix}/k{i}");
        server.put(&key, &i.to_string()).await;
        assert_eq!(watch.event().await, put(&key, &i.to_string()));
    }
    // One stream carried them all.
    assert_eq!((stats.watch_streams(), stats.watches_created()), (1, 3));
}

#[tokio::test]
async fn endpoint_status_answers_and_put_is_refused() {
    let server = EtcdApiServer::start(&["c2"], HISTORY).await;
    let client = server.pki.client_files("c2");
    let out = server
        .etcdctl(&client, &["endpoint", "status", "-w", "json"])
        .await;
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let status = &json[0]["Status"];
    assert_eq!(status["version"], "3.6.0-fleetmesh", "{json}");
    assert_eq!(status["leader"], status["header"]["member_id"], "{json}");
    assert!(status["header"]["revision"].as_u64().unwrap() > 0, "{json}");

    let stats = server.apiserver.etcd_api_stats.clone().unwrap();
    let out = server
        .etcdctl(&client, &["put", "cilium/state/x", "y"])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("etcdserver: permission denied"), "{stderr}");
    assert_eq!(stats.refused_writes(), 1);
    assert!(server.store.get("cilium/state/x").await.unwrap().is_none());

    let out = server
        .etcdctl(&client, &["del", "cilium/state/etcdtest/", "--prefix"])
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcdserver: permission denied"));
    let out = server.etcdctl(&client, &["lease", "grant", "60"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcdserver: permission denied"));
    assert_eq!(stats.refused_writes(), 3);

    // A key outside the remote role: refused the same way, and counted as a read.
    let out = server
        .etcdctl(&client, &["get", "--prefix", "fleetmesh/"])
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcdserver: permission denied"));
    let out = server
        .etcdctl(&client, &["get", "cilium/cluster-config/c9"])
        .await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcdserver: permission denied"));
    assert_eq!(stats.refused_reads(), 2);
    let own = server
        .etcdctl(
            &client,
            &["get", "cilium/cluster-config/c1", "--print-value-only"],
        )
        .await;
    assert!(stdout(&own).contains("\"id\":1"), "{own:?}");
}

/// etcdctl pings every 10 s at the fastest (gRPC's floor): a watch kept open for 30 s
/// sees pings both ways and still gets the next change.
#[tokio::test]
async fn a_30_second_watch_survives_keepalive_pings() {
    let server = EtcdApiServer::start(&["c2"], HISTORY).await;
    let client = server.pki.client_files("c2");
    let mut watch = Watching::start(
        &server,
        &client,
        &[
            "--keepalive-time=10s",
            "--keepalive-timeout=5s",
            "watch",
            "--prefix",
            "cilium/state/etcdtest/",
        ],
    );
    let stats = server.apiserver.etcd_api_stats.clone().unwrap();
    support::wait_until("the watch", Duration::from_secs(10), || {
        stats.watches_created() >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        watch.child.try_wait().unwrap().is_none(),
        "etcdctl watch ended: {}",
        watch.child.wait_with_output_ref().await
    );
    server.put("cilium/state/etcdtest/late", "yes").await;
    assert_eq!(
        watch.event().await,
        put("cilium/state/etcdtest/late", "yes")
    );
}
