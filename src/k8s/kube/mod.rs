//! The kube source: a live cluster's objects, list-watched through the Kubernetes API and
//! converted by [`crate::k8s::convert`] like the manifest directory's.
//!
//! - Services, EndpointSlices (`discovery.k8s.io/v1`) and Namespaces are always watched.
//! - Identities, ipcache entries and nodes come from Cilium's `CiliumIdentity`,
//!   `CiliumEndpoint` and `CiliumNode` when the API server serves them (asked once, at
//!   start, through discovery), as Cilium's clustermesh-apiserver reads them; from Pods
//!   and Nodes otherwise. The kube source decides by what the API server serves, even
//!   when no Cilium object exists yet; the manifest source (see
//!   [`crate::k8s::manifests`]) decides by what the directory holds: any Cilium object.
//! - Where Cilium runs, `CiliumEndpointSlice` (`cilium.io/v2alpha1`) replaces
//!   CiliumEndpoints as the source of ipcache entries when the API server serves it (or
//!   when [`KubeOptions::endpoint_slices`] forces it on; forced off, CiliumEndpoints are
//!   read), as Cilium's apiserver does with `--enable-cilium-endpoint-slice`: one watch
//!   event per slice of up to 100 endpoints instead of one per endpoint.
//! - `ServiceExport` (`multicluster.x-k8s.io/v1alpha1`) is watched when MCS-API exports
//!   are on ([`KubeOptions::service_exports`]) and the API server serves it; otherwise no
//!   watcher starts, and a log line says why.
//! - Nothing is published until every watched kind has completed its initial list, so the
//!   first [`Snapshot`] is the cluster's full state and the export that follows it marks
//!   the apiserver ready. Changes are then gathered for [`COALESCE`] and published as a
//!   new snapshot when the converted state differs.
//! - A failed watch backs off and resumes, or re-lists when its resourceVersion is gone
//!   (`410 Gone`); each kind keeps what it last listed until the re-list is complete, so
//!   nothing that still exists is ever withdrawn. A watcher that ends or panics is
//!   logged and restarted (see `supervise`).
//! - An object that cannot be read as its kind is a problem naming it; the rest are
//!   exported, and an object read before keeps its last readable version exported.
//!   Problems are logged once per published snapshot, as the manifest source does.

mod assemble;
mod detect;
mod store;
mod supervise;
mod watcher;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ::kube::{Client, Resource};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use crate::k8s::Snapshot;
use crate::k8s::cilium::{self, CiliumEndpoint, CiliumEndpointSlice, CiliumIdentity, CiliumNode};
use crate::k8s::client::ConnectError;
use crate::k8s::convert::ConvertOptions;
use crate::k8s::mcs::{self, ServiceExport};
use crate::model::Cluster;
use crate::report::error_chain;
use assemble::Stores;
use supervise::Watchers;

pub use assemble::COALESCE;
pub use detect::{cilium_installed, resource_served};

/// The wait between discovery attempts once kube-runtime's backoff (which caps itself at
/// 30 s and never runs out) would stop answering: the same cap.
const DETECT_RETRY_MAX: Duration = Duration::from_secs(30);

/// What keeps the kube source from reaching or reading the API server.
#[derive(Debug, Error)]
pub enum KubeError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot ask the API server about {api_version}")]
    Discovery {
        api_version: String,
        #[source]
        source: ::kube::Error,
    },
    #[error(
        "{}/{} is served without {missing}; waiting for Cilium's CRDs",
        cilium::GROUP,
        cilium::VERSION
    )]
    IncompleteCilium { missing: String },
}

/// A client for the API server (see [`crate::k8s::client::connect`]).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    Ok(crate::k8s::client::connect(kubeconfig).await?)
}

/// What the kube source reads beyond what the API server serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KubeOptions {
    pub convert: ConvertOptions,
    /// CiliumEndpointSlices instead of CiliumEndpoints: `None` reads them when the API
    /// server serves them, `Some` forces the choice.
    pub endpoint_slices: Option<bool>,
    /// Read ServiceExports (MCS-API exports are on).
    pub service_exports: bool,
}

/// A cluster's API server as the source of its state.
#[derive(Clone)]
pub struct KubeSource {
    client: Client,
    cluster: Cluster,
    options: KubeOptions,
}

impl KubeSource {
    /// The source of `cluster`'s state, read through `client` (see [`connect`]).
    pub fn new(client: Client, cluster: Cluster) -> Self {
        Self {
            client,
            cluster,
            options: KubeOptions::default(),
        }
    }

    /// The same source, reading as `options` say.
    pub fn with_options(self, options: KubeOptions) -> Self {
        Self { options, ..self }
    }

    /// Publishes the cluster's state and every change of it.
    ///
    /// The receiver holds `None` until every watched kind has completed its initial list
    /// (and, before that, until discovery has answered whether Cilium is installed,
    /// retried with backoff), then the latest [`Snapshot`]. The watchers stop when every
    /// receiver is dropped. Must be called inside a Tokio runtime.
    pub fn watch_rx(self) -> watch::Receiver<Option<Snapshot>> {
        let (tx, rx) = watch::channel(None);
        let span = tracing::info_span!("kube", cluster = %self.cluster.name);
        tokio::spawn(run(self, tx).instrument(span));
        rx
    }
}

async fn run(source: KubeSource, tx: watch::Sender<Option<Snapshot>>) {
    let found = tokio::select! {
        found = discover(&source.client, &source.options) => found,
        () = tx.closed() => return,
    };
    let stores = Arc::new(Mutex::new(Stores::new(found)));
    let changed = Arc::new(Notify::new());
    // Dropped when publishing ends, which aborts every watcher.
    let mut watchers = Watchers::default();
    let mut spawn = Spawner {
        client: &source.client,
        stores: &stores,
        changed: &changed,
        watchers: &mut watchers,
    };
    spawn.watch::<Service>(|s| &mut s.services);
    spawn.watch::<EndpointSlice>(|s| &mut s.endpoint_slices);
    spawn.watch::<Namespace>(|s| &mut s.namespaces);
    if found.cilium {
        spawn.watch::<CiliumIdentity>(|s| &mut s.cilium_identities);
        if found.endpoint_slices {
            spawn.watch::<CiliumEndpointSlice>(|s| &mut s.cilium_endpoint_slices);
        } else {
            spawn.watch::<CiliumEndpoint>(|s| &mut s.cilium_endpoints);
        }
        spawn.watch::<CiliumNode>(|s| &mut s.cilium_nodes);
    } else {
        spawn.watch::<Pod>(|s| &mut s.pods);
        spawn.watch::<Node>(|s| &mut s.nodes);
    }
    if found.service_exports {
        spawn.watch::<ServiceExport>(|s| &mut s.service_exports);
    }
    tokio::select! {
        () = assemble::publish(source.cluster, source.options.convert, stores, changed, tx) => {}
        never = watchers.supervise() => match never {},
    }
}

/// What discovery decided the source reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Discovered {
    /// Cilium is installed: identities, ipcache entries and nodes come from its resources.
    pub cilium: bool,
    /// Ipcache entries come from CiliumEndpointSlices rather than CiliumEndpoints.
    pub endpoint_slices: bool,
    /// ServiceExports are watched.
    pub service_exports: bool,
}

/// Asks discovery what to read, each question until the API server answers, and logs
/// every decision with its reason.
async fn discover(client: &Client, options: &KubeOptions) -> Discovered {
    let cilium = detect_cilium(client).await;
    let endpoint_slices = cilium
        && match options.endpoint_slices {
            Some(forced) => {
                tracing::info!(
                    endpoint_slices = forced,
                    "ipcache entries come from {} (set by source.kube.ciliumEndpointSlices)",
                    if forced {
                        "CiliumEndpointSlices"
                    } else {
                        "CiliumEndpoints"
                    }
                );
                forced
            }
            None => {
                let served =
                    ask_until_answered(|| resource_served::<CiliumEndpointSlice>(client)).await;
                if served {
                    tracing::info!(
                        "{} serves ciliumendpointslices: ipcache entries come from CiliumEndpointSlices",
                        cilium::SLICE_API_VERSION
                    );
                } else {
                    tracing::info!(
                        "{} does not serve ciliumendpointslices: ipcache entries come from CiliumEndpoints",
                        cilium::SLICE_API_VERSION
                    );
                }
                served
            }
        };
    let service_exports = if options.service_exports {
        let served = ask_until_answered(|| resource_served::<ServiceExport>(client)).await;
        if served {
            tracing::info!("MCS-API service exports are read from {}", mcs::API_VERSION);
        } else {
            tracing::warn!(
                "{} does not serve serviceexports (the MCS-API CRDs are not installed): \
                 no ServiceExport is read, none is exported",
                mcs::API_VERSION
            );
        }
        served
    } else {
        tracing::info!(
            "MCS-API service exports are off (export.mcsApi): ServiceExports are not read"
        );
        false
    };
    Discovered {
        cilium,
        endpoint_slices,
        service_exports,
    }
}

/// Asks a discovery question until the API server answers, backing off between tries.
async fn ask_until_answered<F, Fut>(ask: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool, KubeError>>,
{
    let mut backoff = ::kube::runtime::watcher::DefaultBackoff::default();
    loop {
        match ask().await {
            Ok(answer) => return answer,
            Err(e) => {
                let delay = backoff.next().unwrap_or(DETECT_RETRY_MAX);
                tracing::warn!(error = %error_chain(&e), retry_in = ?delay, "discovery failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Asks whether Cilium is installed until the API server answers.
async fn detect_cilium(client: &Client) -> bool {
    let mut backoff = ::kube::runtime::watcher::DefaultBackoff::default();
    loop {
        match cilium_installed(client).await {
            Ok(cilium) => {
                tracing::info!(
                    cilium,
                    "identities, ipcache entries and nodes come from {}",
                    if cilium {
                        "Cilium's resources"
                    } else {
                        "Pods and Nodes"
                    }
                );
                return cilium;
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(DETECT_RETRY_MAX);
                tracing::warn!(
                    error = %error_chain(&e),
                    retry_in = ?delay,
                    "cannot tell whether Cilium is installed"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Starts one watcher per kind, all feeding the same stores.
struct Spawner<'a> {
    client: &'a Client,
    stores: &'a Arc<Mutex<Stores>>,
    changed: &'a Arc<Notify>,
    watchers: &'a mut Watchers,
}

impl Spawner<'_> {
    fn watch<K>(&mut self, select: watcher::Select<K>)
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Send + 'static,
    {
        let (client, stores, changed) = (
            self.client.clone(),
            Arc::clone(self.stores),
            Arc::clone(self.changed),
        );
        self.watchers.spawn(K::kind(&()), move || {
            Box::pin(watcher::watch_kind(
                client.clone(),
                Arc::clone(&stores),
                select,
                Arc::clone(&changed),
            ))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_kubeconfig_names_its_file_and_an_unreachable_server_is_a_discovery_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let Err(err) = connect(Some(&missing)).await else {
            panic!("a missing kubeconfig was loaded");
        };
        assert!(
            matches!(err, KubeError::Connect(ConnectError::Kubeconfig { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );

        let file = dir.path().join("kubeconfig");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: Config\n\
             clusters: [{name: c, cluster: {server: \"http://127.0.0.1:1\"}}]\n\
             users: [{name: u, user: {}}]\n\
             contexts: [{name: x, context: {cluster: c, user: u}}]\n\
             current-context: x\n",
        )
        .unwrap();
        let client = connect(Some(&file)).await.unwrap();
        // Nothing listens there: discovery fails as an error to retry, not as "no Cilium".
        let err = cilium_installed(&client).await.unwrap_err();
        assert!(matches!(err, KubeError::Discovery { .. }), "{err:?}");
        assert!(err.to_string().contains("cilium.io/v2"), "{err}");
    }
}
