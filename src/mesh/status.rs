//! The status of every link, as the agent's remote tasks report it and the query API,
//! metrics, CLI and web page show it. Part of the mesh because the cross-cluster view
//! includes how fresh each cluster's part of it is; the remote tasks write these values,
//! `observe` reads them, and neither has to know the other.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::certs::rotate::DEFAULT_RENEW_WITHIN;
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
    /// [`PeerStatus::refused_events`] per reason (`ProtoError::reason`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub refused_by_reason: std::collections::BTreeMap<String, u64>,
    pub last_failure: Option<Failure>,
    pub last_event_unix_ms: Option<u64>,
    /// When the peer's apiserver last wrote its store's heartbeat (ms since the Unix
    /// epoch, the peer's clock), as it last told this link; absent from peers that
    /// predate it. Kept across reconnects: its age is how long the peer's store has
    /// not been seen alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_unix_ms: Option<u64>,
    /// When the peer's certificate expires (RFC 3339), if known.
    pub peer_cert_not_after: Option<String>,
    /// When this agent's client certificate for the link expires (RFC 3339), as its file
    /// said when the link last connected.
    pub own_cert_not_after: Option<String>,
    /// The subject of the CA that signed the peer's certificate, when that CA is being
    /// retired: the link's trust bundle holds several CAs and a newer one (later
    /// notBefore) than this one (see [`crate::certs::inspect::signed_by_older_ca`]).
    pub peer_cert_retiring_ca: Option<String>,
    /// [`PeerStatus::credential_warnings`] as of the link's last connection (`fleetmesh
    /// status` recomputes them for the current time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_warnings: Vec<String>,
    /// What the agent's Cilium cache keys hold of this peer, when it serves them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheStatus>,
}

/// What the agent's Cilium cache keys (KVStoreMesh's part) hold of one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStatus {
    /// `cilium/cache/` keys of the peer.
    pub keys: u64,
    /// Its sync canaries (one per kind once it synced).
    pub canaries: u64,
    /// Its cluster config is served (deleted first when the peer is removed).
    pub config: bool,
    /// Services whose backends the stale policy withdrew from their keys.
    pub withdrawn_services: u64,
    /// The etcd API's clients (the cluster's Cilium agents) connected now; every one
    /// reads every peer.
    pub etcd_clients: u64,
    /// Not a link: the peer's file was removed, and its keys are served until the drain
    /// grace ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

impl PeerStatus {
    /// A configured link, not a removed peer whose cache keys are still draining.
    pub fn is_link(&self) -> bool {
        !self.cache.as_ref().is_some_and(|c| c.draining)
    }

    /// What needs attention in the link's credentials at `now_unix_ms`: a certificate
    /// (either end) that expired or expires within the renewal window of `certs rotate`
    /// (30 days), and a peer certificate from a CA that is being retired.
    pub fn credential_warnings(&self, now_unix_ms: u64) -> Vec<String> {
        let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_unix_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let window = time::Duration::try_from(DEFAULT_RENEW_WITHIN).unwrap_or(time::Duration::MAX);
        let mut out = Vec::new();
        let ends = [
            (
                format!("{}'s server certificate", self.cluster),
                &self.peer_cert_not_after,
            ),
            (
                "this agent's client certificate".to_string(),
                &self.own_cert_not_after,
            ),
        ];
        for (who, not_after) in ends {
            let Some(text) = not_after else { continue };
            let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) else {
                continue;
            };
            if t <= now {
                out.push(format!("{who} expired at {text}"));
            } else if t - now <= window {
                out.push(format!(
                    "{who} expires in {} days ({text}): renew it with `fleetmesh certs rotate`",
                    (t - now).whole_days()
                ));
            }
        }
        if let Some(ca) = &self.peer_cert_retiring_ca {
            out.push(format!(
                "{} presents a certificate from CA {ca:?}, which is being retired: re-issue its \
                 certificates before `fleetmesh certs retire-ca`",
                self.cluster
            ));
        }
        out
    }
}

/// Which kinds have reached their synced marker since the link last (re)connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedKinds {
    pub nodes: bool,
    pub services: bool,
    pub identities: bool,
    pub endpoints: bool,
    /// Also set when the peer serves no service exports: there is nothing to wait for.
    #[serde(default)]
    pub service_exports: bool,
}

impl SyncedKinds {
    /// Whether `kind` is synced.
    pub fn get(&self, kind: Kind) -> bool {
        match kind {
            Kind::Node => self.nodes,
            Kind::Service => self.services,
            Kind::Identity => self.identities,
            Kind::Endpoint => self.endpoints,
            Kind::ServiceExport => self.service_exports,
        }
    }

    /// Marks `kind` synced or not.
    pub fn set(&mut self, kind: Kind, synced: bool) {
        let flag = match kind {
            Kind::Node => &mut self.nodes,
            Kind::Service => &mut self.services,
            Kind::Identity => &mut self.identities,
            Kind::Endpoint => &mut self.endpoints,
            Kind::ServiceExport => &mut self.service_exports,
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

    #[test]
    fn credential_warnings_name_expiring_certificates_and_a_retiring_ca() {
        let now = OffsetDateTime::parse("2026-01-01T00:00:00Z", &Rfc3339).unwrap();
        let now_ms = (now.unix_timestamp() * 1000) as u64;
        let status = PeerStatus {
            cluster: "c2".into(),
            peer_cert_not_after: Some("2026-01-11T00:00:00Z".into()),
            own_cert_not_after: Some("2027-01-01T00:00:00Z".into()),
            ..PeerStatus::default()
        };
        assert_eq!(
            status.credential_warnings(now_ms),
            vec![
                "c2's server certificate expires in 10 days (2026-01-11T00:00:00Z): renew it \
                 with `fleetmesh certs rotate`"
                    .to_string()
            ]
        );
        let status = PeerStatus {
            peer_cert_not_after: Some("2027-01-01T00:00:00Z".into()),
            own_cert_not_after: Some("2025-12-31T00:00:00Z".into()),
            peer_cert_retiring_ca: Some("CN=old".into()),
            ..status
        };
        let warnings = status.credential_warnings(now_ms);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("this agent's client certificate expired at"));
        assert!(warnings[1].contains("CA \"CN=old\", which is being retired"));
        // Nothing known, nothing to warn about.
        assert!(PeerStatus::default().credential_warnings(now_ms).is_empty());
    }
}
