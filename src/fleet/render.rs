//! The configuration files of one member, as text. Paths in them are relative to the
//! file, so the output directory can be moved or mounted anywhere as a whole.

use super::profile::InClusterStore;
use super::validate::{Fleet, Member};
use crate::model::ClusterName;

/// The first line of every generated file.
pub(super) const HEADER: &str =
    "# Written by `fleetmesh fleet plan`: change the profile and re-run it instead of editing.";

/// The member's directory holding its manifests (the apiserver's source).
pub const MANIFESTS_DIR: &str = "manifests";
/// Where the embedded store keeps identity allocations across restarts.
pub const STATE_DIR: &str = "state";
/// The member's directory holding its peer files.
pub const REMOTES_DIR: &str = "remotes";
/// The member's directory shaped like Cilium's `cilium-clustermesh` Secret: one etcd
/// client config per peer, named after it, next to the certificates they name.
pub const CLUSTERMESH_DIR: &str = "clustermesh";
/// Where Cilium's agents mount the `cilium-clustermesh` Secret.
const CILIUM_CLUSTERMESH_MOUNT: &str = "/var/lib/cilium/clustermesh";
/// The Secret's files holding the CA and the client leaf every peer config names
/// (Cilium's names for a client certificate shared by all remotes).
pub const CLUSTERMESH_CA_FILE: &str = "common-etcd-client-ca.crt";
pub const CLUSTERMESH_CERT_FILE: &str = "common-etcd-client.crt";
pub const CLUSTERMESH_KEY_FILE: &str = "common-etcd-client.key";

/// The member's directory holding its CA bundle and leaves.
pub const CERTS_DIR: &str = "certs";
/// The member's directory holding the configs its kustomize overlay deploys.
pub const IN_CLUSTER_DIR: &str = "kube";

/// The apiserver container's gRPC port in `deploy/base/apiserver.yaml`.
pub const CONTAINER_GRPC_PORT: u16 = 9891;
/// Where `deploy/base` probes the apiserver's `/readyz` and `/healthz`.
const CONTAINER_HEALTH_LISTEN: &str = "0.0.0.0:9880";
/// Where `deploy/overlays/etcd-sidecar` serves etcd to the apiserver.
const ETCD_SIDECAR_URL: &str = "http://127.0.0.1:2379";
/// Where `deploy/base` probes the agent's `/readyz` and `/healthz`.
const CONTAINER_AGENT_API_LISTEN: &str = "0.0.0.0:9890";

/// `<name>/apiserver.yaml`: the embedded store (identities kept in `state/`), the
/// manifest source, gRPC on the
/// address's port for every interface, and only `allowed` (the member itself and the
/// members that watch it) as peers.
pub fn apiserver_yaml(fleet: &Fleet, member: &Member) -> String {
    apiserver_text(
        fleet,
        member,
        &format!(
            "source: {{manifests: {MANIFESTS_DIR}}}\nstore: {{kind: memory}}\n\
             identity: {{stateDir: {STATE_DIR}}}"
        ),
        member.address.port,
    )
}

/// `<name>/kube/apiserver.yaml`: as [`apiserver_yaml`], for the Deployment of
/// `deploy/`: the cluster's own API as the source, `store` as the base provides it, gRPC
/// on the container's port (the Service maps the address's port to it), health for the
/// kubelet's probes.
pub fn in_cluster_apiserver_yaml(fleet: &Fleet, member: &Member, store: InClusterStore) -> String {
    let store = match store {
        InClusterStore::Embedded => "{kind: memory}".to_string(),
        InClusterStore::EtcdSidecar => {
            format!("{{kind: etcd, etcd: {{endpoints: [\"{ETCD_SIDECAR_URL}\"]}}}}")
        }
    };
    let text = apiserver_text(
        fleet,
        member,
        &format!("source: {{kube: {{}}}}\nstore: {store}"),
        CONTAINER_GRPC_PORT,
    );
    format!("{text}health: {{listen: \"{CONTAINER_HEALTH_LISTEN}\"}}\n")
}

fn apiserver_text(fleet: &Fleet, member: &Member, source_and_store: &str, port: u16) -> String {
    let name = &member.name;
    let mut allowed = fleet.watchers_of(name);
    // Its own agent watches it too: that is how the agent learns its local services.
    allowed.insert(name.clone());
    let etcd_api = match fleet.etcd_api_port {
        // The same certificates and peers as gRPC: a Cilium agent of a member that may
        // watch this one reads it with that member's client leaf.
        Some(port) => format!(
            "etcdApi:\n  listen: \"0.0.0.0:{port}\"\n  \
             tls: {{ca: {CERTS_DIR}/ca.crt, cert: {CERTS_DIR}/server-{name}.crt, key: {CERTS_DIR}/server-{name}.key}}\n"
        ),
        None => String::new(),
    };
    format!(
        "{HEADER}\n\
         cluster: {}\n\
         {source_and_store}\n\
         grpc:\n  listen: \"0.0.0.0:{port}\"\n  \
         tls: {{ca: {CERTS_DIR}/ca.crt, cert: {CERTS_DIR}/server-{name}.crt, key: {CERTS_DIR}/server-{name}.key}}\n  \
         allowedPeers: [{}]\n\
         {etcd_api}",
        cluster_line(fleet, member),
        join(allowed.iter()),
    )
}

/// `<local>/clustermesh/<peer>`: the etcd client config with which `local`'s Cilium
/// agents read `peer`'s apiserver, its files where Cilium mounts the Secret.
pub fn clustermesh_yaml(peer: &Member, port: u16) -> String {
    let host = match peer.address.ip() {
        Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => peer.address.host.clone(),
    };
    format!(
        "{HEADER}\n\
         endpoints:\n- https://{host}:{port}\n\
         trusted-ca-file: {CILIUM_CLUSTERMESH_MOUNT}/{CLUSTERMESH_CA_FILE}\n\
         cert-file: {CILIUM_CLUSTERMESH_MOUNT}/{CLUSTERMESH_CERT_FILE}\n\
         key-file: {CILIUM_CLUSTERMESH_MOUNT}/{CLUSTERMESH_KEY_FILE}\n"
    )
}

/// `<name>/agent.yaml`: the member's cluster, its remotes directory and the etcd API
/// its own Cilium agents read on loopback.
pub fn agent_yaml(fleet: &Fleet, member: &Member) -> String {
    format!(
        "{}{}",
        agent_base_yaml(fleet, member),
        etcd_api_block(fleet, member, "127.0.0.1")
    )
}

fn agent_base_yaml(fleet: &Fleet, member: &Member) -> String {
    format!(
        "{HEADER}\ncluster: {}\nremotesDir: {REMOTES_DIR}\n",
        cluster_line(fleet, member)
    )
}

/// `<name>/kube/agent.yaml`: as [`agent_yaml`], with the query API on every interface
/// (the kubelet probes the pod IP) and EndpointSlices for the remote backends of global
/// services, so that the cluster's own load balancing reaches them.
pub fn in_cluster_agent_yaml(fleet: &Fleet, member: &Member) -> String {
    format!(
        "{}api: {{listen: \"{CONTAINER_AGENT_API_LISTEN}\"}}\nendpointSlices: {{enabled: true}}\n{}",
        agent_base_yaml(fleet, member),
        etcd_api_block(fleet, member, "0.0.0.0")
    )
}

/// The agent's `etcdApi` block when the profile asks for KVStoreMesh's part.
fn etcd_api_block(fleet: &Fleet, member: &Member, host: &str) -> String {
    fleet.kvstoremesh_port.map_or(String::new(), |port| {
        super::kvstoremesh::etcd_api_block(member.name.as_str(), host, port)
    })
}

/// `<local>/remotes/<peer>.yaml`: where `local`'s agent dials `peer`, with `local`'s
/// client certificate.
pub fn remote_yaml(local: &ClusterName, peer: &Member) -> String {
    format!(
        "{HEADER}\naddress: \"{}\"\n\
         tls: {{ca: ../{CERTS_DIR}/ca.crt, cert: ../{CERTS_DIR}/client-{local}.crt, key: ../{CERTS_DIR}/client-{local}.key}}\n",
        peer.address
    )
}

fn cluster_line(fleet: &Fleet, member: &Member) -> String {
    format!(
        "{{name: {}, id: {}, maxConnectedClusters: {}}}",
        member.name,
        member.id,
        fleet.mode.max_cluster_id()
    )
}

fn join<'a>(names: impl Iterator<Item = &'a ClusterName>) -> String {
    names
        .map(ClusterName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::profile::Profile;
    use crate::fleet::validate::validate;

    fn hub_spoke() -> Fleet {
        let p = Profile::parse(
            "mesh: m\nmembers:\n\
             - {name: hub, address: \"hub.example:9891\"}\n\
             - {name: s1, address: \"[fd00::2]:7000\"}\n\
             - {name: s2, address: \"10.0.0.3:9891\"}\n\
             topology: {kind: hub-spoke, hubs: [hub]}\n",
        )
        .unwrap();
        validate(&p, None).unwrap()
    }

    #[test]
    fn an_apiserver_allows_itself_and_its_watchers_only() {
        let fleet = hub_spoke();
        let text = apiserver_yaml(&fleet, &fleet.members[1]);
        assert!(text.starts_with(HEADER));
        assert!(
            text.contains("cluster: {name: s1, id: 2, maxConnectedClusters: 255}\n"),
            "{text}"
        );
        assert!(text.contains("listen: \"0.0.0.0:7000\"\n"), "{text}");
        assert!(text.contains("cert: certs/server-s1.crt"), "{text}");
        assert!(text.contains("allowedPeers: [hub, s1]\n"), "{text}");
        let hub = apiserver_yaml(&fleet, &fleet.members[0]);
        assert!(hub.contains("allowedPeers: [hub, s1, s2]\n"), "{hub}");
    }

    #[test]
    fn agent_and_remote_files_point_at_the_local_client_certificate() {
        let fleet = hub_spoke();
        let agent = agent_yaml(&fleet, &fleet.members[2]);
        assert!(agent.contains(
            "cluster: {name: s2, id: 3, maxConnectedClusters: 255}\nremotesDir: remotes\n"
        ));
        let remote = remote_yaml(&fleet.members[2].name, &fleet.members[1]);
        assert!(remote.contains("address: \"[fd00::2]:7000\"\n"), "{remote}");
        assert!(
            remote.contains("cert: ../certs/client-s2.crt, key: ../certs/client-s2.key"),
            "{remote}"
        );
    }

    #[test]
    fn in_cluster_configs_parse_and_name_the_base_s_store_and_ports() {
        use crate::apiserver::{ApiserverConfig, SourceConfig, StoreSettings};
        let fleet = hub_spoke();
        let path = std::path::Path::new("/etc/fleetmesh/apiserver.yaml");
        for (store, etcd) in [
            (InClusterStore::Embedded, false),
            (InClusterStore::EtcdSidecar, true),
        ] {
            let text = in_cluster_apiserver_yaml(&fleet, &fleet.members[1], store);
            let config = ApiserverConfig::parse(&text, path).unwrap();
            assert!(matches!(
                config.source,
                SourceConfig::Kube { kubeconfig: None }
            ));
            assert_eq!(
                matches!(config.store, StoreSettings::Etcd(_)),
                etcd,
                "{text}"
            );
            assert_eq!(config.grpc.unwrap().listen.port(), CONTAINER_GRPC_PORT);
        }
        let agent = in_cluster_agent_yaml(&fleet, &fleet.members[1]);
        let config = crate::agent::AgentConfig::parse(
            &agent,
            std::path::Path::new("/etc/fleetmesh/agent.yaml"),
        )
        .unwrap();
        assert!(config.api.listen.ip().is_unspecified());
        assert!(config.endpoint_slices.is_some());
    }
}
