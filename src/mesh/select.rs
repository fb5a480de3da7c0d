//! Which backends of a global service receive traffic from this cluster, by affinity.
//!
//! Only ready backends are selected; when none of the candidates is ready anywhere,
//! the serving ones (serving but not ready: typically terminating, still finishing
//! their work) are used rather than nothing. Two of Cilium's sharp edges are fixed:
//!
//! - affinity `none` really means every ready backend of every cluster (Cilium #46623
//!   treats the literal `"none"` like `local` and drops the remote backends);
//! - `local` fails over when no local backend is *ready*, not only when none exists
//!   (Cilium counts unhealthy local backends as a reason to stay local).
//!
//! Failover stays all-or-nothing (Cilium #46633: one ready local pod pulls all traffic
//! back): weighting clusters by their share of ready backends needs weights in the data
//! path and is out of scope here.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{Affinity, Backend, BackendConditions, ClusterName, PortMap};

use super::json;

/// Why these backends were selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionReason {
    /// Affinity `none`: every ready backend of every cluster.
    AllReady,
    /// Affinity `local`, and a local backend is ready.
    LocalReady,
    /// Affinity `remote`, and a remote backend is ready.
    RemoteReady,
    /// Affinity `local`, but no local backend is ready: the ready remote ones.
    FailoverToRemote,
    /// Affinity `remote`, but no remote backend is ready: the ready local ones.
    FailoverToLocal,
    /// No candidate is ready anywhere: the serving (terminating) ones.
    FallbackServing,
    /// No candidate is ready or serving.
    NoBackend,
}

impl SelectionReason {
    /// A sentence for humans (the CLI and the web page).
    pub fn describe(self) -> &'static str {
        match self {
            Self::AllReady => "all ready backends of all clusters",
            Self::LocalReady => "local ready",
            Self::RemoteReady => "remote ready",
            Self::FailoverToRemote => "failover to remote: no local backend ready",
            Self::FailoverToLocal => "failover to local: no remote backend ready",
            Self::FallbackServing => "fallback to serving backends: none ready",
            Self::NoBackend => "no ready or serving backend",
        }
    }
}

impl fmt::Display for SelectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A backend that receives traffic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectedBackend {
    pub cluster: ClusterName,
    pub ip: IpAddr,
    #[serde(with = "json::port_map")]
    pub ports: PortMap,
    /// Not ready when selected as a fallback.
    pub conditions: BackendConditions,
}

/// One cluster's backends that may be selected.
pub(super) struct Candidate<'a> {
    pub cluster: &'a ClusterName,
    pub local: bool,
    pub backends: &'a BTreeMap<IpAddr, Backend>,
}

/// Which side of the mesh a pick draws from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Local,
    Remote,
    Both,
}

/// The selected backends (in candidate order, then by IP) and why.
pub(super) fn select(
    affinity: Affinity,
    candidates: &[Candidate<'_>],
) -> (Vec<SelectedBackend>, SelectionReason) {
    let ready = |c: &BackendConditions| c.ready;
    let (preferred, other, preferred_reason, failover_reason) = match affinity {
        Affinity::None => {
            let all = pick(candidates, Side::Both, ready);
            if !all.is_empty() {
                return (all, SelectionReason::AllReady);
            }
            let serving = pick(candidates, Side::Both, serving_only);
            return finish_fallback(serving);
        }
        Affinity::Local => (
            Side::Local,
            Side::Remote,
            SelectionReason::LocalReady,
            SelectionReason::FailoverToRemote,
        ),
        Affinity::Remote => (
            Side::Remote,
            Side::Local,
            SelectionReason::RemoteReady,
            SelectionReason::FailoverToLocal,
        ),
    };
    let first = pick(candidates, preferred, ready);
    if !first.is_empty() {
        return (first, preferred_reason);
    }
    let second = pick(candidates, other, ready);
    if !second.is_empty() {
        return (second, failover_reason);
    }
    // Nothing ready: serving ones, with the same preference.
    let serving = pick(candidates, preferred, serving_only);
    if !serving.is_empty() {
        return finish_fallback(serving);
    }
    finish_fallback(pick(candidates, other, serving_only))
}

/// Whether a backend can take traffic at all (ready, or serving as a fallback).
pub(super) fn is_selectable(c: &BackendConditions) -> bool {
    c.ready || c.serving
}

fn serving_only(c: &BackendConditions) -> bool {
    c.serving && !c.ready
}

fn finish_fallback(serving: Vec<SelectedBackend>) -> (Vec<SelectedBackend>, SelectionReason) {
    if serving.is_empty() {
        (serving, SelectionReason::NoBackend)
    } else {
        (serving, SelectionReason::FallbackServing)
    }
}

fn pick(
    candidates: &[Candidate<'_>],
    side: Side,
    test: impl Fn(&BackendConditions) -> bool,
) -> Vec<SelectedBackend> {
    candidates
        .iter()
        .filter(|c| match side {
            Side::Local => c.local,
            Side::Remote => !c.local,
            Side::Both => true,
        })
        .flat_map(|c| {
            c.backends
                .iter()
                .filter(|(_, b)| test(&b.conditions))
                .map(|(ip, b)| SelectedBackend {
                    cluster: c.cluster.clone(),
                    ip: *ip,
                    ports: b.ports.clone(),
                    conditions: b.conditions,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::fixtures::{NOT_READY, TERMINATING, mk_backends, mk_name};

    struct Mesh {
        local: ClusterName,
        remote: ClusterName,
        local_backends: BTreeMap<IpAddr, Backend>,
        remote_backends: BTreeMap<IpAddr, Backend>,
    }

    impl Mesh {
        fn new(local: &[(&str, BackendConditions)], remote: &[(&str, BackendConditions)]) -> Self {
            Self {
                local: mk_name("local"),
                remote: mk_name("remote"),
                local_backends: mk_backends(local),
                remote_backends: mk_backends(remote),
            }
        }

        fn select(&self, affinity: Affinity) -> (Vec<String>, SelectionReason) {
            let candidates = [
                Candidate {
                    cluster: &self.local,
                    local: true,
                    backends: &self.local_backends,
                },
                Candidate {
                    cluster: &self.remote,
                    local: false,
                    backends: &self.remote_backends,
                },
            ];
            let (selected, reason) = select(affinity, &candidates);
            let ips = selected
                .iter()
                .map(|s| format!("{}/{}", s.cluster, s.ip))
                .collect();
            (ips, reason)
        }
    }

    const READY: BackendConditions = BackendConditions::READY;

    #[test]
    fn none_means_every_ready_backend_of_every_cluster() {
        let m = Mesh::new(
            &[("10.1.0.1", READY), ("10.1.0.2", NOT_READY)],
            &[("10.2.0.1", READY), ("10.2.0.2", TERMINATING)],
        );
        assert_eq!(
            m.select(Affinity::None),
            (
                vec!["local/10.1.0.1".into(), "remote/10.2.0.1".into()],
                SelectionReason::AllReady
            )
        );
    }

    #[test]
    fn local_prefers_ready_local_and_fails_over_when_none_is_ready() {
        let m = Mesh::new(&[("10.1.0.1", READY)], &[("10.2.0.1", READY)]);
        assert_eq!(
            m.select(Affinity::Local),
            (vec!["local/10.1.0.1".into()], SelectionReason::LocalReady)
        );
        // Present but unready local backends do not hold traffic back.
        let m = Mesh::new(&[("10.1.0.1", NOT_READY)], &[("10.2.0.1", READY)]);
        assert_eq!(
            m.select(Affinity::Local),
            (
                vec!["remote/10.2.0.1".into()],
                SelectionReason::FailoverToRemote
            )
        );
    }

    #[test]
    fn remote_prefers_ready_remote_and_fails_over_to_local() {
        let m = Mesh::new(&[("10.1.0.1", READY)], &[("10.2.0.1", READY)]);
        assert_eq!(
            m.select(Affinity::Remote),
            (vec!["remote/10.2.0.1".into()], SelectionReason::RemoteReady)
        );
        let m = Mesh::new(&[("10.1.0.1", READY)], &[("10.2.0.1", TERMINATING)]);
        assert_eq!(
            m.select(Affinity::Remote),
            (
                vec!["local/10.1.0.1".into()],
                SelectionReason::FailoverToLocal
            )
        );
    }

    #[test]
    fn serving_backends_are_the_fallback_with_the_same_preference() {
        let m = Mesh::new(&[("10.1.0.1", TERMINATING)], &[("10.2.0.1", TERMINATING)]);
        let fallback = SelectionReason::FallbackServing;
        assert_eq!(
            m.select(Affinity::None),
            (
                vec!["local/10.1.0.1".into(), "remote/10.2.0.1".into()],
                fallback
            )
        );
        assert_eq!(
            m.select(Affinity::Local),
            (vec!["local/10.1.0.1".into()], fallback)
        );
        assert_eq!(
            m.select(Affinity::Remote),
            (vec!["remote/10.2.0.1".into()], fallback)
        );
        let m = Mesh::new(&[("10.1.0.1", NOT_READY)], &[("10.2.0.1", TERMINATING)]);
        assert_eq!(
            m.select(Affinity::Local),
            (vec!["remote/10.2.0.1".into()], fallback)
        );
    }

    #[test]
    fn nothing_ready_or_serving_selects_nothing() {
        let m = Mesh::new(&[("10.1.0.1", NOT_READY)], &[]);
        for affinity in [Affinity::None, Affinity::Local, Affinity::Remote] {
            assert_eq!(m.select(affinity), (vec![], SelectionReason::NoBackend));
        }
    }

    #[test]
    fn reasons_serialize_in_kebab_case() {
        let json = serde_json::to_string(&SelectionReason::FailoverToRemote).unwrap();
        assert_eq!(json, "\"failover-to-remote\"");
        assert_eq!(
            SelectionReason::FailoverToRemote.to_string(),
            "failover to remote: no local backend ready"
        );
    }
}
