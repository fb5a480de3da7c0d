use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::CertificateDer;

use super::leaf::leaf_params;
use super::{CertError, IssuedCert, LeafRole, Validity};
use crate::model::ClusterName;

/// A certificate authority: its certificate and key, able to issue leaves for clusters.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    /// A new self-signed CA named `common_name`, valid from now for `validity`. It may only
    /// sign leaves (path length 0): the mesh has no intermediate CAs.
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self, CertError> {
        let validity = Validity::starting_now(validity)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before();
        params.not_after = validity.not_after();
        let key = KeyPair::generate().map_err(CertError::KeyGeneration)?;
        let cert = params
            .self_signed(&key)
            .map_err(|source| CertError::Sign { what: "CA", source })?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// An existing CA: `cert_pem` must hold exactly one CA certificate, `key_pem` its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let der = single_certificate(cert_pem)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| CertError::CaCertificate("not an X.509 certificate"))?;
        if !parsed.is_ca() {
            return Err(CertError::CaCertificate(
                "the certificate is not a CA (basic constraints cA is not set)",
            ));
        }
        let key = KeyPair::from_pem(key_pem).map_err(CertError::CaKey)?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(CertError::CaKeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(CertError::CaIssuer)?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// The CA certificate in PEM: what members put in their trust bundle.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key in PEM: keep it where only the issuer can read it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A server leaf for `cluster`'s apiserver, valid from now for `validity`.
    pub fn issue_server(
        &self,
        cluster: &ClusterName,
        dns: &[String],
        ips: &[IpAddr],
        validity: Duration,
    ) -> Result<IssuedCert, CertError> {
        let validity = Validity::starting_now(validity)?;
        self.issue(cluster, LeafRole::Server { dns, ips }, validity)
    }

    /// A client leaf for `cluster`, valid from now for `validity`.
    pub fn issue_client(
        &self,
        cluster: &ClusterName,
        validity: Duration,
    ) -> Result<IssuedCert, CertError> {
        let validity = Validity::starting_now(validity)?;
        self.issue(cluster, LeafRole::Client, validity)
    }

    /// A leaf with an explicit validity window.
    pub fn issue(
        &self,
        cluster: &ClusterName,
        role: LeafRole<'_>,
        validity: Validity,
    ) -> Result<IssuedCert, CertError> {
        let params = leaf_params(cluster, role, validity)?;
        let key = KeyPair::generate().map_err(CertError::KeyGeneration)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| CertError::Sign {
                what: match role {
                    LeafRole::Server { .. } => "server",
                    LeafRole::Client => "client",
                },
                source,
            })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: validity.not_after(),
        })
    }
}

impl fmt::Debug for Ca {
    // The key stays out of logs; `Issuer`'s own Debug elides it too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn single_certificate(pem: &str) -> Result<CertificateDer<'static>, CertError> {
    let mut certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(CertError::CaCertificatePem)?;
    match certs.len() {
        0 => Err(CertError::CaCertificate("no certificate in it")),
        1 => Ok(certs.remove(0)),
        _ => Err(CertError::CaCertificate(
            "more than one certificate: give the CA's own certificate, not a trust bundle",
        )),
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::GeneralName;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn mk_cluster(name: &str) -> ClusterName {
        ClusterName::new(name).unwrap()
    }

    fn der_of(pem: &str) -> Vec<u8> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_generated_ca_is_a_ca_and_round_trips_through_pem() {
        let ca = Ca::generate("fleetmesh CA", HOUR).unwrap();
        let der = der_of(ca.cert_pem());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "fleetmesh CA"
        );
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        // The reloaded CA signs leaves that name it as issuer.
        let leaf = again.issue_client(&mk_cluster("east"), HOUR).unwrap();
        let leaf_der = der_of(&leaf.cert_pem);
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        assert_eq!(leaf.issuer(), cert.subject());
        assert!(leaf.verify_signature(Some(cert.public_key())).is_ok());
    }

    #[test]
    fn from_pem_refuses_a_wrong_key_a_leaf_and_a_bundle() {
        let ca = Ca::generate("one", HOUR).unwrap();
        let other = Ca::generate("two", HOUR).unwrap();
        assert!(matches!(
            Ca::from_pem(ca.cert_pem(), other.key_pem()),
            Err(CertError::CaKeyMismatch)
        ));
        let leaf = ca.issue_client(&mk_cluster("east"), HOUR).unwrap();
        assert!(matches!(
            Ca::from_pem(&leaf.cert_pem, &leaf.key_pem),
            Err(CertError::CaCertificate(_))
        ));
        let bundle = format!("{}{}", ca.cert_pem(), other.cert_pem());
        assert!(matches!(
            Ca::from_pem(&bundle, ca.key_pem()),
            Err(CertError::CaCertificate(_))
        ));
        assert!(matches!(
            Ca::from_pem("", ca.key_pem()),
            Err(CertError::CaCertificate(_))
        ));
        assert!(matches!(
            Ca::from_pem(ca.cert_pem(), "not a key"),
            Err(CertError::CaKey(_))
        ));
    }

    #[test]
    fn server_and_client_leaves_follow_the_identity_convention() {
        let ca = Ca::generate("fleetmesh CA", HOUR).unwrap();
        let east = mk_cluster("east");
        let ips = ["127.0.0.1".parse().unwrap()];
        let server = ca
            .issue_server(&east, &["mesh.example".to_string()], &ips, HOUR)
            .unwrap();
        let der = der_of(&server.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "apiserver-east");
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            sans.value.general_names,
            vec![
                GeneralName::URI("spiffe://fleetmesh/cluster/east"),
                GeneralName::DNSName("mesh.example"),
                GeneralName::IPAddress(&[127, 0, 0, 1]),
            ]
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert_eq!(cert.validity().not_after.to_datetime(), server.not_after);

        let client = ca.issue_client(&east, HOUR).unwrap();
        let der = der_of(&client.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "remote-east");
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            sans.value.general_names,
            vec![GeneralName::URI("spiffe://fleetmesh/cluster/east")]
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!cert.is_ca());
    }

    #[test]
    fn explicit_validity_mints_expired_certificates() {
        let ca = Ca::generate("fleetmesh CA", HOUR).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let expired =
            Validity::new(now - time::Duration::days(2), now - time::Duration::days(1)).unwrap();
        let leaf = ca
            .issue(&mk_cluster("east"), LeafRole::Client, expired)
            .unwrap();
        let der = der_of(&leaf.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.validity().is_valid());
        assert_eq!(leaf.not_after, expired.not_after());
    }
}
