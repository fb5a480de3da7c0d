//! The manifest-directory source: a directory of Kubernetes YAML or JSON (Services,
//! EndpointSlices, Pods, Nodes, Namespaces, and Cilium's `cilium.io/v2` CiliumIdentities,
//! CiliumEndpoints and CiliumNodes) read the way `kubectl apply -R -f DIR` would,
//! converted by [`crate::k8s::convert`] like objects from a live cluster.
//!
//! - A directory holding any Cilium object describes a cluster where Cilium runs
//!   ([`crate::k8s::convert::Objects::cilium`] is `Some`): identities, ipcache entries
//!   and nodes then come from the Cilium objects, and Pods and Nodes are not used. (The
//!   kube source decides otherwise: by whether the API server serves Cilium's resources,
//!   asked through discovery, even while none exists; see [`crate::k8s::kube`].)
//! - A directory holding any `CiliumEndpointSlice` (`cilium.io/v2alpha1`) describes a
//!   cluster that publishes its endpoints in slices: ipcache entries then come from the
//!   slices and CiliumEndpoints are not used. `ServiceExport`s
//!   (`multicluster.x-k8s.io/v1alpha1`) are read too.
//! - Files ending `.yaml`, `.yml` or `.json` are read, recursively, in path order; names
//!   starting with `.` are skipped (a mounted ConfigMap shows each file once, through
//!   symlinks that are followed).
//! - A YAML file may hold several documents; a `kind: List` holds objects in `items`.
//! - A malformed document, or one of a kind fleetmesh reads in an apiVersion it does not,
//!   is a [`ManifestProblem`] naming the file and the document; everything else is still
//!   loaded. Objects of other kinds (Deployments, ConfigMaps) are skipped with a debug log.
//! - [`watch`] polls the directory and publishes a new [`Snapshot`] when a file changes.

mod documents;
mod last_good;
mod scan;
mod watch;

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::k8s::convert::Objects;

use last_good::LastGood;

pub use watch::{DEFAULT_POLL_INTERVAL, ManifestSource, Snapshot, watch};

/// The largest manifest file read by default: far above any real cluster's file, far below
/// what would strain the apiserver's memory.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// The directory itself could not be read; problems inside it are [`ManifestProblem`]s.
#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("cannot read manifest directory {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One document (or file) that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestProblem {
    pub file: PathBuf,
    /// Index of the document in the file, from 0 (0 as well for problems with the whole
    /// file, such as an unreadable one).
    pub document: usize,
    pub message: String,
}

impl fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {}: {}",
            self.file.display(),
            self.document,
            self.message
        )
    }
}

/// What a directory holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadedManifests {
    pub objects: Objects,
    pub problems: Vec<ManifestProblem>,
}

/// Reads every manifest under `dir` (blocking file IO). Only a missing or unreadable `dir`
/// is an error; a bad file or document is a problem and the rest are still loaded.
pub fn load(dir: &Path) -> Result<LoadedManifests, ManifestError> {
    Ok(parse_files(&scan::scan(dir, DEFAULT_MAX_FILE_BYTES)?))
}

fn parse_files(files: &[scan::ManifestFile]) -> LoadedManifests {
    LastGood::default().load(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::convert::desired_state;
    use crate::model::{Affinity, Cluster, ClusterId, ClusterName, IdMode};
    use std::fs;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/manifests")
    }

    fn mk_cluster() -> Cluster {
        Cluster::new(
            ClusterName::new("cluster1").unwrap(),
            ClusterId::new(1, IdMode::Normal).unwrap(),
            IdMode::Normal,
        )
    }

    #[test]
    fn the_example_cluster_loads_without_problems() {
        let loaded = load(&examples()).unwrap();
        assert_eq!(loaded.problems, []);
        let o = &loaded.objects;
        assert_eq!(o.namespaces.len(), 3, "shop, payments, legacy");
        assert_eq!(
            o.services.len(),
            4,
            "checkout, internal, ledger, legacy/archive"
        );
        assert_eq!(o.endpoint_slices.len(), 3);
        assert_eq!(o.pods.len(), 6);
        assert_eq!(o.nodes.len(), 2);
    }

    #[test]
    fn the_example_cluster_converts_to_what_the_demo_shows() {
        let loaded = load(&examples()).unwrap();
        let (state, problems) = desired_state(&mk_cluster(), &loaded.objects);
        assert_eq!(problems, []);

        let nodes: Vec<_> = state.nodes.iter().map(|n| n.name()).collect();
        assert_eq!(nodes, ["kind-worker", "kind-worker2"]);
        assert!(state.nodes.iter().all(|n| n.ipv4_alloc_cidr.is_some()));

        let services: Vec<_> = state
            .services
            .iter()
            .map(|s| (s.name.to_string(), s.shared, s.backends.len()))
            .collect();
        assert_eq!(
            services,
            [
                ("payments/ledger".to_string(), false, 1),
                ("shop/checkout".to_string(), true, 3)
            ]
        );
        let checkout = &state.services[1];
        assert_eq!(checkout.affinity, Affinity::Local);
        let ready = checkout
            .backends
            .values()
            .filter(|b| b.conditions.ready)
            .count();
        assert_eq!(ready, 2);
        let unready = checkout.backends.values().find(|b| !b.conditions.ready);
        assert!(unready.is_some_and(|b| !b.conditions.serving));

        let pods: Vec<_> = state
            .workloads
            .iter()
            .map(|w| format!("{}/{}", w.namespace, w.pod))
            .collect();
        assert_eq!(
            pods,
            [
                "payments/ledger-0",
                "shop/checkout-7d4b9c-abcde",
                "shop/checkout-7d4b9c-fghij",
                "shop/checkout-7d4b9c-klmno",
                "shop/internal-5f6d8-pqrst",
            ]
        );
        for w in &state.workloads {
            assert!(w.labels.get("pod-template-hash").is_none(), "{}", w.pod);
            assert_eq!(w.labels.cluster(), Some("cluster1"));
        }
    }

    #[test]
    fn a_malformed_document_is_one_problem_and_the_rest_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mixed.yaml");
        fs::write(
            &file,
            "apiVersion: v1\nkind: Service\nmetadata: {name: broken\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: test}\n",
        )
        .unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
        let problem = &loaded.problems[0];
        assert_eq!(
            (problem.file.as_path(), problem.document),
            (file.as_path(), 0)
        );
        assert!(
            problem
                .to_string()
                .starts_with(&format!("{}: document 0: ", file.display()))
        );
        let names: Vec<_> = loaded
            .objects
            .services
            .iter()
            .map(|s| s.metadata.name.as_deref())
            .collect();
        assert_eq!(names, [Some("echo")]);
    }

    #[test]
    fn json_files_lists_and_other_kinds_load_quietly() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("nodes.json"),
            r#"{"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"}},
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "b"}}]}"#,
        )
        .unwrap();
        fs::write(
            dir.path().join("deploy.yaml"),
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
        )
        .unwrap();
        fs::write(dir.path().join("bad.json"), "{\"kind\": ").unwrap();
        fs::write(dir.path().join("latin1.yaml"), b"kind: \xe9\n").unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.objects.nodes.len(), 2);
        let problems: Vec<_> = loaded
            .problems
            .iter()
            .map(|p| (p.file.file_name().unwrap().to_str().unwrap(), p.document))
            .collect();
        assert_eq!(problems, [("bad.json", 0), ("latin1.yaml", 0)]);
        assert!(loaded.problems[1].message.starts_with("not UTF-8"));
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, ManifestError::ReadDir { .. }));
        assert!(std::error::Error::source(&err).is_some());
    }
}
