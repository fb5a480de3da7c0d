//! What a peer may read: the key ranges of Cilium's etcd roles.

use std::fmt;

use super::range::KeyRange;
use crate::model::ClusterName;

/// The key ranges a peer may read; everything else is refused with etcd's permission
/// error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRules {
    ranges: Vec<KeyRange>,
    /// Which role these are, for logs.
    role: String,
}

impl ReadRules {
    /// Cilium's `remote` role on cluster `own`'s etcd, which agents of other clusters
    /// (and their KVStoreMesh) read with: the heartbeat, every state key, `own`'s
    /// cluster config and `own`'s sync canaries.
    pub fn remote(own: &ClusterName) -> Self {
        Self {
            ranges: vec![
                KeyRange::prefix("cilium/.heartbeat"),
                KeyRange::prefix("cilium/state/"),
                KeyRange::key(&format!("cilium/cluster-config/{own}")),
                KeyRange::prefix(&format!("cilium/synced/{own}/")),
            ],
            role: format!("remote of {own}"),
        }
    }

    /// Cilium's `local` role (the `local-<cluster>` user) on a cluster's KVStoreMesh
    /// cache, which the cluster's own agents read with: the heartbeat, every cache key,
    /// every cluster config and every sync canary.
    pub fn local(own: &ClusterName) -> Self {
        Self {
            ranges: vec![
                KeyRange::prefix("cilium/.heartbeat"),
                KeyRange::prefix("cilium/cache/"),
                KeyRange::prefix("cilium/cluster-config/"),
                KeyRange::prefix("cilium/synced/"),
            ],
            role: format!("local of {own}"),
        }
    }

    /// Whether every key of `range` may be read.
    pub fn permits(&self, range: &KeyRange) -> bool {
        self.ranges.iter().any(|allowed| allowed.covers(range))
    }
}

impl fmt::Display for ReadRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.role)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn mk_request(key: &str, end: &str) -> KeyRange {
        KeyRange::from_request(
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::copy_from_slice(end.as_bytes()),
        )
    }

    #[test]
    fn the_local_role_reads_every_peer_s_cache_and_no_state() {
        let rules = ReadRules::local(&ClusterName::new("c1").unwrap());
        for allowed in [
            KeyRange::prefix("cilium/cache/ip/v1/c2/"),
            KeyRange::prefix("cilium/synced/c3/"),
            KeyRange::key("cilium/cluster-config/c2"),
            KeyRange::key("cilium/.heartbeat"),
        ] {
            assert!(rules.permits(&allowed), "{allowed:?}");
        }
        for refused in [
            KeyRange::prefix("cilium/"),
            KeyRange::prefix("cilium/state/"),
            KeyRange::prefix("fleetmesh/"),
        ] {
            assert!(!rules.permits(&refused), "{refused:?}");
        }
    }

    #[test]
    fn the_remote_role_reads_what_a_cilium_agent_reads() {
        let rules = ReadRules::remote(&ClusterName::new("c1").unwrap());
        for allowed in [
            KeyRange::key("cilium/.heartbeat"),
            KeyRange::prefix("cilium/.heartbeat"),
            KeyRange::prefix("cilium/state/ip/v1/default/"),
            KeyRange::prefix("cilium/state/nodes/v1/c1/"),
            KeyRange::key("cilium/cluster-config/c1"),
            KeyRange::prefix("cilium/synced/c1/"),
            // Cilium's paging: the next page starts after the last key read.
            mk_request(
                "cilium/state/ip/v1/default/10.0.0.9\0",
                "cilium/state/ip/v1/default0",
            ),
        ] {
            assert!(rules.permits(&allowed), "{allowed:?}");
        }
        for refused in [
            KeyRange::prefix("cilium/"),
            KeyRange::prefix("cilium/state"),
            KeyRange::key("cilium/cluster-config/c2"),
            KeyRange::prefix("cilium/cluster-config/"),
            KeyRange::prefix("cilium/synced/c2/"),
            KeyRange::prefix("fleetmesh/"),
            mk_request("\0", "\0"),
        ] {
            assert!(!rules.permits(&refused), "{refused:?}");
        }
    }
}
