//! Validated fleet + what the output directory holds → the files to write and remove,
//! and the what-if that says so first. Nothing here writes: [`Plan::materialize`] hands
//! the caller the operations.

use std::collections::BTreeSet;
use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::kustomize::{KUSTOMIZATION_FILE, clustermesh_kustomization_yaml, kustomization_yaml};
use super::leaves::{LeafSpec, Role};
use super::lock::{LOCK_FILE, Lock};
use super::profile::Profile;
use super::render::{
    CERTS_DIR, CLUSTERMESH_CA_FILE, CLUSTERMESH_CERT_FILE, CLUSTERMESH_DIR, CLUSTERMESH_KEY_FILE,
    IN_CLUSTER_DIR, MANIFESTS_DIR, REMOTES_DIR, agent_yaml, apiserver_yaml, clustermesh_yaml,
    in_cluster_agent_yaml, in_cluster_apiserver_yaml, remote_yaml,
};
use super::validate::{Fleet, Member, validate};
use super::{FleetError, Problems};
use crate::certs::Ca;
use crate::certs::files::{CA_CERT_FILE, CA_KEY_FILE, CERT_MODE, KEY_MODE, load_ca};
use crate::model::{ClusterId, ClusterName};

/// The shared CA's directory inside the output directory.
pub const CA_DIR: &str = "ca";
/// Mode of generated configuration files: they hold paths, no secrets.
const CONFIG_MODE: u32 = 0o644;
/// Lifetime of a new CA: rolled over deliberately, long before it expires.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Lifetime of a new leaf: `fleetmesh certs rotate` renews it before then.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// How a file changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Add,
    Modify,
    Remove,
}

impl Change {
    fn sign(self) -> char {
        match self {
            Self::Add => '+',
            Self::Modify => '~',
            Self::Remove => '-',
        }
    }
}

/// What a run would change, for people to read before anything is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WhatIf {
    pub members_added: Vec<ClusterName>,
    pub members_removed: Vec<ClusterName>,
    /// The ids of added members, and whether this run assigned them.
    pub new_ids: Vec<(ClusterName, ClusterId, bool)>,
    /// `(from, to)`: `from`'s agent starts (or stops) watching `to`.
    pub links_added: Vec<(ClusterName, ClusterName)>,
    pub links_removed: Vec<(ClusterName, ClusterName)>,
    /// True if the mesh CA does not exist yet and is created.
    pub ca_created: bool,
    /// Leaf certificates (path relative to the output) to issue, and why.
    pub certificates: Vec<(PathBuf, &'static str)>,
    /// Every file or directory (relative to the output) added, modified or removed.
    pub files: Vec<(PathBuf, Change)>,
}

impl WhatIf {
    /// True if the output already is what the profile asks for.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl fmt::Display for WhatIf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        let names = |list: &[ClusterName]| {
            list.iter()
                .map(ClusterName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let links = |list: &[(ClusterName, ClusterName)]| {
            list.iter()
                .map(|(from, to)| format!("{from} -> {to}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.members_added.is_empty() {
            writeln!(f, "members added: {}", names(&self.members_added))?;
        }
        if !self.members_removed.is_empty() {
            writeln!(f, "members removed: {}", names(&self.members_removed))?;
        }
        for (name, id, assigned) in &self.new_ids {
            let how = if *assigned {
                "assigned"
            } else {
                "from the profile"
            };
            writeln!(f, "id: {name} = {id} ({how})")?;
        }
        if !self.links_added.is_empty() {
            writeln!(
                f,
                "links added (watcher -> watched): {}",
                links(&self.links_added)
            )?;
        }
        if !self.links_removed.is_empty() {
            writeln!(
                f,
                "links removed (watcher -> watched): {}",
                links(&self.links_removed)
            )?;
        }
        if self.ca_created {
            writeln!(f, "CA: created in {CA_DIR}/")?;
        }
        if !self.certificates.is_empty() {
            writeln!(f, "certificates to issue:")?;
            for (path, why) in &self.certificates {
                writeln!(f, "  {} ({why})", path.display())?;
            }
        }
        writeln!(f, "files:")?;
        for (path, change) in &self.files {
            writeln!(f, "  {} {}", change.sign(), path.display())?;
        }
        Ok(())
    }
}

/// One step of writing a plan out; paths are absolute (under the output directory).
#[derive(Clone, PartialEq, Eq)]
pub enum FileOp {
    CreateDir(PathBuf),
    /// Write `contents` atomically with `mode`, creating parent directories.
    Write {
        path: PathBuf,
        contents: String,
        mode: u32,
    },
    Remove(PathBuf),
}

impl fmt::Debug for FileOp {
    // Keys stay out of logs: contents are not shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateDir(p) => write!(f, "CreateDir({})", p.display()),
            Self::Write { path, mode, .. } => write!(f, "Write({}, {mode:o})", path.display()),
            Self::Remove(p) => write!(f, "Remove({})", p.display()),
        }
    }
}

/// What a file of the plan holds.
#[derive(Clone, Debug)]
enum Content {
    Text(String),
    /// A private key's PEM (written owner-only).
    Key(String),
    /// The mesh CA's certificate (known once the CA exists).
    CaCert,
}

/// A profile checked against an output directory: the files that change and why.
#[derive(Debug)]
pub struct Plan {
    out: PathBuf,
    fleet: Fleet,
    /// `None`: the CA is created when the plan is materialized.
    ca: Option<Ca>,
    /// Files to write (relative paths), each with its content.
    writes: Vec<(PathBuf, Content)>,
    leaves: Vec<LeafSpec>,
    dirs: Vec<PathBuf>,
    removals: Vec<PathBuf>,
    /// The new lock file, if it changes.
    lock: Option<String>,
    what_if: WhatIf,
}

/// Validates `profile` (YAML) against the output directory `out` — its lock file, CA and
/// files — and works out what changes. Reads only.
pub fn plan(profile: &str, out: &Path) -> Result<Plan, FleetError> {
    let profile = Profile::parse(profile).map_err(FleetError::Profile)?;
    let lock_path = out.join(LOCK_FILE);
    let previous = match read_optional(&lock_path)? {
        Some(text) => Some(Lock::parse(&text).map_err(|source| FleetError::Lock {
            path: lock_path.clone(),
            source,
        })?),
        None => None,
    };
    let fleet =
        validate(&profile, previous.as_ref()).map_err(|p| FleetError::Invalid(Problems(p)))?;
    let ca_dir = out.join(CA_DIR);
    let ca = if ca_dir.join(CA_CERT_FILE).exists() {
        Some(load_ca(&ca_dir).map_err(|source| FleetError::Ca {
            path: ca_dir.clone(),
            source,
        })?)
    } else {
        None
    };
    Planner {
        out,
        ca,
        writes: Vec::new(),
        leaves: Vec::new(),
        dirs: Vec::new(),
        removals: Vec::new(),
        what_if: WhatIf::default(),
    }
    .run(fleet, previous)
}

impl Plan {
    /// What would change; print it before materializing.
    pub fn what_if(&self) -> &WhatIf {
        &self.what_if
    }

    /// The operations that make the output directory match the profile: the CA (if new),
    /// leaves, CA copies, configuration files, removals, and the lock file last (so that
    /// an interrupted run is planned again from the old lock). Issues certificates;
    /// removing a member needs `allow_removal`.
    pub fn materialize(&self, allow_removal: bool) -> Result<Vec<FileOp>, FleetError> {
        let removed = &self.what_if.members_removed;
        if !removed.is_empty() && !allow_removal {
            let members = removed.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>();
            return Err(FleetError::Removal {
                members: members.join(", "),
            });
        }
        let mut ops = Vec::new();
        let new_ca;
        let ca = match &self.ca {
            Some(ca) => ca,
            None => {
                new_ca = Ca::generate(&format!("fleetmesh CA {}", self.fleet.mesh), CA_VALIDITY)
                    .map_err(FleetError::NewCa)?;
                let dir = self.out.join(CA_DIR);
                ops.push(write(dir.join(CA_KEY_FILE), new_ca.key_pem(), KEY_MODE));
                ops.push(write(dir.join(CA_CERT_FILE), new_ca.cert_pem(), CERT_MODE));
                &new_ca
            }
        };
        ops.extend(
            self.dirs
                .iter()
                .map(|d| FileOp::CreateDir(self.out.join(d))),
        );
        for leaf in &self.leaves {
            let issue_error = |source| FleetError::Issue {
                role: leaf.role.as_str(),
                cluster: leaf.cluster.clone(),
                source,
            };
            let issued = match leaf.role {
                Role::Server | Role::CacheServer => {
                    ca.issue_server(&leaf.cluster, &leaf.dns, &leaf.ips, LEAF_VALIDITY)
                }
                Role::Client | Role::Local => ca.issue_client(&leaf.cluster, LEAF_VALIDITY),
            }
            .map_err(issue_error)?;
            let (cert, key) = leaf_paths(leaf);
            // The key first: a watcher that sees the new certificate finds its key.
            ops.push(write(self.out.join(key), &issued.key_pem, KEY_MODE));
            ops.push(write(self.out.join(cert), &issued.cert_pem, CERT_MODE));
            if leaf.role == Role::Client && self.fleet.etcd_api_port.is_some() {
                // The Cilium agents' copy, in the Secret's shape.
                let dir = Path::new(leaf.cluster.as_str()).join(CLUSTERMESH_DIR);
                let (cert, key) = (
                    dir.join(CLUSTERMESH_CERT_FILE),
                    dir.join(CLUSTERMESH_KEY_FILE),
                );
                ops.push(write(self.out.join(key), &issued.key_pem, KEY_MODE));
                ops.push(write(self.out.join(cert), &issued.cert_pem, CERT_MODE));
            }
        }
        for (path, content) in &self.writes {
            let (contents, mode) = match content {
                Content::CaCert => (ca.cert_pem(), CERT_MODE),
                Content::Key(text) => (text.as_str(), KEY_MODE),
                Content::Text(text) => (text.as_str(), CONFIG_MODE),
            };
            ops.push(write(self.out.join(path), contents, mode));
        }
        ops.extend(
            self.removals
                .iter()
                .map(|p| FileOp::Remove(self.out.join(p))),
        );
        if let Some(lock) = &self.lock {
            ops.push(write(self.out.join(LOCK_FILE), lock, CONFIG_MODE));
        }
        Ok(ops)
    }
}

fn write(path: PathBuf, contents: &str, mode: u32) -> FileOp {
    FileOp::Write {
        path,
        contents: contents.to_string(),
        mode,
    }
}

/// `<member>/<dir>/<stem>.crt` and `.key`.
fn leaf_paths(leaf: &LeafSpec) -> (PathBuf, PathBuf) {
    let stem = leaf.file_stem();
    let dir = Path::new(leaf.cluster.as_str()).join(leaf.dir());
    (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    )
}

/// A file's text, or `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, FleetError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FleetError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Builds a [`Plan`] step by step.
struct Planner<'a> {
    out: &'a Path,
    ca: Option<Ca>,
    writes: Vec<(PathBuf, Content)>,
    leaves: Vec<LeafSpec>,
    dirs: Vec<PathBuf>,
    removals: Vec<PathBuf>,
    what_if: WhatIf,
}

impl Planner<'_> {
    fn run(mut self, fleet: Fleet, previous: Option<Lock>) -> Result<Plan, FleetError> {
        let previous = previous.unwrap_or_default();
        self.members_and_links(&fleet, &previous);
        self.what_if.ca_created = self.ca.is_none();
        if self.ca.is_none() {
            self.note(PathBuf::from(CA_DIR).join(CA_CERT_FILE), Change::Add);
            self.note(PathBuf::from(CA_DIR).join(CA_KEY_FILE), Change::Add);
        }
        for member in &fleet.members {
            let base = PathBuf::from(member.name.as_str());
            self.text(base.join("apiserver.yaml"), apiserver_yaml(&fleet, member))?;
            self.text(base.join("agent.yaml"), agent_yaml(&fleet, member))?;
            let remotes = base.join(REMOTES_DIR);
            let mut wanted = BTreeSet::new();
            let seen = fleet.sees.get(&member.name).into_iter().flatten();
            for peer in std::iter::once(&member.name).chain(seen) {
                let Some(peer) = fleet.member(peer) else {
                    continue;
                };
                let file = format!("{}.yaml", peer.name);
                self.text(remotes.join(&file), remote_yaml(&member.name, peer))?;
                wanted.insert(file);
            }
            for stale in self.yaml_files(&remotes)? {
                if !wanted.contains(&stale) {
                    self.remove(remotes.join(stale));
                }
            }
            self.ca_copy(base.join(CERTS_DIR).join(CA_CERT_FILE))?;
            let (server, client) = (LeafSpec::server(member), LeafSpec::client(member));
            let cache_server = match fleet.kvstoremesh_port {
                Some(port) => {
                    self.kvstoremesh(&fleet, member, port)?;
                    Some(LeafSpec::cache_server(member))
                }
                None => None,
            };
            if let Some(kustomize) = &fleet.kustomize {
                let mut certs = vec![CA_CERT_FILE.to_string()];
                for leaf in [Some(&server), Some(&client), cache_server.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    let stem = leaf.file_stem();
                    certs.extend([format!("{stem}.crt"), format!("{stem}.key")]);
                }
                let remotes: Vec<String> = wanted.into_iter().collect();
                let in_cluster = base.join(IN_CLUSTER_DIR);
                self.text(
                    in_cluster.join("apiserver.yaml"),
                    in_cluster_apiserver_yaml(&fleet, member, kustomize.store),
                )?;
                self.text(
                    in_cluster.join("agent.yaml"),
                    in_cluster_agent_yaml(&fleet, member),
                )?;
                self.text(
                    base.join(KUSTOMIZATION_FILE),
                    kustomization_yaml(
                        member,
                        &kustomize.base,
                        &remotes,
                        &certs,
                        fleet.etcd_api_port,
                        fleet.kvstoremesh_port.is_some(),
                    ),
                )?;
            }
            self.leaf(server);
            let client_paths = leaf_paths(&client);
            self.leaf(client);
            self.clustermesh(&fleet, member, client_paths)?;
            if let Some(cache_server) = cache_server {
                self.leaf(cache_server);
            }
            let manifests = base.join(MANIFESTS_DIR);
            if !self.out.join(&manifests).is_dir() {
                self.note(manifests.clone(), Change::Add);
                self.dirs.push(manifests);
            }
        }
        for gone in &self.what_if.members_removed.clone() {
            self.remove_member(gone)?;
        }
        let text = fleet.to_lock().render().map_err(FleetError::RenderLock)?;
        let lock = match read_optional(&self.out.join(LOCK_FILE))? {
            None => Some((Change::Add, text)),
            Some(old) if old != text => Some((Change::Modify, text)),
            Some(_) => None,
        };
        if let Some((change, _)) = &lock {
            self.note(PathBuf::from(LOCK_FILE), *change);
        }
        self.what_if.files.sort();
        Ok(Plan {
            out: self.out.to_path_buf(),
            fleet,
            ca: self.ca,
            lock: lock.map(|(_, text)| text),
            writes: self.writes,
            leaves: self.leaves,
            dirs: self.dirs,
            removals: self.removals,
            what_if: self.what_if,
        })
    }

    /// `<name>/cilium-kvstoremesh/`: what points the member's own Cilium agents at its
    /// agent's etcd API (see [`super::kvstoremesh`]).
    fn kvstoremesh(&mut self, fleet: &Fleet, member: &Member, port: u16) -> Result<(), FleetError> {
        use super::kvstoremesh as km;
        let dir = PathBuf::from(member.name.as_str()).join(km::CILIUM_DIR);
        let peers: Vec<&ClusterName> = fleet
            .sees
            .get(&member.name)
            .into_iter()
            .flatten()
            .filter(|peer| **peer != member.name)
            .collect();
        for peer in &peers {
            self.text(dir.join(peer.as_str()), km::cilium_config(port))?;
        }
        for stale in km::config_files(&self.out.join(&dir))? {
            if !peers.iter().any(|p| p.as_str() == stale) {
                self.remove(dir.join(stale));
            }
        }
        self.ca_copy(dir.join(km::LOCAL_CA_FILE))?;
        if fleet.kustomize.is_some() {
            let names: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
            self.text(dir.join(KUSTOMIZATION_FILE), km::kustomization_yaml(&names))?;
            self.text(
                PathBuf::from(member.name.as_str())
                    .join(IN_CLUSTER_DIR)
                    .join(km::AGENT_SERVICE_FILE),
                km::agent_service_yaml(port),
            )?;
        }
        self.leaf(LeafSpec::local(member));
        Ok(())
    }

    fn members_and_links(&mut self, fleet: &Fleet, previous: &Lock) {
        let before: BTreeSet<&ClusterName> = previous.members.iter().map(|m| &m.name).collect();
        let now: BTreeSet<&ClusterName> = fleet.members.iter().map(|m| &m.name).collect();
        let w = &mut self.what_if;
        w.members_added = now.difference(&before).map(|n| (*n).clone()).collect();
        w.members_removed = before.difference(&now).map(|n| (*n).clone()).collect();
        w.new_ids = fleet
            .members
            .iter()
            .filter(|m| !before.contains(&m.name))
            .map(|m| (m.name.clone(), m.id, m.id_assigned))
            .collect();
        let links_before: BTreeSet<(ClusterName, ClusterName)> = previous
            .members
            .iter()
            .flat_map(|m| m.sees.iter().map(|s| (m.name.clone(), s.clone())))
            .collect();
        let links_now: BTreeSet<(ClusterName, ClusterName)> = fleet
            .sees
            .iter()
            .flat_map(|(from, seen)| seen.iter().map(|to| (from.clone(), to.clone())))
            .collect();
        w.links_added = links_now.difference(&links_before).cloned().collect();
        w.links_removed = links_before.difference(&links_now).cloned().collect();
    }

    fn note(&mut self, path: PathBuf, change: Change) {
        self.what_if.files.push((path, change));
    }

    /// A configuration file: written if missing or different.
    fn text(&mut self, path: PathBuf, text: String) -> Result<(), FleetError> {
        let change = match read_optional(&self.out.join(&path))? {
            None => Change::Add,
            Some(old) if old != text => Change::Modify,
            Some(_) => return Ok(()),
        };
        self.note(path.clone(), change);
        self.writes.push((path, Content::Text(text)));
        Ok(())
    }

    /// A member's copy of the CA certificate: kept while it holds the mesh CA (alone, or
    /// in a rollover bundle with another one).
    fn ca_copy(&mut self, path: PathBuf) -> Result<(), FleetError> {
        let existing = read_optional(&self.out.join(&path))?;
        let change = match (existing, self.ca.as_ref()) {
            (None, _) => Change::Add,
            (Some(text), Some(ca)) if text.contains(ca.cert_pem().trim()) => return Ok(()),
            (Some(_), _) => Change::Modify,
        };
        self.note(path.clone(), change);
        self.writes.push((path, Content::CaCert));
        Ok(())
    }

    fn leaf(&mut self, spec: LeafSpec) {
        let (cert, key) = leaf_paths(&spec);
        let Some(reason) = spec.reissue_reason(
            &self.out.join(&cert),
            &self.out.join(&key),
            self.ca.as_ref(),
        ) else {
            return;
        };
        for path in [&cert, &key] {
            let change = if self.out.join(path).exists() {
                Change::Modify
            } else {
                Change::Add
            };
            self.note(path.clone(), change);
        }
        self.what_if.certificates.push((cert, reason));
        self.leaves.push(spec);
    }

    fn remove(&mut self, path: PathBuf) {
        self.note(path.clone(), Change::Remove);
        self.removals.push(path);
    }

    /// Every file the plan wrote for a member that left; its manifests stay.
    fn remove_member(&mut self, name: &ClusterName) -> Result<(), FleetError> {
        let base = PathBuf::from(name.as_str());
        let certs = base.join(CERTS_DIR);
        let mut owned = vec![
            base.join("apiserver.yaml"),
            base.join("agent.yaml"),
            base.join(KUSTOMIZATION_FILE),
            base.join(IN_CLUSTER_DIR).join("apiserver.yaml"),
            base.join(IN_CLUSTER_DIR).join("agent.yaml"),
            certs.join(CA_CERT_FILE),
        ];
        for role in [Role::Server, Role::Client, Role::CacheServer, Role::Local] {
            let leaf = LeafSpec {
                cluster: name.clone(),
                role,
                dns: vec![],
                ips: vec![],
            };
            let (cert, key) = leaf_paths(&leaf);
            owned.extend([cert, key]);
        }
        owned.extend(super::kvstoremesh::owned_files(&base, self.out)?);
        let remotes = base.join(REMOTES_DIR);
        owned.extend(
            self.yaml_files(&remotes)?
                .into_iter()
                .map(|f| remotes.join(f)),
        );
        let clustermesh = base.join(CLUSTERMESH_DIR);
        owned.extend(
            self.dir_files(&clustermesh, |_| true)?
                .into_iter()
                .map(|f| clustermesh.join(f)),
        );
        for path in owned {
            if self.out.join(&path).exists() {
                self.remove(path);
            }
        }
        Ok(())
    }

    /// With `etcdApi`: `member`'s Cilium clustermesh directory — a config per peer it
    /// sees, the CA, and a copy of its client leaf (at `client_paths`), which materialize
    /// writes when it issues the leaf and this keeps equal to the leaf otherwise.
    fn clustermesh(
        &mut self,
        fleet: &Fleet,
        member: &Member,
        client_paths: (PathBuf, PathBuf),
    ) -> Result<(), FleetError> {
        let Some(port) = fleet.etcd_api_port else {
            return Ok(());
        };
        let dir = PathBuf::from(member.name.as_str()).join(CLUSTERMESH_DIR);
        let mut wanted = BTreeSet::from([
            CLUSTERMESH_CA_FILE.to_string(),
            CLUSTERMESH_CERT_FILE.to_string(),
            CLUSTERMESH_KEY_FILE.to_string(),
        ]);
        // Cilium's agents read their own cluster locally: only the peers.
        for peer in fleet.sees.get(&member.name).into_iter().flatten() {
            let Some(peer) = fleet.member(peer) else {
                continue;
            };
            self.text(dir.join(peer.name.as_str()), clustermesh_yaml(peer, port))?;
            wanted.insert(peer.name.to_string());
        }
        if fleet.kustomize.is_some() {
            let files: Vec<String> = wanted.iter().cloned().collect();
            self.text(
                dir.join(KUSTOMIZATION_FILE),
                clustermesh_kustomization_yaml(&files),
            )?;
            wanted.insert(KUSTOMIZATION_FILE.to_string());
        }
        for stale in self.dir_files(&dir, |_| true)? {
            if !wanted.contains(&stale) {
                self.remove(dir.join(stale));
            }
        }
        self.ca_copy(dir.join(CLUSTERMESH_CA_FILE))?;
        let issuing = self
            .leaves
            .iter()
            .any(|l| l.cluster == member.name && l.role == Role::Client);
        let (cert, key) = client_paths;
        for (leaf, copy) in [(cert, CLUSTERMESH_CERT_FILE), (key, CLUSTERMESH_KEY_FILE)] {
            let copy = dir.join(copy);
            let held = read_optional(&self.out.join(&copy))?;
            if issuing {
                let change = if held.is_some() {
                    Change::Modify
                } else {
                    Change::Add
                };
                self.note(copy, change);
                continue;
            }
            let leaf = read_optional(&self.out.join(&leaf))?.unwrap_or_default();
            let change = match held {
                None => Change::Add,
                Some(text) if text != leaf => Change::Modify,
                Some(_) => continue,
            };
            self.note(copy.clone(), change);
            let is_key = copy.extension().is_some_and(|e| e == "key");
            let content = if is_key {
                Content::Key(leaf)
            } else {
                Content::Text(leaf)
            };
            self.writes.push((copy, content));
        }
        Ok(())
    }

    /// The `*.yaml` file names in a directory of the output (none if it does not exist).
    fn yaml_files(&self, dir: &Path) -> Result<Vec<String>, FleetError> {
        self.dir_files(dir, |name| name.ends_with(".yaml"))
    }

    /// The names of the files in a directory of the output that `keep` accepts (none if
    /// it does not exist).
    fn dir_files(
        &self,
        dir: &Path,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, FleetError> {
        let path = self.out.join(dir);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(FleetError::Read { path, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| FleetError::Read {
                path: path.clone(),
                source,
            })?;
            if let Some(name) = entry.file_name().to_str()
                && keep(name)
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::files::write_atomic;

    fn profile(members: &[(&str, &str)], topology: &str) -> String {
        let list: String = members
            .iter()
            .map(|(name, address)| format!("- {{name: {name}, address: \"{address}\"}}\n"))
            .collect();
        format!("mesh: test\nmembers:\n{list}topology: {topology}\n")
    }

    const HUB_SPOKE: &str = "{kind: hub-spoke, hubs: [hub]}";

    fn three() -> Vec<(&'static str, &'static str)> {
        vec![
            ("hub", "10.0.0.1:9891"),
            ("s1", "10.0.0.2:9891"),
            ("s2", "s2.example:9891"),
        ]
    }

    /// Writes what the plan produces, as the CLI does.
    fn apply(plan: &Plan, allow_removal: bool) {
        for op in plan.materialize(allow_removal).unwrap() {
            match op {
                FileOp::CreateDir(d) => std::fs::create_dir_all(d).unwrap(),
                FileOp::Write {
                    path,
                    contents,
                    mode,
                } => {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    write_atomic(&path, contents.as_bytes(), mode).unwrap();
                }
                FileOp::Remove(p) => std::fs::remove_file(p).unwrap(),
            }
        }
    }

    fn files(what_if: &WhatIf) -> Vec<(String, Change)> {
        what_if
            .files
            .iter()
            .map(|(p, c)| (p.display().to_string(), *c))
            .collect()
    }

    fn name(n: &str) -> ClusterName {
        ClusterName::new(n).unwrap()
    }

    #[test]
    fn a_first_plan_creates_everything_and_a_rerun_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let text = profile(&three(), HUB_SPOKE);
        let first = plan(&text, dir.path()).unwrap();
        let w = first.what_if();
        assert!(w.ca_created);
        assert_eq!(w.members_added, [name("hub"), name("s1"), name("s2")]);
        assert_eq!(w.new_ids.len(), 3);
        // Hub sees both spokes, each spoke sees the hub.
        assert_eq!(w.links_added.len(), 4, "{:?}", w.links_added);
        assert_eq!(w.certificates.len(), 6);
        let all = files(w);
        for expected in [
            "ca/ca.crt",
            "fleet.lock.yaml",
            "hub/apiserver.yaml",
            "hub/remotes/hub.yaml",
            "hub/remotes/s1.yaml",
            "hub/remotes/s2.yaml",
            "s1/remotes/hub.yaml",
            "s1/remotes/s1.yaml",
            "s2/certs/server-s2.key",
            "s2/certs/ca.crt",
            "s2/manifests",
        ] {
            assert!(
                all.contains(&(expected.into(), Change::Add)),
                "{expected} not in {all:?}"
            );
        }
        assert!(
            !all.iter().any(|(p, _)| p == "s1/remotes/s2.yaml"),
            "spokes never see each other"
        );
        // Nothing is written by planning.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        apply(&first, false);
        let again = plan(&text, dir.path()).unwrap();
        assert!(again.what_if().is_empty(), "{}", again.what_if());
        assert_eq!(again.what_if().to_string(), "no changes\n");
        assert!(again.materialize(false).unwrap().is_empty());
    }

    #[test]
    fn with_the_etcd_api_each_member_gets_cilium_configs_for_the_peers_it_sees() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{}etcdApi: {{port: 2379}}\nkustomize: {{base: ../../deploy/overlays/embedded}}\n",
            profile(&three(), HUB_SPOKE)
        );
        apply(&plan(&text, dir.path()).unwrap(), false);
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert!(read("hub/apiserver.yaml").contains("etcdApi:\n  listen: \"0.0.0.0:2379\""));
        let mut hub: Vec<String> = std::fs::read_dir(dir.path().join("hub/clustermesh"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        hub.sort();
        assert_eq!(
            hub,
            [
                "common-etcd-client-ca.crt",
                "common-etcd-client.crt",
                "common-etcd-client.key",
                "kustomization.yaml",
                "s1",
                "s2"
            ]
        );
        let s2: serde_yaml::Value = serde_yaml::from_str(&read("hub/clustermesh/s2")).unwrap();
        assert_eq!(s2["endpoints"][0], "https://s2.example:2379");
        assert_eq!(
            s2["cert-file"],
            "/var/lib/cilium/clustermesh/common-etcd-client.crt"
        );
        assert_eq!(
            s2["trusted-ca-file"],
            "/var/lib/cilium/clustermesh/common-etcd-client-ca.crt"
        );
        assert_eq!(
            s2["key-file"],
            "/var/lib/cilium/clustermesh/common-etcd-client.key"
        );
        // A spoke's agents read the hub only, with the spoke's own client leaf.
        assert!(!dir.path().join("s1/clustermesh/s2").exists());
        assert!(read("s1/clustermesh/hub").contains("https://10.0.0.1:2379"));
        assert_eq!(
            read("s1/clustermesh/common-etcd-client.crt"),
            read("s1/certs/client-s1.crt")
        );
        assert_eq!(
            read("s1/clustermesh/common-etcd-client.key"),
            read("s1/certs/client-s1.key")
        );
        assert!(read("s1/kustomization.yaml").contains("containerPort: 2379"));
        let again = plan(&text, dir.path()).unwrap();
        assert!(again.what_if().is_empty(), "{}", again.what_if());

        // A copy that drifted from its leaf is put back; a peer no longer seen goes.
        std::fs::write(
            dir.path().join("s1/clustermesh/common-etcd-client.crt"),
            "old",
        )
        .unwrap();
        let two = format!(
            "{}etcdApi: {{port: 2379}}\nkustomize: {{base: ../../deploy/overlays/embedded}}\n",
            profile(&three()[..2], HUB_SPOKE)
        );
        let shrink = plan(&two, dir.path()).unwrap();
        let changed = files(shrink.what_if());
        assert!(changed.contains(&(
            "s1/clustermesh/common-etcd-client.crt".into(),
            Change::Modify
        )));
        assert!(changed.contains(&("hub/clustermesh/s2".into(), Change::Remove)));
        apply(&shrink, true);
        assert_eq!(
            read("s1/clustermesh/common-etcd-client.crt"),
            read("s1/certs/client-s1.crt")
        );
        assert!(!dir.path().join("s2/clustermesh/hub").exists());
    }

    #[test]
    fn with_kvstoremesh_each_member_points_its_cilium_at_its_agent_for_the_peers_it_sees() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{}kvstoremesh: {{port: 2380}}\n",
            profile(&three(), HUB_SPOKE)
        );
        let first = plan(&text, dir.path()).unwrap();
        let w = first.what_if();
        // Server, client, the agent's etcd API and the local role's, per member.
        assert_eq!(w.certificates.len(), 12);
        let all = files(w);
        for expected in [
            "hub/certs/kvstoremesh-hub.crt",
            "hub/cilium-kvstoremesh/s1",
            "hub/cilium-kvstoremesh/s2",
            "hub/cilium-kvstoremesh/local-etcd-client.key",
            "hub/cilium-kvstoremesh/local-etcd-client-ca.crt",
            "s1/cilium-kvstoremesh/hub",
        ] {
            assert!(
                all.contains(&(expected.into(), Change::Add)),
                "{expected} not in {all:?}"
            );
        }
        assert!(
            !all.iter()
                .any(|(p, _)| p == "s1/cilium-kvstoremesh/s2" || p == "s1/cilium-kvstoremesh/s1"),
            "Cilium is pointed at the peers the member sees, not at itself"
        );
        apply(&first, false);
        let agent = std::fs::read_to_string(dir.path().join("s1/agent.yaml")).unwrap();
        let config =
            crate::agent::AgentConfig::parse(&agent, &dir.path().join("s1/agent.yaml")).unwrap();
        let api = config.etcd_api.unwrap();
        assert_eq!(api.listen.port(), 2380);
        assert!(api.tls.cert.ends_with("certs/kvstoremesh-s1.crt"));
        let cilium = std::fs::read_to_string(dir.path().join("s1/cilium-kvstoremesh/hub")).unwrap();
        assert!(cilium.contains(":2380\n"), "{cilium}");
        assert!(plan(&text, dir.path()).unwrap().what_if().is_empty());

        // Without it, nothing of it is planned.
        let plain_dir = tempfile::tempdir().unwrap();
        let plain = plan(&profile(&three(), HUB_SPOKE), plain_dir.path()).unwrap();
        assert!(
            !files(plain.what_if())
                .iter()
                .any(|(p, _)| p.contains("kvstoremesh"))
        );
    }

    #[test]
    fn adding_a_member_changes_only_its_files_and_those_of_its_watchers() {
        let dir = tempfile::tempdir().unwrap();
        apply(
            &plan(&profile(&three(), HUB_SPOKE), dir.path()).unwrap(),
            false,
        );
        let mut four = three();
        four.push(("s3", "10.0.0.4:9891"));
        let next = plan(&profile(&four, HUB_SPOKE), dir.path()).unwrap();
        let w = next.what_if();
        assert_eq!(w.members_added, [name("s3")]);
        assert!(w.members_removed.is_empty());
        assert_eq!(
            w.new_ids,
            [(
                name("s3"),
                ClusterId::new(4, crate::model::IdMode::Normal).unwrap(),
                true
            )]
        );
        assert_eq!(
            w.links_added,
            [(name("hub"), name("s3")), (name("s3"), name("hub"))]
        );
        assert!(!w.ca_created);
        let certs: Vec<_> = w
            .certificates
            .iter()
            .map(|(p, why)| (p.display().to_string(), *why))
            .collect();
        assert_eq!(
            certs,
            [
                ("s3/certs/server-s3.crt".into(), "missing"),
                ("s3/certs/client-s3.crt".into(), "missing")
            ]
        );
        let expected: Vec<(String, Change)> = [
            ("fleet.lock.yaml", Change::Modify),
            ("hub/apiserver.yaml", Change::Modify),
            ("hub/remotes/s3.yaml", Change::Add),
            ("s3/agent.yaml", Change::Add),
            ("s3/apiserver.yaml", Change::Add),
            ("s3/certs/ca.crt", Change::Add),
            ("s3/certs/client-s3.crt", Change::Add),
            ("s3/certs/client-s3.key", Change::Add),
            ("s3/certs/server-s3.crt", Change::Add),
            ("s3/certs/server-s3.key", Change::Add),
            ("s3/manifests", Change::Add),
            ("s3/remotes/hub.yaml", Change::Add),
            ("s3/remotes/s3.yaml", Change::Add),
        ]
        .into_iter()
        .map(|(p, c)| (p.to_string(), c))
        .collect();
        assert_eq!(files(w), expected);
        let text = w.to_string();
        assert!(text.contains("members added: s3\n"), "{text}");
        assert!(text.contains("id: s3 = 4 (assigned)\n"), "{text}");
        assert!(
            text.contains("links added (watcher -> watched): hub -> s3, s3 -> hub\n"),
            "{text}"
        );
        assert!(text.contains("  ~ hub/apiserver.yaml\n"), "{text}");
    }

    #[test]
    fn a_member_leaves_only_with_allow_removal_and_its_manifests_stay() {
        let dir = tempfile::tempdir().unwrap();
        apply(
            &plan(&profile(&three(), HUB_SPOKE), dir.path()).unwrap(),
            false,
        );
        std::fs::write(dir.path().join("s2/manifests/web.yaml"), "kind: List\n").unwrap();
        let two = &three()[..2];
        let next = plan(&profile(two, HUB_SPOKE), dir.path()).unwrap();
        let w = next.what_if();
        assert_eq!(w.members_removed, [name("s2")]);
        assert_eq!(
            w.links_removed,
            [(name("hub"), name("s2")), (name("s2"), name("hub"))]
        );
        assert!(files(w).contains(&("s2/certs/server-s2.key".into(), Change::Remove)));
        assert!(files(w).contains(&("hub/remotes/s2.yaml".into(), Change::Remove)));
        let err = next.materialize(false).unwrap_err().to_string();
        assert!(
            err.starts_with("the profile removes `s2`: re-run with --allow-removal"),
            "{err}"
        );

        apply(&next, true);
        assert!(!dir.path().join("s2/apiserver.yaml").exists());
        assert!(!dir.path().join("hub/remotes/s2.yaml").exists());
        assert!(dir.path().join("s2/manifests/web.yaml").exists());
        assert!(
            plan(&profile(two, HUB_SPOKE), dir.path())
                .unwrap()
                .what_if()
                .is_empty()
        );
    }

    #[test]
    fn a_moved_member_gets_a_new_server_certificate_and_its_watchers_new_peer_files() {
        let dir = tempfile::tempdir().unwrap();
        apply(
            &plan(&profile(&three(), HUB_SPOKE), dir.path()).unwrap(),
            false,
        );
        let client_before = std::fs::read(dir.path().join("s1/certs/client-s1.crt")).unwrap();
        let mut moved = three();
        moved[1].1 = "10.9.9.9:9891";
        let next = plan(&profile(&moved, HUB_SPOKE), dir.path()).unwrap();
        let w = next.what_if();
        let certs: Vec<_> = w
            .certificates
            .iter()
            .map(|(p, why)| (p.display().to_string(), *why))
            .collect();
        assert_eq!(
            certs,
            [("s1/certs/server-s1.crt".into(), "its names no longer match")]
        );
        assert!(w.links_added.is_empty() && w.new_ids.is_empty());
        let changed: Vec<String> = files(w).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            changed,
            [
                "hub/remotes/s1.yaml",
                "s1/certs/server-s1.crt",
                "s1/certs/server-s1.key",
                "s1/remotes/s1.yaml"
            ]
        );
        apply(&next, false);
        assert_eq!(
            std::fs::read(dir.path().join("s1/certs/client-s1.crt")).unwrap(),
            client_before
        );
    }

    #[test]
    fn a_bad_profile_or_lock_is_refused_before_anything_is_planned() {
        let dir = tempfile::tempdir().unwrap();
        let bad = profile(
            &[("a", "10.0.0.1:1"), ("a", "10.0.0.2:1")],
            "{kind: full-mesh}",
        );
        let err = plan(&bad, dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            "the profile has 1 problem; nothing was written:\n  - member `a` (members[1]): name: listed twice (also members[0])"
        );
        assert!(matches!(
            plan("mesh: [", dir.path()),
            Err(FleetError::Profile(_))
        ));
        std::fs::write(dir.path().join(LOCK_FILE), "nonsense: 1\n").unwrap();
        let err = plan(&profile(&three(), HUB_SPOKE), dir.path()).unwrap_err();
        assert!(matches!(err, FleetError::Lock { .. }), "{err}");
    }
}
