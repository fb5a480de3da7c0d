//! The idle etcd watchers of `bench memory`: etcd clients, each with its own connection,
//! that do on the apiserver's etcd API what a Cilium agent does on a remote cluster's
//! etcd — read the cluster config, list each prefix, then open one watch per prefix on
//! one stream, each created only once the one before is — and then sit idle.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions, WatchOptions,
    WatchStream,
};

use super::probe::ProbePeer;
use crate::bench::correctness::Correctness;
use crate::bench::workload::encode;
use crate::tls::TlsFiles;

/// How long a watcher may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The prefixes a Cilium agent watches on a remote cluster `source`'s etcd (see
/// `cilium-etcd-surface.md`, "Agent prefixes", direct): heartbeat, synced canaries,
/// nodes, services, service exports, ipcache and identities.
pub fn cilium_prefixes(source: &str) -> Vec<String> {
    vec![
        "cilium/.heartbeat".to_string(),
        format!("cilium/synced/{source}/"),
        format!("cilium/state/nodes/v1/{source}/"),
        format!("cilium/state/services/v1/{source}/"),
        format!("cilium/state/serviceexports/v1/{source}/"),
        "cilium/state/ip/v1/default/".to_string(),
        "cilium/state/identities/v1/id".to_string(),
    ]
}

/// One open client: its connection and its watch stream stay open while it is held.
pub struct IdleWatcher {
    _client: Client,
    _stream: WatchStream,
    /// Keys listed under each prefix.
    listed: BTreeMap<String, usize>,
}

/// Opens `count` watchers of `source`'s state on the etcd API at `source.address`, one
/// after the other (as agents come up), with the client certificate `tls`.
pub async fn open_watchers(
    source: &ProbePeer,
    count: u32,
    tls: &TlsFiles,
) -> anyhow::Result<Vec<IdleWatcher>> {
    let options = connect_options(tls)?;
    let endpoint = format!("https://{}", source.address);
    let prefixes = cilium_prefixes(&source.name);
    let mut watchers = Vec::with_capacity(count as usize);
    for i in 0..count {
        let watcher = open(&endpoint, &options, &source.name, &prefixes)
            .await
            .with_context(|| format!("etcd watcher {i} of {count} at {endpoint}"))?;
        watchers.push(watcher);
    }
    Ok(watchers)
}

/// Every watcher's listing compared with `source`'s state, prefix by prefix: a key
/// missing counts lost, one too many phantom.
pub fn check_watchers(watchers: &[IdleWatcher], source: &ProbePeer) -> anyhow::Result<Correctness> {
    let workload = source.workload()?;
    let mut expected: BTreeMap<String, usize> = cilium_prefixes(&source.name)
        .into_iter()
        .map(|p| (p, 0))
        .collect();
    for resource in &workload.resources {
        for (key, _) in encode(&workload.cluster, resource) {
            for (prefix, n) in expected.iter_mut() {
                if key.starts_with(prefix.as_str()) {
                    *n += 1;
                }
            }
        }
    }
    let mut correctness = Correctness::default();
    for watcher in watchers {
        for (prefix, want) in &expected {
            let got = watcher.listed.get(prefix).copied().unwrap_or(0);
            correctness.lost += want.saturating_sub(got) as u64;
            correctness.phantom += got.saturating_sub(*want) as u64;
        }
    }
    Ok(correctness)
}

async fn open(
    endpoint: &str,
    options: &ConnectOptions,
    source: &str,
    prefixes: &[String],
) -> anyhow::Result<IdleWatcher> {
    let mut client = Client::connect([endpoint], Some(options.clone()))
        .await
        .context("cannot connect")?;
    client
        .get(format!("cilium/cluster-config/{source}"), None)
        .await
        .context("cannot read the cluster config")?;
    let mut listed = BTreeMap::new();
    let mut revision = 0;
    for prefix in prefixes {
        let page = client
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .with_context(|| format!("cannot list {prefix}"))?;
        revision = page.header().map_or(revision, |h| h.revision());
        listed.insert(prefix.clone(), page.kvs().len());
    }
    let mut stream: Option<WatchStream> = None;
    for prefix in prefixes {
        let watch = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut open = match stream.take() {
            Some(mut open) => {
                open.watch(prefix.as_str(), Some(watch))
                    .await
                    .with_context(|| format!("cannot watch {prefix}"))?;
                open
            }
            None => client
                .watch(prefix.as_str(), Some(watch))
                .await
                .with_context(|| format!("cannot watch {prefix}"))?,
        };
        // The next create goes out only once this one is answered, as Cilium's do.
        let created = open
            .message()
            .await
            .with_context(|| format!("the watch of {prefix} failed"))?
            .with_context(|| format!("the watch stream ended creating {prefix}"))?;
        if !created.created() || created.canceled() {
            bail!("the watch of {prefix} was not created: {created:?}");
        }
        stream = Some(open);
    }
    Ok(IdleWatcher {
        _client: client,
        _stream: stream.context("no prefix to watch")?,
        listed,
    })
}

fn connect_options(tls: &TlsFiles) -> anyhow::Result<ConnectOptions> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(&tls.ca)?))
        .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
    Ok(ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(CONNECT_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cilium_s_prefixes_are_readable_by_the_remote_role() {
        use crate::etcd_api::KeyRange;
        use crate::etcd_api::ReadRules;
        let source = crate::model::ClusterName::new("c1").unwrap();
        let rules = ReadRules::remote(&source);
        for prefix in cilium_prefixes("c1") {
            assert!(rules.permits(&KeyRange::prefix(&prefix)), "{prefix}");
        }
    }
}
