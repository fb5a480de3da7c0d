//! A mesh of real processes on loopback, as an operator runs one: `fleetmesh fleet plan`
//! writes every member's files, each apiserver and agent is a `fleetmesh` process started
//! from them, and faults are what happens to processes — kill -9, SIGSTOP (a silent
//! partition: the sockets stay open, nothing answers), SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetmesh::observe::AgentClient;

/// How long a process may take to come up (a debug build under a loaded CI machine).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A port free right now on 127.0.0.1, outside the range other sockets are given.
pub fn free_port() -> u16 {
    fleetmesh::testkit::free_port().expect("a free port")
}

/// Runs `fleetmesh fleet plan PROFILE --out OUT`; fails the test with its stderr.
pub fn run_plan(profile: &std::path::Path, out: &std::path::Path) {
    let plan = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args(["fleet", "plan"])
        .arg(profile)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "fleet plan failed: {}",
        String::from_utf8_lossy(&plan.stderr)
    );
}

/// Where the members' apiservers keep their state.
#[derive(Clone, Debug)]
pub enum FleetStore {
    /// The embedded store (what `fleet plan` writes).
    Memory,
    /// One etcd for all, each member under its own namespace.
    Etcd { endpoint: String, namespace: String },
}

/// One planned member.
pub struct Member {
    pub name: String,
    pub dir: PathBuf,
    pub health_port: u16,
    apiserver: Option<Child>,
    agent: Option<Child>,
    pub agent_port: u16,
    /// With [`Fleet::plan_serving_etcd`]: the port of the apiserver's etcd API (Cilium's
    /// clustermesh endpoint) and of the agent's (KVStoreMesh's part).
    pub apiserver_etcd_port: Option<u16>,
    pub agent_etcd_port: Option<u16>,
    /// Apiserver starts so far, to name each one's log.
    starts: usize,
}

impl Member {
    /// The agent's query API client.
    pub fn agent_client(&self) -> AgentClient {
        AgentClient::new(&format!("http://127.0.0.1:{}", self.agent_port)).unwrap()
    }

    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.as_ref().expect("apiserver running").id()
    }

    /// Writes a manifest file the way an editor or `kubectl get -o yaml >` would not: whole,
    /// through a rename, so the source never reads half of it.
    pub fn write_manifest(&self, file: &str, text: &str) {
        let dir = self.dir.join("manifests");
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(file)).unwrap();
    }
}

/// A planned fleet and the processes running it.
pub struct Fleet {
    _dir: tempfile::TempDir,
    pub out: PathBuf,
    pub members: Vec<Member>,
}

impl Fleet {
    /// Plans a full mesh of `names` on loopback (ids in order), with each agent's query API
    /// on a free port and `agent_extra` appended to every agent.yaml.
    pub fn plan(names: &[&str], store: &FleetStore, agent_extra: &str) -> Self {
        Self::plan_profile(names, store, agent_extra, "")
    }

    /// As [`Fleet::plan`], with the profile's `etcdApi` and `kvstoremesh`: every apiserver
    /// serves the etcd API to the peers' Cilium agents, and every agent to its own
    /// cluster's. The profile has one port for each; on loopback every member gets its
    /// own, in its configs and in the Cilium configs (`<member>/clustermesh/<peer>`)
    /// that name it.
    pub fn plan_serving_etcd(names: &[&str], store: &FleetStore, agent_extra: &str) -> Self {
        const APISERVER_PORT: u16 = 2379;
        const AGENT_PORT: u16 = 2380;
        let mut fleet = Self::plan_profile(
            names,
            store,
            agent_extra,
            &format!("etcdApi: {{port: {APISERVER_PORT}}}\nkvstoremesh: {{port: {AGENT_PORT}}}\n"),
        );
        for member in &mut fleet.members {
            let (apiserver_port, agent_port) = (free_port(), free_port());
            replace_in(
                &member.dir.join("apiserver.yaml"),
                &format!("listen: \"0.0.0.0:{APISERVER_PORT}\""),
                &format!("listen: \"127.0.0.1:{apiserver_port}\""),
            );
            replace_in(
                &member.dir.join("agent.yaml"),
                &format!("listen: \"127.0.0.1:{AGENT_PORT}\""),
                &format!("listen: \"127.0.0.1:{agent_port}\""),
            );
            member.apiserver_etcd_port = Some(apiserver_port);
            member.agent_etcd_port = Some(agent_port);
        }
        for member in &fleet.members {
            for peer in fleet.members.iter().filter(|p| p.name != member.name) {
                replace_in(
                    &member.dir.join("clustermesh").join(&peer.name),
                    &format!("https://127.0.0.1:{APISERVER_PORT}"),
                    &format!("https://127.0.0.1:{}", peer.apiserver_etcd_port.unwrap()),
                );
            }
        }
        fleet
    }

    fn plan_profile(
        names: &[&str],
        store: &FleetStore,
        agent_extra: &str,
        profile_extra: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let grpc_ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let members: String = names
            .iter()
            .zip(&grpc_ports)
            .map(|(name, port)| format!("  - {{name: {name}, address: \"127.0.0.1:{port}\"}}\n"))
            .collect();
        let profile = dir.path().join("profile.yaml");
        std::fs::write(
            &profile,
            format!(
                "mesh: faults\nmembers:\n{members}topology: {{kind: full-mesh}}\n{profile_extra}"
            ),
        )
        .unwrap();
        let out = dir.path().join("out");
        run_plan(&profile, &out);
        let members = names
            .iter()
            .map(|name| {
                let member_dir = out.join(name);
                let health_port = free_port();
                let agent_port = free_port();
                let apiserver = member_dir.join("apiserver.yaml");
                let mut text = std::fs::read_to_string(&apiserver).unwrap();
                if let FleetStore::Etcd {
                    endpoint,
                    namespace,
                } = store
                {
                    assert!(text.contains("store: {kind: memory}"), "{text}");
                    // etcd keeps identity allocations itself: no state directory.
                    text = text.replace("identity: {stateDir: state}\n", "");
                    text = text.replace(
                        "store: {kind: memory}",
                        &format!(
                            "store: {{kind: etcd, etcd: {{endpoints: [\"{endpoint}\"], namespace: \"{namespace}{name}/\"}}}}"
                        ),
                    );
                }
                text.push_str(&format!("health: {{listen: \"127.0.0.1:{health_port}\"}}\n"));
                std::fs::write(&apiserver, text).unwrap();
                let agent = member_dir.join("agent.yaml");
                let mut text = std::fs::read_to_string(&agent).unwrap();
                text.push_str(&format!("api: {{listen: \"127.0.0.1:{agent_port}\"}}\n"));
                text.push_str(agent_extra);
                std::fs::write(&agent, text).unwrap();
                Member {
                    name: name.to_string(),
                    dir: member_dir,
                    health_port,
                    apiserver: None,
                    agent: None,
                    agent_port,
                    apiserver_etcd_port: None,
                    agent_etcd_port: None,
                    starts: 0,
                }
            })
            .collect();
        Self {
            _dir: dir,
            out,
            members,
        }
    }

    pub fn member(&self, name: &str) -> &Member {
        self.members.iter().find(|m| m.name == name).unwrap()
    }

    fn member_mut(&mut self, name: &str) -> &mut Member {
        self.members.iter_mut().find(|m| m.name == name).unwrap()
    }

    /// Starts `name`'s apiserver and waits until `/readyz` answers 200.
    pub async fn start_apiserver(&mut self, name: &str) {
        let member = self.member_mut(name);
        assert!(
            member.apiserver.is_none(),
            "{name}'s apiserver runs already"
        );
        member.starts += 1;
        let log = member.dir.join(format!("apiserver-{}.log", member.starts));
        let child = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
            .args(["apiserver", "--config"])
            .arg(member.dir.join("apiserver.yaml"))
            .env("FLEETMESH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        member.apiserver = Some(child);
        let url = format!("http://127.0.0.1:{}/readyz", member.health_port);
        wait_http_ok(&url, &log).await;
    }

    /// Starts `name`'s agent and waits until its API answers.
    pub async fn start_agent(&mut self, name: &str) {
        let member = self.member_mut(name);
        let log = member.dir.join("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
            .args(["agent", "--config"])
            .arg(member.dir.join("agent.yaml"))
            .env("FLEETMESH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        member.agent = Some(child);
        let url = format!("http://127.0.0.1:{}/healthz", member.agent_port);
        wait_http_ok(&url, &log).await;
    }

    /// kill -9: the process ends with no goodbye; its sockets close.
    pub fn kill_apiserver(&mut self, name: &str) {
        let mut child = self.member_mut(name).apiserver.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGSTOP: a silent partition — connections stay open and nothing answers.
    pub fn pause_apiserver(&self, name: &str) {
        signal(self.member(name).apiserver_pid(), "-STOP");
    }

    pub fn resume_apiserver(&self, name: &str) {
        signal(self.member(name).apiserver_pid(), "-CONT");
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for member in &mut self.members {
            for child in [member.apiserver.take(), member.agent.take()]
                .into_iter()
                .flatten()
            {
                let mut child = child;
                // A stopped process must be continued to die of SIGKILL's reaping.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Replaces `from` in the file at `path`, which must hold it.
fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(from),
        "{} holds no {from:?}:\n{text}",
        path.display()
    );
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// Polls `url` until it answers 200; on time-out fails with the process's log.
async fn wait_http_ok(url: &str, log: &Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if http_status(url).await == Some(200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer 200 within {START_TIMEOUT:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The status code of a plain HTTP/1.1 GET, or `None` if nothing answered.
pub async fn http_status(url: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(host))
            .await
            .ok()?
            .ok()?;
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut head))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&head[..n]);
    text.split_whitespace().nth(1)?.parse().ok()
}
