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

#[test]
fn the_demo_keeps_running_for_a_look_until_it_is_stopped() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args(["demo", "--keep-running"])
        .env("FLEETMESH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run fleetmesh demo");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    // The demo prints the status command with the agent's URL once the mesh is up.
    let agent = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the demo ended before it offered a look:\n{seen:#?}"))
            .expect("stdout reads");
        if let Some(rest) = line.trim().strip_prefix("fleetmesh status   --agent ") {
            break rest.to_string();
        }
        seen.push(line);
    };
    assert!(
        seen.iter().any(|l| l.contains("demo complete")),
        "{seen:#?}"
    );

    let status = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args(["status", "--agent", &agent])
        .output()
        .expect("cannot run fleetmesh status");
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{table}");
    assert!(table.contains("3/3 links ready"), "{table}");

    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().expect("the demo exits");
    assert!(exit.success(), "{exit:?}: {rest:#?}");
    assert!(rest.iter().any(|l| l.contains("stopping")), "{rest:#?}");
}
