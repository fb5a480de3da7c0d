//! `fleetmesh fleet plan` end to end: a hub-spoke profile planned by the binary, every
//! member started in-process from the generated files, converging with the topology
//! enforced by certificates; a re-run with one member added changes only what it says;
//! a bad profile is refused with one message per problem and nothing written.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use fleetmesh::agent::{Agent, AgentConfig};
use fleetmesh::apiserver::{Apiserver, ApiserverConfig};
use fleetmesh::model::ServiceName;
use fleetmesh::proto::v1::mesh_client::MeshClient;
use fleetmesh::proto::v1::{InfoRequest, WatchRequest};
use fleetmesh::remote::LinkSettings;
use fleetmesh::tls::{TlsFiles, load_client_config};

const TIMEOUT: Duration = Duration::from_secs(20);
const SPOKES: [&str; 4] = ["s1", "s2", "s3", "s4"];

fn fleetmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args(args)
        .output()
        .unwrap()
}

fn plan(profile: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "fleet",
        "plan",
        profile.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let output = fleetmesh(&args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "fleetmesh {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A hub-spoke profile: `hub` and the spokes, each at its 127.0.0.1 address.
fn hub_spoke_profile(members: &[(&str, String)]) -> String {
    let list: String = members
        .iter()
        .map(|(name, address)| format!("  - {{name: {name}, address: \"{address}\"}}\n"))
        .collect();
    format!("mesh: test\nmembers:\n{list}topology: {{kind: hub-spoke, hubs: [hub]}}\n")
}

/// A global service `web/api` with one ready backend.
fn service_yaml(ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: api\n  namespace: web\n  annotations:\n    service.cilium.io/global: \"true\"\nspec:\n  ports: [{{name: http, port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: api-1\n  namespace: web\n  labels: {{kubernetes.io/service-name: api}}\naddressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n- addresses: [{ip}]\n  conditions: {{ready: true}}\n"
    )
}

async fn wait_for(what: &str, done: impl FnMut() -> bool) {
    support::wait_until(what, TIMEOUT, done).await;
}

/// The clusters whose backends of `web/api` the agent holds.
fn clusters_with_backends(agent: &Agent) -> BTreeSet<String> {
    let name: ServiceName = "web/api".parse().unwrap();
    agent
        .view
        .read()
        .service(&name, Instant::now())
        .map(|v| v.selected.iter().map(|b| b.cluster.to_string()).collect())
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test]
async fn a_five_member_hub_spoke_profile_plans_starts_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let names: Vec<&str> = std::iter::once("hub").chain(SPOKES).collect();
    let members: Vec<(&str, String)> = names
        .iter()
        .zip(fleetmesh::testkit::free_ports(names.len()).unwrap())
        .map(|(name, port)| (*name, format!("127.0.0.1:{port}")))
        .collect();
    let profile = dir.path().join("profile.yaml");
    std::fs::write(&profile, hub_spoke_profile(&members)).unwrap();
    plan(&profile, &out, &[]);

    let mut apiservers = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(
            out.join(name).join("manifests/web.yaml"),
            service_yaml(&format!("10.{}.0.1", i + 1)),
        )
        .unwrap();
        let mut config = ApiserverConfig::load(&out.join(name).join("apiserver.yaml")).unwrap();
        config.health.listen = "127.0.0.1:0".parse().unwrap();
        let mut apiserver = Apiserver::start(config).await.unwrap();
        tokio::time::timeout(TIMEOUT, apiserver.synced())
            .await
            .unwrap()
            .unwrap();
        apiservers.insert(*name, apiserver);
    }
    let mut agents = BTreeMap::new();
    for name in &names {
        let mut config = AgentConfig::load(&out.join(name).join("agent.yaml")).unwrap();
        config.api.listen = "127.0.0.1:0".parse().unwrap();
        config.link = LinkSettings {
            backoff_max: Duration::from_millis(500),
            ..LinkSettings::default()
        };
        agents.insert(*name, Agent::start(config).await.unwrap());
    }

    for (name, agent) in &agents {
        let expected = if *name == "hub" {
            set(&names)
        } else {
            set(&["hub", name])
        };
        wait_for(&format!("{name}'s links to be ready"), || {
            let statuses = agent.statuses();
            statuses.iter().all(|s| s.ready)
                && statuses
                    .iter()
                    .map(|s| s.cluster.clone())
                    .collect::<BTreeSet<_>>()
                    == expected
        })
        .await;
        wait_for(&format!("{name}'s view of web/api"), || {
            clusters_with_backends(agent) == expected
        })
        .await;
    }

    // s1's client certificate against s2's apiserver: refused by identity, no data.
    let s1_certs = out.join("s1/certs");
    let files = TlsFiles {
        ca: s1_certs.join("ca.crt"),
        cert: s1_certs.join("client-s1.crt"),
        key: s1_certs.join("client-s1.key"),
    };
    let (_tx, rx) = tokio::sync::watch::channel(load_client_config(&files).unwrap());
    let s2_addr = &members[2].1;
    let channel = fleetmesh::tls::client::channel(s2_addr, None, rx).unwrap();
    let mut client = MeshClient::new(channel);
    let info = client.info(InfoRequest {}).await.unwrap_err();
    assert_eq!(info.code(), tonic::Code::PermissionDenied, "{info}");
    assert!(info.message().contains("s1"), "{info}");
    let watch = client.watch(WatchRequest::default()).await.unwrap_err();
    assert_eq!(watch.code(), tonic::Code::PermissionDenied, "{watch}");
    let stats = apiservers["s2"].grpc_stats.as_ref().unwrap();
    assert!(stats.permission_denied() >= 2);

    for (_, agent) in agents {
        agent.stop().await;
    }
}

/// Every file under `dir` (relative path) with its contents, inode and mtime: a file
/// rewritten with the same contents still shows up as changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u64, i64, i64)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                let contents = std::fs::read(&path).unwrap();
                files.insert(rel, (contents, meta.ino(), meta.mtime(), meta.mtime_nsec()));
            }
        }
    }
    files
}

/// The paths after `  + ` / `  ~ ` / `  - ` in a what-if's `files:` section.
fn listed_files(what_if: &str) -> BTreeSet<String> {
    what_if
        .lines()
        .skip_while(|l| *l != "files:")
        .filter_map(|l| l.strip_prefix("  ").and_then(|l| l.get(2..)))
        .map(str::to_string)
        .collect()
}

#[test]
fn rerunning_with_one_member_added_says_what_changes_and_changes_only_that() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let address = |i: usize| format!("127.0.0.1:{}", 20_000 + i);
    let mut members: Vec<(&str, String)> = std::iter::once("hub")
        .chain(SPOKES)
        .enumerate()
        .map(|(i, n)| (n, address(i)))
        .collect();
    let profile = dir.path().join("profile.yaml");
    std::fs::write(&profile, hub_spoke_profile(&members)).unwrap();
    plan(&profile, &out, &[]);
    let before = snapshot(&out);
    assert_eq!(plan(&profile, &out, &[]), "no changes\n");
    assert_eq!(snapshot(&out), before);

    members.push(("s5", address(5)));
    std::fs::write(&profile, hub_spoke_profile(&members)).unwrap();
    let dry = plan(&profile, &out, &["--dry-run"]);
    assert_eq!(snapshot(&out), before, "--dry-run wrote something");
    assert!(dry.contains("members added: s5\n"), "{dry}");
    assert!(dry.contains("id: s5 = 6 (assigned)\n"), "{dry}");
    assert!(
        dry.contains("links added (watcher -> watched): hub -> s5, s5 -> hub\n"),
        "{dry}"
    );
    assert!(
        dry.contains("  s5/certs/server-s5.crt (missing)\n"),
        "{dry}"
    );
    assert!(!dry.contains("CA: created"), "{dry}");
    let expected: BTreeSet<String> = [
        "fleet.lock.yaml",
        "hub/apiserver.yaml",
        "hub/remotes/s5.yaml",
        "s5/agent.yaml",
        "s5/apiserver.yaml",
        "s5/certs/ca.crt",
        "s5/certs/client-s5.crt",
        "s5/certs/client-s5.key",
        "s5/certs/server-s5.crt",
        "s5/certs/server-s5.key",
        "s5/manifests",
        "s5/remotes/hub.yaml",
        "s5/remotes/s5.yaml",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(listed_files(&dry), expected, "{dry}");

    let real = plan(&profile, &out, &[]);
    assert!(
        real.starts_with(&dry),
        "the real run printed another what-if:\n{real}"
    );
    let after = snapshot(&out);
    let changed: BTreeSet<String> = after
        .iter()
        .filter(|(path, state)| before.get(*path) != Some(state))
        .map(|(path, _)| path.display().to_string())
        .chain(
            before
                .keys()
                .filter(|p| !after.contains_key(*p))
                .map(|p| p.display().to_string()),
        )
        .collect();
    let files_expected: BTreeSet<String> = expected
        .into_iter()
        .filter(|p| p != "s5/manifests")
        .collect();
    assert_eq!(changed, files_expected);
    let hub = std::fs::read_to_string(out.join("hub/apiserver.yaml")).unwrap();
    assert!(
        hub.contains("allowedPeers: [hub, s1, s2, s3, s4, s5]\n"),
        "{hub}"
    );
    assert!(out.join("s5/manifests").is_dir());
}

#[test]
fn a_bad_profile_gets_one_message_per_problem_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let profile = dir.path().join("profile.yaml");
    let run = |text: &str| {
        std::fs::write(&profile, text).unwrap();
        let output = fleetmesh(&[
            "fleet",
            "plan",
            profile.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(!output.status.success());
        assert!(!out.exists(), "something was written");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = run("mesh: test\nmembers:\n\
         - {name: a, id: 1, address: \"10.0.0.1:9891\", podCIDRs: [10.0.0.0/8]}\n\
         - {name: b, id: 1, address: \"10.0.0.2:9891\", podCIDRs: [10.1.0.0/16]}\n\
         - {name: a, address: \"10.0.0.3:9891\"}\n\
         - {name: Bad_Name, address: \"10.0.0.4:9891\"}\n\
         topology: {kind: links, links: [{from: a, to: ghost}]}\n");
    let expected = [
        "member `b` (members[1]): id: 1 is already member `a`'s",
        "member `a` (members[2]): name: listed twice (also members[0])",
        "member `Bad_Name` (members[3]): name: invalid cluster name \"Bad_Name\"",
        "topology.links[0].to: `ghost` is not a member",
        "member `b` (members[1]): podCIDRs: 10.1.0.0/16 overlaps member `a`'s podCIDRs 10.0.0.0/8",
    ];
    assert!(
        stderr.contains("the profile has 5 problems; nothing was written"),
        "{stderr}"
    );
    for message in expected {
        assert_eq!(stderr.matches(message).count(), 1, "{message} in {stderr}");
    }
    assert_eq!(stderr.matches("\n  - ").count(), 5, "{stderr}");

    let many: String = (0..256)
        .map(|i| format!("- {{name: m{i}, address: \"m{i}.example:9891\"}}\n"))
        .collect();
    let stderr = run(&format!(
        "mesh: test\nmembers:\n{many}topology: {{kind: full-mesh}}\n"
    ));
    assert!(
        stderr.contains("the profile has 1 problem; nothing was written"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "members: 256 members, but a mesh with maxConnectedClusters 255 holds at most 255"
        ),
        "{stderr}"
    );
}
