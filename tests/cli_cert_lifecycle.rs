//! The certificate lifecycle from the command line, as a CronJob runs it: `certs rotate`
//! (nothing to do, then forced), `rotate-ca`, `retire-ca`, each re-run safely, and
//! `certs inspect -o json` showing the state after each step.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn fleetmesh(args: &[&str], dir: &Path) -> String {
    let out = run(args, dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fleetmesh {args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `certs inspect certs/east -o json`: (file name, subject, issuer) per certificate.
fn inspect(dir: &Path) -> Vec<(String, String, String)> {
    let json: serde_json::Value = serde_json::from_str(&fleetmesh(
        &["certs", "inspect", "certs/east", "-o", "json"],
        dir,
    ))
    .unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let file = Path::new(c["path"].as_str().unwrap()).file_name().unwrap();
            (
                file.to_string_lossy().into_owned(),
                c["subject"].as_str().unwrap().to_string(),
                c["issuer"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn rotate_rotate_ca_and_retire_ca_are_safe_to_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fleetmesh(&["certs", "ca", "--out", "ca", "--name", "first CA"], d);
    let issue = |role: &str, extra: &[&str]| {
        let mut args = vec![
            "certs",
            "issue",
            "--ca-dir",
            "ca",
            "--cluster",
            "east",
            "--role",
            role,
            "--out",
            "certs/east",
        ];
        args.extend_from_slice(extra);
        fleetmesh(&args, d);
    };
    issue("server", &["--dns", "apiserver.east"]);
    issue("client", &[]);
    std::fs::copy(d.join("ca/ca.crt"), d.join("certs/east/ca.crt")).unwrap();

    let rotate = ["certs", "rotate", "--dir", "certs", "--ca-dir", "ca"];
    let out = fleetmesh(&rotate, d);
    assert!(out.contains("nothing to do"), "{out}");
    let forced = [&rotate[..], &["--within-days", "400"]].concat();
    let out = fleetmesh(&forced, d);
    assert_eq!(out.matches("renewed ").count(), 2, "{out}");

    let rollover = ["certs", "rotate-ca", "--ca-dir", "ca", "--dir", "certs"];
    let out = fleetmesh(&rollover, d);
    assert!(out.contains("new CA in ca"), "{out}");
    let certs = inspect(d);
    assert_eq!(certs.len(), 4, "{certs:?}");
    assert_eq!(certs[0].1, "CN=first CA");
    let new_ca = certs[1].1.clone();
    assert!(new_ca.starts_with("CN=fleetmesh CA "), "{certs:?}");
    assert!(certs[2..].iter().all(|c| c.2 == new_ca), "{certs:?}");
    let out = fleetmesh(&rollover, d);
    assert!(out.contains("continuing the CA rollover"), "{out}");
    assert_eq!(inspect(d), certs);

    let retire = ["certs", "retire-ca", "--ca-dir", "ca", "--dir", "certs"];
    let out = fleetmesh(&retire, d);
    assert!(out.contains("deleted the old CA"), "{out}");
    let certs = inspect(d);
    assert_eq!(certs.len(), 3, "{certs:?}");
    assert_eq!(certs[0].1, new_ca);
    let out = fleetmesh(&retire, d);
    assert!(out.contains("nothing to do"), "{out}");

    // The table form names the cluster and the bundle that trusts each leaf.
    let table = fleetmesh(&["certs", "inspect", "certs/east/server-east.crt"], d);
    assert!(table.contains("cluster:    east"), "{table}");
    assert!(table.contains("trusted by: certs/east/ca.crt"), "{table}");

    // A CA that did not sign the leaves is refused, and nothing is rewritten.
    fleetmesh(&["certs", "ca", "--out", "other"], d);
    let before = std::fs::read(d.join("certs/east/server-east.crt")).unwrap();
    let out = run(
        &[
            "certs",
            "rotate",
            "--dir",
            "certs",
            "--ca-dir",
            "other",
            "--within-days",
            "400",
        ],
        d,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong --ca-dir"));
    assert_eq!(
        std::fs::read(d.join("certs/east/server-east.crt")).unwrap(),
        before
    );
}
