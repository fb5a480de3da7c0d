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
