use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType, string::Ia5String,
};
use time::OffsetDateTime;

use super::CertError;
use crate::model::ClusterName;
use crate::tls::identity::cluster_uri;

/// Certificates start this long before they are issued, so that a member whose clock is a
/// little behind the issuer's still accepts a freshly issued one.
const BACKDATE: time::Duration = time::Duration::minutes(5);

/// When a certificate is valid: `not_before` < `not_after`, whole seconds (what X.509
/// can hold, so [`IssuedCert::not_after`] equals what the certificate says).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Validity {
    /// An explicit window; it may lie entirely in the past or the future (tests mint
    /// expired and not-yet-valid certificates with it).
    pub fn new(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Self, CertError> {
        let not_before = whole_seconds(not_before)?;
        let not_after = whole_seconds(not_after)?;
        if not_before >= not_after {
            return Err(CertError::Validity(
                "not_before must be earlier than not_after",
            ));
        }
        Ok(Self {
            not_before,
            not_after,
        })
    }

    /// Valid from a few minutes ago (clock skew) until `lifetime` from now.
    pub fn starting_now(lifetime: Duration) -> Result<Self, CertError> {
        let now = OffsetDateTime::now_utc();
        let lifetime = time::Duration::try_from(lifetime)
            .map_err(|_| CertError::Validity("lifetime is too long"))?;
        let not_after = now
            .checked_add(lifetime)
            .ok_or(CertError::Validity("lifetime is too long"))?;
        Self::new(now - BACKDATE, not_after)
    }

    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

fn whole_seconds(t: OffsetDateTime) -> Result<OffsetDateTime, CertError> {
    t.replace_nanosecond(0)
        .map_err(|_| CertError::Validity("time out of range"))
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug)]
pub enum LeafRole<'a> {
    /// An apiserver: serverAuth, reachable under these DNS names and addresses.
    Server {
        dns: &'a [String],
        ips: &'a [IpAddr],
    },
    /// A peer dialing apiservers: clientAuth.
    Client,
}

/// A freshly issued leaf: its certificate and private key in PEM, and when it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: OffsetDateTime,
}

impl std::fmt::Debug for IssuedCert {
    // The private key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The parameters of a leaf for `cluster` (see the table in the module docs).
pub(super) fn leaf_params(
    cluster: &ClusterName,
    role: LeafRole<'_>,
    validity: Validity,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let uri = cluster_uri(cluster);
    let mut sans = vec![SanType::URI(ia5("URI SAN", uri)?)];
    let (cn, eku) = match role {
        LeafRole::Server { dns, ips } => {
            if dns.is_empty() && ips.is_empty() {
                return Err(CertError::NoServerNames {
                    cluster: cluster.to_string(),
                });
            }
            for name in dns {
                sans.push(SanType::DnsName(ia5("DNS name", name.clone())?));
            }
            sans.extend(ips.iter().copied().map(SanType::IpAddress));
            (
                format!("apiserver-{cluster}"),
                ExtendedKeyUsagePurpose::ServerAuth,
            )
        }
        LeafRole::Client => (
            format!("remote-{cluster}"),
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    };
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    // Names the signing CA's key, so that a verifier holding a bundle of CAs with the same
    // subject (during a rollover) can tell which one signed.
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    Ok(params)
}

fn ia5(what: &'static str, value: String) -> Result<Ia5String, CertError> {
    Ia5String::try_from(value.clone()).map_err(|source| CertError::InvalidName {
        what,
        value,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_refuses_an_empty_or_reversed_window() {
        let now = OffsetDateTime::now_utc();
        assert!(Validity::new(now, now).is_err());
        assert!(Validity::new(now, now - time::Duration::hours(1)).is_err());
        let v =
            Validity::new(now - time::Duration::days(2), now - time::Duration::days(1)).unwrap();
        assert_eq!(v.not_after().nanosecond(), 0);
    }

    #[test]
    fn starting_now_backdates_for_clock_skew_and_refuses_huge_lifetimes() {
        let before = OffsetDateTime::now_utc();
        let v = Validity::starting_now(Duration::from_secs(3600)).unwrap();
        assert!(v.not_before() <= before - BACKDATE + time::Duration::seconds(1));
        assert!(v.not_after() > before + time::Duration::minutes(59));
        assert!(Validity::starting_now(Duration::MAX).is_err());
    }

    #[test]
    fn a_server_leaf_needs_a_name_to_be_dialed_by() {
        let cluster = ClusterName::new("east").unwrap();
        let validity = Validity::starting_now(Duration::from_secs(60)).unwrap();
        let role = LeafRole::Server { dns: &[], ips: &[] };
        assert!(matches!(
            leaf_params(&cluster, role, validity),
            Err(CertError::NoServerNames { .. })
        ));
        let bad_dns = ["bücher.example".to_string()];
        let role = LeafRole::Server {
            dns: &bad_dns,
            ips: &[],
        };
        assert!(matches!(
            leaf_params(&cluster, role, validity),
            Err(CertError::InvalidName {
                what: "DNS name",
                ..
            })
        ));
    }
}
