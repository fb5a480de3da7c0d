//! What points a member's own Cilium agents at its fleetmesh agent, which plays
//! KVStoreMesh for them (`crate::cache_keys`): Cilium's clustermesh config files, the
//! local-role client certificate, and the agent's side (its etcd API, its certificate,
//! its Service).
//!
//! `DIR/<name>/cilium-kvstoremesh/` is the content of Cilium's `cilium-clustermesh`
//! Secret, which Cilium mounts at `/var/lib/cilium/clustermesh/`: one file per remote
//! cluster, named after it, each with the agent's endpoint (Cilium's KVStoreMesh mode:
//! every file names the same local endpoint) and the `local-etcd-client*` files. With
//! `kustomize` in the profile it holds its own `kustomization.yaml` (namespace
//! `kube-system`, so apart from the member's overlay, whose namespace is `fleetmesh`).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::FleetError;
use super::render::HEADER;

/// The member's directory holding the Cilium side.
pub const CILIUM_DIR: &str = "cilium-kvstoremesh";
/// The local-role client leaf's file stem, as Cilium's Helm chart names it.
pub const LOCAL_CLIENT_STEM: &str = "local-etcd-client";
/// The CA copy Cilium verifies the agent with.
pub const LOCAL_CA_FILE: &str = "local-etcd-client-ca.crt";
/// Where Cilium mounts the `cilium-clustermesh` Secret.
const CILIUM_MOUNT: &str = "/var/lib/cilium/clustermesh";
/// The Secret Cilium's agents read their clustermesh configs from.
const CILIUM_SECRET: &str = "cilium-clustermesh";
/// The agent's etcd API port unless the profile says: etcd's client port, as Cilium's
/// clustermesh uses.
pub const AGENT_ETCD_API_PORT: u16 = 2379;
/// The Service in front of the agent's etcd API (`kube/agent-etcd-service.yaml`).
const AGENT_SERVICE_HOST: &str = "fleetmesh-agent.fleetmesh.svc";
/// The names the agent's etcd API certificate is valid for.
pub const CACHE_SERVER_NAMES: [&str; 3] = [
    AGENT_SERVICE_HOST,
    "fleetmesh-agent.fleetmesh.svc.cluster.local",
    "localhost",
];
/// The Service's file in the member's `kube/` directory.
pub const AGENT_SERVICE_FILE: &str = "agent-etcd-service.yaml";

/// One remote cluster's Cilium config file: the local agent's etcd API with the local
/// role's certificate. Every remote's file is the same; its name says which remote.
pub fn cilium_config(port: u16) -> String {
    format!(
        "{HEADER}\n\
         endpoints:\n  - https://{AGENT_SERVICE_HOST}:{port}\n\
         trusted-ca-file: {CILIUM_MOUNT}/{LOCAL_CA_FILE}\n\
         cert-file: {CILIUM_MOUNT}/{LOCAL_CLIENT_STEM}.crt\n\
         key-file: {CILIUM_MOUNT}/{LOCAL_CLIENT_STEM}.key\n"
    )
}

/// The agent config's `etcdApi` block, listening on `listen_host`:`port`.
pub fn etcd_api_block(member: &str, listen_host: &str, port: u16) -> String {
    format!(
        "etcdApi:\n  listen: \"{listen_host}:{port}\"\n  \
         tls: {{ca: certs/ca.crt, cert: certs/kvstoremesh-{member}.crt, key: certs/kvstoremesh-{member}.key}}\n"
    )
}

/// `cilium-kvstoremesh/kustomization.yaml`: the `cilium-clustermesh` Secret in
/// `kube-system`, from the config files of `peers` and the local-role files.
pub fn kustomization_yaml(peers: &[String]) -> String {
    let mut text = format!(
        "{HEADER}\n\
         # Cilium's agents read one file per remote cluster from this Secret; with\n\
         # KVStoreMesh every file names this cluster's fleetmesh agent.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         namespace: kube-system\n\
         secretGenerator:\n\
         \x20 - name: {CILIUM_SECRET}\n    type: Opaque\n    options: {{disableNameSuffixHash: true}}\n    files:\n"
    );
    for file in peers
        .iter()
        .map(String::as_str)
        .chain([LOCAL_CA_FILE])
        .map(str::to_string)
        .chain(["crt", "key"].map(|ext| format!("{LOCAL_CLIENT_STEM}.{ext}")))
    {
        text.push_str(&format!("      - {file}\n"));
    }
    text
}

/// The Service in front of the agent's etcd API, for the member's overlay.
pub fn agent_service_yaml(port: u16) -> String {
    format!(
        "{HEADER}\n\
         # The member's own Cilium agents reach its fleetmesh agent's etcd API here.\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: fleetmesh-agent\n  labels:\n    \
         app.kubernetes.io/name: fleetmesh\n    app.kubernetes.io/component: agent\n\
         spec:\n  selector:\n    app.kubernetes.io/name: fleetmesh\n    app.kubernetes.io/component: agent\n  \
         ports:\n    - {{name: etcd, port: {port}, targetPort: {port}}}\n"
    )
}

/// The Cilium config files in `dir` (named after clusters, so without a dot).
pub fn config_files(dir: &Path) -> Result<Vec<String>, FleetError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(FleetError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| FleetError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        if let Some(name) = entry.file_name().to_str()
            && !name.contains('.')
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Every file of the Cilium side of member directory `base` that exists under `out`
/// (removed with the member).
pub fn owned_files(base: &Path, out: &Path) -> Result<Vec<PathBuf>, FleetError> {
    let dir = base.join(CILIUM_DIR);
    let mut owned: Vec<PathBuf> = config_files(&out.join(&dir))?
        .into_iter()
        .map(|f| dir.join(f))
        .collect();
    owned.push(dir.join(LOCAL_CA_FILE));
    owned.push(dir.join(super::kustomize::KUSTOMIZATION_FILE));
    owned.push(
        base.join(super::render::IN_CLUSTER_DIR)
            .join(AGENT_SERVICE_FILE),
    );
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cilium_config_names_the_local_agent_and_the_local_role_files() {
        let yaml: serde_yaml::Value = serde_yaml::from_str(&cilium_config(2379)).unwrap();
        assert_eq!(
            yaml["endpoints"][0],
            "https://fleetmesh-agent.fleetmesh.svc:2379"
        );
        assert_eq!(
            yaml["cert-file"],
            "/var/lib/cilium/clustermesh/local-etcd-client.crt"
        );
        assert_eq!(
            yaml["trusted-ca-file"],
            "/var/lib/cilium/clustermesh/local-etcd-client-ca.crt"
        );
        assert_eq!(
            yaml["key-file"],
            "/var/lib/cilium/clustermesh/local-etcd-client.key"
        );
    }

    #[test]
    fn the_cilium_kustomization_generates_cilium_s_secret_in_kube_system() {
        let text = kustomization_yaml(&["c2".into(), "c3".into()]);
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(yaml["namespace"], "kube-system");
        let secret = &yaml["secretGenerator"][0];
        assert_eq!(secret["name"], "cilium-clustermesh");
        let files: Vec<&str> = secret["files"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(
            files,
            [
                "c2",
                "c3",
                "local-etcd-client-ca.crt",
                "local-etcd-client.crt",
                "local-etcd-client.key"
            ]
        );
        let service: serde_yaml::Value = serde_yaml::from_str(&agent_service_yaml(2379)).unwrap();
        assert_eq!(service["spec"]["ports"][0]["port"], 2379);
    }
}
