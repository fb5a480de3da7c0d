//! The etcd API's codec: prost's, with small request and response buffers.
//!
//! tonic allocates a codec's decode buffer when a call starts and keeps it for the
//! call's life. A Cilium agent keeps its `Watch` call open for as long as it runs and
//! sends a few small requests on it (creates and cancels of a key and a range end),
//! so the default 8 KiB would be most of what an idle etcd client costs the server
//! beyond its connection. The buffer still grows, by this step, for a larger request.
//! The same goes for the buffer responses are encoded into. With both at 512 bytes an
//! idle etcd client with Cilium's seven watches costs the apiserver 62–64 KiB
//! (`bench memory --etcd-api`), against 70–71 KiB with tonic's defaults.

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The request buffer's size, and the step it grows by: a watch create of a Cilium
/// key prefix fits several times over.
const REQUEST_BUFFER_BYTES: usize = 512;
/// The response buffer's first size. A watch's responses are either a few bytes (an
/// idle watch's `created`) or far more than tonic's 8 KiB (a batch for a busy one: the
/// buffer grows to fit), so its default would mostly sit idle beside every watch call.
const RESPONSE_BUFFER_BYTES: usize = 512;
/// Ready responses encoded into one write at most: tonic's default.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// prost's codec with small buffers (see the module); `build.rs` makes the
/// generated etcd services use it.
#[derive(Debug, Clone)]
pub struct EtcdCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for EtcdCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for EtcdCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(
            RESPONSE_BUFFER_BYTES,
            YIELD_THRESHOLD_BYTES,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(
            REQUEST_BUFFER_BYTES,
            YIELD_THRESHOLD_BYTES,
        ))
    }
}

#[cfg(test)]
mod tests {
    use tonic::codec::{Decoder, Encoder};

    use super::*;
    use crate::etcd_api::wire::etcdserverpb::watch_request::RequestUnion;
    use crate::etcd_api::wire::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest};
    use crate::etcd_api::wire::{WatchFrame, encode_header_field};

    #[test]
    fn a_cilium_watch_create_fits_the_request_buffer() {
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: "cilium/state/identities/v1/".into(),
                range_end: "cilium/state/identities/v10".into(),
                start_revision: i64::MAX,
                ..Default::default()
            })),
        };
        let mut codec = EtcdCodec::<(), WatchRequest>::default();
        let settings = format!("{:?}", codec.decoder().buffer_settings());
        assert!(
            settings.contains(&format!("buffer_size: {REQUEST_BUFFER_BYTES}")),
            "{settings}"
        );
        assert!(prost::Message::encoded_len(&create) * 4 < REQUEST_BUFFER_BYTES);
    }

    #[test]
    fn a_created_response_fits_the_response_buffer() {
        let created = WatchFrame {
            watch_id: 6,
            created: true,
            body: encode_header_field(&ResponseHeader {
                cluster_id: u64::MAX,
                member_id: u64::MAX,
                revision: i64::MAX,
                raft_term: 1,
            }),
            ..Default::default()
        };
        let mut codec = EtcdCodec::<WatchFrame, ()>::default();
        let settings = format!("{:?}", codec.encoder().buffer_settings());
        assert!(
            settings.contains(&format!("buffer_size: {RESPONSE_BUFFER_BYTES}")),
            "{settings}"
        );
        assert!(prost::Message::encoded_len(&created) * 4 < RESPONSE_BUFFER_BYTES);
    }
}
