//! Fault suite: every member's certificates rotated under churn, the way the README's
//! rotation CronJob does it (`fleetmesh certs rotate` over a member's certificates), with
//! apiservers and agents reloading their files every second. Established watch streams
//! carry on with the material they were made with, so the agent of another member must
//! see no flap, count no link failure and no reconnection, and converge exactly; a link
//! made after the rotation must present the new certificates on both ends.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use fleetmesh::mesh::PeerStatus;
use fleetmesh::observe::AgentClient;
use support::fleet::{Fleet, FleetStore};
use support::oracle;

const NAMES: [&str; 3] = ["c1", "c2", "c3"];
const CHURN_PERIOD: Duration = Duration::from_millis(300);
/// Both sides look at their files this often (`tlsReloadSeconds`).
const RELOAD: Duration = Duration::from_secs(1);
/// The rotated leaves' lifetime: the planned ones live a year, so a link that shows a
/// certificate expiring within this many days shows a rotated one.
const ROTATED_DAYS: u64 = 90;

async fn links(client: &AgentClient) -> Vec<PeerStatus> {
    client.status().await.unwrap().peers
}

/// Renews every leaf of `member` with the fleet's CA, as the rotation CronJob does.
fn rotate(fleet: &Fleet, member: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args(["certs", "rotate", "--dir"])
        .arg(fleet.member(member).dir.join("certs"))
        .arg("--ca-dir")
        .arg(fleet.out.join(fleetmesh::fleet::CA_DIR))
        .args(["--within-days", "400", "--days", &ROTATED_DAYS.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certs rotate of {member} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Days from now until an RFC 3339 `not_after`.
fn days_left(not_after: &str) -> i64 {
    let not_after =
        time::OffsetDateTime::parse(not_after, &time::format_description::well_known::Rfc3339)
            .unwrap();
    (not_after - time::OffsetDateTime::now_utc()).whole_days()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_every_certificate_under_churn_breaks_no_link_and_flaps_nothing() {
    let reload = format!("tlsReloadSeconds: {}\n", RELOAD.as_secs());
    let mut fleet = Fleet::plan(&NAMES, &FleetStore::Memory, &reload);
    for name in NAMES {
        let path = fleet.member(name).dir.join("apiserver.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("grpc:\n"), "{text}");
        let text = text.replace("grpc:\n", &format!("grpc:\n  {reload}"));
        std::fs::write(&path, text).unwrap();
    }
    let client = oracle::start_converged(&mut fleet, &NAMES, "c1").await;
    let before = links(&client).await;
    assert_eq!(before.len(), NAMES.len(), "{before:?}");

    let (flaps, churn) = oracle::flaps_under_churn(&fleet, &NAMES, "c1", CHURN_PERIOD);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for name in NAMES {
        rotate(&fleet, name);
    }
    // Every side reloads its new files while the churn goes on.
    tokio::time::sleep(RELOAD * 3).await;
    let (generation, converged) = oracle::stop_and_converge(churn, &client, &NAMES, 10).await;
    flaps
        .finish()
        .assert_none(20, "across a certificate rotation");
    for (was, now) in before.iter().zip(links(&client).await) {
        assert_eq!(
            (now.failures, now.reconnects, now.full_resyncs),
            (was.failures, was.reconnects, was.full_resyncs),
            "the rotation broke c1's link to {}: {now:?}",
            now.cluster
        );
        assert!(now.ready, "{now:?}");
    }

    // A link made now meets the rotated certificates: c2's new agent presents its new
    // client certificate to every apiserver, each of which serves its new one.
    fleet.start_agent("c2").await;
    let fresh = fleet.member("c2").agent_client();
    support::wait_until_async("c2's agent to have every link ready", || async {
        links(&fresh).await.iter().all(|link| link.ready)
    })
    .await;
    for link in links(&fresh).await {
        let not_after = link.peer_cert_not_after.clone().unwrap();
        assert!(
            days_left(&not_after) <= ROTATED_DAYS as i64,
            "{}'s apiserver still serves its planned certificate (expires {not_after})",
            link.cluster
        );
        let own = link.own_cert_not_after.clone().unwrap();
        assert!(
            days_left(&own) <= ROTATED_DAYS as i64,
            "c2's agent still presents its planned certificate (expires {own})"
        );
    }
    println!(
        "rotated every member's certificates under churn: no link failure, no reconnection, \
         converged {converged:?} after the churn stopped at generation {generation}; no flap"
    );
}
