//! What a link knows about the credentials on both of its ends, for the status: when this
//! agent's client certificate expires, and whether the peer's certificate comes from a
//! CA that is being retired (our bundle holds a newer one).

use time::format_description::well_known::Rfc3339;

use crate::certs::inspect::signed_by_older_ca;
use crate::certs::scan::read_certificates;
use crate::tls::TlsFiles;
use crate::tls::client::ServerCert;

/// The credential facts of one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Credentials {
    /// This agent's client certificate's expiry (RFC 3339), as its file says now.
    pub own_not_after: Option<String>,
    /// The retiring CA that signed the peer's certificate, if it is one.
    pub retiring_ca: Option<String>,
}

/// Reads the link's own certificate and trust bundle (small files; a file that does not
/// read gives no answer rather than an error: the handshake already used them).
pub(super) fn credentials(files: &TlsFiles, server: Option<&ServerCert>) -> Credentials {
    let own_not_after = read_certificates(&files.cert)
        .ok()
        .and_then(|certs| {
            let first = certs.first()?;
            let (_, cert) = x509_parser::parse_x509_certificate(first).ok()?;
            Some(cert.validity().not_after.to_datetime())
        })
        .and_then(|t| t.format(&Rfc3339).ok());
    let retiring_ca = server.and_then(|server| {
        let bundle = read_certificates(&files.ca).ok()?;
        signed_by_older_ca(&server.der, &bundle)
    });
    Credentials {
        own_not_after,
        retiring_ca,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::certs::bundle::trust_bundle;
    use crate::certs::files::write_pem_files;
    use crate::certs::{Ca, IssuedCert};
    use crate::model::ClusterName;

    const DAY: Duration = Duration::from_secs(86_400);

    fn der(leaf: &IssuedCert) -> Vec<u8> {
        rustls_pemfile::certs(&mut leaf.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn own_expiry_and_a_peer_on_the_retiring_ca_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let old = Ca::generate("old", DAY).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let new = Ca::generate("new", DAY).unwrap();
        let east = ClusterName::new("east").unwrap();
        let client = new.issue_client(&east, DAY).unwrap();
        let pem = write_pem_files(dir.path(), "client", &client).unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, new.cert_pem()).unwrap();
        let files = TlsFiles {
            cert: pem.cert,
            key: pem.key,
            ca: ca.clone(),
        };
        let ips = ["127.0.0.1".parse().unwrap()];
        let server = |ca: &Ca| ServerCert {
            cluster: east.clone(),
            not_after: None,
            der: der(&ca.issue_server(&east, &[], &ips, DAY).unwrap()),
        };
        let got = credentials(&files, Some(&server(&old)));
        assert_eq!(
            got.own_not_after,
            Some(client.not_after.format(&Rfc3339).unwrap())
        );
        // One CA in the bundle: nothing is being retired.
        assert_eq!(got.retiring_ca, None);

        std::fs::write(&ca, trust_bundle([old.cert_pem(), new.cert_pem()]).unwrap()).unwrap();
        let got = credentials(&files, Some(&server(&old)));
        assert_eq!(got.retiring_ca.as_deref(), Some("CN=old"));
        assert_eq!(credentials(&files, Some(&server(&new))).retiring_ca, None);
    }
}
