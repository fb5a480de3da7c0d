//! The leaves a member needs, and whether the ones on disk still do: a certificate is
//! issued again only if it is missing, unreadable, names something else than the plan
//! wants, or was not signed by the mesh CA — never just because the plan runs again.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::validate::Member;
use crate::certs::Ca;
use crate::model::ClusterName;

/// Which leaf of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
    /// The agent's etcd API, which the member's own Cilium agents dial.
    CacheServer,
    /// The member's own Cilium agents reading that API: a client leaf naming the member
    /// (Cilium's `local-<cluster>` user), with its own key.
    Local,
}

impl Role {
    /// The file-name prefix and the word used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
            Self::CacheServer => "kvstoremesh",
            Self::Local => "local",
        }
    }
}

/// A leaf the plan wants: its cluster, role and the names it must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSpec {
    pub cluster: ClusterName,
    pub role: Role,
    /// DNS names peers dial (server leaves only).
    pub dns: Vec<String>,
    /// IP addresses peers dial (server leaves only).
    pub ips: Vec<IpAddr>,
}

impl LeafSpec {
    /// A member's server leaf: valid for the host of its address.
    pub fn server(member: &Member) -> Self {
        let (dns, ips) = match member.address.ip() {
            Some(ip) => (vec![], vec![ip]),
            None => (vec![member.address.host.clone()], vec![]),
        };
        Self {
            cluster: member.name.clone(),
            role: Role::Server,
            dns,
            ips,
        }
    }

    pub fn client(member: &Member) -> Self {
        Self {
            cluster: member.name.clone(),
            role: Role::Client,
            dns: vec![],
            ips: vec![],
        }
    }

    /// The leaf the agent's etcd API serves with: valid for the in-cluster Service
    /// Cilium dials, and for loopback (`kubectl port-forward`, tests).
    pub fn cache_server(member: &Member) -> Self {
        Self {
            cluster: member.name.clone(),
            role: Role::CacheServer,
            dns: super::kvstoremesh::CACHE_SERVER_NAMES
                .iter()
                .map(|n| n.to_string())
                .collect(),
            ips: vec![IpAddr::from([127, 0, 0, 1])],
        }
    }

    /// The client leaf of the member's own Cilium agents.
    pub fn local(member: &Member) -> Self {
        Self {
            cluster: member.name.clone(),
            role: Role::Local,
            dns: vec![],
            ips: vec![],
        }
    }

    /// `<role>-<cluster>`: the file name without `.crt`/`.key`; the local leaf has the
    /// name Cilium's config files use.
    pub fn file_stem(&self) -> String {
        match self.role {
            Role::Local => super::kvstoremesh::LOCAL_CLIENT_STEM.to_string(),
            _ => format!("{}-{}", self.role.as_str(), self.cluster),
        }
    }

    /// The member's directory the leaf's files are in.
    pub fn dir(&self) -> &'static str {
        match self.role {
            Role::Local => super::kvstoremesh::CILIUM_DIR,
            _ => super::render::CERTS_DIR,
        }
    }

    /// The subject common name certs gives such a leaf (see [`crate::certs`]).
    fn common_name(&self) -> String {
        match self.role {
            Role::Server | Role::CacheServer => format!("apiserver-{}", self.cluster),
            Role::Client | Role::Local => format!("remote-{}", self.cluster),
        }
    }

    /// Why the leaf at `cert`/`key` must be issued again, or `None` if it is fine.
    /// `ca` is `None` when this run creates the CA.
    pub fn reissue_reason(&self, cert: &Path, key: &Path, ca: Option<&Ca>) -> Option<&'static str> {
        let Some(ca) = ca else {
            return Some("the CA is new");
        };
        let Ok(pem) = std::fs::read_to_string(cert) else {
            return Some("missing");
        };
        if !key.exists() {
            return Some("its key is missing");
        }
        let (Some(der), Some(ca_der)) = (first_der(&pem), first_der(ca.cert_pem())) else {
            return Some("unreadable");
        };
        let (Ok((_, leaf)), Ok((_, ca_cert))) = (
            x509_parser::parse_x509_certificate(&der),
            x509_parser::parse_x509_certificate(&ca_der),
        ) else {
            return Some("unreadable");
        };
        if !self.names_match(&leaf) {
            return Some("its names no longer match");
        }
        if leaf.verify_signature(Some(ca_cert.public_key())).is_err() {
            return Some("not signed by the mesh CA");
        }
        None
    }

    fn names_match(&self, leaf: &X509Certificate<'_>) -> bool {
        let cn = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok());
        let mut dns = BTreeSet::new();
        let mut ips = BTreeSet::new();
        if let Ok(Some(sans)) = leaf.subject_alternative_name() {
            for name in &sans.value.general_names {
                match name {
                    GeneralName::DNSName(d) => {
                        dns.insert(d.to_string());
                    }
                    GeneralName::IPAddress(bytes) => {
                        ips.insert(ip_of(bytes));
                    }
                    _ => {}
                }
            }
        }
        cn == Some(self.common_name().as_str())
            && dns == self.dns.iter().cloned().collect()
            && ips == self.ips.iter().map(|ip| Some(*ip)).collect()
    }
}

fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn first_der(pem: &str) -> Option<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|der| der.to_vec())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::certs::files::write_pem_files;

    const HOUR: Duration = Duration::from_secs(3600);

    fn spec(role: Role, ips: &[&str]) -> LeafSpec {
        LeafSpec {
            cluster: ClusterName::new("east").unwrap(),
            role,
            dns: vec![],
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn a_leaf_is_reissued_only_when_missing_renamed_or_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca", HOUR).unwrap();
        let server = spec(Role::Server, &["10.0.0.1"]);
        let crt = dir.path().join("server-east.crt");
        let key = dir.path().join("server-east.key");
        assert_eq!(
            server.reissue_reason(&crt, &key, Some(&ca)),
            Some("missing")
        );
        assert_eq!(
            server.reissue_reason(&crt, &key, None),
            Some("the CA is new")
        );

        let leaf = ca
            .issue_server(&server.cluster, &[], &server.ips, HOUR)
            .unwrap();
        write_pem_files(dir.path(), "server-east", &leaf).unwrap();
        assert_eq!(server.reissue_reason(&crt, &key, Some(&ca)), None);
        // The member moved: the address in the certificate is not the one peers dial.
        let moved = spec(Role::Server, &["10.0.0.2"]);
        assert_eq!(
            moved.reissue_reason(&crt, &key, Some(&ca)),
            Some("its names no longer match")
        );
        // A client leaf in the server's place names the wrong role.
        let client = spec(Role::Client, &[]);
        assert_eq!(
            client.reissue_reason(&crt, &key, Some(&ca)),
            Some("its names no longer match")
        );
        let other = Ca::generate("other", HOUR).unwrap();
        assert_eq!(
            server.reissue_reason(&crt, &key, Some(&other)),
            Some("not signed by the mesh CA")
        );
        std::fs::remove_file(&key).unwrap();
        assert_eq!(
            server.reissue_reason(&crt, &key, Some(&ca)),
            Some("its key is missing")
        );
        std::fs::write(&key, "k").unwrap();
        std::fs::write(&crt, "garbage").unwrap();
        assert_eq!(
            server.reissue_reason(&crt, &key, Some(&ca)),
            Some("unreadable")
        );
    }
}
