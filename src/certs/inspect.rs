//! `fleetmesh certs inspect`: what each certificate file holds, and which trust bundle
//! next to it trusts it. Also the rule `status` uses to tell that a peer still presents a
//! certificate from a CA that is being retired ([`signed_by_older_ca`]).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::CertError;
use super::scan::{crt_files, parse, read_certificates, san_strings, signed_by};
use crate::tls::identity::peer_cluster;

/// One certificate of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    pub path: PathBuf,
    /// Position in the file (bundles hold several), from 0.
    pub index: usize,
    pub subject: String,
    /// The cluster its URI SAN names; `None` for CAs and foreign certificates.
    pub cluster: Option<String>,
    /// `URI:…`, `DNS:…`, `IP:…`.
    pub sans: Vec<String>,
    pub issuer: String,
    pub is_ca: bool,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// The CAs of bundles in the same directory that signed it (leaves only).
    pub trusted_by: Vec<TrustedBy>,
}

/// A CA of a bundle that signed a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustedBy {
    pub bundle: PathBuf,
    /// The CA's subject.
    pub ca: String,
}

/// Every certificate in `paths`: files as given, directories searched for `*.crt`
/// recursively (see [`super::scan::crt_files`]).
pub fn inspect(paths: &[PathBuf]) -> Result<Vec<CertInfo>, CertError> {
    let mut out = Vec::new();
    for path in paths {
        let files = if path.is_dir() {
            crt_files(path)?
        } else {
            vec![path.clone()]
        };
        for file in files {
            inspect_file(&file, &mut out)?;
        }
    }
    Ok(out)
}

fn inspect_file(path: &Path, out: &mut Vec<CertInfo>) -> Result<(), CertError> {
    let certs = read_certificates(path)?;
    if certs.is_empty() {
        return Err(CertError::BadCertificate {
            path: path.to_path_buf(),
            message: "no certificate in the file".to_string(),
        });
    }
    let bundles = match path.parent() {
        Some(dir) => bundles_in(dir)?,
        None => Vec::new(),
    };
    for (index, der) in certs.iter().enumerate() {
        let cert = parse(path, der)?;
        let is_ca = cert.is_ca();
        let trusted_by = if is_ca {
            Vec::new()
        } else {
            bundles
                .iter()
                .flat_map(|(bundle, cas)| {
                    cas.iter()
                        .filter(|ca| signed_by(der, ca))
                        .map(move |ca| TrustedBy {
                            bundle: bundle.clone(),
                            ca: subject_of(ca),
                        })
                })
                .collect()
        };
        out.push(CertInfo {
            path: path.to_path_buf(),
            index,
            subject: cert.subject().to_string(),
            cluster: if is_ca {
                None
            } else {
                peer_cluster(der).ok().map(|c| c.to_string())
            },
            sans: san_strings(&cert),
            issuer: cert.issuer().to_string(),
            is_ca,
            not_before: rfc3339(cert.validity().not_before.to_datetime()),
            not_after: rfc3339(cert.validity().not_after.to_datetime()),
            trusted_by,
        });
    }
    Ok(())
}

/// The files of `dir` that hold only CA certificates, with those certificates.
type Bundle = (PathBuf, Vec<CertificateDer<'static>>);

fn bundles_in(dir: &Path) -> Result<Vec<Bundle>, CertError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|source| CertError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            !hidden && p.extension().is_some_and(|e| e == "crt") && p.is_file()
        })
        .collect();
    files.sort();
    for file in files {
        let certs = read_certificates(&file)?;
        let all_ca = !certs.is_empty()
            && certs.iter().all(|c| {
                x509_parser::parse_x509_certificate(c).is_ok_and(|(_, cert)| cert.is_ca())
            });
        if all_ca {
            out.push((file, certs));
        }
    }
    Ok(out)
}

fn subject_of(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// When `leaf` was signed by a CA of `bundle` that is not the bundle's newest CA, that
/// CA's subject: the leaf comes from a CA that is being retired.
///
/// The newest CA is the one with the latest notBefore (a rollover bundle lists the old CA
/// first, but the order is not relied on). A bundle of one CA retires nothing; a leaf no
/// CA of the bundle signed gives `None` too (the handshake would have refused it).
pub fn signed_by_older_ca(leaf: &[u8], bundle: &[CertificateDer<'_>]) -> Option<String> {
    if bundle.len() < 2 {
        return None;
    }
    let newest = bundle
        .iter()
        .filter_map(|ca| {
            x509_parser::parse_x509_certificate(ca)
                .ok()
                .map(|(_, c)| (c.validity().not_before.to_datetime(), ca))
        })
        .max_by_key(|(not_before, _)| *not_before)
        .map(|(_, ca)| ca)?;
    let signer = bundle.iter().find(|ca| signed_by(leaf, ca))?;
    (signer != newest).then(|| subject_of(signer))
}

/// The human form of [`inspect`]: one block per certificate.
pub fn render(certs: &[CertInfo], now: OffsetDateTime) -> String {
    let mut out = String::new();
    for c in certs {
        let kind = if c.is_ca { " (CA)" } else { "" };
        let _ = writeln!(out, "{} #{}{kind}", c.path.display(), c.index);
        let _ = writeln!(out, "  subject:    {}", c.subject);
        if let Some(cluster) = &c.cluster {
            let _ = writeln!(out, "  cluster:    {cluster}");
        }
        if !c.sans.is_empty() {
            let _ = writeln!(out, "  SANs:       {}", c.sans.join(", "));
        }
        let _ = writeln!(out, "  issuer:     {}", c.issuer);
        let _ = writeln!(
            out,
            "  not after:  {}{}",
            c.not_after,
            remaining(&c.not_after, now)
        );
        if !c.is_ca {
            if c.trusted_by.is_empty() {
                let _ = writeln!(out, "  trusted by: no CA bundle in this directory");
            }
            for t in &c.trusted_by {
                let _ = writeln!(out, "  trusted by: {} ({})", t.bundle.display(), t.ca);
            }
        }
    }
    out
}

fn remaining(not_after: &str, now: OffsetDateTime) -> String {
    match OffsetDateTime::parse(not_after, &Rfc3339) {
        Ok(t) if t <= now => " (EXPIRED)".to_string(),
        Ok(t) => format!(" (in {} days)", (t - now).whole_days()),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use super::*;
    use crate::certs::bundle::trust_bundle;
    use crate::certs::files::write_pem_files;
    use crate::certs::{Ca, Validity};
    use crate::model::ClusterName;

    const DAY: Duration = Duration::from_secs(86_400);

    fn der(pem: &str) -> CertificateDer<'static> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
    }

    #[test]
    fn inspect_names_the_cluster_sans_and_the_bundle_that_trusts_each_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let old = Ca::generate("old CA", DAY).unwrap();
        let new = Ca::generate("new CA", DAY).unwrap();
        let stray = Ca::generate("stray CA", DAY).unwrap();
        let east = ClusterName::new("east").unwrap();
        let server = old
            .issue_server(&east, &["east.example".to_string()], &[], DAY)
            .unwrap();
        write_pem_files(dir.path(), "server", &server).unwrap();
        let client = stray.issue_client(&east, DAY).unwrap();
        write_pem_files(dir.path(), "client", &client).unwrap();
        let bundle = trust_bundle([old.cert_pem(), new.cert_pem()]).unwrap();
        fs::write(dir.path().join("ca.crt"), bundle).unwrap();

        let certs = inspect(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = certs
            .iter()
            .map(|c| (c.path.file_name().unwrap().to_str().unwrap(), c.index))
            .collect();
        assert_eq!(
            names,
            vec![
                ("ca.crt", 0),
                ("ca.crt", 1),
                ("client.crt", 0),
                ("server.crt", 0)
            ]
        );
        assert!(certs[0].is_ca && certs[0].cluster.is_none());
        assert_eq!(certs[1].subject, "CN=new CA");
        let client = &certs[2];
        assert_eq!(client.cluster.as_deref(), Some("east"));
        assert!(client.trusted_by.is_empty(), "{client:?}");
        let server = &certs[3];
        assert_eq!(server.subject, "CN=apiserver-east");
        assert_eq!(server.issuer, "CN=old CA");
        assert_eq!(
            server.sans,
            vec![
                "URI:spiffe://fleetmesh/cluster/east".to_string(),
                "DNS:east.example".to_string()
            ]
        );
        assert_eq!(
            server.trusted_by,
            vec![TrustedBy {
                bundle: dir.path().join("ca.crt"),
                ca: "CN=old CA".to_string()
            }]
        );

        let text = render(&certs, OffsetDateTime::now_utc());
        assert!(text.contains("  cluster:    east\n"), "{text}");
        assert!(
            text.contains("trusted by: no CA bundle in this directory"),
            "{text}"
        );
        assert!(
            text.contains("(in 0 days)") || text.contains("(in 1 days)"),
            "{text}"
        );
        let json = serde_json::to_value(&certs).unwrap();
        assert_eq!(json[3]["trustedBy"][0]["ca"], "CN=old CA");
        assert_eq!(json[3]["notAfter"], server.not_after);
    }

    #[test]
    fn a_leaf_of_the_older_ca_of_a_bundle_is_from_a_retiring_ca() {
        let now = OffsetDateTime::now_utc();
        // The old CA started earlier; the bundle lists the new one first to show that the
        // order does not matter.
        let old = Ca::generate("old CA", DAY).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let new = Ca::generate("new CA", DAY).unwrap();
        let east = ClusterName::new("east").unwrap();
        let validity = Validity::new(
            now - time::Duration::hours(1),
            now + time::Duration::hours(1),
        )
        .unwrap();
        let from_old = der(&old
            .issue(&east, crate::certs::LeafRole::Client, validity)
            .unwrap()
            .cert_pem);
        let from_new = der(&new.issue_client(&east, DAY).unwrap().cert_pem);
        let bundle = [der(new.cert_pem()), der(old.cert_pem())];
        assert_eq!(
            signed_by_older_ca(&from_old, &bundle).as_deref(),
            Some("CN=old CA")
        );
        assert_eq!(signed_by_older_ca(&from_new, &bundle), None);
        // One CA: nothing is being retired.
        assert_eq!(signed_by_older_ca(&from_old, &bundle[1..]), None);
    }
}
