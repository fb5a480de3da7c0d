//! What the binary writes where it is redirected, as in a Kubernetes log or a file: no
//! ANSI escape codes, JSON lines on request, a bench without its progress line — and a
//! SIGTERM that ends an apiserver with exit code 0.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a started apiserver is given to log its start before it is stopped.
const STARTED_WITHIN: Duration = Duration::from_secs(20);

/// An apiserver on the embedded store with one manifest, no gRPC, health on a free port.
fn mk_apiserver_config(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir(dir.join("manifests")).unwrap();
    std::fs::write(
        dir.join("manifests/ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: web}\n",
    )
    .unwrap();
    let path = dir.join("apiserver.yaml");
    std::fs::write(
        &path,
        "cluster: {name: c1, id: 1}\nsource: {manifests: manifests}\nhealth: {listen: \"127.0.0.1:0\"}\n",
    )
    .unwrap();
    path
}

/// Starts `fleetmesh apiserver` with stderr to a pipe, waits until it has logged that it
/// started (read from the pipe as it comes), sends SIGTERM and collects everything.
fn run_and_terminate(config: &Path, extra_args: &[&str]) -> Output {
    let stderr_file = config.with_file_name("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args(extra_args)
        .args(["apiserver", "--config"])
        .arg(config)
        .env_remove("FLEETMESH_LOG")
        .env_remove("FLEETMESH_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .unwrap();
    wait_for_text(&stderr_file, "apiserver started", &child);
    terminate(&child);
    let mut output = child.wait_with_output().unwrap();
    output.stderr = std::fs::read(&stderr_file).unwrap();
    output
}

fn wait_for_text(file: &Path, text: &str, child: &Child) {
    let deadline = Instant::now() + STARTED_WITHIN;
    while !std::fs::read_to_string(file).unwrap().contains(text) {
        assert!(
            Instant::now() < deadline,
            "process {} did not log {text:?}: {}",
            child.id(),
            std::fs::read_to_string(file).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {} failed", child.id());
}

#[test]
fn logs_to_a_pipe_carry_no_escape_codes_and_sigterm_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = mk_apiserver_config(dir.path());
    let out = run_and_terminate(&config, &[]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(!stderr.contains('\x1b'), "escape codes in {stderr:?}");
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(
        stderr.contains("SIGTERM"),
        "the stop names its signal: {stderr}"
    );
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[test]
fn json_log_lines_parse_with_level_target_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    let config = mk_apiserver_config(dir.path());
    let out = run_and_terminate(&config, &["--log-format", "json"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 3, "{stderr}");
    let mut messages = Vec::new();
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON line: {line:?}: {err}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["target"].is_string(), "{line}");
        let message = value["fields"]["message"].as_str();
        messages.push(
            message
                .unwrap_or_else(|| panic!("no fields.message: {line}"))
                .to_string(),
        );
    }
    assert!(
        messages.iter().any(|m| m == "apiserver started"),
        "{messages:?}"
    );
    assert!(messages.iter().any(|m| m == "stopped"), "{messages:?}");
}

#[test]
fn the_environment_chooses_json_too() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args([
            "fleet",
            "plan",
            "/nonexistent/profile.yaml",
            "--out",
            "/nonexistent/out",
        ])
        .env("FLEETMESH_LOG_FORMAT", "json")
        .env("FLEETMESH_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    // The error itself is the command's answer, not a log line; every log line is JSON.
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    assert!(stderr.contains("/nonexistent/profile.yaml"), "{stderr}");
}

#[test]
fn a_bench_redirected_to_a_file_prints_only_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.txt");
    let out = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args(["bench", "sync", "--endpoints", "2000", "--agents", "2"])
        .env_remove("FLEETMESH_LOG")
        .stdout(std::fs::File::create(&file).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr.txt")).unwrap())
        .output()
        .unwrap();
    let stdout = std::fs::read_to_string(&file).unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.is_empty());
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains('\r'),
            "a progress line went to a file: {text:?}"
        );
        assert!(!text.contains('\x1b'), "escape codes in a file: {text:?}");
    }
    // Its own INFO logs stay out of the way by default.
    assert!(!stderr.contains("INFO"), "{stderr}");
}
