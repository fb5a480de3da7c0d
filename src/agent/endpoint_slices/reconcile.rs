//! One pass against the API: make the slices labelled as the agent's exactly the desired
//! ones. Slices without the agent's `managed-by` label are never listed, so never touched.
//!
//! - missing → created;
//! - present but different → replaced in place (same name, so same uid) with the
//!   resourceVersion just read, so a concurrent edit makes the write fail and the next
//!   pass start from what is there now;
//! - the agent's but no longer desired → deleted, on the precondition that it is still
//!   the object that was read.
//!
//! A failed write is logged with the slice it concerns and counted; the other slices are
//! still written, and the caller retries the whole pass after a backoff.

use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use tracing::{debug, warn};

use crate::report::error_chain;

use super::desired::{Desired, SliceKey};
use super::{MANAGED_BY, MANAGED_BY_LABEL};

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Outcome {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Writes that failed (each logged).
    pub failed: usize,
}

impl Outcome {
    pub fn changed(&self) -> bool {
        self.created + self.updated + self.deleted > 0
    }
}

/// Makes the agent's slices `desired`. Fails only when the slices cannot be listed.
pub(super) async fn reconcile(client: &Client, desired: &Desired) -> Result<Outcome, kube::Error> {
    let all: Api<EndpointSlice> = Api::all(client.clone());
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    let listed = all.list(&ListParams::default().labels(&selector)).await?;
    let actual: BTreeMap<SliceKey, EndpointSlice> = listed
        .items
        .into_iter()
        .filter_map(|s| Some((SliceKey::of(&s)?, s)))
        .collect();

    let mut outcome = Outcome::default();
    for (key, want) in desired {
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &key.namespace);
        match actual.get(key) {
            None => match api.create(&PostParams::default(), want).await {
                Ok(_) => {
                    debug!(slice = %key, "EndpointSlice created");
                    outcome.created += 1;
                }
                Err(e) => {
                    let why = if is_already_exists(&e) {
                        "a slice not managed by fleetmesh holds its name; left alone"
                    } else {
                        "cannot create it"
                    };
                    warn!(slice = %key, error = %error_chain(&e), "EndpointSlice: {why}");
                    outcome.failed += 1;
                }
            },
            Some(have) if same(have, want) => {}
            Some(have) => {
                let mut replacement = want.clone();
                replacement.metadata.resource_version = have.metadata.resource_version.clone();
                match api
                    .replace(&key.name, &PostParams::default(), &replacement)
                    .await
                {
                    Ok(_) => {
                        debug!(slice = %key, "EndpointSlice updated");
                        outcome.updated += 1;
                    }
                    Err(e) => {
                        warn!(slice = %key, error = %error_chain(&e), "EndpointSlice: cannot update it");
                        outcome.failed += 1;
                    }
                }
            }
        }
    }
    for (key, have) in actual.iter().filter(|(k, _)| !desired.contains_key(*k)) {
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &key.namespace);
        let still_that_one = DeleteParams::default().preconditions(Preconditions {
            resource_version: have.metadata.resource_version.clone(),
            uid: have.metadata.uid.clone(),
        });
        match api.delete(&key.name, &still_that_one).await {
            Ok(_) => {
                debug!(slice = %key, "EndpointSlice deleted");
                outcome.deleted += 1;
            }
            // Someone deleted it first: what this pass wanted.
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                warn!(slice = %key, error = %error_chain(&e), "EndpointSlice: cannot delete it");
                outcome.failed += 1;
            }
        }
    }
    Ok(outcome)
}

/// Whether `have` already says what `want` says, in every field the agent writes.
fn same(have: &EndpointSlice, want: &EndpointSlice) -> bool {
    have.metadata.labels == want.metadata.labels
        && have.address_type == want.address_type
        && endpoints(have) == endpoints(want)
        && ports(have) == ports(want)
}

/// An empty list may come back from the API as an absent one.
fn endpoints(slice: &EndpointSlice) -> &[Endpoint] {
    slice.endpoints.as_deref().unwrap_or_default()
}

fn ports(slice: &EndpointSlice) -> &[EndpointPort] {
    slice.ports.as_deref().unwrap_or_default()
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.is_not_found())
}

fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.is_already_exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_slice(ports: Option<Vec<EndpointPort>>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(vec![Endpoint {
                addresses: vec!["10.2.0.1".into()],
                ..Endpoint::default()
            }]),
            ports,
            ..EndpointSlice::default()
        }
    }

    #[test]
    fn sameness_ignores_server_fields_and_an_absent_empty_port_list() {
        let want = mk_slice(Some(vec![]));
        let mut have = mk_slice(None);
        assert!(same(&have, &want));
        have.endpoints = Some(vec![]);
        let empty = have.clone();
        have.endpoints = None;
        assert!(same(&have, &empty), "no endpoints: absent or empty");
        have = mk_slice(None);
        have.metadata.resource_version = Some("7".into());
        have.metadata.uid = Some("u".into());
        assert!(same(&have, &want));
        have.endpoints.as_mut().unwrap()[0].addresses[0] = "10.2.0.2".into();
        assert!(!same(&have, &want));
        let mut relabelled = mk_slice(Some(vec![]));
        relabelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert!(!same(&relabelled, &want));
    }
}
