//! Debian's `etcdctl` (Go's clientv3) as the tests run it against the etcd APIs: `get`
//! and `watch` with `-w json`, parsed, and KVStoreMesh's re-keying of a state key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use fleetmesh::tls::TlsFiles;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::etcd_api::ETCDCTL;

/// Every key under a prefix: key → (value, mod revision).
pub type Kvs = BTreeMap<String, (Vec<u8>, i64)>;

/// The values of `kvs` by key, their revisions left out.
pub fn values(kvs: &Kvs) -> BTreeMap<String, Vec<u8>> {
    kvs.iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
}

/// `etcdctl` with the environment that names its endpoint and files
/// ([`etcdctl_env`](super::etcd_api::etcdctl_env)).
pub struct Etcdctl {
    pub env: Vec<(&'static str, String)>,
}

impl Etcdctl {
    pub async fn run(&self, args: &[&str]) -> Output {
        Command::new(ETCDCTL)
            .envs(self.env.clone())
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {ETCDCTL} (Debian's etcd-client): {e}"))
    }

    /// `get --prefix -w json`: the keys, and the header revision.
    pub async fn get_prefix(&self, prefix: &str) -> (Kvs, i64) {
        self.get(&["--prefix", prefix]).await
    }

    /// `get ARGS -w json`: the keys, and the header revision.
    pub async fn get(&self, args: &[&str]) -> (Kvs, i64) {
        let out = self.run(&[&["get"], args, &["-w", "json"]].concat()).await;
        assert!(
            out.status.success(),
            "etcdctl get {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut kvs = Kvs::new();
        for kv in json["kvs"].as_array().into_iter().flatten() {
            let key = String::from_utf8(b64(&kv["key"])).unwrap();
            kvs.insert(
                key,
                (b64(&kv["value"]), kv["mod_revision"].as_i64().unwrap()),
            );
        }
        (kvs, json["header"]["revision"].as_i64().unwrap())
    }

    /// `watch --prefix prefix --rev from -w json` in the background.
    pub fn watch(&self, prefix: &str, from: i64) -> Watching {
        let mut child = Command::new(ETCDCTL)
            .envs(self.env.clone())
            .args([
                "watch",
                "--prefix",
                prefix,
                "--rev",
                &from.to_string(),
                "-w",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {ETCDCTL} (Debian's etcd-client): {e}"));
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Watching {
            _child: child,
            lines,
            events: Vec::new(),
        }
    }
}

/// A JSON bytes field as etcdctl prints it (base64; absent when empty).
pub fn b64(field: &Value) -> Vec<u8> {
    field
        .as_str()
        .map_or(Vec::new(), |s| B64.decode(s).unwrap())
}

/// One watched event, with when it was read.
#[derive(Clone)]
pub struct Event {
    pub delete: bool,
    pub key: String,
    pub value: Vec<u8>,
    pub at: Instant,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.delete { "DELETE" } else { "PUT" };
        let value = String::from_utf8_lossy(&self.value);
        write!(f, "{kind} {} {value}", self.key)
    }
}

/// An `etcdctl watch -w json` running in the background: one response a line.
pub struct Watching {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every event read so far.
    pub events: Vec<Event>,
}

impl Watching {
    /// Reads responses until `done` holds for the events so far, or fails after `wait`.
    pub async fn until(&mut self, what: &str, wait: Duration, done: impl Fn(&[Event]) -> bool) {
        let deadline = Instant::now() + wait;
        while !done(&self.events) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the watch never saw {what}: {:?}",
                self.events
            );
            self.read(left).await;
        }
    }

    /// Reads what arrives within `wait`.
    pub async fn drain(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.read(left).await;
        }
    }

    async fn read(&mut self, wait: Duration) {
        let Ok(line) = tokio::time::timeout(wait, self.lines.next_line()).await else {
            return;
        };
        let line = line.unwrap().expect("etcdctl watch ended");
        let at = Instant::now();
        let response: Value = serde_json::from_str(&line).unwrap();
        assert_ne!(response["Canceled"], true, "the watch was canceled: {line}");
        for event in response["Events"].as_array().into_iter().flatten() {
            self.events.push(Event {
                delete: event["type"] == 1,
                key: String::from_utf8(b64(&event["kv"]["key"])).unwrap(),
                value: b64(&event["kv"]["value"]),
                at,
            });
        }
    }
}

/// KVStoreMesh's re-keying of `peer`'s state key (reference: cilium-etcd-surface.md).
pub fn cache_key(peer: &str, state_key: &str) -> String {
    let rest = state_key.strip_prefix("cilium/state/").unwrap();
    if let Some(id) = rest.strip_prefix("identities/v1/id/") {
        format!("cilium/cache/identities/v1/{peer}/id/{id}")
    } else if let Some(ip) = rest.strip_prefix("ip/v1/default/") {
        format!("cilium/cache/ip/v1/{peer}/{ip}")
    } else {
        let (resource, own) = rest.split_once("/v1/").unwrap();
        assert!(own.starts_with(&format!("{peer}/")), "{state_key}");
        format!("cilium/cache/{resource}/v1/{own}")
    }
}

/// A Cilium clustermesh config file `dir/peer`: its endpoints and its files, found in
/// `dir` (where the plan wrote what Cilium mounts).
pub fn cilium_config(dir: &Path, peer: &str) -> (Vec<String>, TlsFiles) {
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join(peer)).unwrap()).unwrap();
    let endpoints = config["endpoints"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    let file = |field: &str| {
        let path = PathBuf::from(config[field].as_str().unwrap());
        dir.join(path.file_name().unwrap())
    };
    let files = TlsFiles {
        ca: file("trusted-ca-file"),
        cert: file("cert-file"),
        key: file("key-file"),
    };
    (endpoints, files)
}
