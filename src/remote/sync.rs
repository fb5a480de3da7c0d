//! One Watch stream's frames into the mesh view: the explicit resync of STYLE.md habit 3.
//!
//! A stream is either **full** (the peer's whole state in frames, the last one marked
//! `synced`, then deltas) or **resumed** (only what the link missed since its last
//! revision, then deltas). A full state is buffered and swapped in with
//! [`MeshView::replace`](crate::mesh::MeshView::replace) at the synced marker: entries
//! that did not change are never touched, entries the peer no longer has disappear only
//! then. Everything else is applied as it comes. Every event is decoded and checked
//! against the peer's cluster first; a refused event is reported and skipped, and the
//! rest of its frame still applies.

use std::collections::HashMap;

use super::SharedView;
use crate::model::{Change, Cluster, Resource, ResourceKey};
use crate::proto::{ProtoError, WatchFrame, decode_event, v1};

/// Where one stream is.
pub(super) enum WatchState {
    /// No frame yet: the first one says whether the stream resumed.
    Start,
    /// Receiving the full state, buffered by key until the synced marker.
    /// The full state so far, and whether any of it was refused.
    Listing(HashMap<ResourceKey, Resource>, bool),
    /// The view holds everything the stream delivered: frames apply directly.
    Live,
}

/// What one frame did.
#[derive(Debug, Default)]
pub(super) struct FrameReport {
    /// The events refused, with why.
    pub refused: Vec<ProtoError>,
    /// This was the first frame of a resumed stream.
    pub resumed: bool,
    /// This was the first frame of a full state.
    pub listing: bool,
    /// The frame carried the synced marker: the view is complete up to its revision.
    pub synced: bool,
    /// Where a later stream may resume from, once the view holds everything up to it.
    pub resume_point: Option<v1::ResumePoint>,
}

impl WatchState {
    /// Decodes `frame`'s events against `peer` and applies them to `view` as the stream's
    /// phase requires.
    pub(super) fn on_frame(
        &mut self,
        frame: WatchFrame,
        peer: &Cluster,
        view: &SharedView,
    ) -> FrameReport {
        let mut report = FrameReport::default();
        // The buffer while a full state is coming in; `None` once frames apply directly.
        let mut listing = match std::mem::replace(self, Self::Live) {
            Self::Start if frame.resumed => {
                report.resumed = true;
                None
            }
            Self::Start => {
                report.listing = true;
                Some((HashMap::new(), false))
            }
            Self::Listing(buffer, refused) => Some((buffer, refused)),
            Self::Live => None,
        };
        let mut changes = Vec::with_capacity(frame.events.len());
        for bytes in &frame.events {
            match decode_event(bytes, peer) {
                Ok(event) => changes.push(event.change),
                Err(e) => report.refused.push(e),
            }
        }
        match listing.as_mut() {
            Some((buffer, refused)) => {
                *refused |= !report.refused.is_empty();
                for change in changes {
                    match change {
                        Change::Upsert(resource) => {
                            buffer.insert(resource.key(), resource);
                        }
                        Change::Delete(key) => {
                            buffer.remove(&key);
                        }
                    }
                }
            }
            None if !changes.is_empty() => {
                view.write().apply(&peer.name, changes);
            }
            None => {}
        }
        if let Some((buffer, refused)) = listing.take() {
            if frame.synced && refused {
                // Something of the full state was refused: the sweep cannot tell a
                // refused entry from one the peer removed, so nothing held is swept
                // (rule 1: never delete what cannot be confirmed gone); the next full
                // resync sweeps what is really gone.
                let upserts = buffer.into_values().map(Change::Upsert).collect();
                view.write().apply(&peer.name, upserts);
            } else if frame.synced {
                view.write()
                    .replace(&peer.name, buffer.into_values().collect());
            } else {
                *self = Self::Listing(buffer, refused);
            }
        }
        report.synced = frame.synced;
        if matches!(self, Self::Live) {
            report.resume_point = Some(v1::ResumePoint {
                epoch: frame.epoch,
                revision: frame.revision,
            });
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::RwLock;

    use super::*;
    use crate::mesh::{Counts, MeshView, StalePolicy};
    use crate::model::{Event, IdentityId};
    use crate::proto::encode_event;
    use crate::proto::fixtures::{mk_cluster, mk_endpoint, mk_identity, mk_node, mk_service};

    fn mk_shared_view() -> SharedView {
        let local = mk_cluster("local", 1);
        Arc::new(RwLock::new(MeshView::new(local, StalePolicy::default())))
    }

    fn mk_frame(changes: &[Change], synced: bool, resumed: bool, revision: u64) -> WatchFrame {
        let events = changes
            .iter()
            .map(|change| {
                encode_event(&Event {
                    revision,
                    change: change.clone(),
                })
            })
            .collect();
        WatchFrame {
            events,
            synced,
            resumed,
            revision,
            epoch: "e1".into(),
        }
    }

    fn upsert(r: Resource) -> Change {
        Change::Upsert(r)
    }

    fn counts(view: &SharedView, peer: &Cluster) -> Counts {
        view.read().counts(&peer.name).unwrap_or_default()
    }

    #[test]
    fn a_full_state_reaches_the_view_only_at_the_synced_marker() {
        let view = mk_shared_view();
        let c2 = mk_cluster("c2", 2);
        let mut state = WatchState::Start;

        let first = mk_frame(
            &[
                upsert(Resource::Node(mk_node(&c2, "n1"))),
                upsert(Resource::Endpoint(mk_endpoint(&c2, "10.2.0.1"))),
            ],
            false,
            false,
            10,
        );
        let report = state.on_frame(first, &c2, &view);
        assert!(report.listing && !report.synced);
        assert!(report.resume_point.is_none());
        assert_eq!(view.read().counts(&c2.name), None);

        let last = mk_frame(
            &[upsert(Resource::Service(mk_service(&c2, "shop", "cart")))],
            true,
            false,
            10,
        );
        let report = state.on_frame(last, &c2, &view);
        assert!(report.synced && !report.listing);
        assert_eq!(report.resume_point.unwrap().revision, 10);
        let held = counts(&view, &c2);
        assert_eq!((held.nodes, held.endpoints, held.services), (1, 1, 1));

        let delta = mk_frame(
            &[Change::Delete(ResourceKey::Node("n1".into()))],
            false,
            false,
            11,
        );
        let report = state.on_frame(delta, &c2, &view);
        assert_eq!(report.resume_point.unwrap().revision, 11);
        assert_eq!(counts(&view, &c2).nodes, 0);
    }

    #[test]
    fn a_new_listing_sweeps_only_what_the_peer_no_longer_has() {
        let view = mk_shared_view();
        let c2 = mk_cluster("c2", 2);
        let kept = Resource::Endpoint(mk_endpoint(&c2, "10.2.0.1"));
        let gone = Resource::Endpoint(mk_endpoint(&c2, "10.2.0.2"));
        view.write()
            .replace(&c2.name, vec![kept.clone(), gone.clone()]);

        let mut state = WatchState::Start;
        // A listing that also deletes within itself: only what is left at `synced` counts.
        let added = Resource::Node(mk_node(&c2, "n1"));
        let frame = mk_frame(
            &[
                upsert(kept.clone()),
                upsert(added.clone()),
                Change::Delete(added.key()),
            ],
            true,
            false,
            20,
        );
        state.on_frame(frame, &c2, &view);
        let held = counts(&view, &c2);
        assert_eq!((held.endpoints, held.nodes), (1, 0));
        let gone_ip = "10.2.0.2".parse().unwrap();
        assert!(view.read().lookup(gone_ip).is_none());
    }

    #[test]
    fn a_resumed_stream_applies_as_it_comes() {
        let view = mk_shared_view();
        let c2 = mk_cluster("c2", 2);
        let held = Resource::Endpoint(mk_endpoint(&c2, "10.2.0.1"));
        view.write().replace(&c2.name, vec![held]);

        let mut state = WatchState::Start;
        let catch_up = mk_frame(
            &[upsert(Resource::Node(mk_node(&c2, "n1")))],
            false,
            true,
            31,
        );
        let report = state.on_frame(catch_up, &c2, &view);
        assert!(report.resumed && !report.synced);
        assert_eq!(report.resume_point.unwrap().revision, 31);
        let held = counts(&view, &c2);
        assert_eq!((held.endpoints, held.nodes), (1, 1));

        let done = mk_frame(&[], true, true, 31);
        let report = state.on_frame(done, &c2, &view);
        assert!(report.synced && !report.resumed);
    }

    #[test]
    fn a_bad_event_is_refused_and_the_rest_of_its_frame_applies() {
        let view = mk_shared_view();
        let c2 = mk_cluster("c2", 2);
        let c3 = mk_cluster("c3", 3);
        // c3's identity, in c3's range, sent by c2: outside c2's range.
        let foreign = mk_identity(&c3, 5);
        // An identity of c2's range labelled for another cluster cannot even be built
        // through the model, so the wire message is forged.
        let mislabelled = v1::Event {
            revision: 40,
            change: Some(v1::event::Change::Identity(v1::Identity {
                id: c2.identity_range().first() + 9,
                labels: "k8s:io.cilium.k8s.policy.cluster=c3;".into(),
            })),
        };
        let mut frame = mk_frame(
            &[
                upsert(Resource::Identity(foreign)),
                upsert(Resource::Identity(mk_identity(&c2, 7))),
            ],
            true,
            false,
            40,
        );
        frame
            .events
            .push(prost::Message::encode_to_vec(&mislabelled).into());
        frame.events.push(bytes::Bytes::from_static(&[0xff, 0x01]));

        let report = WatchState::Start.on_frame(frame, &c2, &view);
        assert_eq!(report.refused.len(), 3, "{:?}", report.refused);
        assert_eq!(counts(&view, &c2).identities, 1);
        let id = IdentityId::new(c2.identity_range().first() + 7).unwrap();
        assert_eq!(view.read().identity(id).unwrap().0, c2.name);
        // Nothing of the refused ones arrived, under any cluster.
        let first_c3 = IdentityId::new(c3.identity_range().first() + 5).unwrap();
        assert!(view.read().identity(first_c3).is_none());
    }

    #[test]
    fn a_listing_with_a_refused_event_sweeps_nothing_held() {
        let view = mk_shared_view();
        let c2 = mk_cluster("c2", 2);
        let held = Resource::Node(mk_node(&c2, "n1"));
        let other = Resource::Endpoint(mk_endpoint(&c2, "10.2.0.1"));
        view.write().replace(&c2.name, vec![held, other]);

        // The peer's next full state: n1 arrives malformed, the endpoint is gone, a new
        // node comes. The sweep cannot tell "refused" from "gone": it holds everything.
        let mut frame = mk_frame(
            &[upsert(Resource::Node(mk_node(&c2, "n2")))],
            true,
            false,
            50,
        );
        frame.events.push(bytes::Bytes::from_static(&[0xff, 0x01]));
        let report = WatchState::Start.on_frame(frame, &c2, &view);
        assert_eq!(report.refused.len(), 1);
        let now = counts(&view, &c2);
        assert_eq!((now.nodes, now.endpoints), (2, 1));
    }
}
