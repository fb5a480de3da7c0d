//! An MCS-API service export: a Service one cluster offers to the cluster set through a
//! `ServiceExport` (`multicluster.x-k8s.io`), as Cilium's `MCSAPIServiceSpec` carries it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::{ClusterName, ModelError, Protocol, ServiceName};

/// Declares a closed set of Kubernetes string values: each variant with its exact
/// spelling, `as_str`, `Display` and a `FromStr` that refuses anything else.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, $reason:literal, { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ModelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(ModelError::Field {
                        what: $what,
                        value: s.to_string(),
                        reason: $reason,
                    }),
                }
            }
        }
    };
}

string_enum!(
    /// How importing clusters reach the service: through one cluster-set IP, or by the
    /// endpoints' own addresses (a headless Service, `clusterIP: None`).
    ExportType, "service export type", "must be ClusterSetIP or Headless",
    { ClusterSetIp = "ClusterSetIP", Headless = "Headless" }
);

string_enum!(
    /// The Service's `sessionAffinity`.
    SessionAffinity, "session affinity", "must be None or ClientIP",
    { None = "None", ClientIp = "ClientIP" }
);

string_enum!(
    /// One of the Service's `ipFamilies`.
    IpFamily, "IP family", "must be IPv4 or IPv6",
    { V4 = "IPv4", V6 = "IPv6" }
);

string_enum!(
    /// The Service's `internalTrafficPolicy`.
    InternalTrafficPolicy, "internal traffic policy", "must be Cluster or Local",
    { Cluster = "Cluster", Local = "Local" }
);

string_enum!(
    /// The Service's `trafficDistribution`.
    TrafficDistribution, "traffic distribution", "must be PreferClose, PreferSameZone or PreferSameNode",
    { PreferClose = "PreferClose", PreferSameZone = "PreferSameZone", PreferSameNode = "PreferSameNode" }
);

/// One port of an exported service (the MCS API's `ServicePort`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExportPort {
    /// Empty for an unnamed port.
    pub name: String,
    pub protocol: Protocol,
    pub app_protocol: Option<String>,
    pub port: u16,
}

/// A service one cluster exports to the cluster set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceExport {
    pub cluster: ClusterName,
    pub name: ServiceName,
    /// When the `ServiceExport` was created, in seconds since the Unix epoch (Kubernetes
    /// keeps seconds): the oldest export wins a conflict between clusters.
    pub export_created_unix: i64,
    pub ports: Vec<ExportPort>,
    pub export_type: ExportType,
    pub session_affinity: SessionAffinity,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds`, when the Service sets it.
    pub session_affinity_timeout_seconds: Option<i32>,
    pub ip_families: Vec<IpFamily>,
    /// The export's `exportedLabels` and `exportedAnnotations`.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub internal_traffic_policy: Option<InternalTrafficPolicy>,
    pub traffic_distribution: Option<TrafficDistribution>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_spellings_round_trip_and_others_are_refused() {
        assert_eq!(
            "ClusterSetIP".parse::<ExportType>().unwrap(),
            ExportType::ClusterSetIp
        );
        assert_eq!(ExportType::Headless.to_string(), "Headless");
        assert_eq!(
            "ClientIP".parse::<SessionAffinity>().unwrap(),
            SessionAffinity::ClientIp
        );
        assert_eq!(IpFamily::V6.as_str(), "IPv6");
        assert_eq!(
            "PreferSameNode".parse::<TrafficDistribution>().unwrap(),
            TrafficDistribution::PreferSameNode
        );
        let err = "clientip".parse::<SessionAffinity>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid session affinity \"clientip\": must be None or ClientIP"
        );
        assert!("Local ".parse::<InternalTrafficPolicy>().is_err());
    }
}
