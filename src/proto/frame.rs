//! The Watch response as the server writes it: pre-encoded events.

use bytes::Bytes;

/// `fleetmesh.v1.WatchResponse` with each event already encoded: element `i` of
/// `events` is the bytes of one `v1::Event`.
///
/// Wire-identical to the generated message because protobuf encodes a `bytes` field
/// and an embedded message the same way (length-delimited): so the server encodes
/// each event once and hands the same `Bytes` to every watcher, and the generated
/// client and server (told by `build.rs` to use this type for `WatchResponse`) read
/// and write it as is. A consumer decodes the frame, then each element with
/// [`super::decode_event`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchFrame {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub events: Vec<Bytes>,
    /// Set on the frame that completes the full state or a resumed stream's catch-up.
    #[prost(bool, tag = "2")]
    pub synced: bool,
    /// Set on the frames of a resumed stream's catch-up.
    #[prost(bool, tag = "3")]
    pub resumed: bool,
    /// The revision the watcher has every event up to after this frame.
    #[prost(uint64, tag = "4")]
    pub revision: u64,
    #[prost(string, tag = "5")]
    pub epoch: String,
    /// The mean of the times the server took the frame's changes from its store (µs
    /// since the Unix epoch); 0 when unknown or not a live frame. (Servers before
    /// 2026-12 sent the oldest change's time.)
    #[prost(uint64, tag = "6")]
    pub changed_unix_micros: u64,
    /// When the server last wrote its store's heartbeat (ms since the Unix epoch), on
    /// the first frame after each rewrite; 0 otherwise and from servers that predate it.
    #[prost(uint64, tag = "7")]
    pub heartbeat_unix_millis: u64,
}

impl WatchFrame {
    /// When, on average, the server took the frame's changes from its store: `None`
    /// when the frame carries no change (or no time: not a live frame, or an older
    /// server).
    pub fn changed_at(&self) -> Option<std::time::SystemTime> {
        if self.changed_unix_micros == 0 || self.events.is_empty() {
            return None;
        }
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_micros(self.changed_unix_micros))
    }

    /// When the server last wrote its store's heartbeat, if this frame says.
    pub fn heartbeat_at(&self) -> Option<std::time::SystemTime> {
        (self.heartbeat_unix_millis > 0).then(|| {
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.heartbeat_unix_millis)
        })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::model::{Change, Event, Resource, ResourceKey};
    use crate::proto::fixtures::{mk_cluster, mk_endpoint, mk_service};
    use crate::proto::{decode_event, encode_event, v1};

    /// `WatchResponse` as the generated code would have it, had `build.rs` not replaced
    /// it: what a client built from the `.proto` alone decodes.
    #[derive(Clone, PartialEq, prost::Message)]
    struct WatchResponseShape {
        #[prost(message, repeated, tag = "1")]
        events: Vec<v1::Event>,
        #[prost(bool, tag = "2")]
        synced: bool,
        #[prost(bool, tag = "3")]
        resumed: bool,
        #[prost(uint64, tag = "4")]
        revision: u64,
        #[prost(string, tag = "5")]
        epoch: String,
        #[prost(uint64, tag = "6")]
        changed_unix_micros: u64,
        #[prost(uint64, tag = "7")]
        heartbeat_unix_millis: u64,
    }

    fn mk_model_events() -> Vec<Event> {
        let c1 = mk_cluster("c1", 1);
        vec![
            Event {
                revision: 7,
                change: Change::Upsert(Resource::Service(mk_service(&c1, "shop", "cart"))),
            },
            Event {
                revision: 8,
                change: Change::Upsert(Resource::Endpoint(mk_endpoint(&c1, "10.0.0.1"))),
            },
            Event {
                revision: 9,
                change: Change::Delete(ResourceKey::Endpoint("10.0.0.2".parse().unwrap())),
            },
        ]
    }

    #[test]
    fn a_frame_is_wire_identical_to_a_watch_response() {
        let events = mk_model_events();
        let frame = WatchFrame {
            events: events.iter().map(encode_event).collect(),
            synced: true,
            resumed: true,
            revision: 9,
            epoch: "e1".into(),
            changed_unix_micros: 1_700_000_000_000_000,
            heartbeat_unix_millis: 1_700_000_000_000,
        };
        let shape = WatchResponseShape {
            events: events.iter().map(v1::Event::from).collect(),
            synced: true,
            resumed: true,
            revision: 9,
            epoch: "e1".into(),
            changed_unix_micros: 1_700_000_000_000_000,
            heartbeat_unix_millis: 1_700_000_000_000,
        };
        let frame_bytes = frame.encode_to_vec();
        assert_eq!(frame_bytes, shape.encode_to_vec());
        assert_eq!(
            WatchResponseShape::decode(frame_bytes.as_slice()).unwrap(),
            shape
        );

        let c1 = mk_cluster("c1", 1);
        let back = WatchFrame::decode(shape.encode_to_vec().as_slice()).unwrap();
        let decoded: Vec<Event> = back
            .events
            .iter()
            .map(|b| decode_event(b.clone(), &c1).unwrap())
            .collect();
        assert_eq!(decoded, events);
    }

    /// A peer built before `changed_unix_micros` existed reads a new frame as before and
    /// sends frames a new peer reads with the field at 0.
    #[test]
    fn peers_without_the_change_time_still_read_frames() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct OldFrame {
            #[prost(bytes = "bytes", repeated, tag = "1")]
            events: Vec<Bytes>,
            #[prost(bool, tag = "2")]
            synced: bool,
            #[prost(bool, tag = "3")]
            resumed: bool,
            #[prost(uint64, tag = "4")]
            revision: u64,
            #[prost(string, tag = "5")]
            epoch: String,
        }
        let new = WatchFrame {
            events: vec![Bytes::from_static(b"x")],
            revision: 3,
            epoch: "e".into(),
            changed_unix_micros: 42,
            ..WatchFrame::default()
        };
        let old = OldFrame::decode(new.encode_to_vec().as_slice()).unwrap();
        assert_eq!((old.revision, old.events.len()), (3, 1));
        let back = WatchFrame::decode(old.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.changed_unix_micros, 0);
        assert_eq!(back.revision, 3);
    }

    /// A heartbeat frame reads, to a peer that predates `heartbeat_unix_millis`, as an
    /// empty batch at the revision it had; a frame from such a server tells no heartbeat.
    #[test]
    fn peers_without_the_heartbeat_read_its_frame_as_an_empty_batch() {
        #[derive(Clone, PartialEq, prost::Message)]
        struct OldFrame {
            #[prost(bytes = "bytes", repeated, tag = "1")]
            events: Vec<Bytes>,
            #[prost(bool, tag = "2")]
            synced: bool,
            #[prost(uint64, tag = "4")]
            revision: u64,
            #[prost(string, tag = "5")]
            epoch: String,
            #[prost(uint64, tag = "6")]
            changed_unix_micros: u64,
        }
        let beat = WatchFrame {
            revision: 8,
            epoch: "e".into(),
            heartbeat_unix_millis: 1_700_000_000_123,
            ..WatchFrame::default()
        };
        assert_eq!(
            beat.heartbeat_at(),
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123))
        );
        let old = OldFrame::decode(beat.encode_to_vec().as_slice()).unwrap();
        assert!(old.events.is_empty() && !old.synced);
        assert_eq!((old.revision, old.epoch.as_str()), (8, "e"));
        let back = WatchFrame::decode(old.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.heartbeat_at(), None);
    }

    /// The hand-written frame must follow the `.proto`: the fields of `WatchResponse`
    /// there are exactly the ones mirrored above.
    #[test]
    fn the_proto_declares_the_frames_fields() {
        let proto = include_str!("../../proto/fleetmesh/v1/mesh.proto");
        let start = proto
            .find("message WatchResponse {")
            .expect("WatchResponse in mesh.proto");
        let body = &proto[start..];
        let body = &body[..body.find("\n}").expect("end of WatchResponse")];
        let fields: Vec<&str> = body
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .collect();
        assert_eq!(
            fields,
            [
                "repeated Event events = 1;",
                "bool synced = 2;",
                "bool resumed = 3;",
                "uint64 revision = 4;",
                "string epoch = 5;",
                "uint64 changed_unix_micros = 6;",
                "uint64 heartbeat_unix_millis = 7;",
            ]
        );
    }
}
