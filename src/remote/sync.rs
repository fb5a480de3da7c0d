//! One Watch stream's frames into the mesh view: the explicit resync of STYLE.md habit 3.
//!
//! A stream is either **full** (the peer's whole state in frames, the last one marked
//! `synced`, then deltas) or **resumed** (only what the link missed since its last
//! revision, then deltas). Every event is applied as soon as it is decoded, a full
//! state's too: its entries are the peer's current values, and holding them back until
//! the marker would cost a second copy of the peer's state (the view's is the compact
//! one). A reader may so see part of a frame, as it may see part of a revision that
//! spans frames. What a full state keeps until the synced marker is only the keys it
//! named; at the marker, [`MeshView::sweep`](crate::mesh::MeshView::sweep) deletes what
//! the peer holds beyond them, so an entry the peer no longer has disappears only then,
//! and one it still has is never removed, not even for a moment. Until the marker the
//! view holds the new state over the old one; the link reads as ready only at the
//! marker. Every event is decoded and checked against the peer's cluster first; a
//! refused event is reported and skipped, and the rest of its frame still applies.

use std::collections::HashSet;
use std::net::IpAddr;

use super::SharedView;
use super::observer::{ApplyObserver, apply_observed, sweep_observed};
use crate::model::{Change, Cluster, ResourceKey};
use crate::proto::{ProtoError, WatchFrame, decode_event, v1};

/// Where one stream is.
pub(super) enum WatchState {
    /// No frame yet: the first one says whether the stream resumed.
    Start,
    /// Receiving the full state, applied as it comes: the keys it named so far, and
    /// whether any of it was refused.
    Listing(ListedKeys, bool),
    /// The full state is complete (or was never needed): nothing is left to sweep.
    Live,
}

/// The keys a full state named so far: all the sweep at its synced marker needs of it.
/// IPv4 host endpoints, the bulk of a listing, are kept as bare addresses (4 bytes where
/// a [`ResourceKey`] takes more than ten times that).
#[derive(Debug, Default)]
pub(super) struct ListedKeys {
    v4_hosts: HashSet<u32>,
    others: HashSet<ResourceKey>,
}

impl ListedKeys {
    fn insert(&mut self, key: ResourceKey) {
        match v4_host(&key) {
            Some(addr) => self.v4_hosts.insert(addr),
            None => self.others.insert(key),
        };
    }

    fn remove(&mut self, key: &ResourceKey) {
        match v4_host(key) {
            Some(addr) => self.v4_hosts.remove(&addr),
            None => self.others.remove(key),
        };
    }

    fn contains(&self, key: &ResourceKey) -> bool {
        match v4_host(key) {
            Some(addr) => self.v4_hosts.contains(&addr),
            None => self.others.contains(key),
        }
    }
}

/// The address of an IPv4 host endpoint's key, as a number.
fn v4_host(key: &ResourceKey) -> Option<u32> {
    match key {
        ResourceKey::Endpoint(prefix) if prefix.is_host() => match prefix.addr() {
            IpAddr::V4(addr) => Some(u32::from(addr)),
            IpAddr::V6(_) => None,
        },
        _ => None,
    }
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
    /// phase requires, telling `observer` what was applied.
    pub(super) fn on_frame(
        &mut self,
        frame: WatchFrame,
        peer: &Cluster,
        view: &SharedView,
        observer: Option<&dyn ApplyObserver>,
    ) -> FrameReport {
        let mut report = FrameReport::default();
        // The keys listed while a full state is coming in; `None` once nothing is left to
        // sweep.
        let mut listing = match std::mem::replace(self, Self::Live) {
            Self::Start if frame.resumed => {
                report.resumed = true;
                None
            }
            Self::Start => {
                report.listing = true;
                Some((ListedKeys::default(), false))
            }
            Self::Listing(listed, refused) => Some((listed, refused)),
            Self::Live => None,
        };
        // Each event is applied as soon as it is decoded: the strings the next one decodes
        // into then reuse the memory this one freed (glibc keeps a few freed blocks per
        // size for the thread), where decoding a whole frame first spilled past that cache.
        for bytes in &frame.events {
            let change = match decode_event(bytes.clone(), peer) {
                Ok(event) => event.change,
                Err(e) => {
                    report.refused.push(e);
                    continue;
                }
            };
            if let Some((listed, _)) = listing.as_mut() {
                match &change {
                    Change::Upsert(resource) => listed.insert(resource.key()),
                    Change::Delete(key) => listed.remove(key),
                }
            }
            apply_observed(view, &peer.name, &change, observer);
        }
        if let Some((_, refused)) = listing.as_mut() {
            *refused |= !report.refused.is_empty();
        }
        match listing {
            Some((listed, refused)) if !frame.synced => *self = Self::Listing(listed, refused),
            // Something of the full state was refused: the sweep cannot tell a refused
            // entry from one the peer removed, so nothing held is swept (rule 1: never
            // delete what cannot be confirmed gone); the next full resync sweeps what is
            // really gone.
            Some((_, true)) => {}
            Some((listed, false)) => {
                sweep_observed(view, &peer.name, |k| listed.contains(k), observer);
            }
            None => {}
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
    use std::time::Instant;

    use parking_lot::{Mutex, RwLock};

    use super::*;
    use crate::mesh::{Counts, MeshView, StalePolicy};
    use crate::model::{ClusterName, Event, IdentityId, Resource};
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
            ..WatchFrame::default()
        }
    }

    fn upsert(r: Resource) -> Change {
        Change::Upsert(r)
    }

    fn counts(view: &SharedView, peer: &Cluster) -> Counts {
        view.read().counts(&peer.name).unwrap_or_default()
    }

    /// What `peer` held before the stream, applied as earlier deltas would have.
    fn hold(view: &SharedView, peer: &Cluster, held: Vec<Resource>) {
        let upserts: Vec<Change> = held.into_iter().map(Change::Upsert).collect();
        view.write().apply(&peer.name, &upserts);
    }

    /// Every call of the observer, in order.
    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<Vec<Change>>>);

    impl ApplyObserver for Seen {
        fn applied(&self, _peer: &ClusterName, changes: &[Change], _at: Instant) {
            self.0.lock().push(changes.to_vec());
        }
    }

    #[test]
    fn listed_keys_keep_v4_hosts_apart_from_wider_and_v6_prefixes() {
        let endpoint = |p: &str| ResourceKey::Endpoint(p.parse().unwrap());
        let mut listed = ListedKeys::default();
        for key in ["10.2.0.1", "10.2.0.0/24", "fd00::1", "fd00::/64"] {
            listed.insert(endpoint(key));
        }
        listed.insert(ResourceKey::Node("n1".into()));
        assert!(
            ["10.2.0.1", "10.2.0.0/24", "fd00::1", "fd00::/64"]
                .iter()
                .all(|k| listed.contains(&endpoint(k)))
        );
        // The same address as another prefix, or as v6, is another key.
        assert!(!listed.contains(&endpoint("10.2.0.1/24")));
        assert!(!listed.contains(&endpoint("10.2.0.0")));
        assert!(!listed.contains(&endpoint("::ffff:10.2.0.1")));
        listed.remove(&endpoint("10.2.0.1"));
        listed.remove(&ResourceKey::Node("n1".into()));
        assert!(!listed.contains(&endpoint("10.2.0.1")));
        assert!(!listed.contains(&ResourceKey::Node("n1".into())));
        assert!(listed.contains(&endpoint("10.2.0.0/24")));
    }

    #[test]
    fn a_full_state_applies_as_it_comes_and_is_synced_only_at_the_marker() {
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
        let report = state.on_frame(first, &c2, &view, None);
        assert!(report.listing && !report.synced);
        assert!(report.resume_point.is_none());
        let held = counts(&view, &c2);
        assert_eq!((held.nodes, held.endpoints, held.services), (1, 1, 0));

        let last = mk_frame(
            &[upsert(Resource::Service(mk_service(&c2, "shop", "cart")))],
            true,
            false,
            10,
        );
        let report = state.on_frame(last, &c2, &view, None);
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
        let report = state.on_frame(delta, &c2, &view, None);
        assert_eq!(report.resume_point.unwrap().revision, 11);
        assert_eq!(counts(&view, &c2).nodes, 0);
    }

    #[test]
    fn a_resync_deletes_nothing_held_before_the_marker_then_exactly_the_unlisted() {
        let view = mk_shared_view();
        let c2 = mk_cluster("c2", 2);
        let kept_node = Resource::Node(mk_node(&c2, "n1"));
        let gone_node = Resource::Node(mk_node(&c2, "n-old"));
        let gone_ep = Resource::Endpoint(mk_endpoint(&c2, "10.2.0.2"));
        let mut moved = mk_endpoint(&c2, "10.2.0.1");
        hold(
            &view,
            &c2,
            vec![
                kept_node.clone(),
                gone_node.clone(),
                Resource::Endpoint(moved.clone()),
                gone_ep.clone(),
            ],
        );
        let seen = Seen::default();
        let mut state = WatchState::Start;

        moved.pod = Some("moved".into());
        let first = vec![
            upsert(kept_node),
            upsert(Resource::Endpoint(moved)),
            upsert(Resource::Endpoint(mk_endpoint(&c2, "10.2.0.3"))),
        ];
        let report = state.on_frame(mk_frame(&first, false, false, 60), &c2, &view, Some(&seen));
        assert!(report.listing && !report.synced);
        // The listing's values are in the view already; nothing held went away.
        let pod = |ip: &str| view.read().lookup(ip.parse().unwrap()).map(|e| e.pod);
        assert_eq!(pod("10.2.0.1"), Some(Some("moved".into())));
        assert!(pod("10.2.0.3").is_some() && pod("10.2.0.2").is_some());
        let held = counts(&view, &c2);
        assert_eq!((held.nodes, held.endpoints, held.identities), (2, 3, 0));

        let last = vec![upsert(Resource::Identity(mk_identity(&c2, 7)))];
        let report = state.on_frame(mk_frame(&last, true, false, 60), &c2, &view, Some(&seen));
        assert!(report.synced && report.resume_point.is_some());
        let held = counts(&view, &c2);
        assert_eq!((held.nodes, held.endpoints, held.identities), (1, 2, 1));
        assert!(pod("10.2.0.2").is_none());
        // The observer saw each change as it was applied, then exactly the sweep's deletes.
        let sweep = vec![
            Change::Delete(gone_node.key()),
            Change::Delete(gone_ep.key()),
        ];
        let each = first.into_iter().chain(last).map(|change| vec![change]);
        assert_eq!(*seen.0.lock(), each.chain([sweep]).collect::<Vec<_>>());
    }

    #[test]
    fn a_new_listing_sweeps_only_what_the_peer_no_longer_has() {
        let view = mk_shared_view();
        let c2 = mk_cluster("c2", 2);
        let kept = Resource::Endpoint(mk_endpoint(&c2, "10.2.0.1"));
        let gone = Resource::Endpoint(mk_endpoint(&c2, "10.2.0.2"));
        hold(&view, &c2, vec![kept.clone(), gone.clone()]);

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
        state.on_frame(frame, &c2, &view, None);
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
        hold(&view, &c2, vec![held]);

        let mut state = WatchState::Start;
        let catch_up = mk_frame(
            &[upsert(Resource::Node(mk_node(&c2, "n1")))],
            false,
            true,
            31,
        );
        let report = state.on_frame(catch_up, &c2, &view, None);
        assert!(report.resumed && !report.synced);
        assert_eq!(report.resume_point.unwrap().revision, 31);
        let held = counts(&view, &c2);
        assert_eq!((held.endpoints, held.nodes), (1, 1));

        let done = mk_frame(&[], true, true, 31);
        let report = state.on_frame(done, &c2, &view, None);
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

        let report = WatchState::Start.on_frame(frame, &c2, &view, None);
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
        hold(&view, &c2, vec![held, other]);

        // The peer's next full state: n1 arrives malformed, the endpoint is gone, a new
        // node comes. The sweep cannot tell "refused" from "gone": it holds everything.
        let mut frame = mk_frame(
            &[upsert(Resource::Node(mk_node(&c2, "n2")))],
            true,
            false,
            50,
        );
        frame.events.push(bytes::Bytes::from_static(&[0xff, 0x01]));
        let report = WatchState::Start.on_frame(frame, &c2, &view, None);
        assert_eq!(report.refused.len(), 1);
        let now = counts(&view, &c2);
        assert_eq!((now.nodes, now.endpoints), (2, 1));
    }

    #[test]
    fn a_refusal_in_an_early_listing_frame_still_holds_back_the_sweep() {
        let view = mk_shared_view();
        let c2 = mk_cluster("c2", 2);
        let gone = Resource::Node(mk_node(&c2, "n1"));
        hold(&view, &c2, vec![gone]);
        let seen = Seen::default();
        let mut state = WatchState::Start;

        // The first frame of a listing, a malformed event between two good ones.
        let good = [
            upsert(Resource::Node(mk_node(&c2, "n2"))),
            upsert(Resource::Endpoint(mk_endpoint(&c2, "10.2.0.3"))),
        ];
        let mut first = mk_frame(&good, false, false, 70);
        first
            .events
            .insert(1, bytes::Bytes::from_static(&[0xff, 0x01]));
        let report = state.on_frame(first, &c2, &view, Some(&seen));
        assert_eq!(report.refused.len(), 1);
        // The event after the refused one was applied, and only the good ones were told.
        let now = counts(&view, &c2);
        assert_eq!((now.nodes, now.endpoints), (2, 1));
        let each: Vec<Vec<Change>> = good.iter().map(|c| vec![c.clone()]).collect();
        assert_eq!(*seen.0.lock(), each);

        // The listing ends cleanly, but n1 may be what was refused: nothing is swept.
        let last = mk_frame(&[], true, false, 70);
        let report = state.on_frame(last, &c2, &view, Some(&seen));
        assert!(report.synced && report.refused.is_empty());
        assert_eq!(counts(&view, &c2).nodes, 2);
        assert_eq!(seen.0.lock().len(), 2, "no sweep was told");
    }
}
