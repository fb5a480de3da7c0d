//! The container image of `scripts/image --local`: built FROM scratch around the binary
//! cargo built for the tests, it holds that binary and exactly the shared libraries `ldd`
//! lists for it, runs as a non-root user with the binary as its entrypoint, answers
//! `fleetmesh --help`, and serves an apiserver on the embedded store whose `/readyz` the
//! host reads. Runs with buildah's chroot isolation (no runc, no registry).

// The helpers unwrap what the checks need; clippy's allow-unwrap-in-tests covers only
// #[test] functions.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt::Debug;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the image puts the binary (its entrypoint).
const BINARY_IN_IMAGE: &str = "/usr/local/bin/fleetmesh";
/// The user the image runs as: numeric, so that Kubernetes' `runAsNonRoot` can check it.
const IMAGE_USER: &str = "65532:65532";
const IMAGE_UID: u32 = 65532;
/// `scripts/image`'s exit status when buildah is missing and cannot be installed.
const BUILDAH_UNAVAILABLE: i32 = 69;
/// How long the apiserver in the container may take to turn ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn buildah<S: AsRef<OsStr> + Debug>(args: &[S]) -> Output {
    Command::new("buildah")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run buildah {args:?}: {e}"))
}

/// `buildah args`, which must succeed; its stdout, trimmed.
fn buildah_ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let out = buildah(args);
    assert!(
        out.status.success(),
        "buildah {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The image this test built and the container it runs from it, removed when dropped.
struct Built {
    image: String,
    tags: Vec<String>,
    container: Option<String>,
    mounted: bool,
}

impl Drop for Built {
    fn drop(&mut self) {
        if let Some(container) = &self.container {
            if self.mounted {
                let _ = buildah(&["umount", container]);
            }
            let _ = buildah(&["rm", container]);
        }
        let mut rmi = vec!["rmi"];
        rmi.extend(self.tags.iter().map(String::as_str));
        let _ = buildah(&rmi);
    }
}

/// A process group (buildah, its chroot helper and fleetmesh), ended when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Builds the image with `scripts/image --local` around `binary`; `None` (after saying so
/// on the terminal) when buildah is missing and cannot be installed.
fn build_local_image(binary: &Path) -> Option<Built> {
    let image = format!("fleetmesh-image-test-{:016x}", rand::random::<u64>());
    let version = env!("CARGO_PKG_VERSION");
    let out = Command::new(repo().join("scripts/image"))
        .arg("--local")
        .env("FLEETMESH_BINARY", binary)
        .env("FLEETMESH_IMAGE", &image)
        .output()
        .expect("cannot run scripts/image");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(BUILDAH_UNAVAILABLE) {
        // Straight to stderr: libtest captures only print! and eprint!.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the_local_image_runs_the_apiserver_as_non_root: {}",
            stderr.trim()
        );
        return None;
    }
    let built = Built {
        tags: vec![format!("{image}:{version}"), format!("{image}:latest")],
        image,
        container: None,
        mounted: false,
    };
    assert!(
        out.status.success(),
        "scripts/image --local failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{}:{version} (and {}:latest): ",
            built.image, built.image
        )),
        "scripts/image prints the image's size:\n{stdout}"
    );
    Some(built)
}

/// The paths of the shared libraries and the loader `ldd` lists for `binary`.
fn ldd_paths(binary: &Path) -> BTreeSet<String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("cannot run ldd");
    assert!(out.status.success(), "ldd {}", binary.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [_, "=>", path, ..] => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// Every file and symlink under `root`, as absolute paths inside it.
fn files_under(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
            } else {
                let inside = path.strip_prefix(root).unwrap();
                found.insert(format!("/{}", inside.display()));
            }
        }
    }
    found
}

/// `buildah run` of the binary in `container` with `command`; the host's network, so its
/// ports are the host's.
fn run_args<'a>(container: &'a str, extra: &[&'a str], command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--isolation", "chroot", "--network", "host"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[container, "--", BINARY_IN_IMAGE]);
    args.extend_from_slice(command);
    args
}

/// `GET path` on loopback: the status code and the body, or `None` while nothing listens.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: fleetmesh\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    Some((status, body.to_string()))
}

/// The real user id of the fleetmesh process in the process group `group`.
fn fleetmesh_uid_in_group(group: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()? {
        let dir = entry.ok()?.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`: comm may hold spaces, so split after its ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let pgrp = tail.split_whitespace().nth(2);
        if !head.ends_with("(fleetmesh") || pgrp != Some(&group.to_string()) {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
        return uid.split_whitespace().next()?.parse().ok();
    }
    None
}

#[test]
fn the_local_image_runs_the_apiserver_as_non_root() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_fleetmesh"));
    let Some(mut built) = build_local_image(&binary) else {
        return;
    };
    let reference = format!("localhost/{}:{}", built.image, env!("CARGO_PKG_VERSION"));

    // The image's config: entrypoint, non-root user, OCI labels from Cargo.toml.
    let inspect: serde_json::Value =
        serde_json::from_str(&buildah_ok(&["inspect", "--type", "image", &reference])).unwrap();
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(config["Entrypoint"], serde_json::json!([BINARY_IN_IMAGE]));
    assert_eq!(config["User"], IMAGE_USER);
    let labels = &config["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        env!("CARGO_PKG_LICENSE")
    );
    assert_eq!(
        labels["org.opencontainers.image.source"],
        env!("CARGO_PKG_REPOSITORY")
    );

    // Its files: the binary, and exactly the libraries ldd lists (no shell, no tools).
    let container = buildah_ok(&["from", "--pull=never", &reference]);
    built.container = Some(container.clone());
    let root = PathBuf::from(buildah_ok(&["mount", &container]));
    built.mounted = true;
    let mut expected = ldd_paths(&binary);
    expected.insert(BINARY_IN_IMAGE.to_string());
    assert_eq!(files_under(&root), expected);
    buildah_ok(&["umount", &container]);
    built.mounted = false;

    let help = buildah_ok(&run_args(&container, &[], &["--help"]));
    for command in ["apiserver", "agent", "certs", "fleet"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }

    // An apiserver on the embedded store exporting the example manifests, mounted
    // read-only; its health port on the host's loopback.
    let dir = tempfile::tempdir().unwrap();
    let port = fleetmesh::testkit::free_port().unwrap();
    let config = dir.path().join("apiserver.yaml");
    std::fs::write(
        &config,
        format!(
            "cluster: {{name: cluster1, id: 1}}\nstore: {{kind: memory}}\n\
             source: {{manifests: manifests}}\nhealth: {{listen: 127.0.0.1:{port}}}\n"
        ),
    )
    .unwrap();
    let config_mount = format!("{}:/etc/fleetmesh/apiserver.yaml:ro", config.display());
    let manifests_mount = format!(
        "{}:/etc/fleetmesh/manifests:ro",
        repo().join("examples/manifests").display()
    );
    let args = run_args(
        &container,
        &["--volume", &config_mount, "--volume", &manifests_mount],
        &["apiserver", "--config", "/etc/fleetmesh/apiserver.yaml"],
    );
    let log = dir.path().join("apiserver.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new("buildah")
        .args(&args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("cannot run buildah run");
    let mut apiserver = Running { child, log };

    let deadline = Instant::now() + READY_TIMEOUT;
    let body = loop {
        if let Some(exit) = apiserver.child.try_wait().unwrap() {
            panic!("the apiserver exited ({exit}):\n{}", apiserver.log());
        }
        match http_get(port, "/readyz") {
            Some((200, body)) => break body,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "/readyz on 127.0.0.1:{port} not ready within {READY_TIMEOUT:?}:\n{}",
                    apiserver.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let keys: u32 = body
        .strip_prefix("ready: ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /readyz body {body:?}"));
    assert!(keys > 0, "the example manifests export keys: {body:?}");
    let uid = fleetmesh_uid_in_group(apiserver.child.id())
        .unwrap_or_else(|| panic!("no fleetmesh process in the group:\n{}", apiserver.log()));
    assert_eq!(uid, IMAGE_UID, "the apiserver's user id");
    drop(apiserver);
}

/// The Containerfile's final stage: what `scripts/image` builds when a registry is at
/// hand. Its runtime stage runs nothing (the base has no shell), runs as the same numeric
/// user with the same entrypoint as the local image, and its label defaults, for a build
/// by hand, are Cargo.toml's.
#[test]
fn the_containerfile_runtime_stage_matches_the_local_image_and_cargo_toml() {
    let text = std::fs::read_to_string(repo().join("Containerfile")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let runtime = &lines[last_from..];
    assert!(
        lines[..last_from].iter().any(|l| l.starts_with("FROM ")),
        "a build stage before the runtime stage"
    );
    assert_eq!(runtime[0], "FROM ${RUNTIME_IMAGE}");
    assert!(
        runtime.iter().all(|l| !l.starts_with("RUN ")),
        "the runtime stage runs nothing: {runtime:?}"
    );
    for expected in [
        format!("ARG VERSION={}", env!("CARGO_PKG_VERSION")),
        format!("ARG LICENSES={}", env!("CARGO_PKG_LICENSE")),
        format!("ARG SOURCE={}", env!("CARGO_PKG_REPOSITORY")),
        format!("COPY --from=build /src/target/release/fleetmesh {BINARY_IN_IMAGE}"),
        format!("USER {IMAGE_USER}"),
        format!("ENTRYPOINT [\"{BINARY_IN_IMAGE}\"]"),
    ] {
        assert!(
            runtime.contains(&expected.as_str()),
            "{expected:?} in {runtime:?}"
        );
    }
    for label in ["source", "version", "licenses"] {
        let label = format!("org.opencontainers.image.{label}=");
        assert!(
            runtime.iter().any(|l| l.contains(&label)),
            "{label} in {runtime:?}"
        );
    }
}
