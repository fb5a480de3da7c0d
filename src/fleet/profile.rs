//! The profile file as written: plain strings and numbers, so that validation can report
//! every problem at once instead of stopping at the first field serde refuses.

use serde::Deserialize;

/// Cilium's default mesh size, used when the profile does not say.
const DEFAULT_MAX_CONNECTED_CLUSTERS: u32 = 255;

/// A mesh profile (see the module docs for the format). Unknown fields are refused.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// The mesh's name; names the CA.
    pub mesh: String,
    /// 255 (normal) or 511 (extended mode).
    #[serde(default = "default_max_connected_clusters")]
    pub max_connected_clusters: u32,
    #[serde(default)]
    pub members: Vec<MemberSpec>,
    pub topology: TopologySpec,
    /// Also write each member's kustomize overlay over this base.
    pub kustomize: Option<KustomizeSpec>,
    /// Also serve the etcd API to Cilium agents, and write their clustermesh configs.
    pub etcd_api: Option<EtcdApiSpec>,
    /// Also let each member's agent play KVStoreMesh for the member's own Cilium agents.
    pub kvstoremesh: Option<KvstoremeshSpec>,
}

/// The apiservers' etcd API for stock Cilium agents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdApiSpec {
    /// The port on every member's address host (Cilium's clustermesh port by default).
    #[serde(default = "default_etcd_api_port")]
    pub port: u16,
}

fn default_etcd_api_port() -> u16 {
    2379
}

/// The agents' etcd API for their own cluster's Cilium agents (KVStoreMesh's part).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvstoremeshSpec {
    /// The port the agent's etcd API listens on (etcd's client port by default).
    #[serde(default = "default_kvstoremesh_port")]
    pub port: u16,
}

fn default_kvstoremesh_port() -> u16 {
    super::kvstoremesh::AGENT_ETCD_API_PORT
}

/// Where the members' kustomize overlays find fleetmesh's manifests, and the store the
/// apiserver uses there.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KustomizeSpec {
    /// A kustomize resource: a path relative to each member's directory (e.g.
    /// `../../deploy/overlays/embedded`) or a remote URL.
    pub base: String,
    /// The store the base runs the apiserver with; the overlay's config must say the same.
    #[serde(default)]
    pub store: InClusterStore,
}

/// The apiserver's store in a member's cluster, as `deploy/`'s overlays provide it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InClusterStore {
    /// `deploy/overlays/embedded` and `nodeport`: the embedded store.
    #[default]
    Embedded,
    /// `deploy/overlays/etcd-sidecar`: etcd beside the apiserver, on loopback.
    EtcdSidecar,
}

fn default_max_connected_clusters() -> u32 {
    DEFAULT_MAX_CONNECTED_CLUSTERS
}

/// One member cluster as the profile lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    pub name: String,
    /// Absent: the lowest free id, then kept across runs.
    pub id: Option<u32>,
    /// `host:port` (or `[v6]:port`) of the member's apiserver gRPC, as peers dial it.
    pub address: String,
    #[serde(default, rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
    #[serde(default, rename = "serviceCIDRs")]
    pub service_cidrs: Vec<String>,
}

/// Who sees whom.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TopologySpec {
    /// Every member's agent watches every other member. (A struct variant, so that
    /// unknown fields next to the kind are refused.)
    FullMesh {},
    /// Hubs see every member; every other member is a spoke and sees the hubs only.
    HubSpoke { hubs: Vec<String> },
    /// Explicit directed links: `from`'s agent watches `to`.
    Links { links: Vec<LinkSpec> },
}

/// `from`'s agent watches `to`'s apiserver.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub from: String,
    pub to: String,
}

impl Profile {
    /// Parses a profile's YAML.
    pub fn parse(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topology_kind_and_member_field_parses() {
        let p = Profile::parse(
            "mesh: prod\nmaxConnectedClusters: 511\nmembers:\n\
             - {name: a, id: 3, address: \"a.example:9891\", podCIDRs: [10.1.0.0/16], serviceCIDRs: [10.96.0.0/16]}\n\
             - {name: b, address: \"10.0.0.2:9891\"}\n\
             topology: {kind: hub-spoke, hubs: [a]}\n",
        )
        .unwrap();
        assert_eq!(p.max_connected_clusters, 511);
        assert_eq!(p.members[0].id, Some(3));
        assert_eq!(p.members[0].pod_cidrs, ["10.1.0.0/16"]);
        assert_eq!(p.members[1].id, None);
        assert_eq!(
            p.topology,
            TopologySpec::HubSpoke {
                hubs: vec!["a".into()]
            }
        );
        let p = Profile::parse("mesh: m\ntopology: {kind: full-mesh}\n").unwrap();
        assert_eq!(p.max_connected_clusters, 255);
        assert_eq!(p.topology, TopologySpec::FullMesh {});
        let p = Profile::parse("mesh: m\ntopology: {kind: links, links: [{from: a, to: b}]}\n")
            .unwrap();
        assert!(matches!(p.topology, TopologySpec::Links { links } if links[0].to == "b"));
    }

    #[test]
    fn unknown_fields_and_kinds_are_refused() {
        for text in [
            "mesh: m\ncolour: blue\ntopology: {kind: full-mesh}\n",
            "mesh: m\nmembers: [{name: a, address: \"a:1\", zone: x}]\ntopology: {kind: full-mesh}\n",
            "mesh: m\ntopology: {kind: star}\n",
            "mesh: m\ntopology: {kind: full-mesh, hubs: [a]}\n",
        ] {
            assert!(Profile::parse(text).is_err(), "accepted: {text}");
        }
    }
}
