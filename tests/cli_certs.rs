//! `fleetmesh certs ca` and `certs issue` write files the TLS loader accepts, naming the
//! cluster as the mesh expects; re-running `ca` keeps the CA.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use fleetmesh::tls::{TlsFiles, identity::peer_cluster, load_client_config, load_server_config};

fn fleetmesh(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fleetmesh {args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[test]
fn a_ca_and_leaves_from_the_command_line_load_and_name_their_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fleetmesh(&["certs", "ca", "--out", "ca"], d);
    let ca_before = std::fs::read(d.join("ca/ca.crt")).unwrap();
    let again = fleetmesh(&["certs", "ca", "--out", "ca"], d);
    assert!(again.contains("kept the existing CA"), "{again}");
    assert_eq!(std::fs::read(d.join("ca/ca.crt")).unwrap(), ca_before);

    fleetmesh(
        &[
            "certs",
            "issue",
            "--ca-dir",
            "ca",
            "--cluster",
            "east",
            "--role",
            "server",
            "--dns",
            "apiserver.east",
            "--ip",
            "127.0.0.1",
            "--out",
            "east",
        ],
        d,
    );
    fleetmesh(
        &[
            "certs",
            "issue",
            "--ca-dir",
            "ca",
            "--cluster",
            "west",
            "--role",
            "client",
            "--out",
            "west",
        ],
        d,
    );
    let server = TlsFiles {
        cert: d.join("east/server-east.crt"),
        key: d.join("east/server-east.key"),
        ca: d.join("ca/ca.crt"),
    };
    let client = TlsFiles {
        cert: d.join("west/client-west.crt"),
        key: d.join("west/client-west.key"),
        ca: d.join("ca/ca.crt"),
    };
    load_server_config(&server).unwrap();
    load_client_config(&client).unwrap();
    assert_eq!(peer_cluster(&der(&server.cert)).unwrap().as_str(), "east");
    assert_eq!(peer_cluster(&der(&client.cert)).unwrap().as_str(), "west");
}

#[test]
fn issuing_without_a_ca_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args([
            "certs",
            "issue",
            "--ca-dir",
            "missing",
            "--cluster",
            "east",
            "--role",
            "client",
            "--out",
            "x",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing"), "{stderr}");
}

#[test]
fn a_validity_of_zero_days_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fleetmesh(&["certs", "ca", "--out", "ca"], dir.path());
    for args in [
        &[
            "certs",
            "issue",
            "--ca-dir",
            "ca",
            "--cluster",
            "east",
            "--role",
            "client",
        ][..],
        &["certs", "ca"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
            .args(args)
            .args(["--out", "leaf", "--days", "0"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} --days 0 succeeded");
        assert!(
            stderr.contains("--days") && stderr.contains("must be at least 1"),
            "{stderr}"
        );
        assert!(!dir.path().join("leaf").exists());
    }
}
