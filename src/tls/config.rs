use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};

use super::{ALPN_H2, TlsError, TlsFiles, TlsMaterial};

/// Only TLS 1.3: both ends are fleetmesh, and 1.3 has no legacy options to get wrong.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A rustls config that can be built from TLS material; what [`super::spawn_reload`]
/// reloads.
pub trait FromTlsMaterial: Send + Sync + 'static {
    /// "server" or "client", for logs.
    const ROLE: &'static str;

    fn from_material(material: &TlsMaterial) -> Result<Arc<Self>, TlsError>;
}

/// A server config from `files`: it presents the certificate, requires a client
/// certificate signed by a CA of the bundle, speaks only `h2`, and resumes sessions
/// with stateless tickets.
pub fn load_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    ServerConfig::from_material(&TlsMaterial::read(files)?)
}

/// A client config from `files`: it presents the certificate, trusts the CAs of the
/// bundle, and speaks only `h2`.
pub fn load_client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    ClientConfig::from_material(&TlsMaterial::read(files)?)
}

/// Chosen per config rather than installed process-wide, so no other library's choice
/// (or absence of one) changes what we speak.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl FromTlsMaterial for ServerConfig {
    const ROLE: &'static str = "server";

    fn from_material(material: &TlsMaterial) -> Result<Arc<Self>, TlsError> {
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(material.roots()?),
            provider.clone(),
        )
        .build()
        .map_err(|source| TlsError::ClientVerifier {
            path: material.files().ca.clone(),
            source,
        })?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(TlsError::Versions)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(material.cert_chain()?, material.private_key()?)
            .map_err(|e| material.key_error(e))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // Resumption state travels in the ticket, encrypted, and stays with the client:
        // rustls' default keeps each session (the client's certificate chain included)
        // in a server-side cache, a few KiB for every agent that connected.
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Ticketer)?;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Arc::new(config))
    }
}

impl FromTlsMaterial for ClientConfig {
    const ROLE: &'static str = "client";

    fn from_material(material: &TlsMaterial) -> Result<Arc<Self>, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(TlsError::Versions)?
            .with_root_certificates(material.roots()?)
            .with_client_auth_cert(material.cert_chain()?, material.private_key()?)
            .map_err(|e| material.key_error(e))?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::certs::Ca;
    use crate::model::ClusterName;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A CA, a server and a client leaf for "east", written under `dir`.
    fn mk_files(dir: &Path) -> (TlsFiles, TlsFiles, Ca) {
        let ca = Ca::generate("ca", HOUR).unwrap();
        let east = ClusterName::new("east").unwrap();
        let ips = ["127.0.0.1".parse().unwrap()];
        let server = ca.issue_server(&east, &[], &ips, HOUR).unwrap();
        let client = ca.issue_client(&east, HOUR).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
        let write = |name: &str, leaf: &crate::certs::IssuedCert| {
            let f = crate::certs::files::write_pem_files(dir, name, leaf).unwrap();
            TlsFiles {
                cert: f.cert,
                key: f.key,
                ca: dir.join("ca.crt"),
            }
        };
        (write("server", &server), write("client", &client), ca)
    }

    #[test]
    fn good_files_load_with_h2() {
        let dir = tempfile::tempdir().unwrap();
        let (server, client, _) = mk_files(dir.path());
        let config = load_server_config(&server).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(config.ticketer.enabled(), "stateless session tickets");
        let config = load_client_config(&client).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let (server, client, _) = mk_files(dir.path());

        let missing = TlsFiles {
            ca: dir.path().join("nope.crt"),
            ..server.clone()
        };
        let err = load_server_config(&missing).unwrap_err();
        assert!(matches!(err, TlsError::Read { what: "CA", .. }), "{err:?}");
        assert!(err.to_string().contains("nope.crt"), "{err}");

        // A key where the certificate should be.
        let swapped = TlsFiles {
            cert: server.key.clone(),
            ..server.clone()
        };
        let err = load_server_config(&swapped).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::NoCertificate {
                    what: "certificate",
                    ..
                }
            ),
            "{err:?}"
        );

        let no_key = TlsFiles {
            key: server.cert.clone(),
            ..server.clone()
        };
        assert!(matches!(
            load_client_config(&no_key),
            Err(TlsError::NoPrivateKey { .. })
        ));

        // The client's key with the server's certificate.
        let mismatched = TlsFiles {
            key: client.key.clone(),
            ..server.clone()
        };
        let err = load_server_config(&mismatched).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("client.key") && text.contains("server.crt"),
            "{text}"
        );
        let err = load_client_config(&TlsFiles {
            key: server.key.clone(),
            ..client.clone()
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");

        std::fs::write(&server.ca, "-----BEGIN CERTIFICATE-----\n!!!\n").unwrap();
        let err = load_server_config(&server).unwrap_err();
        assert!(matches!(err, TlsError::Pem { what: "CA", .. }), "{err:?}");
    }

    #[test]
    fn every_ca_of_a_bundle_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (server, _, ca) = mk_files(dir.path());
        let other = Ca::generate("other", HOUR).unwrap();
        let bundle = crate::certs::bundle::trust_bundle([ca.cert_pem(), other.cert_pem()]).unwrap();
        std::fs::write(&server.ca, bundle).unwrap();
        let material = TlsMaterial::read(&server).unwrap();
        assert_eq!(material.roots().unwrap().len(), 2);
    }
}
