//! `<name>/kustomization.yaml`: the member's overlay over fleetmesh's kustomize base (the
//! profile's `kustomize.base`), so that `kubectl apply -k <name>/` deploys the member with
//! its in-cluster configs, its peer files and its certificates.

use std::fmt::Write as _;

use super::kvstoremesh::AGENT_SERVICE_FILE;
use super::render::{CERTS_DIR, CONTAINER_GRPC_PORT, HEADER, IN_CLUSTER_DIR, REMOTES_DIR};
use super::validate::Member;

/// The overlay's file in the member's directory (its kustomize root: kustomize reads
/// generator files only below the root, and the member's files are all there).
pub const KUSTOMIZATION_FILE: &str = "kustomization.yaml";

/// The overlay of `member` over `base`. `remotes` and `certs` are the file names in the
/// member's `remotes/` and `certs/` directories; `etcd_api_port`: the apiserver serves
/// Cilium agents of the peers there (the profile's `etcdApi`); `agent_etcd_service`: the
/// agent serves its own cluster's Cilium agents (the profile's `kvstoremesh`).
pub fn kustomization_yaml(
    member: &Member,
    base: &str,
    remotes: &[String],
    certs: &[String],
    etcd_api_port: Option<u16>,
    agent_etcd_service: bool,
) -> String {
    let mut text = format!(
        "{HEADER}\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         namespace: fleetmesh\n\
         resources:\n  - {}\n{}\
         configMapGenerator:\n\
         \x20 # Replaces the base's placeholder configs; its hash suffix rolls the Deployments.\n\
         \x20 - name: fleetmesh-config\n    behavior: replace\n    files:\n\
         \x20     - apiserver.yaml={IN_CLUSTER_DIR}/apiserver.yaml\n\
         \x20     - agent.yaml={IN_CLUSTER_DIR}/agent.yaml\n\
         \x20 # No hash suffix: the agent follows its remotes directory without a restart.\n\
         \x20 - name: fleetmesh-remotes\n    options: {{disableNameSuffixHash: true}}\n    files:\n",
        // Quoted: a path or URL may hold characters YAML would read as syntax.
        serde_json::Value::from(base),
        if agent_etcd_service {
            format!(
                "  # The agent's etcd API for this cluster's own Cilium agents (KVStoreMesh's part).\n  \
                 - {IN_CLUSTER_DIR}/{AGENT_SERVICE_FILE}\n"
            )
        } else {
            String::new()
        },
    );
    for file in remotes {
        let _ = writeln!(text, "      - {REMOTES_DIR}/{file}");
    }
    text.push_str(
        "secretGenerator:\n\
         \x20 # No hash suffix: the rotation CronJob renews this Secret by name, and both\n\
         \x20 # components reload it without a restart.\n\
         \x20 - name: fleetmesh-certs\n    type: Opaque\n    options: {disableNameSuffixHash: true}\n    files:\n",
    );
    for file in certs {
        let _ = writeln!(text, "      - {CERTS_DIR}/{file}");
    }
    let mut patches = String::new();
    if member.address.port != CONTAINER_GRPC_PORT {
        let _ = write!(
            patches,
            "\x20 # Peers dial the member's address; its Service listens on that port.\n\
             \x20 - target: {{kind: Service, name: fleetmesh-apiserver}}\n    patch: |-\n\
             \x20     - {{op: replace, path: /spec/ports/0/port, value: {}}}\n",
            member.address.port
        );
    }
    if let Some(port) = etcd_api_port {
        let _ = write!(
            patches,
            "\x20 # Cilium agents of the peers read the etcd API on this port.\n\
             \x20 - target: {{kind: Service, name: fleetmesh-apiserver}}\n    patch: |-\n\
             \x20     - {{op: add, path: /spec/ports/-, value: {{name: etcd-api, port: {port}, targetPort: {port}, protocol: TCP}}}}\n\
             \x20 - target: {{kind: Deployment, name: fleetmesh-apiserver}}\n    patch: |-\n\
             \x20     - {{op: add, path: /spec/template/spec/containers/0/ports/-, value: {{name: etcd-api, containerPort: {port}}}}}\n"
        );
    }
    if !patches.is_empty() {
        text.push_str("patches:\n");
        text.push_str(&patches);
    }
    text
}

/// `<name>/clustermesh/kustomization.yaml`: Cilium's `cilium-clustermesh` Secret in
/// `kube-system`, made of the directory's `files` (apply it with
/// `kubectl apply -k <name>/clustermesh/`; Cilium's agents mount it as their
/// `--clustermesh-config` directory).
pub fn clustermesh_kustomization_yaml(files: &[String]) -> String {
    let mut text = format!(
        "{HEADER}\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         namespace: kube-system\n\
         secretGenerator:\n\
         \x20 # Cilium reads the Secret by this name; the agents follow its files.\n\
         \x20 - name: cilium-clustermesh\n    type: Opaque\n    options: {{disableNameSuffixHash: true}}\n    files:\n"
    );
    for file in files {
        let _ = writeln!(text, "      - {file}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::profile::Profile;
    use crate::fleet::validate::validate;

    fn member(address: &str) -> Member {
        let profile = Profile::parse(&format!(
            "mesh: m\nmembers: [{{name: c1, address: \"{address}\"}}]\ntopology: {{kind: full-mesh}}\n"
        ))
        .unwrap();
        validate(&profile, None).unwrap().members.remove(0)
    }

    #[test]
    fn the_overlay_generates_configs_remotes_and_certificates_over_the_base() {
        let text = kustomization_yaml(
            &member("c1.example:9891"),
            "../../deploy/overlays/embedded",
            &["c1.yaml".into(), "c2.yaml".into()],
            &["ca.crt".into(), "client-c1.crt".into()],
            None,
            false,
        );
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(yaml["resources"][0], "../../deploy/overlays/embedded");
        assert_eq!(yaml["resources"][1], serde_yaml::Value::Null, "{text}");
        assert_eq!(
            yaml["configMapGenerator"][0]["files"][1],
            "agent.yaml=kube/agent.yaml"
        );
        assert_eq!(yaml["configMapGenerator"][1]["files"][1], "remotes/c2.yaml");
        assert_eq!(
            yaml["secretGenerator"][0]["files"][1],
            "certs/client-c1.crt"
        );
        assert_eq!(yaml["patches"], serde_yaml::Value::Null, "{text}");
    }

    #[test]
    fn another_port_is_patched_into_the_service() {
        let text = kustomization_yaml(&member("c1.example:443"), "base", &[], &[], None, true);
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let patch = yaml["patches"][0]["patch"].as_str().unwrap();
        assert!(
            patch.contains("path: /spec/ports/0/port, value: 443"),
            "{patch}"
        );
        assert_eq!(yaml["resources"][1], "kube/agent-etcd-service.yaml");
    }

    #[test]
    fn the_etcd_api_port_is_added_to_the_service_and_the_container() {
        let text = kustomization_yaml(
            &member("c1.example:9891"),
            "base",
            &[],
            &[],
            Some(2379),
            false,
        );
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let service = yaml["patches"][0]["patch"].as_str().unwrap();
        assert!(
            service.contains("path: /spec/ports/-, value: {name: etcd-api, port: 2379"),
            "{service}"
        );
        let container = yaml["patches"][1]["patch"].as_str().unwrap();
        assert!(container.contains("containerPort: 2379"), "{container}");
    }

    #[test]
    fn the_clustermesh_secret_is_generated_in_kube_system() {
        let text = clustermesh_kustomization_yaml(&["c2".into(), "common-etcd-client.crt".into()]);
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(yaml["namespace"], "kube-system");
        assert_eq!(yaml["secretGenerator"][0]["name"], "cilium-clustermesh");
        assert_eq!(yaml["secretGenerator"][0]["files"][0], "c2");
        assert_eq!(
            yaml["secretGenerator"][0]["files"][1],
            "common-etcd-client.crt"
        );
    }
}
