//! A rolling update seen from a peer: SIGTERM to a serving apiserver process (planned by
//! `fleetmesh fleet plan`) ends its watches with "reconnect", it exits 0 well inside
//! Kubernetes' grace period, and the connected agent records a reconnect — not a failure —
//! keeps every object it holds meanwhile, and resyncs when the apiserver is back.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fleetmesh::agent::{Agent, AgentConfig};
use fleetmesh::model::ClusterName;

const TIMEOUT: Duration = Duration::from_secs(20);
/// Kubernetes' default termination grace period: SIGKILL follows after it.
const K8S_GRACE: Duration = Duration::from_secs(30);

/// `fleet plan` of c1 and c2 (full mesh) into `<dir>/out`; c2 serves the demo's cluster2
/// manifests, with its health port on a free port.
fn mk_plan(dir: &Path) -> PathBuf {
    let profile = dir.join("profile.yaml");
    std::fs::write(
        &profile,
        format!(
            "mesh: t\nmembers:\n  - {{name: c1, address: \"127.0.0.1:{}\"}}\n  - {{name: c2, address: \"127.0.0.1:{}\"}}\ntopology: {{kind: full-mesh}}\n",
            fleetmesh::testkit::free_port().unwrap(),
            fleetmesh::testkit::free_port().unwrap()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    support::fleet::run_plan(&profile, &out);
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo/cluster2.yaml"),
        out.join("c2/manifests/cluster2.yaml"),
    )
    .unwrap();
    let config = out.join("c2/apiserver.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("health: {listen: \"127.0.0.1:0\"}\n");
    std::fs::write(&config, text).unwrap();
    // c1's own apiserver is not part of this test.
    std::fs::remove_file(out.join("c1/remotes/c1.yaml")).unwrap();
    out
}

fn start_apiserver(out: &Path, log: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args(["apiserver", "--config"])
        .arg(out.join("c2/apiserver.yaml"))
        .env("FLEETMESH_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(out.join(log)).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit, at most `within`.
fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_watches_with_reconnect_and_the_agent_keeps_its_view() {
    let dir = tempfile::tempdir().unwrap();
    let out = mk_plan(dir.path());
    let mut apiserver = start_apiserver(&out, "c2-1.log");

    let mut config = AgentConfig::load(&out.join("c1/agent.yaml")).unwrap();
    config.api.listen = "127.0.0.1:0".parse().unwrap();
    // The first redial comes no sooner than this after the stream ends, so the status in
    // between is the one the stop itself left.
    config.link.backoff_min = Duration::from_secs(1);
    let agent = Agent::start(config).await.unwrap();
    let c2 = ClusterName::new("c2").unwrap();
    support::wait_until("c2's link to be ready", TIMEOUT, || {
        agent.statuses().first().is_some_and(|s| s.ready)
    })
    .await;
    let held = agent.view.read().counts(&c2).unwrap();
    // The agent may have dialed before the apiserver listened: that failure stays.
    let failed_before = agent.statuses()[0].last_failure.clone();
    assert!(held.endpoints > 0 && held.services > 0, "{held:?}");

    // Watch the view the whole time: nothing of c2 may go away.
    let fewest = Arc::new(AtomicUsize::new(usize::MAX));
    let watcher = {
        let (view, fewest, c2) = (agent.view.clone(), fewest.clone(), c2.clone());
        tokio::spawn(async move {
            loop {
                let counts = view.read().counts(&c2);
                let n = counts.map_or(0, |c| c.endpoints + c.services + c.nodes);
                fewest.fetch_min(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let asked = Instant::now();
    sigterm(&apiserver);
    let status = wait_exit(&mut apiserver, K8S_GRACE);
    let took = asked.elapsed();
    let log = std::fs::read_to_string(out.join("c2-1.log")).unwrap();
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    assert!(log.contains("stopping"), "{log}");

    let down = agent.statuses()[0].clone();
    assert!(!down.connected, "{down:#?}");
    assert_eq!(
        down.last_failure, failed_before,
        "a stop is not a failure: {down:#?}"
    );

    let mut apiserver = start_apiserver(&out, "c2-2.log");
    support::wait_until("c2's link to be ready again", TIMEOUT, || {
        agent.statuses().first().is_some_and(|s| s.ready)
    })
    .await;
    let again = agent.statuses()[0].clone();
    assert!(again.reconnects >= 1, "{again:#?}");
    watcher.abort();
    let total = held.endpoints + held.services + held.nodes;
    assert_eq!(
        fewest.load(Ordering::Relaxed),
        total,
        "the agent let go of c2's objects while it restarted"
    );
    assert_eq!(agent.view.read().counts(&c2), Some(held));

    sigterm(&apiserver);
    assert!(wait_exit(&mut apiserver, K8S_GRACE).success());
    agent.stop().await;
}
