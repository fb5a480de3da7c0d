//! Is the apiserver that answered `Info` the peer this link is for? (DESIGN.md §6 rule 3,
//! Cilium's cluster-config validation.) The server certificate's cluster was already
//! checked against the peer's name by the TLS dialer; this checks what the peer says of
//! itself. The id's uniqueness among peers is the [`IdRegistry`](super::IdRegistry)'s.

use thiserror::Error;

use super::IdConflict;
use crate::model::{Cluster, ClusterName};
use crate::proto::{PROTOCOL_VERSION, ServerInfo};

/// Why a peer's `Info` was refused. The messages name the peer and both values, so the
/// status says what to fix and where.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("peer {peer:?} speaks protocol version {found}, this agent {PROTOCOL_VERSION}")]
    ProtocolVersion { peer: ClusterName, found: u32 },
    #[error(
        "the apiserver at this address says it is cluster {found:?}, but the peer file is {expected:?}"
    )]
    Name {
        expected: ClusterName,
        found: ClusterName,
    },
    #[error(
        "peer {peer:?} uses max-connected-clusters {found}, this mesh {ours}: every member must use the same"
    )]
    IdMode {
        peer: ClusterName,
        found: u32,
        ours: u32,
    },
    #[error("the local apiserver says it is cluster {found}, but this agent is cluster {expected}")]
    NotLocal { expected: Cluster, found: Cluster },
    #[error("peer {peer:?} cannot be accepted")]
    Id {
        peer: ClusterName,
        #[source]
        source: IdConflict,
    },
}

/// Checks `info` against the peer file `expected` and the `local` cluster; returns the
/// peer's cluster, against which its data is then checked. `is_local` is the link to the
/// agent's own apiserver, which must be exactly the local cluster.
pub(super) fn check_info(
    info: &ServerInfo,
    expected: &ClusterName,
    local: &Cluster,
    is_local: bool,
) -> Result<Cluster, ValidationError> {
    let found = &info.cluster;
    if info.protocol_version != PROTOCOL_VERSION {
        return Err(ValidationError::ProtocolVersion {
            peer: expected.clone(),
            found: info.protocol_version,
        });
    }
    if found.name != *expected {
        return Err(ValidationError::Name {
            expected: expected.clone(),
            found: found.name.clone(),
        });
    }
    if found.mode != local.mode {
        return Err(ValidationError::IdMode {
            peer: expected.clone(),
            found: found.mode.max_cluster_id(),
            ours: local.mode.max_cluster_id(),
        });
    }
    if is_local {
        if found != local {
            return Err(ValidationError::NotLocal {
                expected: local.clone(),
                found: found.clone(),
            });
        }
    } else if found.id == local.id {
        return Err(ValidationError::Id {
            peer: expected.clone(),
            source: IdConflict::Local {
                id: found.id,
                local: local.name.clone(),
            },
        });
    }
    Ok(found.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterId, IdMode};

    fn mk_cluster(name: &str, id: u32, mode: IdMode) -> Cluster {
        Cluster::new(
            ClusterName::new(name).unwrap(),
            ClusterId::new(id, mode).unwrap(),
            mode,
        )
    }

    fn mk_info(cluster: Cluster) -> ServerInfo {
        ServerInfo {
            cluster,
            protocol_version: PROTOCOL_VERSION,
            epoch: "e1".into(),
            capabilities: vec![],
        }
    }

    fn local() -> Cluster {
        mk_cluster("local", 1, IdMode::Normal)
    }

    fn c2() -> ClusterName {
        ClusterName::new("c2").unwrap()
    }

    #[test]
    fn a_matching_peer_is_accepted_as_the_cluster_it_announced() {
        let peer = mk_cluster("c2", 2, IdMode::Normal);
        let got = check_info(&mk_info(peer.clone()), &c2(), &local(), false).unwrap();
        assert_eq!(got, peer);
    }

    #[test]
    fn a_peer_named_unlike_its_file_is_refused_with_both_names() {
        let info = mk_info(mk_cluster("c3", 3, IdMode::Normal));
        let err = check_info(&info, &c2(), &local(), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the apiserver at this address says it is cluster \"c3\", but the peer file is \"c2\""
        );
    }

    #[test]
    fn a_peer_in_another_id_mode_is_refused() {
        let info = mk_info(mk_cluster("c2", 2, IdMode::Extended));
        let err = check_info(&info, &c2(), &local(), false).unwrap_err();
        assert!(
            err.to_string()
                .contains("max-connected-clusters 511, this mesh 255"),
            "{err}"
        );
    }

    #[test]
    fn a_peer_claiming_the_local_id_is_refused() {
        let info = mk_info(mk_cluster("c2", 1, IdMode::Normal));
        let err = check_info(&info, &c2(), &local(), false).unwrap_err();
        assert_eq!(
            crate::report::error_chain(&err),
            "peer \"c2\" cannot be accepted: cluster id 1 is the local cluster's (\"local\")"
        );
    }

    #[test]
    fn another_protocol_version_is_refused() {
        let mut info = mk_info(mk_cluster("c2", 2, IdMode::Normal));
        info.protocol_version = 9;
        let err = check_info(&info, &c2(), &local(), false).unwrap_err();
        assert!(matches!(
            err,
            ValidationError::ProtocolVersion { found: 9, .. }
        ));
    }

    #[test]
    fn the_local_link_must_reach_exactly_the_local_cluster() {
        let name = local().name;
        let got = check_info(&mk_info(local()), &name, &local(), true).unwrap();
        assert_eq!(got, local());
        let other_id = mk_info(mk_cluster("local", 4, IdMode::Normal));
        let err = check_info(&other_id, &name, &local(), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the local apiserver says it is cluster local (id 4), but this agent is cluster local (id 1)"
        );
    }
}
