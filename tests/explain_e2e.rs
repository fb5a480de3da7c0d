//! `explain service` against a real three-cluster mesh (apiservers over mutual TLS, an
//! agent, its HTTP API): the affinity, failover, `shared: false` and stale-withdrawal
//! cases, each asserted on the explanation's verdicts.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use fleetmesh::mesh::SelectionReason;
use fleetmesh::model::ServiceName;
use fleetmesh::observe::{AgentClient, ServiceExplanation, Verdict};
use support::mesh::{MeshPki, global_service_yaml, start_manifest_member};

const TIMEOUT: Duration = Duration::from_secs(20);

/// c1's services; `aff_ready`: whether its backend of `web/aff` is ready.
fn c1_manifests(aff_ready: bool) -> String {
    [
        global_service_yaml(
            "aff",
            &[("service.cilium.io/affinity", "local")],
            &[("10.1.0.1", aff_ready)],
        ),
        global_service_yaml(
            "solo",
            &[("service.cilium.io/shared", "false")],
            &[("10.1.0.5", true)],
        ),
        global_service_yaml("gone", &[], &[("10.1.0.7", true)]),
    ]
    .join("\n---\n")
}

/// Asks until `done` holds of the explanation of `web/<name>`; returns it.
async fn explain_until(
    client: &AgentClient,
    name: &str,
    what: &str,
    done: impl Fn(&ServiceExplanation) -> bool,
) -> ServiceExplanation {
    let svc: ServiceName = format!("web/{name}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let answer = client.explain_service(&svc).await;
        if let Ok(e) = &answer
            && done(e)
        {
            return answer.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last answer: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The verdict on `ip` of `cluster`.
fn verdict(e: &ServiceExplanation, cluster: &str, ip: &str) -> Option<Verdict> {
    e.backends
        .iter()
        .find(|b| b.cluster == cluster && b.ip.to_string() == ip)
        .map(|b| b.verdict)
}

#[tokio::test]
async fn explain_tells_affinity_failover_shared_false_and_stale_withdrawal() {
    let pki = MeshPki::new();
    let (c1, c1_dir) = start_manifest_member(&pki, "c1", 1, Some(&c1_manifests(true))).await;
    let c2_services = [
        global_service_yaml(
            "aff",
            &[("service.cilium.io/affinity", "local")],
            &[("10.2.0.1", true)],
        ),
        global_service_yaml("solo", &[], &[("10.2.0.5", true)]),
    ]
    .join("\n---\n");
    let (c2, _) = start_manifest_member(&pki, "c2", 2, Some(&c2_services)).await;
    let (c3, _) = start_manifest_member(
        &pki,
        "c3",
        3,
        Some(&global_service_yaml("gone", &[], &[("10.3.0.7", true)])),
    )
    .await;

    let peers = [("c1", &c1), ("c2", &c2), ("c3", &c3)].map(|(n, m)| (n, m.grpc_addr.unwrap()));
    let agent = support::mesh::start_agent(&pki, "c1", 1, &peers, "staleGraceSeconds: 1\n").await;
    let client = AgentClient::new(&format!("http://{}", agent.api_addr)).unwrap();

    // Affinity local with a ready local backend: the local one, the remote one not.
    let e = explain_until(&client, "aff", "both clusters of web/aff", |e| {
        e.backends.len() == 2
    })
    .await;
    assert_eq!(e.chosen, SelectionReason::LocalReady);
    assert_eq!(verdict(&e, "c1", "10.1.0.1"), Some(Verdict::Selected));
    assert_eq!(
        verdict(&e, "c2", "10.2.0.1"),
        Some(Verdict::OtherClassChosen)
    );
    let why = &e.backends.iter().find(|b| b.cluster == "c2").unwrap().why;
    assert!(why.contains("affinity local"), "{why}");

    // The local backend stops being ready: failover to the remote one.
    std::fs::write(c1_dir.join("web.yaml"), c1_manifests(false)).unwrap();
    let e = explain_until(&client, "aff", "the failover of web/aff", |e| {
        e.chosen == SelectionReason::FailoverToRemote
    })
    .await;
    assert_eq!(verdict(&e, "c1", "10.1.0.1"), Some(Verdict::NotReady));
    assert_eq!(verdict(&e, "c2", "10.2.0.1"), Some(Verdict::Selected));

    // shared: false here: the local backends still serve this cluster, and say so.
    let e = explain_until(&client, "solo", "both clusters of web/solo", |e| {
        e.backends.len() == 2
    })
    .await;
    let c1_note = e.clusters.iter().find(|c| c.cluster == "c1").unwrap();
    assert!(!c1_note.shared);
    assert_eq!(verdict(&e, "c1", "10.1.0.5"), Some(Verdict::Selected));
    assert_eq!(verdict(&e, "c2", "10.2.0.5"), Some(Verdict::Selected));

    // c3 goes away: after the grace period its backend is withdrawn, with the time.
    explain_until(&client, "gone", "both clusters of web/gone", |e| {
        e.backends.len() == 2
    })
    .await;
    c3.stop(Duration::from_millis(500)).await;
    let e = explain_until(&client, "gone", "c3's withdrawal", |e| {
        verdict(e, "c3", "10.3.0.7") == Some(Verdict::StaleWithdrawn)
    })
    .await;
    let c3_note = e.clusters.iter().find(|c| c.cluster == "c3").unwrap();
    assert!(c3_note.withdrawn && c3_note.stale_since_unix_ms.is_some());
    let why = &e.backends.iter().find(|b| b.cluster == "c3").unwrap().why;
    assert!(why.contains("stale since 20"), "{why}");
    assert_eq!(verdict(&e, "c1", "10.1.0.7"), Some(Verdict::Selected));
    drop((c1, c2, agent));
}
