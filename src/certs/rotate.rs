//! The certificate lifecycle over a directory of member certificates: renew leaves that
//! expire soon, roll the CA over (bundle old + new, re-issue leaves), retire the old CA.
//!
//! Every step is safe to re-run (a CronJob may run it twice, or die half-way): it looks
//! at what is on disk and does only what is still missing, writing each file atomically
//! and only when its content changes (so members reload only what really changed).
//!
//! Layout: the CA directory holds the current CA (`ca.crt`, `ca.key`) and, during a
//! rollover, the old one in `previous/`. The certificates directory holds, anywhere below
//! it, leaves (`<name>.crt` with `<name>.key` next to it) and trust bundles (files named
//! `ca.crt`). The CA directory must not lie inside the certificates directory: its own
//! `ca.crt` is a CA, not a bundle to rewrite.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::bundle::trust_bundle;
use super::files::{CA_CERT_FILE, CERT_MODE, load_ca, write_atomic, write_ca, write_pem_files};
use super::scan::{LeafInfo, ParsedRole, crt_files, parse, read_certificates, signed_by};
use super::{Ca, CertError, LeafRole, Validity};
use crate::model::ClusterName;

/// Cilium and cert-manager renew a month ahead by default: enough time to notice a
/// CronJob that stopped running.
pub const DEFAULT_RENEW_WITHIN: Duration = Duration::from_secs(30 * 86_400);
/// Where [`rotate_ca`] keeps the old CA until [`retire_ca`].
pub const PREVIOUS_CA_DIR: &str = "previous";

/// Which leaves [`rotate_leaves`] renews, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct RenewPolicy {
    /// Renew a leaf that expires within this long from now.
    pub within: Duration,
    /// Lifetime of a renewed leaf; `None`: the lifetime the old one had.
    pub lifetime: Option<Duration>,
}

impl Default for RenewPolicy {
    fn default() -> Self {
        Self {
            within: DEFAULT_RENEW_WITHIN,
            lifetime: None,
        }
    }
}

/// Why a leaf was renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RenewReason {
    /// It expires within the renewal window.
    ExpiresSoon,
    /// Another CA signed it (a CA rollover is under way) and the bundle next to it
    /// already trusts the current CA.
    OtherCa,
}

impl std::fmt::Display for RenewReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ExpiresSoon => "expires within the renewal window",
            Self::OtherCa => "signed by the previous CA",
        })
    }
}

/// One renewed leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewed {
    pub cert: PathBuf,
    pub cluster: ClusterName,
    pub reason: RenewReason,
    pub not_after: OffsetDateTime,
}

/// What [`rotate_leaves`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotateReport {
    pub renewed: Vec<Renewed>,
    /// Leaves that needed nothing.
    pub kept: Vec<PathBuf>,
    /// Files that could not be handled, with why (the caller should fail loudly).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Renews every leaf under `dir` that expires within `policy.within` of `now`, or that
/// another CA signed while the `ca.crt` next to it trusts `ca` (the second half of a
/// rollover). A renewed leaf keeps its role, cluster, DNS names and IP addresses; it gets
/// a new key. CA certificates and bundles are left alone. A leaf signed by another CA
/// that the bundle next to it does not trust `ca` is skipped, not re-issued: that is a
/// wrong `--ca-dir`, and re-issuing would cut the member off.
pub fn rotate_leaves(
    dir: &Path,
    ca: &Ca,
    policy: RenewPolicy,
    now: OffsetDateTime,
) -> Result<RotateReport, CertError> {
    let ca_der = ca_der(ca)?;
    let within = time::Duration::try_from(policy.within)
        .map_err(|_| CertError::Validity("window too long"))?;
    let mut report = RotateReport::default();
    for path in crt_files(dir)? {
        let certs = read_certificates(&path)?;
        let Some(first) = certs.first() else {
            report
                .skipped
                .push((path, "no certificate in the file".to_string()));
            continue;
        };
        if parse(&path, first)?.is_ca() {
            continue;
        }
        let info = match LeafInfo::read(&path, first) {
            Ok(info) => info,
            Err(e) => {
                report.skipped.push((path, e.to_string()));
                continue;
            }
        };
        let reason = if !signed_by(first, &ca_der) {
            if !bundle_next_to_trusts(&path, &ca_der)? {
                report.skipped.push((
                    path,
                    format!(
                        "signed by another CA, and the {CA_CERT_FILE} next to it does not trust \
                         the current CA (wrong --ca-dir, or run rotate-ca first)"
                    ),
                ));
                continue;
            }
            RenewReason::OtherCa
        } else if info.not_after <= now + within {
            RenewReason::ExpiresSoon
        } else {
            report.kept.push(path);
            continue;
        };
        let lifetime = match policy.lifetime {
            Some(l) => l,
            None => Duration::try_from(info.not_after - info.not_before)
                .map_err(|_| CertError::Validity("the old certificate's window is reversed"))?,
        };
        let not_after = renew(&path, &info, ca, lifetime)?;
        report.renewed.push(Renewed {
            cert: path,
            cluster: info.cluster,
            reason,
            not_after,
        });
    }
    Ok(report)
}

/// Issues the successor of the leaf at `path` and writes it over the old one (key first).
fn renew(
    path: &Path,
    info: &LeafInfo,
    ca: &Ca,
    lifetime: Duration,
) -> Result<OffsetDateTime, CertError> {
    let key = path.with_extension("key");
    if !key.exists() {
        return Err(CertError::NoKeyFile {
            cert: path.to_path_buf(),
            key,
        });
    }
    let role = match info.role {
        ParsedRole::Server => LeafRole::Server {
            dns: &info.dns,
            ips: &info.ips,
        },
        ParsedRole::Client => LeafRole::Client,
    };
    let issued = ca.issue(&info.cluster, role, Validity::starting_now(lifetime)?)?;
    let (Some(parent), Some(stem)) = (path.parent(), path.file_stem()) else {
        return Err(CertError::BadCertificate {
            path: path.to_path_buf(),
            message: "not a file path".to_string(),
        });
    };
    write_pem_files(parent, &stem.to_string_lossy(), &issued)?;
    Ok(issued.not_after)
}

fn bundle_next_to_trusts(leaf: &Path, ca_der: &[u8]) -> Result<bool, CertError> {
    let bundle = leaf.with_file_name(CA_CERT_FILE);
    if !bundle.exists() {
        return Ok(false);
    }
    Ok(read_certificates(&bundle)?
        .iter()
        .any(|c| c.as_ref() == ca_der))
}

/// How [`rotate_ca`] makes the new CA and its leaves.
#[derive(Clone, Debug)]
pub struct RolloverOptions {
    /// Common name of the new CA.
    pub ca_name: String,
    pub ca_lifetime: Duration,
    /// Leaves: the window also renews leaves of the new CA that expire soon.
    pub leaves: RenewPolicy,
    /// Only write the bundles; the leaves are re-issued by a later `rotate` (once every
    /// member reloaded the bundle, no handshake can meet a member that does not yet
    /// trust the new CA).
    pub bundles_only: bool,
}

/// What [`rotate_ca`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloverReport {
    /// A new CA was created now (false: a rollover already under way was continued).
    pub new_ca: bool,
    /// Bundles whose content changed.
    pub bundles_written: Vec<PathBuf>,
    /// Leaves re-issued; `None` with `bundles_only`.
    pub leaves: Option<RotateReport>,
}

/// Step one of a CA rollover: the current CA moves to `<ca_dir>/previous/`, a new CA
/// takes its place, every `ca.crt` under `dir` becomes the bundle old + new, and (unless
/// `bundles_only`) every leaf is re-issued by the new CA. Re-running it while
/// `previous/` holds another CA continues that rollover (no third CA is made).
pub fn rotate_ca(
    ca_dir: &Path,
    dir: &Path,
    options: &RolloverOptions,
) -> Result<RolloverReport, CertError> {
    check_apart(ca_dir, dir)?;
    let previous_dir = ca_dir.join(PREVIOUS_CA_DIR);
    let mut current = load_ca(ca_dir)?;
    let previous = if previous_dir.join(CA_CERT_FILE).exists() {
        load_ca(&previous_dir)?
    } else {
        // Kept before the new CA replaces it: a crash between the two writes leaves
        // `previous/` equal to the current CA, which the check below finishes.
        write_ca(&previous_dir, &current)?;
        load_ca(&previous_dir)?
    };
    let new_ca = previous.cert_pem() == current.cert_pem();
    if new_ca {
        let ca = Ca::generate(&options.ca_name, options.ca_lifetime)?;
        write_ca(ca_dir, &ca)?;
        current = ca;
    }
    let bundle = trust_bundle([previous.cert_pem(), current.cert_pem()])?;
    let bundles_written = write_bundles(dir, &bundle)?;
    let leaves = if options.bundles_only {
        None
    } else {
        Some(rotate_leaves(
            dir,
            &current,
            options.leaves,
            OffsetDateTime::now_utc(),
        )?)
    };
    Ok(RolloverReport {
        new_ca,
        bundles_written,
        leaves,
    })
}

/// What [`retire_ca`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetireReport {
    /// Bundles whose content changed (now the current CA only).
    pub bundles_written: Vec<PathBuf>,
    /// `previous/` was removed (it held the old CA and its key).
    pub previous_removed: bool,
}

/// The last step of a rollover, once every member trusts and presents the new CA: every
/// `ca.crt` under `dir` becomes the current CA alone and `<ca_dir>/previous/` is deleted.
/// Refused while a leaf under `dir` is not signed by the current CA (its member would be
/// cut off), unless `force`.
pub fn retire_ca(ca_dir: &Path, dir: &Path, force: bool) -> Result<RetireReport, CertError> {
    check_apart(ca_dir, dir)?;
    let current = load_ca(ca_dir)?;
    let ca_der = ca_der(&current)?;
    let mut on_old = Vec::new();
    for path in crt_files(dir)? {
        let certs = read_certificates(&path)?;
        let Some(first) = certs.first() else { continue };
        if !parse(&path, first)?.is_ca() && !signed_by(first, &ca_der) {
            on_old.push(path);
        }
    }
    if !on_old.is_empty() && !force {
        return Err(CertError::LeavesOnOldCa { leaves: on_old });
    }
    let bundles_written = write_bundles(dir, current.cert_pem())?;
    let previous_dir = ca_dir.join(PREVIOUS_CA_DIR);
    let previous_removed = previous_dir.exists();
    if previous_removed {
        fs::remove_dir_all(&previous_dir).map_err(|source| CertError::Write {
            path: previous_dir,
            source,
        })?;
    }
    Ok(RetireReport {
        bundles_written,
        previous_removed,
    })
}

/// Writes `bundle` to every `ca.crt` under `dir` whose content differs; returns those.
fn write_bundles(dir: &Path, bundle: &str) -> Result<Vec<PathBuf>, CertError> {
    let mut written = Vec::new();
    for path in crt_files(dir)? {
        if path.file_name().is_none_or(|n| n != CA_CERT_FILE) {
            continue;
        }
        let old = fs::read(&path).map_err(|source| CertError::Read {
            path: path.clone(),
            source,
        })?;
        if old != bundle.as_bytes() {
            write_atomic(&path, bundle.as_bytes(), CERT_MODE)?;
            written.push(path);
        }
    }
    Ok(written)
}

fn check_apart(ca_dir: &Path, dir: &Path) -> Result<(), CertError> {
    let canonical = |p: &Path| {
        fs::canonicalize(p).map_err(|source| CertError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    if canonical(ca_dir)?.starts_with(canonical(dir)?) {
        return Err(CertError::CaDirInside {
            ca_dir: ca_dir.to_path_buf(),
        });
    }
    Ok(())
}

fn ca_der(ca: &Ca) -> Result<Vec<u8>, CertError> {
    rustls_pemfile::certs(&mut ca.cert_pem().as_bytes())
        .next()
        .ok_or(CertError::CaCertificate("no certificate in it"))?
        .map(|c| c.to_vec())
        .map_err(CertError::CaCertificatePem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::files::write_pem_files;

    const DAY: Duration = Duration::from_secs(86_400);

    fn mk_cluster(name: &str) -> ClusterName {
        ClusterName::new(name).unwrap()
    }

    /// A member directory: a server leaf expiring in `server_days` days (lifetime 365),
    /// a client leaf valid for a year, and the CA as `ca.crt`.
    fn mk_member(dir: &Path, ca: &Ca, server_days: i64) {
        let now = OffsetDateTime::now_utc();
        let validity = Validity::new(
            now - time::Duration::days(365 - server_days),
            now + time::Duration::days(server_days),
        )
        .unwrap();
        let dns = ["east.example".to_string()];
        let ips = ["192.0.2.1".parse().unwrap()];
        let server = ca
            .issue(
                &mk_cluster("east"),
                LeafRole::Server {
                    dns: &dns,
                    ips: &ips,
                },
                validity,
            )
            .unwrap();
        write_pem_files(dir, "server", &server).unwrap();
        let client = ca.issue_client(&mk_cluster("east"), 365 * DAY).unwrap();
        write_pem_files(dir, "client", &client).unwrap();
        fs::write(dir.join(CA_CERT_FILE), ca.cert_pem()).unwrap();
    }

    fn leaf_info(path: &Path) -> LeafInfo {
        let certs = read_certificates(path).unwrap();
        LeafInfo::read(path, &certs[0]).unwrap()
    }

    fn ders(path: &Path) -> Vec<Vec<u8>> {
        read_certificates(path)
            .unwrap()
            .iter()
            .map(|c| c.to_vec())
            .collect()
    }

    #[test]
    fn rotate_renews_only_what_expires_within_the_window_and_keeps_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let member = dir.path().join("east");
        fs::create_dir_all(&member).unwrap();
        let ca = Ca::generate("ca", 3650 * DAY).unwrap();
        mk_member(&member, &ca, 10);
        let before = leaf_info(&member.join("server.crt"));
        let old_key = fs::read(member.join("server.key")).unwrap();
        let now = OffsetDateTime::now_utc();

        let report = rotate_leaves(dir.path(), &ca, RenewPolicy::default(), now).unwrap();
        assert_eq!(report.renewed.len(), 1, "{report:?}");
        assert_eq!(report.renewed[0].cert, member.join("server.crt"));
        assert_eq!(report.renewed[0].reason, RenewReason::ExpiresSoon);
        assert_eq!(report.kept, vec![member.join("client.crt")]);
        assert!(report.skipped.is_empty());
        let after = leaf_info(&member.join("server.crt"));
        assert_eq!(after.role, ParsedRole::Server);
        assert_eq!(after.cluster, before.cluster);
        assert_eq!(after.dns, before.dns);
        assert_eq!(after.ips, before.ips);
        // Same lifetime as before, starting now.
        assert!(after.not_after > now + time::Duration::days(364));
        assert_ne!(fs::read(member.join("server.key")).unwrap(), old_key);
        // The new pair loads as TLS material.
        let files = crate::tls::TlsFiles {
            cert: member.join("server.crt"),
            key: member.join("server.key"),
            ca: member.join(CA_CERT_FILE),
        };
        crate::tls::load_server_config(&files).unwrap();

        // Idempotent: nothing left to do.
        let again = rotate_leaves(dir.path(), &ca, RenewPolicy::default(), now).unwrap();
        assert!(again.renewed.is_empty(), "{again:?}");
        assert_eq!(again.kept.len(), 2);

        // A window longer than every lifetime renews everything, with the lifetime given.
        let policy = RenewPolicy {
            within: 400 * DAY,
            lifetime: Some(2 * DAY),
        };
        let forced = rotate_leaves(dir.path(), &ca, policy, now).unwrap();
        assert_eq!(forced.renewed.len(), 2);
        let client = leaf_info(&member.join("client.crt"));
        assert_eq!(client.role, ParsedRole::Client);
        assert!(client.not_after < now + time::Duration::days(3));
    }

    #[test]
    fn rotate_refuses_to_reissue_under_a_ca_the_member_does_not_trust() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca", 3650 * DAY).unwrap();
        let wrong = Ca::generate("wrong", 3650 * DAY).unwrap();
        mk_member(dir.path(), &ca, 300);
        let before = fs::read(dir.path().join("server.crt")).unwrap();
        let report = rotate_leaves(
            dir.path(),
            &wrong,
            RenewPolicy::default(),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert!(report.renewed.is_empty());
        assert_eq!(report.skipped.len(), 2, "{report:?}");
        assert!(report.skipped[0].1.contains("wrong --ca-dir"));
        assert_eq!(fs::read(dir.path().join("server.crt")).unwrap(), before);
    }

    #[test]
    fn a_leaf_without_its_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca", 3650 * DAY).unwrap();
        mk_member(dir.path(), &ca, 1);
        fs::remove_file(dir.path().join("server.key")).unwrap();
        let err = rotate_leaves(
            dir.path(),
            &ca,
            RenewPolicy::default(),
            OffsetDateTime::now_utc(),
        )
        .unwrap_err();
        assert!(matches!(err, CertError::NoKeyFile { .. }), "{err:?}");
    }

    fn mk_options() -> RolloverOptions {
        RolloverOptions {
            ca_name: "new CA".to_string(),
            ca_lifetime: 3650 * DAY,
            leaves: RenewPolicy::default(),
            bundles_only: false,
        }
    }

    #[test]
    fn a_rollover_bundles_old_and_new_then_retires_the_old() {
        let root = tempfile::tempdir().unwrap();
        let ca_dir = root.path().join("ca");
        let dir = root.path().join("members");
        let old = Ca::generate("old CA", 3650 * DAY).unwrap();
        write_ca(&ca_dir, &old).unwrap();
        for member in ["east", "west"] {
            let d = dir.join(member);
            fs::create_dir_all(&d).unwrap();
            mk_member(&d, &old, 300);
        }
        let old_der = ca_der(&old).unwrap();

        let report = rotate_ca(&ca_dir, &dir, &mk_options()).unwrap();
        assert!(report.new_ca);
        assert_eq!(report.bundles_written.len(), 2);
        assert_eq!(report.leaves.as_ref().unwrap().renewed.len(), 4);
        let new = load_ca(&ca_dir).unwrap();
        let new_der = ca_der(&new).unwrap();
        assert_ne!(new_der, old_der);
        assert_eq!(
            load_ca(&ca_dir.join(PREVIOUS_CA_DIR)).unwrap().cert_pem(),
            old.cert_pem()
        );
        for member in ["east", "west"] {
            let d = dir.join(member);
            assert_eq!(
                ders(&d.join(CA_CERT_FILE)),
                vec![old_der.clone(), new_der.clone()]
            );
            for leaf in ["server.crt", "client.crt"] {
                assert!(signed_by(&ders(&d.join(leaf))[0], &new_der));
            }
        }

        // Re-running continues the same rollover: no third CA, nothing rewritten.
        let again = rotate_ca(&ca_dir, &dir, &mk_options()).unwrap();
        assert!(!again.new_ca);
        assert!(again.bundles_written.is_empty());
        assert!(again.leaves.unwrap().renewed.is_empty());
        assert_eq!(load_ca(&ca_dir).unwrap().cert_pem(), new.cert_pem());

        let retired = retire_ca(&ca_dir, &dir, false).unwrap();
        assert!(retired.previous_removed);
        assert_eq!(retired.bundles_written.len(), 2);
        assert_eq!(ders(&dir.join("east").join(CA_CERT_FILE)), vec![new_der]);
        assert!(!ca_dir.join(PREVIOUS_CA_DIR).exists());
        let again = retire_ca(&ca_dir, &dir, false).unwrap();
        assert!(!again.previous_removed && again.bundles_written.is_empty());
    }

    #[test]
    fn bundles_only_then_rotate_finishes_the_rollover_and_retire_waits_for_it() {
        let root = tempfile::tempdir().unwrap();
        let ca_dir = root.path().join("ca");
        let dir = root.path().join("members");
        fs::create_dir_all(&dir).unwrap();
        let old = Ca::generate("old CA", 3650 * DAY).unwrap();
        write_ca(&ca_dir, &old).unwrap();
        mk_member(&dir, &old, 300);
        let options = RolloverOptions {
            bundles_only: true,
            ..mk_options()
        };
        let report = rotate_ca(&ca_dir, &dir, &options).unwrap();
        assert!(report.leaves.is_none());
        assert_eq!(ders(&dir.join(CA_CERT_FILE)).len(), 2);

        // The leaves are still the old CA's: retiring it now would cut the member off.
        let err = retire_ca(&ca_dir, &dir, false).unwrap_err();
        assert!(
            matches!(&err, CertError::LeavesOnOldCa { leaves } if leaves.len() == 2),
            "{err:?}"
        );
        assert!(ca_dir.join(PREVIOUS_CA_DIR).exists());

        // `rotate` re-issues what another CA signed, since the bundle trusts the new one.
        let new = load_ca(&ca_dir).unwrap();
        let rotated = rotate_leaves(
            &dir,
            &new,
            RenewPolicy::default(),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert_eq!(rotated.renewed.len(), 2);
        assert!(
            rotated
                .renewed
                .iter()
                .all(|r| r.reason == RenewReason::OtherCa)
        );
        retire_ca(&ca_dir, &dir, false).unwrap();
    }

    #[test]
    fn the_ca_directory_may_not_lie_inside_the_certificates_directory() {
        let root = tempfile::tempdir().unwrap();
        write_ca(&root.path().join("ca"), &Ca::generate("ca", DAY).unwrap()).unwrap();
        let err = rotate_ca(&root.path().join("ca"), root.path(), &mk_options()).unwrap_err();
        assert!(matches!(err, CertError::CaDirInside { .. }), "{err:?}");
    }
}
