//! Who may call: the peer's cluster, from its client certificate, against the serving
//! cluster's allowed peers.

use std::collections::BTreeSet;
use std::fmt;

use super::GrpcError;
use crate::model::ClusterName;
use crate::tls::server::PeerInfo;

/// Which peer clusters may read this cluster's state (its place in the mesh topology:
/// in a hub-and-spoke mesh a tenant's apiserver allows only the hub).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedPeers {
    /// Every cluster whose certificate the CA bundle trusts.
    Any,
    /// Only these clusters.
    Only(BTreeSet<ClusterName>),
}

impl AllowedPeers {
    pub fn allows(&self, peer: &ClusterName) -> bool {
        match self {
            Self::Any => true,
            Self::Only(peers) => peers.contains(peer),
        }
    }
}

impl fmt::Display for AllowedPeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::Only(peers) => {
                f.write_str("[")?;
                for (i, peer) in peers.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{peer}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// The calling peer's cluster, if it may `action` (e.g. "watch") cluster `serving`:
/// the connection must carry a verified certificate naming a cluster, and that cluster
/// must be allowed.
pub(super) fn authorize(
    peer: Option<&PeerInfo>,
    allowed: &AllowedPeers,
    serving: &ClusterName,
    action: &'static str,
) -> Result<ClusterName, GrpcError> {
    let peer = peer.ok_or(GrpcError::NoPeerIdentity)?;
    let cluster = peer
        .cluster
        .clone()
        .map_err(|source| GrpcError::BadPeerIdentity {
            addr: peer.addr,
            source,
        })?;
    if !allowed.allows(&cluster) {
        return Err(GrpcError::NotAllowed {
            peer: cluster,
            action,
            serving: serving.clone(),
            allowed: allowed.clone(),
        });
    }
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::tls::PeerIdentityError;

    fn mk_name(s: &str) -> ClusterName {
        ClusterName::new(s).unwrap()
    }

    fn mk_peer(cluster: Result<ClusterName, PeerIdentityError>) -> PeerInfo {
        PeerInfo {
            addr: "10.0.0.7:40000".parse().unwrap(),
            cluster,
            cert_not_after: None,
            closer: Default::default(),
        }
    }

    #[test]
    fn allowed_peers_pass() {
        let c1 = mk_name("c1");
        let only_c2 = AllowedPeers::Only([mk_name("c2")].into());
        let peer = mk_peer(Ok(mk_name("c2")));
        assert_eq!(
            authorize(Some(&peer), &only_c2, &c1, "watch").unwrap(),
            mk_name("c2")
        );
        let anyone = mk_peer(Ok(mk_name("c9")));
        assert!(authorize(Some(&anyone), &AllowedPeers::Any, &c1, "watch").is_ok());
    }

    #[test]
    fn a_disallowed_peer_is_denied_with_the_rule() {
        let only_c2 = AllowedPeers::Only([mk_name("c2")].into());
        let peer = mk_peer(Ok(mk_name("c3")));
        let err = authorize(Some(&peer), &only_c2, &mk_name("c1"), "watch").unwrap_err();
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "cluster \"c3\" may not watch cluster \"c1\": not in allowedPeers [c2]"
        );
    }

    #[test]
    fn a_peer_without_identity_is_unauthenticated() {
        let c1 = mk_name("c1");
        let err = authorize(None, &AllowedPeers::Any, &c1, "watch").unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), Code::Unauthenticated);

        let peer = mk_peer(Err(PeerIdentityError::NoCertificate));
        let err = authorize(Some(&peer), &AllowedPeers::Any, &c1, "watch").unwrap_err();
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("10.0.0.7:40000"), "{status:?}");
    }

    #[test]
    fn allowed_peers_print_as_a_list() {
        let two = AllowedPeers::Only([mk_name("b"), mk_name("a")].into());
        assert_eq!(two.to_string(), "[a, b]");
        assert_eq!(AllowedPeers::Any.to_string(), "any");
    }
}
