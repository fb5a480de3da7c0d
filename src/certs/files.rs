//! PEM files on disk, written atomically: a watcher polling them sees either the old or
//! the new content, never half a file.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{CertError, IssuedCert};

/// Mode of certificate and trust-bundle files: certificates are public.
pub const CERT_MODE: u32 = 0o644;
/// Mode of private-key files: readable by their owner only.
pub const KEY_MODE: u32 = 0o600;

/// Makes temporary file names unique between threads of one process (the pid separates
/// processes).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Where [`write_pem_files`] put a leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes `issued` as `<dir>/<name>.crt` and `<dir>/<name>.key` (mode 0600), creating
/// `dir` if needed. The key is written first, so a watcher that sees the new certificate
/// finds its key already in place.
pub fn write_pem_files(dir: &Path, name: &str, issued: &IssuedCert) -> Result<PemFiles, CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = PemFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    write_atomic(&files.key, issued.key_pem.as_bytes(), KEY_MODE)?;
    write_atomic(&files.cert, issued.cert_pem.as_bytes(), CERT_MODE)?;
    Ok(files)
}

/// Writes `contents` to `path` through a temporary file in the same directory and a
/// rename, which replaces the old file in one step. The file's data is synced before the
/// rename; the directory is not, so after a crash the old file may come back — whole.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    // Errors name the file the caller asked for; the temporary file is ours.
    let write_error = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let Some(file_name) = path.file_name() else {
        let source = io::Error::new(io::ErrorKind::InvalidInput, "not a file path");
        return Err(write_error(source));
    };
    let temp = path.with_file_name(format!(
        ".{}.{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_new(&temp, contents, mode)
        .and_then(|()| fs::rename(&temp, path))
        .map_err(write_error);
    if result.is_err() {
        // Best effort: the error that matters is the one returned.
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Creates `path` with `mode` (`create_new`, so the mode applies: an existing file would
/// keep its own) and syncs its data.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// File names of a CA kept in a directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

/// Writes `ca` as `<dir>/ca.crt` and `<dir>/ca.key` (mode 0600).
pub fn write_ca(dir: &Path, ca: &super::Ca) -> Result<PemFiles, CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = PemFiles {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
    };
    write_atomic(&files.key, ca.key_pem().as_bytes(), KEY_MODE)?;
    write_atomic(&files.cert, ca.cert_pem().as_bytes(), CERT_MODE)?;
    Ok(files)
}

/// Reads the CA that [`write_ca`] wrote into `dir`.
pub fn load_ca(dir: &Path) -> Result<super::Ca, CertError> {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(|source| CertError::Read { path, source })
    };
    super::Ca::from_pem(&read(CA_CERT_FILE)?, &read(CA_KEY_FILE)?)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;
    use crate::certs::Ca;
    use crate::model::ClusterName;

    #[test]
    fn leaf_files_hold_the_pem_and_the_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca", Duration::from_secs(3600)).unwrap();
        let east = ClusterName::new("east").unwrap();
        let leaf = ca.issue_client(&east, Duration::from_secs(3600)).unwrap();
        let sub = dir.path().join("certs");
        let files = write_pem_files(&sub, "client", &leaf).unwrap();
        assert_eq!(files.cert, sub.join("client.crt"));
        assert_eq!(fs::read_to_string(&files.cert).unwrap(), leaf.cert_pem);
        assert_eq!(fs::read_to_string(&files.key).unwrap(), leaf.key_pem);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.key), KEY_MODE);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn write_atomic_replaces_and_keeps_the_mode_it_was_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls.key");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        write_atomic(&path, b"new", KEY_MODE).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            KEY_MODE
        );
    }

    #[test]
    fn write_atomic_names_the_file_it_could_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("ca.crt");
        let err = write_atomic(&path, b"x", CERT_MODE).unwrap_err();
        assert!(err.to_string().ends_with("missing-dir/ca.crt"), "{err}");
    }
}
