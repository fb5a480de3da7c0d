use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{ClusterId, ClusterName, ModelError};

/// A transport protocol as Kubernetes and Cilium spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

impl FromStr for Protocol {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "TCP" => Ok(Self::Tcp),
            "UDP" => Ok(Self::Udp),
            "SCTP" => Ok(Self::Sctp),
            _ => Err(ModelError::Field {
                what: "protocol",
                value: s.to_string(),
                reason: "must be TCP, UDP or SCTP",
            }),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol and port number (Cilium's `L4Addr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct L4Addr {
    pub protocol: Protocol,
    pub port: u16,
}

/// Ports by port name (empty for an unnamed port), as Cilium's `PortConfiguration`.
pub type PortMap = BTreeMap<String, L4Addr>;

/// A service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    namespace: String,
    name: String,
}

impl ServiceName {
    pub fn new(namespace: &str, name: &str) -> Result<Self, ModelError> {
        for (what, value) in [("namespace", namespace), ("service name", name)] {
            if !is_dns_label(value) {
                return Err(ModelError::Field {
                    what,
                    value: value.to_string(),
                    reason: "must be a DNS label (lowercase alphanumerics and '-', at most 63)",
                });
            }
        }
        Ok(Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for ServiceName {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ns, name) = s.split_once('/').ok_or_else(|| ModelError::Field {
            what: "service",
            value: s.to_string(),
            reason: "expected <namespace>/<name>",
        })?;
        Self::new(ns, name)
    }
}

/// RFC 1123 label: what Kubernetes requires of namespace and service names.
pub(crate) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Which backends a global service prefers (`service.cilium.io/affinity`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Affinity {
    /// Every ready backend of every cluster (also what an absent annotation means).
    #[default]
    None,
    /// Local backends; remote ones only while no local backend is ready.
    Local,
    /// Remote backends; local ones only while no remote backend is ready.
    Remote,
}

impl Affinity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Local => "local",
            Self::Remote => "remote",
        }
    }
}

impl FromStr for Affinity {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "" | "none" => Ok(Self::None),
            "local" => Ok(Self::Local),
            "remote" => Ok(Self::Remote),
            _ => Err(ModelError::Field {
                what: "affinity",
                value: s.to_string(),
                reason: "must be local, remote or none",
            }),
        }
    }
}

/// EndpointSlice conditions of one backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackendConditions {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl BackendConditions {
    pub const READY: Self = Self {
        ready: true,
        serving: true,
        terminating: false,
    };
}

/// One backend address of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Backend {
    pub ports: PortMap,
    pub conditions: BackendConditions,
    pub hostname: Option<String>,
    pub zone: Option<String>,
    /// Topology hints: the zones this backend should serve.
    pub for_zones: Vec<String>,
}

/// A global service as one cluster exports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    pub cluster: ClusterName,
    pub cluster_id: ClusterId,
    pub name: ServiceName,
    /// The exporting cluster's ClusterIPs; consumers ignore them.
    pub frontends: BTreeMap<IpAddr, PortMap>,
    pub backends: BTreeMap<IpAddr, Backend>,
    pub labels: BTreeMap<String, String>,
    pub selector: BTreeMap<String, String>,
    pub include_external: bool,
    /// `false`: the cluster consumes remote backends but exports none of its own.
    pub shared: bool,
    pub affinity: Affinity,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_dns_labels() {
        let n: ServiceName = "test/echo".parse().unwrap();
        assert_eq!((n.namespace(), n.name()), ("test", "echo"));
        assert_eq!(n.to_string(), "test/echo");
        for bad in ["echo", "Test/echo", "test/", "/echo", "a/b/c"] {
            assert!(bad.parse::<ServiceName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn affinity_accepts_none_and_absent() {
        assert_eq!("".parse::<Affinity>().unwrap(), Affinity::None);
        assert_eq!("none".parse::<Affinity>().unwrap(), Affinity::None);
        assert_eq!("Local".parse::<Affinity>().unwrap(), Affinity::Local);
        assert_eq!("remote".parse::<Affinity>().unwrap(), Affinity::Remote);
        assert!("nearest".parse::<Affinity>().is_err());
    }
}
