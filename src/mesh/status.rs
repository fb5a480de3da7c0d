//! The status of every link, as the agent's remote tasks report it and the query API,
//! metrics, CLI and web page show it. Part of the mesh because the cross-cluster view
//! includes how fresh each cluster's part of it is; the remote tasks write these values,
//! `observe` reads them, and neither has to know the other.

use serde::{Deserialize, Serialize};

use crate::model::Kind;

use super::Counts;

/// One link's state: to a peer's apiserver, or to the agent's own (`local`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// The peer's cluster name (its remotes file name).
    pub cluster: String,
    /// The link to this agent's own apiserver: its data is the local cluster's.
    pub local: bool,
    pub connected: bool,
    /// Connected, config validated and every kind synced.
    pub ready: bool,
    pub cluster_id: Option<u32>,
    /// The peer store's epoch the link last resumed from or listed.
    pub epoch: Option<String>,
    /// The last revision received.
    pub revision: u64,
    pub synced: SyncedKinds,
    pub counts: Counts,
    /// Failed connection attempts and sessions that broke (Cilium's `num-failures`).
    pub failures: u64,
    /// Times the link connected again after its first connection.
    pub reconnects: u64,
    /// Reconnects that had to list the full state again.
    pub full_resyncs: u64,
    /// Reconnects that resumed from the last revision.
    pub resumes: u64,
    /// Peer data that failed validation and was refused.
    pub refused_events: u64,
    pub last_failure: Option<Failure>,
    pub last_event_unix_ms: Option<u64>,
    /// When the peer's certificate expires (RFC 3339), if known.
    pub peer_cert_not_after: Option<String>,
}

/// Which kinds have reached their synced marker since the link last (re)connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedKinds {
    pub nodes: bool,
    pub services: bool,
    pub identities: bool,
    pub endpoints: bool,
}

impl SyncedKinds {
    /// Whether `kind` is synced.
    pub fn get(&self, kind: Kind) -> bool {
        match kind {
            Kind::Node => self.nodes,
            Kind::Service => self.services,
            Kind::Identity => self.identities,
            Kind::Endpoint => self.endpoints,
        }
    }

    /// Marks `kind` synced or not.
    pub fn set(&mut self, kind: Kind, synced: bool) {
        let flag = match kind {
            Kind::Node => &mut self.nodes,
            Kind::Service => &mut self.services,
            Kind::Identity => &mut self.identities,
            Kind::Endpoint => &mut self.endpoints,
        };
        *flag = synced;
    }

    /// Every kind is synced.
    pub fn all(&self) -> bool {
        Kind::ALL.into_iter().all(|k| self.get(k))
    }
}

/// Why the link last failed, and when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The error with its causes, naming what failed (address, peer, rule).
    pub reason: String,
    pub at_unix_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_kinds_are_set_and_read_per_kind() {
        let mut synced = SyncedKinds::default();
        for kind in Kind::ALL {
            assert!(!synced.all());
            assert!(!synced.get(kind));
            synced.set(kind, true);
            assert!(synced.get(kind));
        }
        assert!(synced.all());
        synced.set(Kind::Endpoint, false);
        assert!(!synced.all());
    }

    #[test]
    fn status_json_is_camel_case() {
        let status = PeerStatus {
            cluster: "c2".into(),
            last_failure: Some(Failure {
                reason: "connection refused".into(),
                at_unix_ms: 5,
            }),
            ..PeerStatus::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["lastFailure"]["atUnixMs"], 5);
        assert_eq!(json["refusedEvents"], 0);
        assert_eq!(json["synced"]["endpoints"], false);
        let back: PeerStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
    }
}
