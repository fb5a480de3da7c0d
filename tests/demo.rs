//! `fleetmesh demo` is the README's first command: it must exit 0 and show the failover.

use std::process::Command;

#[test]
fn the_demo_shows_the_failover_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .arg("demo")
        .env("FLEETMESH_LOG", "warn")
        .output()
        .expect("cannot run fleetmesh demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "3/3 links ready",
        "local ready",
        "failover to remote: no local backend ready",
        "10.245.1.10,10.245.1.11",
        "fail-back to local backends",
        "demo complete",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
}
