//! What the cache holds per key and per change, and their etcd wire forms.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::etcd_api::wire::{encode_event_field, mvccpb};

/// One key as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Bytes,
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// Writes to the key since its creation, as far as the cache has seen them: a key
    /// first seen in a listing counts as written once (the store does not say more).
    pub version: i64,
    /// 0 for none, as etcd has it.
    pub lease: i64,
}

impl Record {
    pub fn to_wire(&self) -> mvccpb::KeyValue {
        mvccpb::KeyValue {
            key: self.key.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

/// One write or deletion, as the revision log keeps it.
#[derive(Debug)]
pub struct Change {
    pub revision: i64,
    pub key: Bytes,
    /// The key after the change; `None` for a deletion.
    pub kv: Option<Arc<Record>>,
    /// The key before the change: what a read at an earlier revision sees.
    pub prev: Option<Arc<Record>>,
    /// The change as a `WatchResponse.events` element (without `prev_kv`), encoded once,
    /// when the first watch sends it.
    field: OnceLock<Bytes>,
}

impl Change {
    pub fn new(
        revision: i64,
        key: Bytes,
        kv: Option<Arc<Record>>,
        prev: Option<Arc<Record>>,
    ) -> Self {
        Self {
            revision,
            key,
            kv,
            prev,
            field: OnceLock::new(),
        }
    }

    /// The change as a `WatchResponse.events` element (without `prev_kv`).
    pub fn field(&self) -> &Bytes {
        self.field
            .get_or_init(|| encode_event_field(&self.to_wire(false)))
    }

    pub fn is_delete(&self) -> bool {
        self.kv.is_none()
    }

    /// The `mvccpb.Event`: a deletion carries the key and the deleting revision only,
    /// as etcd sends it.
    pub fn to_wire(&self, with_prev: bool) -> mvccpb::Event {
        let (r#type, kv) = match &self.kv {
            Some(kv) => (mvccpb::event::EventType::Put, kv.to_wire()),
            None => (
                mvccpb::event::EventType::Delete,
                mvccpb::KeyValue {
                    key: self.key.clone(),
                    mod_revision: self.revision,
                    ..Default::default()
                },
            ),
        };
        mvccpb::Event {
            r#type: r#type as i32,
            kv: Some(kv),
            prev_kv: if with_prev {
                self.prev.as_ref().map(|p| p.to_wire())
            } else {
                None
            },
        }
    }
}
