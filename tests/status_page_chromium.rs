//! The agent's status page rendered by headless Chromium: the DOM a browser builds from
//! it holds the mesh graph (every cluster a node, every link an edge in its state's
//! colour) before the tables. Needs Debian's `chromium` package; without it the test says
//! so and skips, except under CI (`CI` set), where the set-up must have installed it.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::mesh::{MeshPki, start_manifest_member};

const TIMEOUT: Duration = Duration::from_secs(20);

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|bin| {
        Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The DOM headless Chromium builds from `url`, with a profile of its own in `profile`.
fn dump_dom(bin: &str, url: &str, profile: &Path) -> String {
    let output = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn chromium_renders_the_mesh_graph_with_every_link() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed: the CI set-up must install Debian's `chromium` package"
        );
        println!("SKIPPED: chromium is not installed (Debian package `chromium`)");
        return;
    };
    let pki = MeshPki::new();
    let (c1, _) = start_manifest_member(&pki, "c1", 1, None).await;
    let (c2, _) = start_manifest_member(&pki, "c2", 2, None).await;
    // c3's apiserver is not there: its link is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let peers = [
        ("c1", c1.grpc_addr.unwrap()),
        ("c2", c2.grpc_addr.unwrap()),
        ("c3", closed_addr),
    ];
    let agent = support::mesh::start_agent(&pki, "c1", 1, &peers, "").await;
    support::wait_until("c2's link to be ready", TIMEOUT, || {
        agent
            .statuses()
            .iter()
            .any(|s| s.cluster == "c2" && s.ready)
    })
    .await;

    let url = format!("http://{}/", agent.api_addr);
    let profile = tempfile::tempdir().unwrap();
    let dom = tokio::task::spawn_blocking(move || dump_dom(bin, &url, profile.path()))
        .await
        .unwrap();
    let graph = dom
        .find("<svg id=\"mesh-graph\"")
        .expect("the graph in the DOM");
    let tables = dom.find("<table").expect("the tables in the DOM");
    assert!(graph < tables, "the graph comes before the tables");
    // Three clusters as nodes, two links as edges, in their states.
    assert_eq!(dom.matches("<g class=\"cluster ").count(), 3, "{dom}");
    assert_eq!(dom.matches("<g class=\"link ").count(), 2, "{dom}");
    assert!(
        dom.contains("data-cluster=\"c2\" data-state=\"ready\""),
        "{dom}"
    );
    assert!(
        dom.contains("data-cluster=\"c3\" data-state=\"down\""),
        "{dom}"
    );
    assert!(dom.contains("stroke=\"#2a8a2a\""), "a green edge: {dom}");
    assert!(dom.contains("stroke=\"#c02020\""), "a red edge: {dom}");
    drop((agent, c1, c2));
}
