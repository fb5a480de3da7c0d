//! Reading certificates back from disk: the `.crt` files under a directory, what a leaf
//! says about itself (role, cluster, names, validity), and which CA signed it. Shared by
//! rotation and inspection.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::CertError;
use crate::model::ClusterName;
use crate::tls::identity::peer_cluster;

/// Certificate files end with this.
const CERT_EXTENSION: &str = "crt";

/// Every `*.crt` file under `dir`, recursively, sorted. Names starting with a dot are
/// skipped: Kubernetes Secret volumes keep the real files in `..data` and timestamped
/// `..<date>` directories behind the visible symlinks (each file would otherwise be seen
/// twice), and `files::write_atomic` names its temporary files that way.
pub fn crt_files(dir: &Path) -> Result<Vec<PathBuf>, CertError> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CertError> {
    let read_error = |source| CertError::Read {
        path: dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        // Follows symlinks: a Secret volume's visible names are symlinks.
        let meta = fs::metadata(&path).map_err(|source| CertError::Read {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == CERT_EXTENSION) {
            out.push(path);
        }
    }
    Ok(())
}

/// The certificates of a PEM file, in order (a leaf file holds one, a bundle several).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Parses one DER certificate, naming `path` when it is not X.509.
pub fn parse<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, CertError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| CertError::BadCertificate {
            path: path.to_path_buf(),
            message: format!("not an X.509 certificate: {e}"),
        })
}

/// Whether `ca` signed `leaf`: the issuer names the CA's subject and the signature
/// verifies with the CA's key. Both are DER; anything unparseable is "no".
pub fn signed_by(leaf: &[u8], ca: &[u8]) -> bool {
    let (Ok((_, leaf)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(leaf),
        x509_parser::parse_x509_certificate(ca),
    ) else {
        return false;
    };
    leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// A leaf's role as its extended key usage says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParsedRole {
    Server,
    Client,
}

/// What a fleetmesh leaf says about itself: enough to issue its successor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    pub role: ParsedRole,
    pub cluster: ClusterName,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl LeafInfo {
    /// Reads a leaf (DER) found at `path`. A CA, a certificate without a cluster URI SAN,
    /// or one that is neither serverAuth nor clientAuth is refused with the reason.
    pub fn read(path: &Path, der: &[u8]) -> Result<Self, CertError> {
        let bad = |message: String| CertError::BadCertificate {
            path: path.to_path_buf(),
            message,
        };
        let cert = parse(path, der)?;
        if cert.is_ca() {
            return Err(bad("a CA certificate, not a leaf".to_string()));
        }
        let cluster = peer_cluster(der).map_err(|e| bad(e.to_string()))?;
        let eku = cert
            .extended_key_usage()
            .map_err(|e| bad(format!("extended key usage: {e}")))?
            .map(|ext| ext.value);
        let role = match eku {
            Some(eku) if eku.server_auth => ParsedRole::Server,
            Some(eku) if eku.client_auth => ParsedRole::Client,
            _ => return Err(bad("neither serverAuth nor clientAuth".to_string())),
        };
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| bad(format!("subject alternative names: {e}")))?;
        for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
                    Some(ip) => ips.push(ip),
                    None => return Err(bad(format!("IP address SAN of {} bytes", bytes.len()))),
                },
                _ => {}
            }
        }
        Ok(Self {
            role,
            cluster,
            dns,
            ips,
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Every SAN of a certificate as text: `URI:…`, `DNS:…`, `IP:…`.
pub fn san_strings(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(sans)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    sans.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(u) => format!("URI:{u}"),
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(b) => match ip_from_bytes(b) {
                Some(ip) => format!("IP:{ip}"),
                None => format!("IP:<{} bytes>", b.len()),
            },
            other => format!("{other:?}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::certs::Ca;
    use crate::certs::files::write_pem_files;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn crt_files_recurse_and_skip_hidden_entries() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca", HOUR).unwrap();
        let leaf = ca
            .issue_client(&ClusterName::new("east").unwrap(), HOUR)
            .unwrap();
        write_pem_files(&dir.path().join("a/b"), "client", &leaf).unwrap();
        write_pem_files(&dir.path().join("..data"), "client", &leaf).unwrap();
        fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let files = crt_files(dir.path()).unwrap();
        assert_eq!(files, vec![dir.path().join("a/b/client.crt")]);
    }

    #[test]
    fn a_server_leaf_reads_back_with_its_names_and_its_signer() {
        let ca = Ca::generate("ca", HOUR).unwrap();
        let other = Ca::generate("other", HOUR).unwrap();
        let ips = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let leaf = ca
            .issue_server(
                &ClusterName::new("east").unwrap(),
                &["mesh.example".to_string()],
                &ips,
                HOUR,
            )
            .unwrap();
        let der = rustls_pemfile::certs(&mut leaf.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let info = LeafInfo::read(Path::new("x.crt"), &der).unwrap();
        assert_eq!(info.role, ParsedRole::Server);
        assert_eq!(info.cluster.as_str(), "east");
        assert_eq!(info.dns, vec!["mesh.example".to_string()]);
        assert_eq!(info.ips, ips.to_vec());
        assert_eq!(info.not_after, leaf.not_after);
        let ca_der = |c: &Ca| {
            rustls_pemfile::certs(&mut c.cert_pem().as_bytes())
                .next()
                .unwrap()
                .unwrap()
        };
        assert!(signed_by(&der, &ca_der(&ca)));
        assert!(!signed_by(&der, &ca_der(&other)));
        let err = LeafInfo::read(Path::new("ca.crt"), &ca_der(&ca)).unwrap_err();
        assert!(err.to_string().contains("not a leaf"), "{err}");
    }
}
