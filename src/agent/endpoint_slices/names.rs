//! Slice names: deterministic, so that the same slice is found again after a restart and
//! updated in place, and at most 63 characters, like every name a controller generates.
//!
//! A name is `<service>-<cluster>` (shortened when long) followed by a hash of
//! everything that identifies the slice — namespace, service, source cluster, address
//! type, ports and its index among the slices of that group — so that shortening never
//! makes two slices share a name, and a name never collides with the Kubernetes
//! controller's (`<service>-<5 random characters>`).

use sha2::{Digest, Sha256};

use crate::model::{ClusterName, PortMap, ServiceName};

/// Kubernetes' generated-name limit (a DNS label), which every tool that shows slice
/// names expects.
pub(super) const MAX_NAME_LEN: usize = 63;

/// Hex characters of the hash: 40 bits keep the few slices of one service apart with
/// room to spare, and leave 52 characters for the readable part.
const HASH_LEN: usize = 10;

/// The address type of a slice (an EndpointSlice holds one IP family only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    /// The `addressType` value.
    pub fn address_type(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

/// What identifies one slice of a service's remote backends.
pub(super) struct SliceIdentity<'a> {
    pub service: &'a ServiceName,
    pub cluster: &'a ClusterName,
    pub family: Family,
    pub ports: &'a PortMap,
    /// Its position among the slices of the same service, cluster, family and ports.
    pub index: usize,
}

/// The slice's name.
pub(super) fn slice_name(id: &SliceIdentity<'_>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(id.service.namespace());
    hasher.update([0]);
    hasher.update(id.service.name());
    hasher.update([0]);
    hasher.update(id.cluster.as_str());
    hasher.update([0]);
    hasher.update(id.family.address_type());
    for (name, port) in id.ports {
        hasher.update([0]);
        hasher.update(format!("{name}={}/{}", port.protocol, port.port));
    }
    hasher.update([0]);
    hasher.update(id.index.to_string());
    let hash = hex::encode(hasher.finalize());

    let readable = format!("{}-{}", id.service.name(), id.cluster);
    // Both parts are ASCII (DNS labels), so cutting at a byte count is cutting at a
    // character; a cut that leaves a trailing '-' would make a double one.
    let mut prefix = &readable[..readable.len().min(MAX_NAME_LEN - 1 - HASH_LEN)];
    prefix = prefix.trim_end_matches('-');
    format!("{prefix}-{}", &hash[..HASH_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{L4Addr, Protocol};

    fn http() -> PortMap {
        [(
            "http".to_string(),
            L4Addr {
                protocol: Protocol::Tcp,
                port: 8080,
            },
        )]
        .into()
    }

    fn name(service: &str, cluster: &str, family: Family, ports: &PortMap, index: usize) -> String {
        slice_name(&SliceIdentity {
            service: &service.parse().unwrap(),
            cluster: &ClusterName::new(cluster).unwrap(),
            family,
            ports,
            index,
        })
    }

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX_NAME_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
            && !s.contains("--")
    }

    #[test]
    fn names_are_readable_stable_and_distinct() {
        let ports = http();
        let a = name("web/echo", "c2", Family::V4, &ports, 0);
        assert!(a.starts_with("echo-c2-"), "{a}");
        assert_eq!(a.len(), "echo-c2-".len() + HASH_LEN);
        assert_eq!(a, name("web/echo", "c2", Family::V4, &ports, 0));
        let others = [
            name("other/echo", "c2", Family::V4, &ports, 0),
            name("web/echo", "c3", Family::V4, &ports, 0),
            name("web/echo", "c2", Family::V6, &ports, 0),
            name("web/echo", "c2", Family::V4, &PortMap::new(), 0),
            name("web/echo", "c2", Family::V4, &ports, 1),
        ];
        for other in &others {
            assert_ne!(&a, other);
            assert!(is_dns_label(other), "{other}");
        }
    }

    #[test]
    fn long_names_are_shortened_without_colliding() {
        let ports = http();
        let service = format!("web/{}", "s".repeat(63));
        let long_a = name(&service, &"a".repeat(32), Family::V4, &ports, 0);
        let long_b = name(&service, &"b".repeat(32), Family::V4, &ports, 0);
        assert_eq!(long_a.len(), MAX_NAME_LEN);
        assert!(is_dns_label(&long_a), "{long_a}");
        assert_ne!(long_a, long_b);
        // A cut right after the service name's '-' does not leave "--".
        let service = format!("web/{}", "s".repeat(51));
        let cut = name(&service, "c2", Family::V4, &ports, 0);
        assert!(is_dns_label(&cut), "{cut}");
        assert_eq!(cut.len(), 51 + 1 + HASH_LEN);
    }
}
