//! A peer's identity is its cluster name, carried in its certificate as exactly one URI
//! SAN `spiffe://fleetmesh/cluster/<cluster-name>`. [`peer_cluster`] is the one function
//! that reads it; [`cluster_uri`] the one that writes it (for [`crate::certs`]).
//!
//! Fail closed: no such SAN, more than one, or one that does not hold a valid
//! [`ClusterName`] is an error. The subject CN (`remote-<cluster>` on client
//! certificates, after Cilium) is informative and never trusted. Other URI SANs
//! (another SPIFFE trust domain, say) are ignored.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::PeerIdentityError;
use crate::model::ClusterName;

/// Every fleetmesh cluster URI starts with this; the cluster name follows.
pub const CLUSTER_URI_PREFIX: &str = "spiffe://fleetmesh/cluster/";

/// The URI SAN that names `cluster` in its certificates.
pub fn cluster_uri(cluster: &ClusterName) -> String {
    format!("{CLUSTER_URI_PREFIX}{cluster}")
}

/// The cluster a peer's end-entity certificate (DER) names. Call it only on a
/// certificate the TLS handshake has verified.
pub fn peer_cluster(cert_der: &[u8]) -> Result<ClusterName, PeerIdentityError> {
    peer_identity(cert_der).0
}

/// [`peer_cluster`] and the certificate's expiry from one parse, for connection info:
/// the expiry is known even when the name is refused.
pub(super) fn peer_identity(
    cert_der: &[u8],
) -> (
    Result<ClusterName, PeerIdentityError>,
    Option<OffsetDateTime>,
) {
    match x509_parser::parse_x509_certificate(cert_der) {
        Ok((_, cert)) => (
            cluster_of(&cert),
            Some(cert.validity().not_after.to_datetime()),
        ),
        Err(e) => (Err(PeerIdentityError::Unparseable(e.into())), None),
    }
}

fn cluster_of(cert: &X509Certificate<'_>) -> Result<ClusterName, PeerIdentityError> {
    let sans = cert
        .subject_alternative_name()
        .map_err(PeerIdentityError::Unparseable)?;
    let uris: Vec<&str> = sans
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(CLUSTER_URI_PREFIX) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(PeerIdentityError::NoClusterUri),
        [uri] => ClusterName::new(&uri[CLUSTER_URI_PREFIX.len()..]).map_err(|source| {
            PeerIdentityError::InvalidClusterName {
                uri: uri.to_string(),
                source,
            }
        }),
        several => Err(PeerIdentityError::SeveralClusterUris(
            several.iter().map(|u| u.to_string()).collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    /// A self-signed certificate with these SANs and CN (the signature is irrelevant
    /// here: the handshake verified it before `peer_cluster` is called).
    fn mk_cert(sans: Vec<SanType>, cn: &str) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    fn dns(s: &str) -> SanType {
        SanType::DnsName(s.try_into().unwrap())
    }

    #[test]
    fn a_single_cluster_uri_names_the_peer() {
        let der = mk_cert(
            vec![
                dns("mesh.example"),
                uri("spiffe://fleetmesh/cluster/east"),
                uri("spiffe://other.org/ns/default/sa/x"),
            ],
            "remote-east",
        );
        assert_eq!(peer_cluster(&der), Ok(ClusterName::new("east").unwrap()));
        let (cluster, not_after) = peer_identity(&der);
        assert!(cluster.is_ok());
        assert!(not_after.is_some());
    }

    #[test]
    fn cluster_uri_is_what_peer_cluster_reads() {
        let name = ClusterName::new("cluster-1").unwrap();
        let der = mk_cert(vec![uri(&cluster_uri(&name))], "x");
        assert_eq!(peer_cluster(&der), Ok(name));
    }

    #[test]
    fn a_certificate_without_sans_is_refused() {
        let der = mk_cert(vec![], "east");
        assert_eq!(peer_cluster(&der), Err(PeerIdentityError::NoClusterUri));
    }

    #[test]
    fn a_cn_only_certificate_is_refused_even_with_ciliums_cn() {
        let der = mk_cert(vec![dns("east.mesh.example")], "remote-east");
        let err = peer_cluster(&der).unwrap_err();
        assert_eq!(err, PeerIdentityError::NoClusterUri);
        assert!(
            err.to_string()
                .contains("spiffe://fleetmesh/cluster/<cluster-name>")
        );
    }

    #[test]
    fn uris_outside_the_fleetmesh_scheme_do_not_count() {
        for other in [
            "spiffe://fleetmesh/node/east",
            "spiffe://other/cluster/east",
            "https://fleetmesh/cluster/east",
        ] {
            let der = mk_cert(vec![uri(other)], "remote-east");
            assert_eq!(
                peer_cluster(&der),
                Err(PeerIdentityError::NoClusterUri),
                "{other}"
            );
        }
    }

    #[test]
    fn two_cluster_uris_are_refused_even_when_equal() {
        for second in [
            "spiffe://fleetmesh/cluster/west",
            "spiffe://fleetmesh/cluster/east",
        ] {
            let der = mk_cert(
                vec![uri("spiffe://fleetmesh/cluster/east"), uri(second)],
                "x",
            );
            let err = peer_cluster(&der).unwrap_err();
            assert!(
                matches!(&err, PeerIdentityError::SeveralClusterUris(u) if u.len() == 2),
                "{err:?}"
            );
        }
    }

    #[test]
    fn an_invalid_cluster_name_is_refused() {
        for bad in ["", "East", "east/extra", "a_b", &"a".repeat(33), "-east"] {
            let der = mk_cert(vec![uri(&format!("{CLUSTER_URI_PREFIX}{bad}"))], "x");
            let err = peer_cluster(&der).unwrap_err();
            assert!(
                matches!(&err, PeerIdentityError::InvalidClusterName { uri, .. } if uri.ends_with(bad)),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let (cluster, not_after) = peer_identity(b"not DER at all");
        assert!(matches!(cluster, Err(PeerIdentityError::Unparseable(_))));
        assert_eq!(not_after, None);
        assert!(peer_cluster(&[]).is_err());
    }
}
