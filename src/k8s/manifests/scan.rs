//! Which files of a manifest directory are read, and their fingerprint.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ManifestError;

/// Extensions of the files read (compared without case).
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];
/// How deep subdirectories are followed: symlinked directories can form a loop.
const MAX_DEPTH: usize = 16;

/// One file found in the directory, or why it could not be read.
#[derive(Debug)]
pub(super) struct ManifestFile {
    pub path: PathBuf,
    pub content: Result<Vec<u8>, String>,
}

/// A SHA-256 over every path and content, in path order: equal fingerprints mean nothing
/// was added, removed or changed.
pub(super) type Fingerprint = [u8; 32];

/// Reads every manifest file under `dir`, sorted by path. Entries whose name starts with
/// `.` are skipped: a ConfigMap volume keeps its real files under `..<timestamp>/` and
/// `..data/` and shows them through symlinks, which are followed, so each file is read
/// once. A file that vanishes between listing and reading is skipped as if listed later;
/// any other unreadable entry is kept with its error.
/// A file larger than `max_file_bytes` is not read: it is kept as an error naming its size
/// and the limit, so that no memory goes to a file that will be refused.
pub(super) fn scan(dir: &Path, max_file_bytes: u64) -> Result<Vec<ManifestFile>, ManifestError> {
    let entries = fs::read_dir(dir).map_err(|source| ManifestError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    walk(entries, 0, max_file_bytes, &mut files);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(entries: fs::ReadDir, depth: usize, limit: u64, files: &mut Vec<ManifestFile>) {
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            // The directory changed under us; the next scan sees it whole.
            Err(_) => continue,
        };
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let unreadable = |e: io::Error| ManifestFile {
            path: path.clone(),
            content: Err(e.to_string()),
        };
        // `fs::metadata` follows symlinks: what matters is what they point to.
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound && path.symlink_metadata().is_err() => {
                continue;
            }
            Err(e) => {
                files.push(unreadable(e));
                continue;
            }
        };
        if meta.is_dir() {
            if depth + 1 >= MAX_DEPTH {
                files.push(ManifestFile {
                    path,
                    content: Err(format!(
                        "directories nested deeper than {MAX_DEPTH} are not read"
                    )),
                });
                continue;
            }
            match fs::read_dir(&path) {
                Ok(sub) => walk(sub, depth + 1, limit, files),
                Err(e) => files.push(unreadable(e)),
            }
        } else if is_manifest(&path) {
            match read_limited(&path, meta.len(), limit) {
                Ok(content) => files.push(ManifestFile { path, content }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => files.push(unreadable(e)),
            }
        }
    }
}

/// The file's bytes, or the reason it is refused when it is over `limit` (checked before
/// reading, and again while reading, for a file that grows meanwhile).
fn read_limited(path: &Path, len: u64, limit: u64) -> io::Result<Result<Vec<u8>, String>> {
    let too_large = |size: String| {
        Err(format!(
            "the file is {size} bytes, over the limit of {limit} bytes per manifest file \
             (source.maxFileBytes); not read"
        ))
    };
    if len > limit {
        return Ok(too_large(len.to_string()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(too_large(format!("more than {limit}")));
    }
    Ok(Ok(bytes))
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

pub(super) fn fingerprint(files: &[ManifestFile]) -> Fingerprint {
    let mut hash = Sha256::new();
    // Every field is length-prefixed so that no two listings hash the same bytes.
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    for file in files {
        field(file.path.as_os_str().as_encoded_bytes());
        match &file.content {
            Ok(bytes) => {
                field(b"ok");
                field(bytes);
            }
            Err(e) => {
                field(b"err");
                field(e.as_bytes());
            }
        }
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_manifest_files_are_read_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::create_dir_all(root.join("..2024_01_01")).unwrap();
        for name in [
            "b.yaml",
            "a.YML",
            "sub/deeper/c.json",
            "notes.txt",
            ".hidden.yaml",
            "..2024_01_01/a.yaml",
        ] {
            fs::write(root.join(name), name).unwrap();
        }
        let files = scan(root, u64::MAX).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["a.YML", "b.yaml", "sub/deeper/c.json"]);
        assert_eq!(files[1].content.as_deref().unwrap(), b"b.yaml");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("big.yaml"), vec![b'#'; 101]).unwrap();
        fs::write(dir.path().join("small.yaml"), vec![b'#'; 100]).unwrap();
        let files = scan(dir.path(), 100).unwrap();
        let big = files[0].content.as_ref().unwrap_err();
        assert!(
            big.contains("101 bytes, over the limit of 100 bytes per manifest file"),
            "{big}"
        );
        assert_eq!(files[1].content.as_ref().map(Vec::len), Ok(100));
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = scan(&missing, u64::MAX).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn fingerprints_change_with_paths_and_contents() {
        let mk = |path: &str, content: &[u8]| ManifestFile {
            path: PathBuf::from(path),
            content: Ok(content.to_vec()),
        };
        let base = fingerprint(&[mk("a.yaml", b"x"), mk("b.yaml", b"y")]);
        assert_eq!(base, fingerprint(&[mk("a.yaml", b"x"), mk("b.yaml", b"y")]));
        assert_ne!(base, fingerprint(&[mk("a.yaml", b"x"), mk("b.yaml", b"z")]));
        assert_ne!(base, fingerprint(&[mk("a.yaml", b"x"), mk("c.yaml", b"y")]));
        assert_ne!(base, fingerprint(&[mk("a.yaml", b"xy")]));
    }
}
