//! One write of the embedded store, as it is held: a single immutable allocation with
//! the key, the revisions, the lease and the value, shared by the key's slot and the
//! history. A store of 100k keys thus costs one allocation per key (plus a pointer per
//! history event) instead of a key, a value and an event copied for each of them.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;

use super::dictionary;
use crate::kvstore::keys;
use crate::kvstore::{KeyValue, LeaseId, WatchEvent};
use crate::model::Revision;

/// Key prefixes that nearly every key starts with: a record names its prefix by its
/// position here (one byte) instead of spelling it (about 30 bytes, for values of 150).
const COMMON_PREFIXES: [&str; 9] = [
    keys::IP_PREFIX,
    keys::IDENTITIES_ID_PREFIX,
    keys::NODES_PREFIX,
    keys::SERVICES_PREFIX,
    keys::FLEETMESH_SERVICES_PREFIX,
    keys::ALLOC_ID_PREFIX,
    keys::ALLOC_VALUE_PREFIX,
    keys::CLUSTER_CONFIG_PREFIX,
    keys::SYNCED_PREFIX,
];

/// Set in a record's first byte (next to the common prefix's code) when its value is held
/// dictionary-coded rather than as written.
const CODED: u8 = 0x80;
/// The longest LEB128 varint of a `u64`.
const MAX_VARINT: usize = 10;
/// A create revision no put has (the first write is revision 2): marks a delete.
const TOMBSTONE: Revision = 0;
/// A lease id the store never grants (ids start at 1 and skip 0 when they wrap): no lease.
const NO_LEASE: u64 = 0;

/// A put (the key's new state) or a delete (its key and revision) — immutable, so that
/// a watcher holding one reads exactly what was written, whatever came after.
///
/// Laid out as `common prefix, key rest length, key rest, create revision, mod revision,
/// lease, value`: the prefix a byte (0 for none, else its position in
/// [`COMMON_PREFIXES`] plus one, with [`CODED`] set when the value is dictionary-coded),
/// the numbers LEB128 varints (revisions and lengths take two or three bytes, not eight),
/// the key first so that comparing keys reads little. The value is held coded (see
/// [`dictionary`]) when that shortens it: the Cilium formats are mostly field names.
#[derive(Clone, Debug)]
pub(super) struct Record(Arc<[u8]>);

/// Where a record's parts are.
struct Layout {
    create_revision: u64,
    mod_revision: u64,
    lease: u64,
    value_start: usize,
}

impl Record {
    /// A put of `key` at `mod_revision`.
    pub(super) fn put(
        key: &str,
        value: &[u8],
        create_revision: Revision,
        mod_revision: Revision,
        lease: Option<LeaseId>,
    ) -> Self {
        // The sign does not matter, only that the id reads back the same.
        let lease = lease.map_or(NO_LEASE, |id| id.0 as u64);
        Self::build(key, value, create_revision, mod_revision, lease)
    }

    /// The delete of `key` at `revision`.
    pub(super) fn tombstone(key: &str, revision: Revision) -> Self {
        Self::build(key, &[], TOMBSTONE, revision, NO_LEASE)
    }

    /// A record that only holds `key`: what a lookup compares the held ones with.
    pub(super) fn probe(key: &str) -> Self {
        Self::build(key, &[], TOMBSTONE, TOMBSTONE, NO_LEASE)
    }

    fn build(key: &str, value: &[u8], create: Revision, modified: Revision, lease: u64) -> Self {
        // The longest common prefix of the key, if any.
        let (code, rest) = COMMON_PREFIXES
            .iter()
            .zip(1u8..)
            .filter_map(|(prefix, code)| Some((code, key.strip_prefix(prefix)?)))
            .min_by_key(|(_, rest)| rest.len())
            .unwrap_or((0, key));
        let mut buf = Vec::with_capacity(1 + 4 * MAX_VARINT + rest.len() + value.len());
        buf.push(code);
        put_varint(&mut buf, rest.len() as u64);
        buf.extend_from_slice(rest.as_bytes());
        put_varint(&mut buf, create);
        put_varint(&mut buf, modified);
        put_varint(&mut buf, lease);
        if dictionary::encode_into(value, &mut buf) {
            buf[0] |= CODED;
        } else {
            buf.extend_from_slice(value);
        }
        Self(Arc::from(buf))
    }

    /// The first byte without its [`CODED`] flag: which common prefix the key has.
    fn prefix_code(&self) -> u8 {
        self.0.first().copied().unwrap_or(0) & !CODED
    }

    /// Whether the value is held dictionary-coded.
    fn is_coded(&self) -> bool {
        self.0.first().is_some_and(|first| first & CODED != 0)
    }

    /// The key's common prefix ("" for none).
    fn common_prefix(&self) -> &'static str {
        match self.prefix_code().checked_sub(1) {
            Some(at) => COMMON_PREFIXES.get(usize::from(at)).copied().unwrap_or(""),
            None => "",
        }
    }

    /// Where the key's rest (after its common prefix) is.
    fn key_range(&self) -> std::ops::Range<usize> {
        let (len, start) = varint(&self.0, 1);
        let end = usize::try_from(len)
            .map_or(self.0.len(), |len| start.saturating_add(len))
            .min(self.0.len());
        start..end
    }

    fn layout(&self) -> Layout {
        let key = self.key_range();
        let (create_revision, at) = varint(&self.0, key.end);
        let (mod_revision, at) = varint(&self.0, at);
        let (lease, value_start) = varint(&self.0, at);
        Layout {
            create_revision,
            mod_revision,
            lease,
            value_start,
        }
    }

    pub(super) fn is_delete(&self) -> bool {
        self.create_revision() == TOMBSTONE
    }

    pub(super) fn create_revision(&self) -> Revision {
        self.layout().create_revision
    }

    /// The revision of the write: the put's, or the delete's.
    pub(super) fn mod_revision(&self) -> Revision {
        self.layout().mod_revision
    }

    pub(super) fn lease(&self) -> Option<LeaseId> {
        let id = self.layout().lease;
        // Back to the id it was made from (see `put`).
        (id != NO_LEASE).then_some(LeaseId(id as i64))
    }

    /// The key as its common prefix and the rest (UTF-8: it was a `&str`).
    fn key_parts(&self) -> (&'static [u8], &[u8]) {
        (self.common_prefix().as_bytes(), &self.0[self.key_range()])
    }

    /// Whether the key starts with `prefix`.
    pub(super) fn key_starts_with(&self, prefix: &[u8]) -> bool {
        let (common, rest) = self.key_parts();
        match prefix.strip_prefix(common) {
            Some(after) => rest.starts_with(after),
            None => common.starts_with(prefix),
        }
    }

    /// Orders records by key, as the keys' bytes order.
    pub(super) fn cmp_key(&self, other: &Self) -> Ordering {
        let (a, b) = (self.key_parts(), other.key_parts());
        if a.0 == b.0 {
            return a.1.cmp(b.1);
        }
        let a = a.0.iter().chain(a.1);
        a.cmp(b.0.iter().chain(b.1))
    }

    /// The value as held: coded or not (see [`Record::is_coded`]).
    fn held_value(&self) -> &[u8] {
        self.0.get(self.layout().value_start..).unwrap_or_default()
    }

    /// The value as written. A value held as written is not copied: it is a view of this
    /// record, which it keeps alive; a coded one is decoded into a new buffer, once per
    /// read (each watcher's event, each listed key) — the price of holding it small.
    pub(super) fn value_bytes(&self) -> Bytes {
        let held = self.held_value();
        if held.is_empty() {
            Bytes::new()
        } else if self.is_coded() {
            Bytes::from(dictionary::decode(held))
        } else {
            Bytes::from_owner(ValueOf(self.clone()))
        }
    }

    /// Whether the value as written is `value`, compared without decoding it.
    pub(super) fn value_eq(&self, value: &[u8]) -> bool {
        let held = self.held_value();
        if self.is_coded() {
            dictionary::decoded_eq(held, value)
        } else {
            held == value
        }
    }

    pub(super) fn key_string(&self) -> String {
        // Always valid UTF-8 (it was a `&str`), so this is a plain copy.
        let (common, rest) = self.key_parts();
        let mut key = String::with_capacity(common.len() + rest.len());
        key.push_str(self.common_prefix());
        key.push_str(&String::from_utf8_lossy(rest));
        key
    }

    /// The put as the `Store` API hands it out (the value as [`Record::value_bytes`]).
    pub(super) fn to_key_value(&self) -> KeyValue {
        let layout = self.layout();
        KeyValue {
            key: self.key_string(),
            value: self.value_bytes(),
            create_revision: layout.create_revision,
            mod_revision: layout.mod_revision,
            lease: self.lease(),
        }
    }

    /// The write as a watch event.
    pub(super) fn to_event(&self) -> WatchEvent {
        if self.is_delete() {
            WatchEvent::Delete {
                key: self.key_string(),
                revision: self.mod_revision(),
            }
        } else {
            WatchEvent::Put(self.to_key_value())
        }
    }
}

fn put_varint(buf: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        buf.push((n & 0x7f) as u8 | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// The varint at `at` and where it ends. Records are only ever built by `put_varint`; a
/// read past the end stops there rather than panicking.
fn varint(buf: &[u8], mut at: usize) -> (u64, usize) {
    let mut n = 0u64;
    let mut shift = 0;
    while let Some(&byte) = buf.get(at) {
        at += 1;
        n |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte < 0x80 || shift >= 64 {
            break;
        }
    }
    (n, at)
}

/// Sorts records by key: the order a listing is handed out in.
pub(super) fn sort_by_key(records: &mut [Record]) {
    records.sort_unstable_by(Record::cmp_key);
}

/// A record's value, held as written, as the owner of a `Bytes`.
struct ValueOf(Record);

impl AsRef<[u8]> for ValueOf {
    fn as_ref(&self) -> &[u8] {
        self.0.held_value()
    }
}

/// A record compared and hashed by its key alone: the store's key slots, looked up
/// with a [`Record::probe`].
#[derive(Clone, Debug)]
pub(super) struct Keyed(pub(super) Record);

impl PartialEq for Keyed {
    fn eq(&self, other: &Self) -> bool {
        self.0.cmp_key(&other.0) == Ordering::Equal
    }
}

impl Eq for Keyed {}

/// A key is always split the same way (its longest common prefix), so hashing the
/// split is hashing the key.
impl Hash for Keyed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.0.prefix_code());
        state.write(&self.0.0[self.0.key_range()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_put_reads_back_whole() {
        let record = Record::put("a/key", b"value", 2, 7, Some(LeaseId(9)));
        assert!(!record.is_delete());
        assert_eq!((record.create_revision(), record.mod_revision()), (2, 7));
        assert_eq!(record.lease(), Some(LeaseId(9)));
        assert_eq!(record.key_string(), "a/key");
        assert_eq!(record.value_bytes(), &b"value"[..]);
        let kv = record.to_key_value();
        assert_eq!(kv.key, "a/key");
        assert_eq!(kv.value, Bytes::from_static(b"value"));
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.lease),
            (2, 7, Some(LeaseId(9)))
        );
        assert_eq!(record.to_event(), WatchEvent::Put(kv));
    }

    /// An ipcache value as the codec writes it: held coded.
    const ENDPOINT: &[u8] = br#"{"IP":"10.1.0.5","Mask":null,"HostIP":"10.0.0.3","ID":65538,"Key":0,"Metadata":"","K8sNamespace":"bench","K8sPodName":"pod-12345","K8sServiceAccount":"default"}"#;

    #[test]
    fn coded_and_raw_values_read_back_as_written() {
        let key = format!("{}10.1.0.5", keys::IP_PREFIX);
        // Coded; a token alone; not UTF-8, so held raw; no token, held raw.
        for value in [ENDPOINT, b"null", b"{\"IP\":\"\xff", b"plain"] {
            let record = Record::put(&key, value, 2, 5, Some(LeaseId(3)));
            let coded = record.is_coded();
            assert_eq!(coded, !value.contains(&0xff) && value != b"plain");
            assert_eq!(record.value_bytes(), value);
            assert!(record.value_eq(value));
            assert!(!record.value_eq(&value[1..]));
            assert!(!record.value_eq(&[value, b"x"].concat()));
            assert!(!record.value_eq(b""));
            assert_eq!(record.key_string(), key);
            assert_eq!(record.lease(), Some(LeaseId(3)));
            let kv = record.to_key_value();
            assert_eq!(
                (
                    kv.key.as_str(),
                    &kv.value[..],
                    kv.create_revision,
                    kv.mod_revision
                ),
                (key.as_str(), value, 2, 5)
            );
            assert_eq!(record.to_event(), WatchEvent::Put(kv));
            // The flag does not change the key's identity.
            let probe = Keyed(Record::probe(&key));
            assert_eq!(Keyed(record.clone()), probe);
            let mut set = std::collections::HashSet::new();
            set.insert(Keyed(record));
            assert!(set.contains(&probe));
        }
        let coded = Record::put(&key, ENDPOINT, 2, 5, None);
        assert!(coded.0.len() < 80, "held in {} bytes", coded.0.len());
        assert!(Record::put("k", b"", 2, 2, None).value_eq(b""));
    }

    #[test]
    fn numbers_of_every_size_read_back() {
        for n in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = vec![7];
            put_varint(&mut buf, n);
            buf.push(9);
            let (read, end) = varint(&buf, 1);
            assert_eq!((read, buf[end]), (n, 9), "{n}");
        }
        let record = Record::put("k", b"v", u64::MAX, u64::MAX, Some(LeaseId(-5)));
        assert_eq!(record.mod_revision(), u64::MAX);
        assert_eq!(record.lease(), Some(LeaseId(-5)));
        assert_eq!(record.value_bytes(), &b"v"[..]);
        let long_key = "k".repeat(300);
        assert_eq!(Record::tombstone(&long_key, 4).key_string(), long_key);
    }

    #[test]
    fn a_tombstone_is_a_delete_event() {
        let record = Record::tombstone("k", 12);
        assert!(record.is_delete());
        assert_eq!(record.lease(), None);
        assert_eq!(
            record.to_event(),
            WatchEvent::Delete {
                key: "k".into(),
                revision: 12
            }
        );
    }

    #[test]
    fn an_empty_value_and_no_lease_round_trip() {
        let record = Record::put("", b"", 3, 3, None);
        let kv = record.to_key_value();
        assert_eq!((kv.key.as_str(), kv.value.len(), kv.lease), ("", 0, None));
        assert!(!record.is_delete());
    }

    #[test]
    fn keyed_records_order_and_compare_by_key_only() {
        let a = Keyed(Record::put("a", b"2", 2, 2, None));
        let a_again = Keyed(Record::put("a", b"1", 3, 3, None));
        let b = Keyed(Record::put("b", b"0", 4, 4, None));
        assert_eq!(a, a_again);
        assert_ne!(a, b);
        assert_eq!(a.0.cmp_key(&b.0), Ordering::Less);
        assert_eq!(a.0.cmp_key(&a_again.0), Ordering::Equal);
    }

    #[test]
    fn keyed_records_hash_by_key() {
        let mut set = std::collections::HashSet::new();
        set.insert(Keyed(Record::put(
            "cilium/state/ip/v1/default/1",
            b"1",
            2,
            2,
            None,
        )));
        set.insert(Keyed(Record::put("x", b"1", 3, 3, None)));
        assert!(set.contains(&Keyed(Record::probe("cilium/state/ip/v1/default/1"))));
        assert!(set.contains(&Keyed(Record::probe("x"))));
        assert!(!set.contains(&Keyed(Record::probe("cilium/state/ip/v1/default/"))));
    }

    #[test]
    fn common_prefixes_are_spelled_by_a_byte_and_order_like_whole_keys() {
        let ip = format!("{}10.0.0.1", keys::IP_PREFIX);
        let record = Record::put(&ip, b"{}", 2, 2, None);
        assert_eq!(record.key_string(), ip);
        assert!(record.0.len() < ip.len(), "the prefix is not spelled out");
        assert!(record.key_starts_with(b"cilium/"));
        assert!(record.key_starts_with(keys::IP_PREFIX.as_bytes()));
        assert!(record.key_starts_with(ip.as_bytes()));
        assert!(record.key_starts_with(b""));
        assert!(!record.key_starts_with(b"cilium/state/ip/v1/default/10.0.0.10"));
        assert!(!record.key_starts_with(b"cilium/state/nodes/"));
        // Keys with and without a common prefix, and with different ones, sort as their
        // bytes do.
        let mut keys = vec![
            ip.clone(),
            format!("{}10.0.0.10", keys::IP_PREFIX),
            "cilium/state/ip/v1/defaulz".to_string(),
            "cilium/state/ip/".to_string(),
            format!("{}1", keys::IDENTITIES_ID_PREFIX),
            format!("{}n", keys::NODES_PREFIX),
            "cilium/state/nodes/v1".to_string(),
            "d".to_string(),
            String::new(),
        ];
        let mut records: Vec<Record> = keys.iter().map(|k| Record::probe(k)).collect();
        sort_by_key(&mut records);
        keys.sort();
        let sorted: Vec<String> = records.iter().map(Record::key_string).collect();
        assert_eq!(sorted, keys);
    }
}
