#![allow(clippy::unwrap_used)]
//! The in-test API server answers the real kube client the way a Kubernetes API server
//! does; the watcher and EndpointSlice tests rely on it.

mod support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use support::fake_kube::FakeKube;

fn pod(namespace: &str, name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
    }))
    .unwrap()
}

#[tokio::test]
async fn create_replace_patch_and_delete_follow_the_api_conventions() {
    let kube = FakeKube::start().await;
    let slices: Api<EndpointSlice> = Api::namespaced(kube.client(), "ns");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "svc"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}],
    }))
    .unwrap();
    let created = slices.create(&PostParams::default(), &slice).await.unwrap();
    assert_eq!(created.namespace().as_deref(), Some("ns"));
    let err = slices
        .create(&PostParams::default(), &slice)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");

    let mut stale = created.clone();
    let mut changed = created.clone();
    changed.endpoints.as_mut().unwrap()[0].addresses = vec!["10.0.0.2".into()];
    let replaced = slices
        .replace("s", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.uid(), created.uid(), "a replace keeps the object");
    stale.endpoints = None;
    let err = slices
        .replace("s", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has been modified"), "{err}");

    let patch = json!({"metadata": {"labels": {"extra": "yes"}}});
    let patched = slices
        .patch("s", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        patched.labels().get("extra").map(String::as_str),
        Some("yes")
    );
    assert_eq!(patched.labels().len(), 2);

    let selected = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=svc,extra"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    let none = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name!=svc"))
        .await
        .unwrap();
    assert!(none.items.is_empty());

    slices.delete("s", &DeleteParams::default()).await.unwrap();
    assert!(slices.get_opt("s").await.unwrap().is_none());
    assert!(
        kube.list_json("discovery.k8s.io/v1", "EndpointSlice")
            .is_empty()
    );
}

#[tokio::test]
async fn a_watcher_follows_changes_and_lists_again_after_410_gone() {
    let kube = FakeKube::start().await;
    kube.apply(&pod("a", "p1", "x"));
    let pods: Api<Pod> = Api::all(kube.client());
    let mut events = watcher(pods, watcher::Config::default().timeout(5)).boxed();

    // An error item (the 410) leaves the watcher running: it backs off and lists again.
    let mut next_item = async || {
        tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("a watcher event within 5 s")
            .expect("the watcher goes on")
    };
    assert!(matches!(next_item().await.unwrap(), watcher::Event::Init));
    assert!(
        matches!(next_item().await.unwrap(), watcher::Event::InitApply(p) if p.name_any() == "p1")
    );
    assert!(matches!(
        next_item().await.unwrap(),
        watcher::Event::InitDone
    ));

    kube.apply(&pod("a", "p2", "y"));
    assert!(matches!(next_item().await.unwrap(), watcher::Event::Apply(p) if p.name_any() == "p2"));
    assert!(kube.delete("v1", "Pod", Some("a"), "p1"));
    assert!(
        matches!(next_item().await.unwrap(), watcher::Event::Delete(p) if p.name_any() == "p1")
    );

    let lists_before = list_requests(&kube);
    kube.expire_watches();
    let gone = next_item().await.unwrap_err();
    assert!(
        gone.to_string().contains("410") || format!("{gone:?}").contains("410"),
        "{gone:?}"
    );
    assert!(matches!(next_item().await.unwrap(), watcher::Event::Init));
    assert!(
        matches!(next_item().await.unwrap(), watcher::Event::InitApply(p) if p.name_any() == "p2")
    );
    assert!(matches!(
        next_item().await.unwrap(),
        watcher::Event::InitDone
    ));
    assert_eq!(
        list_requests(&kube),
        lists_before + 1,
        "410 Gone made the watcher list again"
    );
}

#[tokio::test]
async fn discovery_names_only_what_is_served() {
    let kube = FakeKube::start().await;
    let client = kube.client();
    assert!(
        client
            .list_api_group_resources("cilium.io/v2")
            .await
            .is_err()
    );
    kube.install_cilium_crds();
    let resources = client
        .list_api_group_resources("cilium.io/v2")
        .await
        .unwrap();
    let names: Vec<&str> = resources
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["ciliumidentities", "ciliumendpoints", "ciliumnodes"]
    );
}

fn list_requests(kube: &FakeKube) -> usize {
    kube.requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/pods") && !r.contains("watch=true"))
        .count()
}

/// Reads watch events, as raw JSON lines, from a watch URL until `wanted` of them arrived.
async fn raw_watch(kube: &FakeKube, path_and_query: &str, wanted: usize) -> Vec<serde_json::Value> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri = format!("{}{path_and_query}", kube.url()).parse().unwrap();
    let mut body = client.get(uri).await.unwrap().into_body();
    let mut text = String::new();
    while text.matches('\n').count() < wanted {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a watch event within 5 s")
            .expect("the watch goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn a_watch_allowing_bookmarks_gets_them_and_resumes_from_them() {
    let kube = FakeKube::start().await;
    let rv = kube.apply(&pod("a", "p1", "x"));
    let events = raw_watch(
        &kube,
        &format!("/api/v1/pods?watch=true&allowWatchBookmarks=true&resourceVersion={rv}"),
        1,
    )
    .await;
    assert_eq!(events[0]["type"], "BOOKMARK");
    assert_eq!(events[0]["object"]["kind"], "Pod");
    let bookmark = events[0]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        bookmark,
        rv.to_string(),
        "nothing happened since the watch began"
    );

    // Resuming from the bookmark replays nothing older: the next event is the new pod.
    kube.apply(&pod("a", "p2", "x"));
    let events = raw_watch(
        &kube,
        &format!("/api/v1/pods?watch=true&resourceVersion={bookmark}"),
        1,
    )
    .await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "p2");
}

#[tokio::test]
async fn objects_entering_and_leaving_a_selector_are_added_and_deleted_for_its_watch() {
    let kube = FakeKube::start().await;
    let rv = kube.apply(&pod("a", "p1", "x"));
    kube.apply(&pod("a", "p1", "y")); // leaves app=x
    kube.apply(&pod("a", "p1", "x")); // enters it again
    kube.apply(&pod("a", "p1", "x")); // changes within it
    assert!(kube.delete("v1", "Pod", Some("a"), "p1"));
    let events = raw_watch(
        &kube,
        &format!("/api/v1/pods?watch=true&labelSelector=app%3Dx&resourceVersion={rv}"),
        4,
    )
    .await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["DELETED", "ADDED", "MODIFIED", "DELETED"]);
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_a_410_event() {
    let kube = FakeKube::start().await;
    let rv = kube.apply(&pod("a", "p1", "x"));
    kube.expire_watches();
    kube.apply(&pod("a", "p2", "x"));
    let events = raw_watch(
        &kube,
        &format!("/api/v1/pods?watch=true&resourceVersion={rv}"),
        1,
    )
    .await;
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
}
