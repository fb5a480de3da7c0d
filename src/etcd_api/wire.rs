//! The generated etcd messages and what the server encodes by hand: response headers,
//! events and the [`WatchFrame`] that carries them.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{DecodeContext, WireType};

/// etcd's `etcdserverpb` package: requests, responses and the server traits.
#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's `mvccpb` package: `KeyValue` and `Event`.
#[allow(clippy::all, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

use etcdserverpb::ResponseHeader;

/// `WatchResponse.header`'s field number.
const HEADER_FIELD: u32 = 1;
/// `WatchResponse.events`' field number.
const EVENTS_FIELD: u32 = 11;

/// `etcdserverpb.WatchResponse` as the server writes it: the per-watch fields, then
/// `body`, the already encoded `header` and `events` fields.
///
/// Protobuf lets fields come in any order and repeats of a repeated field concatenate,
/// so one encoded body (a header and a run of events) is shared by every watch of the
/// same range, and only the few bytes of `watch_id` and the flags are written per
/// watch. `build.rs` maps `WatchResponse` to this type; it is only ever encoded (the
/// server never reads a `WatchResponse`), so decoding keeps the scalar fields and
/// skips the rest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchFrame {
    pub watch_id: i64,
    pub created: bool,
    pub canceled: bool,
    pub compact_revision: i64,
    pub cancel_reason: String,
    /// Encoded fields 1 (`header`) and 11 (`events`), see [`encode_header_field`] and
    /// [`encode_event_field`].
    pub body: Bytes,
}

impl Message for WatchFrame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        use prost::encoding::{bool, int64, string};
        if self.watch_id != 0 {
            int64::encode(2, &self.watch_id, buf);
        }
        if self.created {
            bool::encode(3, &self.created, buf);
        }
        if self.canceled {
            bool::encode(4, &self.canceled, buf);
        }
        if self.compact_revision != 0 {
            int64::encode(5, &self.compact_revision, buf);
        }
        if !self.cancel_reason.is_empty() {
            string::encode(6, &self.cancel_reason, buf);
        }
        buf.put_slice(&self.body);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        use prost::encoding::{bool, int64, skip_field, string};
        match tag {
            2 => int64::merge(wire_type, &mut self.watch_id, buf, ctx),
            3 => bool::merge(wire_type, &mut self.created, buf, ctx),
            4 => bool::merge(wire_type, &mut self.canceled, buf, ctx),
            5 => int64::merge(wire_type, &mut self.compact_revision, buf, ctx),
            6 => string::merge(wire_type, &mut self.cancel_reason, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        use prost::encoding::{bool, int64, string};
        let mut len = self.body.len();
        if self.watch_id != 0 {
            len += int64::encoded_len(2, &self.watch_id);
        }
        if self.created {
            len += bool::encoded_len(3, &self.created);
        }
        if self.canceled {
            len += bool::encoded_len(4, &self.canceled);
        }
        if self.compact_revision != 0 {
            len += int64::encoded_len(5, &self.compact_revision);
        }
        if !self.cancel_reason.is_empty() {
            len += string::encoded_len(6, &self.cancel_reason);
        }
        len
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// A `WatchResponse.header` field, encoded.
pub fn encode_header_field(header: &ResponseHeader) -> Bytes {
    let mut buf = BytesMut::with_capacity(32);
    prost::encoding::message::encode(HEADER_FIELD, header, &mut buf);
    buf.freeze()
}

/// A `WatchResponse.events` element, encoded with its field key: appending these after
/// a header field makes a body.
pub fn encode_event_field(event: &mvccpb::Event) -> Bytes {
    let len = prost::encoding::message::encoded_len(EVENTS_FIELD, event);
    let mut buf = BytesMut::with_capacity(len);
    prost::encoding::message::encode(EVENTS_FIELD, event, &mut buf);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `WatchResponse` as a client built from the `.proto` decodes it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct WatchResponseShape {
        #[prost(message, optional, tag = "1")]
        header: Option<ResponseHeader>,
        #[prost(int64, tag = "2")]
        watch_id: i64,
        #[prost(bool, tag = "3")]
        created: bool,
        #[prost(bool, tag = "4")]
        canceled: bool,
        #[prost(int64, tag = "5")]
        compact_revision: i64,
        #[prost(string, tag = "6")]
        cancel_reason: String,
        #[prost(bool, tag = "7")]
        fragment: bool,
        #[prost(message, repeated, tag = "11")]
        events: Vec<mvccpb::Event>,
    }

    fn mk_event(key: &str, revision: i64) -> mvccpb::Event {
        mvccpb::Event {
            r#type: mvccpb::event::EventType::Put as i32,
            kv: Some(mvccpb::KeyValue {
                key: Bytes::copy_from_slice(key.as_bytes()),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                value: Bytes::from_static(b"v"),
                lease: 7,
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn a_frame_decodes_as_the_watch_response_it_stands_for() {
        let header = ResponseHeader {
            cluster_id: 0xfeed,
            member_id: 3,
            revision: 12,
            raft_term: 1,
        };
        let events = [
            mk_event("cilium/state/a", 11),
            mk_event("cilium/state/b", 12),
        ];
        let mut body = BytesMut::new();
        body.extend_from_slice(&encode_header_field(&header));
        for event in &events {
            body.extend_from_slice(&encode_event_field(event));
        }
        let frame = WatchFrame {
            watch_id: 5,
            created: true,
            canceled: true,
            compact_revision: 9,
            cancel_reason: "why".into(),
            body: body.freeze(),
        };
        let bytes = frame.encode_to_vec();
        assert_eq!(bytes.len(), frame.encoded_len());
        let shape = WatchResponseShape::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            shape,
            WatchResponseShape {
                header: Some(header),
                watch_id: 5,
                created: true,
                canceled: true,
                compact_revision: 9,
                cancel_reason: "why".into(),
                fragment: false,
                events: events.to_vec(),
            }
        );
        let back = WatchFrame::decode(bytes.as_slice()).unwrap();
        assert_eq!((back.watch_id, back.compact_revision), (5, 9));
    }
}
