//! The fault suite's oracle: a workload of manifests whose expected state is known, a check
//! of an agent's answers (its query API, as a user reads it) against that state, and a
//! flap detector that polls the agent while faults happen.
//!
//! Each member `i` (1-based) of a fleet runs:
//! - `stable.yaml`: a node, [`STABLE_PODS`] pods that never change, and the global service
//!   `app/web` backed by them. These must never leave the agent's answers — not during a
//!   kill, a restart, a wipe or a partition — nor change identity number.
//! - `churn.yaml`: [`CHURN_PODS`] pod slots, rewritten every generation: some appear, some
//!   go, labels change. Checked once the mesh has converged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetmesh::observe::{AgentClient, ClientError};
use parking_lot::Mutex;

use super::fleet::{Fleet, Member};

pub const STABLE_PODS: usize = 8;
pub const CHURN_PODS: usize = 6;
/// How long the agent may take to answer exactly after the churn stopped.
pub const CONVERGE: Duration = Duration::from_secs(30);
/// The flap detector's period.
pub const POLL: Duration = Duration::from_millis(100);

/// What the agent must say about one pod IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedPod {
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub app: String,
}

/// The state one member's manifests describe at a churn generation.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub pods: BTreeMap<IpAddr, ExpectedPod>,
    /// `app/web`'s ready backends per cluster.
    pub web: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl Expected {
    pub fn merge(mut self, other: Expected) -> Self {
        self.pods.extend(other.pods);
        self.web.extend(other.web);
        self
    }
}

fn stable_ip(index: usize, k: usize) -> IpAddr {
    format!("10.{index}.1.{}", k + 1).parse().unwrap()
}

fn churn_ip(index: usize, k: usize) -> IpAddr {
    format!("10.{index}.2.{}", k + 1).parse().unwrap()
}

fn pod_yaml(
    name: &str,
    app: &str,
    extra_label: &str,
    ip: IpAddr,
    node: &str,
    index: usize,
) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: app\n  labels: {{app: {app}{extra_label}}}\n\
         spec: {{nodeName: {node}}}\nstatus:\n  phase: Running\n  hostIP: 172.30.{index}.1\n  podIP: {ip}\n  podIPs: [{{ip: {ip}}}]\n"
    )
}

/// Member `index` (1-based) named `cluster`: the stable manifests.
pub fn stable_yaml(index: usize) -> String {
    let node = format!("node-{index}");
    let mut text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: app}}\n---\napiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\n\
         spec: {{podCIDRs: [10.{index}.0.0/16]}}\nstatus:\n  addresses: [{{type: InternalIP, address: 172.30.{index}.1}}]\n\
         ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: app\n  annotations: {{service.cilium.io/global: \"true\"}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-{index}\n  namespace: app\n  labels: {{kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080, protocol: TCP}}]\nendpoints:\n"
    );
    for k in 0..STABLE_PODS {
        text.push_str(&format!(
            "- addresses: [{}]\n  conditions: {{ready: true}}\n",
            stable_ip(index, k)
        ));
    }
    for k in 0..STABLE_PODS {
        text.push_str(&pod_yaml(
            &format!("stable-{k}"),
            &format!("stable-{}", k % 3),
            "",
            stable_ip(index, k),
            &node,
            index,
        ));
    }
    text
}

/// Whether churn slot `k` holds a pod at generation `g`, and its app label. Every
/// generation brings label sets of its own, one of them at generation 0 and two or three
/// later: label sets come and go, and an apiserver that restarts mid-churn meets another
/// number of them than at its first start (what moved identity numbers on restart).
fn churn_slot(k: usize, generation: u64) -> Option<String> {
    let g = generation as usize;
    let sets = if g == 0 { 1 } else { 2 + g % 2 };
    (!(k + g).is_multiple_of(4)).then(|| format!("churn-g{g}-{}", k % sets))
}

/// Member `index`'s churn manifests at `generation`.
pub fn churn_yaml(index: usize, generation: u64) -> String {
    let node = format!("node-{index}");
    let mut text = String::from("# churn\n");
    for k in 0..CHURN_PODS {
        if let Some(app) = churn_slot(k, generation) {
            text.push_str(&pod_yaml(
                &format!("churn-{k}"),
                &app,
                "",
                churn_ip(index, k),
                &node,
                index,
            ));
        }
    }
    text
}

/// What member `index` named `cluster` exports at `generation` (`None`: stable part only).
pub fn expected(index: usize, cluster: &str, generation: Option<u64>) -> Expected {
    let mut pods = BTreeMap::new();
    for k in 0..STABLE_PODS {
        pods.insert(
            stable_ip(index, k),
            ExpectedPod {
                cluster: cluster.to_string(),
                namespace: "app".into(),
                pod: format!("stable-{k}"),
                app: format!("stable-{}", k % 3),
            },
        );
    }
    if let Some(g) = generation {
        for k in 0..CHURN_PODS {
            if let Some(app) = churn_slot(k, g) {
                pods.insert(
                    churn_ip(index, k),
                    ExpectedPod {
                        cluster: cluster.to_string(),
                        namespace: "app".into(),
                        pod: format!("churn-{k}"),
                        app,
                    },
                );
            }
        }
    }
    let web = [(
        cluster.to_string(),
        (0..STABLE_PODS).map(|k| stable_ip(index, k)).collect(),
    )]
    .into();
    Expected { pods, web }
}

/// What a fleet of members named `names` (indices from 1, in order) exports at
/// `generation` (`None`: the stable part only, which must never flap).
pub fn expected_fleet(names: &[&str], generation: Option<u64>) -> Expected {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| expected(i + 1, name, generation))
        .fold(Expected::default(), Expected::merge)
}

/// Every IP a churn slot of member `index` may ever hold.
pub fn churn_ips(index: usize) -> Vec<IpAddr> {
    (0..CHURN_PODS).map(|k| churn_ip(index, k)).collect()
}

/// A pod of member `index` outside the stable and churn sets, to time how long one
/// change takes to reach an agent: its IP and its manifest.
pub fn marker_pod(index: usize) -> (IpAddr, String) {
    let ip: IpAddr = format!("10.{index}.3.1").parse().unwrap();
    let yaml = pod_yaml("marker", "marker", "", ip, &format!("node-{index}"), index);
    (ip, yaml)
}

/// Every IP a churn slot of a fleet of `members` members may ever hold.
pub fn every_churn_ip(members: usize) -> Vec<IpAddr> {
    (1..=members).flat_map(churn_ips).collect()
}

/// Writes member `index`'s stable manifests and churn generation 0.
pub fn seed(member: &Member, index: usize) {
    member.write_manifest("stable.yaml", &stable_yaml(index));
    member.write_manifest("churn.yaml", &churn_yaml(index, 0));
}

/// Seeds every member of `fleet` (the `i`-th of `names` is member `i + 1`) and starts its
/// apiserver.
pub async fn seed_and_start(fleet: &mut Fleet, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        seed(fleet.member(name), i + 1);
        fleet.start_apiserver(name).await;
    }
}

/// Seeds and starts every member's apiserver (the `i`-th of `names` is member `i + 1`),
/// then `agent`'s agent, and waits until it answers exactly for churn generation 0;
/// returns its client.
pub async fn start_converged(fleet: &mut Fleet, names: &[&str], agent: &str) -> AgentClient {
    seed_and_start(fleet, names).await;
    fleet.start_agent(agent).await;
    let client = fleet.member(agent).agent_client();
    let expected = expected_fleet(names, Some(0));
    converge(&client, &expected, &every_churn_ip(names.len()), CONVERGE).await;
    client
}

/// Stops `churn` (which must have written at least `min_generations`) and waits until
/// `client` answers exactly for the last generation; the generation and the time it took.
pub async fn stop_and_converge(
    churn: Churn,
    client: &AgentClient,
    names: &[&str],
    min_generations: u64,
) -> (u64, Duration) {
    let generation = churn.stop().await;
    assert!(
        generation >= min_generations,
        "the churn wrote only {generation} generations"
    );
    let expected = expected_fleet(names, Some(generation));
    let took = converge(client, &expected, &every_churn_ip(names.len()), CONVERGE).await;
    (generation, took)
}

/// One answer of the agent about one IP, reduced to what the oracle checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub pod: ExpectedPod,
    pub identity: u32,
}

/// Asks the agent about `ip`: `Ok(None)` when no cluster owns it.
pub async fn lookup(client: &AgentClient, ip: IpAddr) -> Result<Option<Answer>, String> {
    match client.lookup(ip).await {
        Ok(entry) => {
            let labels = entry.labels.unwrap_or_default();
            Ok(Some(Answer {
                pod: ExpectedPod {
                    cluster: entry.cluster.to_string(),
                    namespace: entry.namespace.unwrap_or_default(),
                    pod: entry.pod.unwrap_or_default(),
                    app: labels
                        .get("app")
                        .map(|l| l.value.clone())
                        .unwrap_or_default(),
                },
                identity: entry.identity.get(),
            }))
        }
        Err(ClientError::Api { status: 404, .. }) => Ok(None),
        Err(err) => Err(err.to_string()),
    }
}

/// `app/web`'s backends per cluster as the agent holds them (ready or not).
pub async fn web_backends(
    client: &AgentClient,
) -> Result<BTreeMap<String, BTreeSet<IpAddr>>, String> {
    let services = client.services().await.map_err(|e| e.to_string())?;
    Ok(services
        .into_iter()
        .find(|s| s.name.to_string() == "app/web")
        .map(|s| {
            s.clusters
                .into_iter()
                .map(|c| {
                    (
                        c.cluster.to_string(),
                        c.backends.iter().map(|b| b.ip).collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Checks every answer the agent gives about `expected` and about `absent` (IPs that must
/// not be owned): the mismatches, empty when the agent agrees.
pub async fn mismatches(
    client: &AgentClient,
    expected: &Expected,
    absent: &[IpAddr],
) -> Vec<String> {
    let mut wrong = Vec::new();
    for (ip, want) in &expected.pods {
        match lookup(client, *ip).await {
            Ok(Some(got)) if &got.pod == want => {}
            Ok(got) => wrong.push(format!("{ip}: expected {want:?}, got {got:?}")),
            Err(err) => wrong.push(format!("{ip}: {err}")),
        }
    }
    for ip in absent.iter().filter(|ip| !expected.pods.contains_key(ip)) {
        match lookup(client, *ip).await {
            Ok(None) => {}
            other => wrong.push(format!("{ip}: expected nobody, got {other:?}")),
        }
    }
    match web_backends(client).await {
        Ok(got) if got == expected.web => {}
        other => wrong.push(format!(
            "app/web: expected {:?}, got {other:?}",
            expected.web
        )),
    }
    wrong
}

/// Waits until the agent's answers match `expected` exactly; fails naming what differs.
pub async fn converge(
    client: &AgentClient,
    expected: &Expected,
    absent: &[IpAddr],
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let wrong = mismatches(client, expected, absent).await;
        if wrong.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the agent did not converge within {within:?}:\n{}",
            wrong.join("\n")
        );
        tokio::time::sleep(POLL).await;
    }
}

/// What the flap detector saw.
#[derive(Debug, Default)]
pub struct Flaps {
    pub polls: u64,
    /// Answers in which a stable object was missing or wrong, or changed identity.
    pub flaps: Vec<String>,
}

impl Flaps {
    /// Fails the test if anything flapped `during` the fault, or if the detector polled
    /// fewer than `min_polls` times (it would have seen too little to say).
    pub fn assert_none(&self, min_polls: u64, during: &str) {
        assert!(
            self.polls >= min_polls,
            "the flap detector polled only {} times {during}",
            self.polls
        );
        assert!(
            self.flaps.is_empty(),
            "{} flaps in {} polls {during}:\n{}",
            self.flaps.len(),
            self.polls,
            self.flaps.join("\n")
        );
    }
}

/// Polls the agent every [`POLL`] until dropped: each poll reads `app/web` and looks up one
/// stable IP after another; a stable object missing, wrong or with another identity number
/// than first seen is a flap. An agent that does not answer is not a flap (it is
/// restarting or busy); an answer that is wrong is.
pub struct FlapDetector {
    seen: Arc<Mutex<Flaps>>,
    task: tokio::task::JoinHandle<()>,
}

impl FlapDetector {
    pub fn start(client: AgentClient, stable: Expected) -> Self {
        let seen = Arc::new(Mutex::new(Flaps::default()));
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let ips: Vec<IpAddr> = stable.pods.keys().copied().collect();
                let mut identities: BTreeMap<IpAddr, u32> = BTreeMap::new();
                for round in 0usize.. {
                    let mut found = Vec::new();
                    if let Ok(web) = web_backends(&client).await {
                        for (cluster, want) in &stable.web {
                            let got = web.get(cluster).cloned().unwrap_or_default();
                            if !want.is_subset(&got) {
                                found.push(format!("app/web of {cluster}: {got:?}"));
                            }
                        }
                    }
                    // A few lookups per poll, round robin: every stable IP within seconds.
                    for ip in ips.iter().cycle().skip(round * 4).take(4) {
                        match lookup(&client, *ip).await {
                            Ok(Some(answer)) if answer.pod == stable.pods[ip] => {
                                let first = *identities.entry(*ip).or_insert(answer.identity);
                                if first != answer.identity {
                                    found.push(format!(
                                        "{ip}: identity {first} became {}",
                                        answer.identity
                                    ));
                                }
                            }
                            Ok(other) => found.push(format!("{ip}: {other:?}")),
                            Err(_) => {}
                        }
                    }
                    {
                        let mut seen = seen.lock();
                        seen.polls += 1;
                        seen.flaps.extend(found);
                    }
                    tokio::time::sleep(POLL).await;
                }
            })
        };
        Self { seen, task }
    }

    /// Stops polling and says what was seen.
    pub fn finish(self) -> Flaps {
        self.task.abort();
        std::mem::take(&mut *self.seen.lock())
    }
}

/// Starts the flap detector on `agent`'s answers about every member's stable objects,
/// then the churn of every member (the `i`-th of `names` is member `i + 1`).
pub fn flaps_under_churn(
    fleet: &Fleet,
    names: &[&str],
    agent: &str,
    period: Duration,
) -> (FlapDetector, Churn) {
    let flaps = FlapDetector::start(
        fleet.member(agent).agent_client(),
        expected_fleet(names, None),
    );
    (flaps, Churn::start_fleet(fleet, names, period))
}

/// Rewrites every member's `churn.yaml` with a new generation every `period` until
/// dropped; `generation()` is the last one written.
pub struct Churn {
    generation: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Churn {
    pub fn start(members: Vec<(usize, std::path::PathBuf)>, period: Duration) -> Self {
        use std::sync::atomic::Ordering;
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = {
            let generation = generation.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                    let g = generation.load(Ordering::SeqCst) + 1;
                    for (index, dir) in &members {
                        let manifests = dir.join("manifests");
                        let tmp = manifests.join(".churn.yaml.tmp");
                        std::fs::write(&tmp, churn_yaml(*index, g)).unwrap();
                        std::fs::rename(&tmp, manifests.join("churn.yaml")).unwrap();
                    }
                    generation.store(g, Ordering::SeqCst);
                }
            })
        };
        Self { generation, task }
    }

    /// Churns every member of `fleet` (the `i`-th of `names` is member `i + 1`).
    pub fn start_fleet(fleet: &Fleet, names: &[&str], period: Duration) -> Self {
        let members = names
            .iter()
            .enumerate()
            .map(|(i, name)| (i + 1, fleet.member(name).dir.clone()))
            .collect();
        Self::start(members, period)
    }

    /// Stops churning; the last generation written. The task may be writing on another
    /// worker when it is aborted (it stops only at its next sleep), so it is awaited
    /// before the generation is read: that write counts.
    pub async fn stop(self) -> u64 {
        self.task.abort();
        let _ = self.task.await;
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}
