//! Identity numbers on the embedded store survive a restart of the apiserver: label sets
//! come and go, the apiserver is killed and started again on the same state directory
//! with an empty store, and every label set still in use keeps its number while no number
//! comes to name another label set.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use fleetmesh::kvstore::keys;

/// How long a test waits for an export before it fails.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(20);

fn mk_config(dir: &Path) -> ApiserverConfig {
    let text = "cluster: {name: cluster1, id: 1}\n\
                store: {kind: memory}\n\
                identity: {stateDir: state}\n\
                source: {manifests: manifests}\n\
                health: {listen: \"127.0.0.1:0\"}\n";
    let path = dir.join("apiserver.yaml");
    std::fs::write(&path, text).unwrap();
    ApiserverConfig::load(&path).unwrap()
}

/// One running pod per app label, each with its own IP, in a declared namespace (pods of
/// an unknown namespace are not exported).
fn pods_yaml(apps: &[String]) -> String {
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n---\n";
    let pods: String = apps
        .iter()
        .enumerate()
        .map(|(i, app)| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {app}-0, namespace: default, \
                 labels: {{app: {app}}}}}\nspec: {{nodeName: n1}}\n\
                 status: {{phase: Running, podIP: 10.1.{}.{}}}\n---\n",
                i / 200,
                i % 200 + 1
            )
        })
        .collect();
    format!("{namespace}{pods}")
}

fn write_pods(dir: &Path, apps: &[String]) {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    // Written aside and renamed, so the source never reads a half-written file.
    let tmp = dir.join("pods.yaml.tmp");
    std::fs::write(&tmp, pods_yaml(apps)).unwrap();
    std::fs::rename(tmp, manifests.join("pods.yaml")).unwrap();
}

fn apps(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:02}")).collect()
}

/// The exported identities: number → labels (Cilium's label string).
async fn identities(apiserver: &Apiserver) -> BTreeMap<u32, String> {
    let listed = apiserver
        .store
        .list(keys::IDENTITIES_ID_PREFIX)
        .await
        .unwrap();
    listed
        .kvs
        .iter()
        .map(|kv| {
            let id = kv.key[keys::IDENTITIES_ID_PREFIX.len()..].parse().unwrap();
            (id, String::from_utf8(kv.value.to_vec()).unwrap())
        })
        .collect()
}

/// The app label of a label string, e.g. `keep-03`.
fn app_of(labels: &str) -> &str {
    labels
        .split(';')
        .find_map(|l| l.strip_prefix("k8s:app="))
        .unwrap_or_else(|| panic!("no app label in {labels}"))
}

/// Waits until the exported identities are exactly those of `apps`.
async fn exported(apiserver: &Apiserver, apps: &[String]) -> BTreeMap<u32, String> {
    let deadline = tokio::time::Instant::now() + EXPORT_TIMEOUT;
    loop {
        let now = identities(apiserver).await;
        let mut exported: Vec<&str> = now.values().map(|l| app_of(l)).collect();
        exported.sort_unstable();
        if exported == apps.iter().map(String::as_str).collect::<Vec<_>>() {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the export did not reach {apps:?}; it holds {exported:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(dir: &Path) -> Apiserver {
    let mut apiserver = Apiserver::start(mk_config(dir)).await.unwrap();
    tokio::time::timeout(EXPORT_TIMEOUT, apiserver.synced())
        .await
        .expect("the export did not sync in time")
        .unwrap();
    apiserver
}

#[tokio::test]
async fn identity_numbers_survive_a_restart_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    // Label sets that come and go before the restart, so that allocating again from the
    // start of the range would give the survivors other numbers.
    let gone = apps("gone", 20);
    let kept: Vec<String> = [apps("churn", 15), apps("keep", 15)].concat();
    write_pods(dir.path(), &gone);
    let apiserver = start(dir.path()).await;
    let mut every_name: BTreeMap<u32, String> = exported(&apiserver, &gone).await;

    let mut sorted_kept = kept.clone();
    sorted_kept.sort();
    write_pods(dir.path(), &kept);
    let before = exported(&apiserver, &sorted_kept).await;
    for (id, labels) in &before {
        assert!(
            every_name.insert(*id, labels.clone()).is_none(),
            "number {id} named two label sets before the restart"
        );
    }

    // Killed: its store goes with it; only the state directory remains.
    drop(apiserver);
    let apiserver = start(dir.path()).await;
    let after = exported(&apiserver, &sorted_kept).await;

    let number_of = |ids: &BTreeMap<u32, String>, app: &str| {
        ids.iter()
            .find(|(_, labels)| app_of(labels) == app)
            .map(|(id, _)| *id)
    };
    let kept_numbers = kept
        .iter()
        .filter(|app| number_of(&before, app) == number_of(&after, app))
        .count();
    let renamed: Vec<String> = after
        .iter()
        .filter_map(|(id, labels)| {
            let was = every_name.get(id)?;
            (was != labels).then(|| format!("{id}: {} → {}", app_of(was), app_of(labels)))
        })
        .collect();
    assert_eq!(
        (kept_numbers, renamed.len()),
        (kept.len(), 0),
        "label sets that kept their number: {kept_numbers}/{}; numbers that now name \
         other labels: {renamed:?}",
        kept.len()
    );
}
