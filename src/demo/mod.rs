//! `fleetmesh demo`: a three-cluster mesh in one process on loopback, with real mutual
//! TLS (certificates minted at start), embedded stores and the example manifests. It
//! shows the merged view of cluster1's agent, makes cluster1's checkout backends unready,
//! shows the failover to cluster2 and the fail-back, then exits. Wiring only.

mod manifests;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::agent::{Agent, AgentConfig};
use crate::apiserver::{Apiserver, ApiserverConfig};
use crate::mesh::{SelectionReason, ServiceView};
use crate::model::{ClusterName, ServiceName};
use crate::observe::{AgentClient, services_table, status_table, unix_ms_now};
use crate::remote::LinkSettings;
use crate::testkit::Pki;

/// Certificates of a demo outlive it, and stay outside `certs rotate`'s renewal window so
/// that the status it prints carries no expiry warnings.
const CERT_VALIDITY: Duration = Duration::from_secs(90 * 86_400);
/// How long any step may take before the demo calls it a failure.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
const CLUSTERS: [(&str, u32); 3] = [("cluster1", 1), ("cluster2", 2), ("cluster3", 3)];

/// Runs the demo in `workdir` (a fresh temporary directory when `None`). With
/// `keep_running`, the mesh stays up after the fail-back, with the commands to look at it
/// printed, until that future completes (Ctrl-C).
pub async fn run(
    workdir: Option<PathBuf>,
    keep_running: Option<impl Future<Output = ()>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let temp = tempfile::Builder::new()
        .prefix("fleetmesh-demo-")
        .tempdir()?;
    let dir = workdir.unwrap_or_else(|| temp.path().to_path_buf());
    println!("fleetmesh demo: three clusters on loopback, mutual TLS, embedded stores");
    println!("  files in {}", dir.display());

    let ca = mint_certificates(&dir)?;
    println!("[1/5] minted a CA and certificates for cluster1, cluster2 and cluster3");

    let mut apiservers = Vec::new();
    for (name, id) in CLUSTERS {
        let manifests = match name {
            "cluster1" => manifests::CLUSTER1,
            "cluster2" => manifests::CLUSTER2,
            _ => manifests::CLUSTER3,
        };
        write_manifests(&dir.join(name).join("manifests"), manifests)?;
        let config = apiserver_config(&dir, name, id)?;
        let mut apiserver = Apiserver::start(config)
            .await
            .with_context(|| format!("cannot start the apiserver of {name}"))?;
        within(STEP_TIMEOUT, apiserver.synced())
            .await
            .with_context(|| format!("the apiserver of {name} did not sync"))??;
        let addr = apiserver.grpc_addr.context("gRPC is not served")?;
        println!("      apiserver {name}: gRPC on {addr}, store synced");
        apiservers.push((name, apiserver));
    }
    println!("[2/5] three apiservers exported their manifests and serve them over mTLS");
    drop(ca);

    let remotes = dir.join("cluster1").join("remotes");
    std::fs::create_dir_all(&remotes)?;
    for (name, apiserver) in &apiservers {
        let addr = apiserver.grpc_addr.context("gRPC is not served")?;
        std::fs::write(
            remotes.join(format!("{name}.yaml")),
            format!(
                "address: \"{addr}\"\ntls:\n  ca: ../../certs/ca.crt\n  cert: ../../certs/client-cluster1.crt\n  key: ../../certs/client-cluster1.key\n"
            ),
        )?;
    }
    let agent_started = Instant::now();
    let agent = Agent::start(agent_config(&dir)?).await?;
    let client = AgentClient::new(&format!("http://{}", agent.api_addr))?;
    wait_for(STEP_TIMEOUT, "every link to be ready", || {
        let statuses = agent.statuses();
        statuses.len() == CLUSTERS.len() && statuses.iter().all(|s| s.ready)
    })
    .await?;
    println!(
        "[3/5] cluster1's agent (query API on http://{}) synced with all three apiservers in {} ms \
         ({} ms after the demo started)",
        agent.api_addr,
        agent_started.elapsed().as_millis(),
        started.elapsed().as_millis()
    );
    println!();
    print!("{}", status_table(&client.status().await?, unix_ms_now()));
    println!();
    print!("{}", services_table(&client.services().await?));
    println!();

    let checkout: ServiceName = "shop/checkout".parse()?;
    let selects = |cluster: &str, reason: SelectionReason| {
        let view = agent.view.read().service(&checkout, Instant::now());
        view.is_some_and(|v: ServiceView| {
            v.reason == reason
                && !v.selected.is_empty()
                && v.selected.iter().all(|b| b.cluster.as_str() == cluster)
        })
    };
    if !selects("cluster1", SelectionReason::LocalReady) {
        bail!("shop/checkout does not select cluster1's ready backends");
    }

    let shop = dir.join("cluster1/manifests/shop.yaml");
    let unready = manifests::shop_all_unready()
        .context("the example shop.yaml no longer has two ready checkout backends")?;
    std::fs::write(&shop, unready)?;
    let failing = Instant::now();
    println!("[4/5] cluster1's checkout pods fail their readiness probes (shop.yaml rewritten)");
    wait_for(STEP_TIMEOUT, "failover to cluster2", || {
        selects("cluster2", SelectionReason::FailoverToRemote)
    })
    .await?;
    println!(
        "      failover in {} ms: affinity local now selects cluster2's backends",
        failing.elapsed().as_millis()
    );
    println!();
    print!("{}", services_table(&[service(&client, &checkout).await?]));
    println!();

    let shop_ready = manifests::CLUSTER1
        .iter()
        .find(|(name, _)| *name == "shop.yaml")
        .map(|(_, text)| *text)
        .context("shop.yaml is missing")?;
    std::fs::write(&shop, shop_ready)?;
    let recovering = Instant::now();
    wait_for(STEP_TIMEOUT, "fail-back to cluster1", || {
        selects("cluster1", SelectionReason::LocalReady)
    })
    .await?;
    println!(
        "[5/5] cluster1's pods are ready again: fail-back to local backends in {} ms",
        recovering.elapsed().as_millis()
    );
    println!();
    println!("demo complete in {} ms", started.elapsed().as_millis());
    if let Some(until) = keep_running {
        print_what_to_try(&dir, &agent.api_addr.to_string());
        until.await;
        println!("stopping the demo mesh");
    }
    agent.stop().await;
    drop(apiservers);
    Ok(())
}

/// What `--keep-running` offers to look at while the mesh stays up.
fn print_what_to_try(dir: &Path, api: &str) {
    println!();
    println!("The mesh keeps running until Ctrl-C. cluster1's agent: http://{api}/ (status page)");
    println!("Try, in another terminal:");
    println!("  fleetmesh status   --agent http://{api}");
    println!("  fleetmesh services --agent http://{api}");
    println!("  fleetmesh lookup 10.245.1.10 --agent http://{api}");
    println!(
        "Edit the manifests under {} and watch the view follow.",
        dir.join("cluster1/manifests").display()
    );
}

async fn service(client: &AgentClient, name: &ServiceName) -> anyhow::Result<ServiceView> {
    client
        .services()
        .await?
        .into_iter()
        .find(|s| &s.name == name)
        .with_context(|| format!("the agent does not know {name}"))
}

/// A CA, and for each cluster a server certificate (127.0.0.1, localhost) and a client
/// certificate naming it, under `dir/certs`.
fn mint_certificates(dir: &Path) -> anyhow::Result<Pki> {
    let pki = Pki::in_dir(dir, "fleetmesh demo CA", CERT_VALIDITY)?;
    for (name, _) in CLUSTERS {
        let cluster = ClusterName::new(name)?;
        pki.server_files(&cluster)?;
        pki.client_files(&cluster)?;
    }
    Ok(pki)
}

fn write_manifests(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

fn apiserver_config(dir: &Path, name: &str, id: u32) -> anyhow::Result<ApiserverConfig> {
    let path = dir.join(name).join("apiserver.yaml");
    let text = format!(
        "cluster: {{name: {name}, id: {id}}}\n\
         store: {{kind: memory}}\n\
         identity: {{stateDir: state}}\n\
         source: {{manifests: manifests}}\n\
         grpc:\n  listen: \"127.0.0.1:0\"\n  tls: {{ca: ../certs/ca.crt, cert: ../certs/server-{name}.crt, key: ../certs/server-{name}.key}}\n\
         health: {{listen: \"127.0.0.1:0\"}}\n"
    );
    std::fs::write(&path, &text)?;
    Ok(ApiserverConfig::load(&path)?)
}

fn agent_config(dir: &Path) -> anyhow::Result<AgentConfig> {
    let path = dir.join("cluster1").join("agent.yaml");
    std::fs::write(
        &path,
        "cluster: {name: cluster1, id: 1}\nremotesDir: remotes\napi: {listen: \"127.0.0.1:0\"}\n",
    )?;
    let mut config = AgentConfig::load(&path)?;
    // Everything is local: retry fast so the demo never sits in a backoff.
    config.link = LinkSettings {
        backoff_max: Duration::from_secs(1),
        ..LinkSettings::default()
    };
    Ok(config)
}

async fn within<F: std::future::Future>(limit: Duration, f: F) -> anyhow::Result<F::Output> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {limit:?}"))
}

async fn wait_for(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}
