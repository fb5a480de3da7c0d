//! Allocations in the cluster itself: one ConfigMap per identity, named by its number and
//! created with the Kubernetes API's create-if-absent semantics (a `POST` of a name that
//! exists is refused with `409 AlreadyExists`), so two replicas never give one number to
//! two label sets, and the numbers outlive every apiserver and its embedded store.
//!
//! Each object carries the label set (`data.labels`, Cilium's label string) and is
//! labelled with the cluster and a digest of the label set, so that the number of a label
//! set is found with one list by label selector. Two replicas that claim numbers for the
//! same new label set at once both succeed; each then lists the label set's objects and the
//! one created first (lowest resourceVersion) wins: the other replica deletes its own and
//! takes the winner's number.

use std::collections::BTreeMap;

use ::kube::Client;
use ::kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::{Claim, IdentityLedger, LedgerError};
use crate::model::{ClusterName, IdentityId, Labels};

/// Object names are this prefix and the number.
const NAME_PREFIX: &str = "fleetmesh-identity-";
/// Which cluster's allocations an object holds.
const CLUSTER_LABEL: &str = "fleetmesh.io/identity-of";
/// A digest of the label set (label values are too short for the set itself).
const DIGEST_LABEL: &str = "fleetmesh.io/identity-labels";
const LABELS_KEY: &str = "labels";

pub struct KubeLedger {
    api: Api<ConfigMap>,
    cluster: ClusterName,
}

impl KubeLedger {
    /// Keeps `cluster`'s allocations in `namespace`.
    pub fn new(client: Client, namespace: &str, cluster: ClusterName) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            cluster,
        }
    }

    fn kube_error(what: impl Into<String>) -> impl FnOnce(::kube::Error) -> LedgerError {
        let what = what.into();
        move |source| LedgerError::Kube { what, source }
    }

    /// The objects of this cluster's ledger, with `extra` label requirements.
    async fn list(&self, extra: Option<(&str, &str)>) -> Result<Vec<ConfigMap>, LedgerError> {
        let mut selector = format!("{CLUSTER_LABEL}={}", self.cluster);
        if let Some((key, value)) = extra {
            selector.push_str(&format!(",{key}={value}"));
        }
        let listed = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Self::kube_error(format!("list ConfigMaps {selector}")))?;
        Ok(listed.items)
    }

    /// The objects that give `labels` a number, the one created first first.
    async fn holders(&self, labels: &str) -> Result<Vec<(IdentityId, u64)>, LedgerError> {
        let digest = digest(labels);
        let mut holders: Vec<(IdentityId, u64)> = self
            .list(Some((DIGEST_LABEL, &digest)))
            .await?
            .iter()
            .filter(|cm| labels_of(cm) == Some(labels))
            .filter_map(|cm| Some((id_of(cm)?, created_at(cm))))
            .collect();
        holders.sort_by_key(|(id, created)| (*created, id.get()));
        Ok(holders)
    }
}

fn digest(labels: &str) -> String {
    let hash = Sha256::digest(labels.as_bytes());
    hex::encode(&hash[..20])
}

fn id_of(cm: &ConfigMap) -> Option<IdentityId> {
    cm.metadata
        .name
        .as_deref()?
        .strip_prefix(NAME_PREFIX)?
        .parse()
        .ok()
}

fn labels_of(cm: &ConfigMap) -> Option<&str> {
    cm.data.as_ref()?.get(LABELS_KEY).map(String::as_str)
}

/// The object's resourceVersion as a number: its creation order, since these objects are
/// never updated. Unreadable ones sort last.
fn created_at(cm: &ConfigMap) -> u64 {
    cm.metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(u64::MAX)
}

#[async_trait]
impl IdentityLedger for KubeLedger {
    async fn allocations(&self) -> Result<Vec<(IdentityId, Labels)>, LedgerError> {
        let mut out = Vec::new();
        for cm in self.list(None).await? {
            let parsed = (id_of(&cm), labels_of(&cm).map(Labels::parse_kvstore_string));
            match parsed {
                (Some(id), Some(Ok(labels))) => out.push((id, labels)),
                _ => tracing::warn!(name = ?cm.metadata.name,
                    "ignoring an unreadable identity allocation ConfigMap"),
            }
        }
        Ok(out)
    }

    async fn taken_ids(&self) -> Result<Vec<u32>, LedgerError> {
        Ok(self
            .list(None)
            .await?
            .iter()
            .filter_map(|cm| {
                cm.metadata
                    .name
                    .as_deref()?
                    .strip_prefix(NAME_PREFIX)?
                    .parse()
                    .ok()
            })
            .collect())
    }

    async fn claim(&self, id: IdentityId, labels: &Labels) -> Result<Claim, LedgerError> {
        let text = labels.to_kvstore_string();
        if let Some((held, _)) = self.holders(&text).await?.first() {
            return Ok(if *held == id {
                Claim::Granted
            } else {
                Claim::LabelsHold(*held)
            });
        }
        let name = format!("{NAME_PREFIX}{id}");
        let object = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (CLUSTER_LABEL.to_string(), self.cluster.to_string()),
                    (DIGEST_LABEL.to_string(), digest(&text)),
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "fleetmesh".to_string(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(LABELS_KEY.to_string(), text.clone())])),
            ..ConfigMap::default()
        };
        match self.api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(::kube::Error::Api(status)) if status.is_already_exists() => {
                return Ok(Claim::IdTaken);
            }
            Err(e) => return Err(Self::kube_error(format!("create ConfigMap {name}"))(e)),
        }
        // Another replica may have claimed a number for these labels at the same time.
        match self.holders(&text).await?.first() {
            Some((first, _)) if *first != id => {
                self.release(id, labels).await?;
                Ok(Claim::LabelsHold(*first))
            }
            _ => Ok(Claim::Granted),
        }
    }

    async fn release(&self, id: IdentityId, labels: &Labels) -> Result<(), LedgerError> {
        let name = format!("{NAME_PREFIX}{id}");
        let current = self
            .api
            .get_opt(&name)
            .await
            .map_err(Self::kube_error(format!("get ConfigMap {name}")))?;
        let text = labels.to_kvstore_string();
        if current.as_ref().and_then(labels_of) != Some(text.as_str()) {
            return Ok(());
        }
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(::kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(e) => Err(Self::kube_error(format!("delete ConfigMap {name}"))(e)),
        }
    }
}
