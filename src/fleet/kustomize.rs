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
/// member's `remotes/` and `certs/` directories; `agent_etcd_service`: the agent serves
/// its own cluster's Cilium agents (the profile's `kvstoremesh`).
pub fn kustomization_yaml(
    member: &Member,
    base: &str,
    remotes: &[String],
    certs: &[String],
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
    if member.address.port != CONTAINER_GRPC_PORT {
        let _ = write!(
            text,
            "patches:\n\
             \x20 # Peers dial the member's address; its Service listens on that port.\n\
             \x20 - target: {{kind: Service, name: fleetmesh-apiserver}}\n    patch: |-\n\
             \x20     - {{op: replace, path: /spec/ports/0/port, value: {}}}\n",
            member.address.port
        );
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
        let text = kustomization_yaml(&member("c1.example:443"), "base", &[], &[], true);
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let patch = yaml["patches"][0]["patch"].as_str().unwrap();
        assert!(
            patch.contains("path: /spec/ports/0/port, value: 443"),
            "{patch}"
        );
        assert_eq!(yaml["resources"][1], "kube/agent-etcd-service.yaml");
    }
}
