use super::*;
use crate::model::{Resource, ResourceKey};
use crate::proto::fixtures::{mk_cluster, mk_endpoint, mk_identity, mk_node, mk_service};

fn mk_keys(grace: Duration) -> Arc<CacheKeys> {
    Arc::new(CacheKeys::new(
        &mk_cluster("local", 1),
        grace,
        KeyCacheSettings::default(),
    ))
}

/// `keys` once their writer wrote everything queued so far.
fn flushed(keys: &CacheKeys) -> &CacheKeys {
    keys.flush();
    keys
}

/// Every key the cache holds under `prefix`, with its value and mod revision (once
/// written).
fn held(keys: &CacheKeys, prefix: &str) -> Vec<(String, Bytes, i64)> {
    flushed(keys)
        .cache
        .range(&KeyRange::prefix(prefix), 0, 0)
        .unwrap()
        .kvs
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.to_vec()).unwrap(),
                r.value.clone(),
                r.mod_revision,
            )
        })
        .collect()
}

fn upserts(resources: &[Resource]) -> Vec<Change> {
    resources.iter().cloned().map(Change::Upsert).collect()
}

#[test]
fn a_peer_s_changes_become_its_cache_keys_and_unchanged_values_are_not_rewritten() {
    let keys = mk_keys(DEFAULT_DRAIN_GRACE);
    let c2 = mk_cluster("c2", 2);
    let ep = mk_endpoint(&c2, "10.2.0.1");
    let mut private = mk_service(&c2, "shop", "private");
    private.shared = false;
    let resources = [
        Resource::Node(mk_node(&c2, "n1")),
        Resource::Endpoint(ep.clone()),
        Resource::Identity(mk_identity(&c2, 1)),
        Resource::Service(mk_service(&c2, "shop", "cart")),
        Resource::Service(private),
    ];
    keys.accepted(&c2);
    keys.applied(&c2.name, &upserts(&resources), Instant::now());
    let cached = held(&keys, "cilium/cache/");
    assert_eq!(
        cached.len(),
        4,
        "the unshared service is not cached: {cached:?}"
    );
    let ip = cached
        .iter()
        .find(|(k, _, _)| k == "cilium/cache/ip/v1/c2/10.2.0.1")
        .unwrap();
    assert_eq!(ip.1, codec::encode_endpoint(&ep));
    assert_eq!(flushed(&keys).held(&c2.name).keys, 4);
    assert!(flushed(&keys).held(&c2.name).config);

    // A relisting peer sends the same values again: nothing is rewritten.
    keys.applied(&c2.name, &upserts(&resources), Instant::now());
    assert_eq!(held(&keys, "cilium/cache/"), cached);
    // The agent's own cluster is never cached.
    let local = mk_cluster("local", 1);
    keys.applied(
        &local.name,
        &upserts(&[Resource::Node(mk_node(&local, "n9"))]),
        Instant::now(),
    );
    keys.applied(
        &c2.name,
        &[Change::Delete(ResourceKey::Endpoint(ep.prefix))],
        Instant::now(),
    );
    assert_eq!(held(&keys, "cilium/cache/").len(), 3);
    assert!(held(&keys, "cilium/cache/nodes/v1/local/").is_empty());
}

#[test]
fn canaries_are_written_at_the_first_synced_marker_only() {
    let keys = mk_keys(DEFAULT_DRAIN_GRACE);
    let c2 = mk_cluster("c2", 2);
    keys.accepted(&c2);
    assert!(held(&keys, "cilium/synced/").is_empty());
    keys.synced(&c2.name);
    let canaries = held(&keys, "cilium/synced/");
    let names: Vec<&str> = canaries.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "cilium/synced/c2/cilium/cache/identities/v1",
            "cilium/synced/c2/cilium/cache/ip/v1",
            "cilium/synced/c2/cilium/cache/nodes/v1",
            "cilium/synced/c2/cilium/cache/services/v1",
        ]
    );
    keys.synced(&c2.name);
    assert_eq!(held(&keys, "cilium/synced/"), canaries);
    let config = held(&keys, "cilium/cluster-config/c2");
    assert!(String::from_utf8_lossy(&config[0].1).contains("\"cached\":true"));
}

#[tokio::test(start_paused = true)]
async fn a_removed_peer_loses_its_config_at_once_and_its_keys_after_the_grace() {
    let grace = Duration::from_secs(180);
    let keys = mk_keys(grace);
    let c2 = mk_cluster("c2", 2);
    keys.accepted(&c2);
    keys.applied(
        &c2.name,
        &upserts(&[Resource::Node(mk_node(&c2, "n1"))]),
        Instant::now(),
    );
    keys.synced(&c2.name);
    keys.remove_peer(&c2.name);
    assert!(held(&keys, "cilium/cluster-config/").is_empty());
    tokio::time::sleep(grace - Duration::from_secs(1)).await;
    assert_eq!(flushed(&keys).held(&c2.name).keys, 1);
    assert_eq!(flushed(&keys).held(&c2.name).canaries, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(flushed(&keys).held(&c2.name), HeldKeys::default());
    assert_eq!(held(&keys, "cilium/.heartbeat").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_peer_back_within_the_grace_keeps_its_keys_and_sweeps_the_rest_at_synced() {
    let grace = Duration::from_secs(180);
    let keys = mk_keys(grace);
    let c2 = mk_cluster("c2", 2);
    let (kept, gone) = (
        Resource::Node(mk_node(&c2, "kept")),
        Resource::Node(mk_node(&c2, "gone")),
    );
    keys.accepted(&c2);
    keys.applied(&c2.name, &upserts(&[kept.clone(), gone]), Instant::now());
    keys.synced(&c2.name);
    let before = held(&keys, "cilium/cache/nodes/v1/c2/kept");
    keys.remove_peer(&c2.name);
    tokio::time::sleep(Duration::from_secs(10)).await;
    keys.accepted(&c2);
    keys.applied(&c2.name, &upserts(&[kept]), Instant::now());
    assert_eq!(
        flushed(&keys).held(&c2.name).keys,
        2,
        "nothing is swept before the marker"
    );
    keys.synced(&c2.name);
    assert_eq!(
        held(&keys, "cilium/cache/"),
        before,
        "kept with its mod revision"
    );
    // The old drain does not fire.
    tokio::time::sleep(grace * 2).await;
    assert_eq!(flushed(&keys).held(&c2.name).keys, 1);
    assert!(flushed(&keys).held(&c2.name).config);
}

#[test]
fn withdrawn_backends_come_back_with_the_peer_s_value() {
    let keys = mk_keys(DEFAULT_DRAIN_GRACE);
    let c2 = mk_cluster("c2", 2);
    let svc = mk_service(&c2, "shop", "cart");
    keys.accepted(&c2);
    keys.applied(
        &c2.name,
        &upserts(&[Resource::Service(svc.clone())]),
        Instant::now(),
    );
    let key = "cilium/cache/services/v1/c2/shop/cart";
    let original = held(&keys, key)[0].1.clone();
    let withdrawn = BTreeMap::from([(c2.name.clone(), BTreeSet::from([svc.name.clone()]))]);
    keys.set_withdrawn(&withdrawn);
    let emptied = codec::decode_service(&held(&keys, key)[0].1, c2.mode).unwrap();
    assert!(emptied.backends.is_empty());
    assert_eq!(flushed(&keys).held(&c2.name).withdrawn, 1);
    keys.set_withdrawn(&withdrawn);
    keys.set_withdrawn(&BTreeMap::new());
    assert_eq!(held(&keys, key)[0].1, original);
    assert_eq!(flushed(&keys).held(&c2.name).withdrawn, 0);
}

#[test]
fn an_id_change_deletes_what_the_peer_sent_before() {
    let keys = mk_keys(DEFAULT_DRAIN_GRACE);
    let c2 = mk_cluster("c2", 2);
    keys.accepted(&c2);
    keys.applied(
        &c2.name,
        &upserts(&[Resource::Node(mk_node(&c2, "n1"))]),
        Instant::now(),
    );
    keys.synced(&c2.name);
    keys.drained(&c2.name);
    let held = flushed(&keys).held(&c2.name);
    assert_eq!((held.keys, held.canaries), (0, 0));
}

#[test]
fn a_link_s_changes_are_queued_while_the_key_cache_is_locked() {
    let keys = mk_keys(DEFAULT_DRAIN_GRACE);
    let c2 = mk_cluster("c2", 2);
    keys.accepted(&c2);
    keys.flush();
    let cache = keys.key_cache();
    let other = Epoch("a reader holding the lock".to_string());
    cache.write(&other, |_| {
        // A link's thread, while something else holds the key cache's lock.
        let (returned, wait) = std::sync::mpsc::channel();
        let link = keys.clone();
        let changes = upserts(&[Resource::Node(mk_node(&c2, "n1"))]);
        std::thread::spawn(move || {
            link.applied(&mk_cluster("c2", 2).name, &changes, Instant::now());
            let _ = returned.send(());
        });
        assert!(
            wait.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the link waited for the key cache's lock"
        );
    });
    assert_eq!(held(&keys, "cilium/cache/nodes/v1/c2/").len(), 1);
}
