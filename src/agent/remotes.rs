//! The remotes directory: one `<cluster>.yaml` (or `.yml`) per peer, the file name being
//! the peer's cluster name (Cilium's clustermesh config directory, reference §4.1).
//!
//! The directory is polled rather than watched with inotify: polling sees Kubernetes
//! Secret updates (a symlink swap of `..data`) the same way as plain edits, and a scan
//! of a handful of small files per second costs nothing. A file is identified by the
//! SHA-256 of its content, so touching it changes nothing.
//!
//! Bad input never loses what is held: a file that cannot be read or parsed is reported
//! and the link already running for that peer (if any) keeps running; only a file that
//! is gone removes its peer. Other files (certificates kept next to the peer files, the
//! Secret mount's hidden entries) are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::model::ClusterName;
use crate::remote::PeerConfig;

/// The content hash a running link was started from.
pub(super) type ContentHash = [u8; 32];

/// A peer file that was read and parsed.
#[derive(Debug)]
pub(super) struct PeerFile {
    pub config: PeerConfig,
    pub hash: ContentHash,
}

/// What one scan found for one cluster name.
#[derive(Debug)]
pub(super) enum Found {
    /// A valid peer file.
    Peer(PeerFile),
    /// A file for this peer exists but cannot be used now; the peer is kept as it is.
    Unusable,
}

/// One scan of the directory.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub peers: BTreeMap<ClusterName, Found>,
    /// What is wrong with files that were skipped, one line each, naming the file.
    pub problems: Vec<String>,
}

/// What to do to make the running links match a scan.
#[derive(Debug)]
pub(super) enum Action {
    Add(PeerFile),
    /// Stop the running link, then start this one.
    Replace(PeerFile),
    Remove(ClusterName),
}

/// Reads every peer file in `dir`. An error only when the directory itself cannot be
/// listed: then nothing is known, and nothing should change.
pub(super) fn scan(dir: &Path) -> std::io::Result<Scan> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    let mut scan = Scan::default();
    for path in paths {
        let Some(stem) = peer_file_stem(&path) else {
            continue;
        };
        let name = match ClusterName::new(stem) {
            Ok(name) => name,
            Err(e) => {
                scan.problems.push(format!(
                    "{}: ignored: the file name is not a cluster name: {e}",
                    path.display()
                ));
                continue;
            }
        };
        if scan.peers.contains_key(&name) {
            scan.problems.push(format!(
                "{}: ignored: another file already names cluster {name}",
                path.display()
            ));
            continue;
        }
        let found = match read_peer(&path) {
            Ok(file) => Found::Peer(file),
            Err(problem) => {
                scan.problems.push(problem);
                Found::Unusable
            }
        };
        scan.peers.insert(name, found);
    }
    Ok(scan)
}

/// The actions that turn `running` (peer → content hash) into what `scan` found.
pub(super) fn plan(running: &BTreeMap<ClusterName, ContentHash>, scan: Scan) -> Vec<Action> {
    let mut actions: Vec<Action> = running
        .keys()
        .filter(|name| !scan.peers.contains_key(*name))
        .map(|name| Action::Remove(name.clone()))
        .collect();
    for (name, found) in scan.peers {
        let Found::Peer(file) = found else {
            continue;
        };
        match running.get(&name) {
            None => actions.push(Action::Add(file)),
            Some(hash) if *hash != file.hash => actions.push(Action::Replace(file)),
            Some(_) => {}
        }
    }
    actions
}

/// The would-be cluster name of a peer file: a regular file (symlinks followed) named
/// `<stem>.yaml` or `<stem>.yml`, not hidden.
fn peer_file_stem(path: &Path) -> Option<&str> {
    let file_name = path.file_name()?.to_str()?;
    if file_name.starts_with('.') {
        return None;
    }
    let stem = file_name
        .strip_suffix(".yaml")
        .or_else(|| file_name.strip_suffix(".yml"))?;
    path.is_file().then_some(stem)
}

fn read_peer(path: &Path) -> Result<PeerFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let config = PeerConfig::parse(&text, path).map_err(|e| crate::report::error_chain(&e))?;
    Ok(PeerFile {
        config,
        hash: Sha256::digest(text.as_bytes()).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "address: 127.0.0.1:9891\ntls: {ca: ca.crt, cert: c.crt, key: c.key}\n";

    fn names(scan: &Scan) -> Vec<(String, bool)> {
        scan.peers
            .iter()
            .map(|(n, f)| (n.to_string(), matches!(f, Found::Peer(_))))
            .collect()
    }

    #[test]
    fn scan_reads_peer_files_and_reports_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("c2.yaml"), PEER).unwrap();
        std::fs::write(d.join("c3.yml"), PEER).unwrap();
        std::fs::write(d.join("c3.yaml"), PEER).unwrap();
        std::fs::write(d.join("c4.yaml"), "address: [").unwrap();
        std::fs::write(d.join("Bad_Name.yaml"), PEER).unwrap();
        std::fs::write(d.join("ca.crt"), "not a peer").unwrap();
        std::fs::write(d.join(".hidden.yaml"), PEER).unwrap();
        std::fs::create_dir(d.join("c5.yaml")).unwrap();

        let scan = scan(d).unwrap();
        assert_eq!(
            names(&scan),
            vec![
                ("c2".to_string(), true),
                ("c3".to_string(), true),
                ("c4".to_string(), false)
            ]
        );
        let Some(Found::Peer(c3)) = scan.peers.get(&ClusterName::new("c3").unwrap()) else {
            panic!("c3 is a peer");
        };
        // `c3.yaml` sorts before `c3.yml` and wins.
        assert_eq!(c3.config.tls.ca, d.join("ca.crt"));
        let problems = scan.problems.join("\n");
        assert_eq!(scan.problems.len(), 3, "{problems}");
        assert!(problems.contains("Bad_Name.yaml: ignored: the file name is not a cluster name"));
        assert!(problems.contains("c3.yml: ignored: another file already names cluster c3"));
        assert!(problems.contains(&format!("peer file {}", d.join("c4.yaml").display())));
    }

    #[test]
    fn scan_of_a_missing_directory_fails() {
        assert!(scan(Path::new("/nonexistent/remotes")).is_err());
    }

    fn mk_file(name: &str, content: &str) -> PeerFile {
        let path = PathBuf::from(format!("/r/{name}.yaml"));
        PeerFile {
            config: PeerConfig::parse(PEER, &path).unwrap(),
            hash: Sha256::digest(content.as_bytes()).into(),
        }
    }

    fn describe(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Add(f) => format!("add {}", f.config.name),
                Action::Replace(f) => format!("replace {}", f.config.name),
                Action::Remove(n) => format!("remove {n}"),
            })
            .collect()
    }

    #[test]
    fn plan_adds_replaces_removes_and_keeps_unusable_peers() {
        let name = |s: &str| ClusterName::new(s).unwrap();
        let running: BTreeMap<ClusterName, ContentHash> = [
            (name("same"), mk_file("same", "1").hash),
            (name("changed"), mk_file("changed", "1").hash),
            (name("gone"), mk_file("gone", "1").hash),
            (name("broken"), mk_file("broken", "1").hash),
        ]
        .into();
        let mut scan = Scan::default();
        for (n, content) in [("same", "1"), ("changed", "2"), ("new", "1")] {
            scan.peers.insert(name(n), Found::Peer(mk_file(n, content)));
        }
        scan.peers.insert(name("broken"), Found::Unusable);
        assert_eq!(
            describe(&plan(&running, scan)),
            vec!["remove gone", "replace changed", "add new"]
        );
        assert!(plan(&BTreeMap::new(), Scan::default()).is_empty());
    }
}
