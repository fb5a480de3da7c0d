//! Trust bundles: the CA certificates a member trusts, as concatenated PEM (what a
//! `ca.crt` holds). A CA rollover goes through a bundle holding the old and the new CA.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::CertError;

/// Base64 characters per PEM line (RFC 7468).
const PEM_LINE: usize = 64;

/// One bundle from several PEM inputs, each a CA certificate or itself a bundle: every
/// certificate once, in order of first appearance. Re-running a rollover step with the
/// same inputs therefore gives the same bundle. An input without a certificate is refused.
pub fn trust_bundle<'a>(pems: impl IntoIterator<Item = &'a str>) -> Result<String, CertError> {
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for (index, pem) in pems.into_iter().enumerate() {
        let certs = rustls_pemfile::certs(&mut pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| CertError::BundlePem { index, source })?;
        if certs.is_empty() {
            return Err(CertError::BundleEmpty { index });
        }
        for cert in certs {
            if !seen.iter().any(|s| s.as_slice() == cert.as_ref()) {
                seen.push(cert.to_vec());
            }
        }
    }
    Ok(seen.iter().map(|der| encode_certificate(der)).collect())
}

fn encode_certificate(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    // Base64 output is ASCII, so byte chunks are whole characters.
    for line in b64.as_bytes().chunks(PEM_LINE) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::certs::Ca;

    const HOUR: Duration = Duration::from_secs(3600);

    fn ders(pem: &str) -> Vec<Vec<u8>> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .map(|c| c.unwrap().to_vec())
            .collect()
    }

    #[test]
    fn a_bundle_holds_each_ca_once_in_order() {
        let old = Ca::generate("old", HOUR).unwrap();
        let new = Ca::generate("new", HOUR).unwrap();
        let bundle = trust_bundle([old.cert_pem(), new.cert_pem()]).unwrap();
        let expected = [ders(old.cert_pem()), ders(new.cert_pem())].concat();
        assert_eq!(ders(&bundle), expected);
        // Feeding the bundle back with a CA it already holds changes nothing.
        assert_eq!(
            trust_bundle([bundle.as_str(), new.cert_pem()]).unwrap(),
            bundle
        );
        // rcgen's own PEM encoding is the same as ours, line for line.
        assert_eq!(trust_bundle([old.cert_pem()]).unwrap(), old.cert_pem());
    }

    #[test]
    fn an_input_without_a_certificate_is_refused() {
        let ca = Ca::generate("ca", HOUR).unwrap();
        assert!(matches!(
            trust_bundle([ca.cert_pem(), ca.key_pem()]),
            Err(CertError::BundleEmpty { index: 1 })
        ));
        assert!(matches!(
            trust_bundle([""]),
            Err(CertError::BundleEmpty { index: 0 })
        ));
    }
}
