//! The keys a [`KeyCache`](super::KeyCache) holds: sorted, compact, and counted cheaply.
//!
//! An etcd client pages through a prefix with `limit` and each page's `count` — the keys
//! in the rest of the range — so counting a range must not walk it. The table is a
//! sorted vector of chunks of at most [`CHUNK`] entries: a key is found by two binary
//! searches, and the keys of a range are counted from the positions of its two ends,
//! adding up the lengths of the chunks between them (not their entries).
//!
//! An entry is compact because millions of them are held (the agent's cache keys of 255
//! peers): the key's first segments (`cilium/cache/ip/v1/<peer>/`, shared by every key
//! of that peer and kind) are interned once per table, and the rest of the key and the
//! value share one allocation, the value dictionary-coded as the embedded store codes
//! it. Reads decode (see [`EntryRef::to_record`]).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::Bound;

use bytes::Bytes;

use super::record::Record;
use crate::kvstore::memory::dictionary;

/// Most entries in one chunk: an insert moves at most this many, a count adds one
/// length per this many keys.
const CHUNK: usize = 64;
/// Entries a chunk's allocation grows by: keys arrive in no particular order, so most
/// chunks are between half and wholly full, and a vector's doubling would leave a full
/// chunk's worth of room in each.
const GROWTH: usize = 16;
/// The key segments (each up to and including its `/`) interned as a shared prefix:
/// `cilium/cache/<res>/v1/<peer>/`, `cilium/state/ip/v1/default/`. Fewer for a key with
/// fewer segments; never the last segment, which would intern every key.
const PREFIX_SEGMENTS: usize = 5;
/// Marks, in [`Entry::suffix_len`], a value held coded.
const CODED: u32 = 1 << 31;

/// What etcd says about a key besides its name and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    /// 0 for none.
    pub lease: i64,
}

/// One key, compact.
struct Entry {
    /// The key past its interned prefix, then the value (coded if marked).
    bytes: Box<[u8]>,
    meta: Meta,
    prefix: u32,
    /// The length of the key's part of `bytes`, with [`CODED`] set if the value is coded.
    suffix_len: u32,
}

impl Entry {
    fn suffix(&self) -> &[u8] {
        &self.bytes[..self.split()]
    }

    fn stored_value(&self) -> &[u8] {
        &self.bytes[self.split()..]
    }

    fn split(&self) -> usize {
        (self.suffix_len & !CODED) as usize
    }

    fn is_coded(&self) -> bool {
        self.suffix_len & CODED != 0
    }
}

/// A held key, read in place.
#[derive(Clone, Copy)]
pub struct EntryRef<'a> {
    prefix: &'a [u8],
    entry: &'a Entry,
}

impl EntryRef<'_> {
    pub fn meta(&self) -> Meta {
        self.entry.meta
    }

    /// Whether the value held is `value`, compared without decoding.
    pub fn value_eq(&self, value: &[u8]) -> bool {
        let held = self.entry.stored_value();
        if self.entry.is_coded() {
            dictionary::decoded_eq(held, value)
        } else {
            held == value
        }
    }

    pub fn key_cmp(&self, key: &[u8]) -> Ordering {
        cmp_split(self.prefix, self.entry.suffix(), key)
    }

    pub fn key(&self) -> Bytes {
        let mut key = Vec::with_capacity(self.prefix.len() + self.entry.split());
        key.extend_from_slice(self.prefix);
        key.extend_from_slice(self.entry.suffix());
        Bytes::from(key)
    }

    pub fn value(&self) -> Bytes {
        let held = self.entry.stored_value();
        if self.entry.is_coded() {
            Bytes::from(dictionary::decode(held))
        } else {
            Bytes::copy_from_slice(held)
        }
    }

    /// The key as the etcd API serves it: key and value decoded.
    pub fn to_record(&self) -> Record {
        let meta = self.entry.meta;
        Record {
            key: self.key(),
            value: self.value(),
            create_revision: meta.create_revision,
            mod_revision: meta.mod_revision,
            version: meta.version,
            lease: meta.lease,
        }
    }
}

/// Compares the key `head ++ tail` with `key`, without joining them.
fn cmp_split(head: &[u8], tail: &[u8], key: &[u8]) -> Ordering {
    let n = head.len().min(key.len());
    // A `head` longer than `key` and equal up to its end is greater, as it should be.
    match head.cmp(&key[..n]) {
        Ordering::Equal => tail.cmp(&key[n..]),
        other => other,
    }
}

/// Where a key's interned prefix ends.
fn prefix_len(key: &[u8]) -> usize {
    let mut end = 0;
    let mut segments = 0;
    for (at, &byte) in key.iter().enumerate() {
        if byte == b'/' {
            end = at + 1;
            segments += 1;
            if segments == PREFIX_SEGMENTS {
                break;
            }
        }
    }
    end
}

/// The interned prefixes of one table. They are never dropped: there are a handful per
/// peer and kind.
#[derive(Default)]
struct Prefixes {
    all: Vec<Bytes>,
    ids: HashMap<Bytes, u32>,
}

impl Prefixes {
    fn intern(&mut self, prefix: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(prefix) {
            return id;
        }
        let id = u32::try_from(self.all.len()).unwrap_or(u32::MAX);
        let prefix = Bytes::copy_from_slice(prefix);
        self.all.push(prefix.clone());
        self.ids.insert(prefix, id);
        id
    }

    fn get(&self, id: u32) -> &[u8] {
        self.all.get(id as usize).map_or(&[], |p| &p[..])
    }
}

/// A position between entries: chunk `chunk`, before its entry `at` (which may be the
/// chunk's length: after its last).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cursor {
    chunk: usize,
    at: usize,
}

/// The sorted keys (see the module docs).
#[derive(Default)]
pub struct KeyTable {
    prefixes: Prefixes,
    /// Sorted, each non-empty, every key of one before every key of the next.
    chunks: Vec<Vec<Entry>>,
    len: usize,
    /// Bytes of every key and value, decoded.
    bytes: usize,
    /// Where an entry's bytes are put together before they get their own allocation.
    scratch: Vec<u8>,
}

impl KeyTable {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of every key and value held, as served.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn entry_ref<'a>(&'a self, entry: &'a Entry) -> EntryRef<'a> {
        EntryRef {
            prefix: self.prefixes.get(entry.prefix),
            entry,
        }
    }

    /// The chunk `key` belongs in: the last whose first key is not after it (the first
    /// chunk for a key before every other), so a key after every key of a chunk is
    /// appended to it.
    fn chunk_of(&self, key: &[u8]) -> usize {
        self.chunks
            .partition_point(|chunk| {
                chunk
                    .first()
                    .is_some_and(|e| self.entry_ref(e).key_cmp(key) != Ordering::Greater)
            })
            .saturating_sub(1)
    }

    /// `key`'s chunk and its place there: found, or where it would go.
    fn locate(&self, key: &[u8]) -> Option<(usize, Result<usize, usize>)> {
        let chunk = self.chunk_of(key);
        let entries = self.chunks.get(chunk)?;
        Some((
            chunk,
            entries.binary_search_by(|e| self.entry_ref(e).key_cmp(key)),
        ))
    }

    pub fn get(&self, key: &[u8]) -> Option<EntryRef<'_>> {
        let (chunk, Ok(at)) = self.locate(key)? else {
            return None;
        };
        Some(self.entry_ref(&self.chunks[chunk][at]))
    }

    /// Puts `value` under `key`, with the meta `meta` makes of what was held (if
    /// anything); returns what was held.
    pub fn insert(
        &mut self,
        key: &[u8],
        value: &[u8],
        meta: impl FnOnce(Option<Meta>) -> Meta,
    ) -> Option<Record> {
        self.insert_unless_held(key, value, false, meta).flatten()
    }

    /// [`Self::insert`] unless `value` is held under `key` already (found with the same
    /// lookup): `None` then, nothing written.
    pub fn insert_changed(
        &mut self,
        key: &[u8],
        value: &[u8],
        meta: impl FnOnce(Option<Meta>) -> Meta,
    ) -> Option<Option<Record>> {
        self.insert_unless_held(key, value, true, meta)
    }

    fn insert_unless_held(
        &mut self,
        key: &[u8],
        value: &[u8],
        unless_held: bool,
        meta: impl FnOnce(Option<Meta>) -> Meta,
    ) -> Option<Option<Record>> {
        let located = self.locate(key);
        if let (true, Some((chunk, Ok(at)))) = (unless_held, located)
            && self.entry_ref(&self.chunks[chunk][at]).value_eq(value)
        {
            return None;
        }
        let split = prefix_len(key);
        let suffix = &key[split..];
        self.scratch.clear();
        self.scratch.extend_from_slice(suffix);
        let coded = dictionary::encode_into(value, &mut self.scratch);
        if !coded {
            self.scratch.extend_from_slice(value);
        }
        let suffix_len = u32::try_from(suffix.len()).unwrap_or(u32::MAX) & !CODED;
        let mut entry = Entry {
            bytes: Box::from(&self.scratch[..]),
            meta: Meta {
                create_revision: 0,
                mod_revision: 0,
                version: 0,
                lease: 0,
            },
            prefix: self.prefixes.intern(&key[..split]),
            suffix_len: if coded {
                suffix_len | CODED
            } else {
                suffix_len
            },
        };
        self.bytes += key.len() + value.len();
        let Some((chunk, found)) = located else {
            entry.meta = meta(None);
            self.chunks.push(vec![entry]);
            self.len += 1;
            return Some(None);
        };
        match found {
            Ok(at) => {
                let held = &self.chunks[chunk][at];
                let prev = self.entry_ref(held).to_record();
                entry.meta = meta(Some(held.meta));
                self.chunks[chunk][at] = entry;
                self.bytes -= prev.key.len() + prev.value.len();
                Some(Some(prev))
            }
            Err(at) => {
                entry.meta = meta(None);
                let (chunk, at) = self.make_room(chunk, at);
                let entries = &mut self.chunks[chunk];
                if entries.len() == entries.capacity() {
                    entries.reserve_exact(GROWTH);
                }
                entries.insert(at, entry);
                self.len += 1;
                Some(None)
            }
        }
    }

    /// Where an entry goes that belongs at `at` in `chunk`: there, unless the chunk is
    /// full, which is then split first (before it grows: a chunk's allocation never
    /// exceeds [`CHUNK`] entries) — after its last entry if it goes there (keys often
    /// come in order: the chunks they fill stay full), else in halves.
    fn make_room(&mut self, chunk: usize, at: usize) -> (usize, usize) {
        let entries = &mut self.chunks[chunk];
        if entries.len() < CHUNK {
            return (chunk, at);
        }
        let from = if at == entries.len() { at } else { CHUNK / 2 };
        let mut tail = Vec::with_capacity(CHUNK - from + GROWTH);
        tail.extend(entries.drain(from..));
        entries.shrink_to(from + GROWTH);
        self.chunks.insert(chunk + 1, tail);
        if at < from {
            (chunk, at)
        } else {
            (chunk + 1, at - from)
        }
    }

    /// Removes `key`; returns what was held.
    pub fn remove(&mut self, key: &[u8]) -> Option<Record> {
        let (chunk, Ok(at)) = self.locate(key)? else {
            return None;
        };
        let entry = self.chunks[chunk].remove(at);
        if self.chunks[chunk].is_empty() {
            self.chunks.remove(chunk);
        }
        let prev = self.entry_ref(&entry).to_record();
        self.len -= 1;
        self.bytes -= prev.key.len() + prev.value.len();
        Some(prev)
    }

    /// Where the first entry at or after `bound` (as a range's start) is.
    fn start_of(&self, bound: Bound<&[u8]>) -> Cursor {
        match bound {
            Bound::Unbounded => Cursor { chunk: 0, at: 0 },
            Bound::Included(key) => self.cursor(key, |o| o == Ordering::Less),
            Bound::Excluded(key) => self.cursor(key, |o| o != Ordering::Greater),
        }
    }

    /// Where the entries of a range ending at `bound` end.
    fn end_of(&self, bound: Bound<&[u8]>) -> Cursor {
        match bound {
            Bound::Unbounded => Cursor {
                chunk: self.chunks.len(),
                at: 0,
            },
            Bound::Included(key) => self.cursor(key, |o| o != Ordering::Greater),
            Bound::Excluded(key) => self.cursor(key, |o| o == Ordering::Less),
        }
    }

    /// The position after every entry whose comparison with `key` passes `before`.
    fn cursor(&self, key: &[u8], before: impl Fn(Ordering) -> bool) -> Cursor {
        let chunk = self.chunk_of(key);
        let at = self.chunks.get(chunk).map_or(0, |entries| {
            entries.partition_point(|e| before(self.entry_ref(e).key_cmp(key)))
        });
        Cursor { chunk, at }
    }

    /// How many keys lie within `bounds`.
    pub fn count(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> usize {
        let (start, end) = (self.start_of(bounds.0), self.end_of(bounds.1));
        if (end.chunk, end.at) <= (start.chunk, start.at) {
            return 0;
        }
        let whole: usize = self.chunks[start.chunk..end.chunk]
            .iter()
            .map(Vec::len)
            .sum();
        (whole + end.at).saturating_sub(start.at)
    }

    /// The keys within `bounds`, in order.
    pub fn range(
        &self,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
    ) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        let (start, end) = (self.start_of(bounds.0), self.end_of(bounds.1));
        let mut at = start;
        std::iter::from_fn(move || {
            loop {
                if (at.chunk, at.at) >= (end.chunk, end.at) {
                    return None;
                }
                let entries = self.chunks.get(at.chunk)?;
                match entries.get(at.at) {
                    Some(entry) => {
                        at.at += 1;
                        return Some(self.entry_ref(entry));
                    }
                    None => {
                        at = Cursor {
                            chunk: at.chunk + 1,
                            at: 0,
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn mk_meta(revision: i64) -> Meta {
        Meta {
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        }
    }

    fn put(table: &mut KeyTable, key: &str, value: &str, revision: i64) -> Option<Record> {
        table.insert(key.as_bytes(), value.as_bytes(), |_| mk_meta(revision))
    }

    fn mk_range<'a>(start: &'a str, end: &'a str) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        (
            Bound::Included(start.as_bytes()),
            Bound::Excluded(end.as_bytes()),
        )
    }

    fn keys_in(table: &KeyTable, bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> Vec<String> {
        table
            .range(bounds)
            .map(|e| String::from_utf8(e.key().to_vec()).unwrap())
            .collect()
    }

    fn ip_key(peer: usize, host: usize) -> String {
        format!(
            "cilium/cache/ip/v1/peer{peer:03}/10.{peer}.{}.{}",
            host / 256,
            host % 256
        )
    }

    /// The table of `peers` × `hosts` ipcache keys, written peer after peer interleaved
    /// (as links deliver them), and the same keys in a `BTreeMap`.
    fn mk_filled(peers: usize, hosts: usize) -> (KeyTable, BTreeMap<String, String>) {
        let mut table = KeyTable::default();
        assert_eq!(table.len(), 0);
        let mut model = BTreeMap::new();
        for host in 0..hosts {
            for peer in 0..peers {
                let key = ip_key(peer, host);
                let value = format!(r#"{{"IP":"{host}","ID":{peer}}}"#);
                put(&mut table, &key, &value, 1);
                model.insert(key, value);
            }
        }
        (table, model)
    }

    #[test]
    fn keys_come_back_sorted_with_their_values_decoded() {
        let (table, model) = mk_filled(7, 300);
        assert_eq!(table.len(), model.len());
        assert!(table.chunks.len() > 1, "more than one chunk is exercised");
        let all = keys_in(&table, (Bound::Unbounded, Bound::Unbounded));
        assert_eq!(all, model.keys().cloned().collect::<Vec<_>>());
        for (key, value) in &model {
            let held = table.get(key.as_bytes()).unwrap();
            assert_eq!(held.value(), Bytes::copy_from_slice(value.as_bytes()));
            assert!(held.value_eq(value.as_bytes()));
            assert!(!held.value_eq(b"{}"));
        }
        let bytes: usize = model.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert_eq!(table.bytes(), bytes);
        assert!(table.get(b"cilium/cache/ip/v1/peer000/").is_none());
        assert!(table.get(b"cilium/cache/ip/v1/peer999/10.0.0.0").is_none());
    }

    #[test]
    fn counts_are_those_of_the_range_whatever_the_chunks() {
        let (table, model) = mk_filled(5, 700);
        let cases = [
            ("cilium/cache/ip/v1/", "cilium/cache/ip/v10"),
            ("cilium/cache/ip/v1/peer002/", "cilium/cache/ip/v1/peer0020"),
            (
                "cilium/cache/ip/v1/peer001/10.1.1.7",
                "cilium/cache/ip/v1/peer003/10.3.0.1",
            ),
            ("a", "b"),
            (
                "cilium/cache/ip/v1/peer004/10.4.2.9",
                "cilium/cache/ip/v1/peer004/10.4.2.90",
            ),
            ("z", "a"),
        ];
        for (start, end) in cases {
            let expected = if start <= end {
                model
                    .range::<str, _>((Bound::Included(start), Bound::Excluded(end)))
                    .count()
            } else {
                0 // An empty range; `BTreeMap` refuses it.
            };
            assert_eq!(
                table.count(mk_range(start, end)),
                expected,
                "{start}..{end}"
            );
            assert_eq!(keys_in(&table, mk_range(start, end)).len(), expected);
        }
        let after = "cilium/cache/ip/v1/peer001/10.1.1.7";
        let excluded = (Bound::Excluded(after.as_bytes()), Bound::Unbounded);
        let expected = model
            .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
            .count();
        assert_eq!(table.count(excluded), expected);
        let single = (
            Bound::Included(after.as_bytes()),
            Bound::Included(after.as_bytes()),
        );
        assert_eq!(table.count(single), 1);
        assert_eq!(keys_in(&table, single), [after]);
    }

    #[test]
    fn paging_with_a_limit_reads_every_key_once_in_order() {
        let (table, model) = mk_filled(4, 1000);
        let end = "cilium/cache/ip/v10";
        let mut from = "cilium/cache/ip/v1/".to_string();
        let mut read = Vec::new();
        loop {
            let bounds = mk_range(&from, end);
            let count = table.count(bounds);
            let page: Vec<String> = keys_in(&table, bounds).into_iter().take(256).collect();
            assert_eq!(
                count,
                model
                    .range::<str, _>((Bound::Included(from.as_str()), Bound::Excluded(end)))
                    .count()
            );
            read.extend(page.iter().cloned());
            if count <= page.len() {
                break;
            }
            from = format!("{}\0", page.last().unwrap());
        }
        assert_eq!(read, model.keys().cloned().collect::<Vec<_>>());
    }

    #[test]
    fn deletes_and_overwrites_keep_counts_and_bytes() {
        let (mut table, mut model) = mk_filled(3, 600);
        let chunks = table.chunks.len();
        // Every key of peer 1 goes, and every third of peer 2 is overwritten.
        for host in 0..600 {
            let key = ip_key(1, host);
            let prev = table.remove(key.as_bytes()).unwrap();
            assert_eq!(prev.value, model.remove(&key).unwrap().as_bytes());
            if host % 3 == 0 {
                let key = ip_key(2, host);
                let prev = put(&mut table, &key, "raw \u{fe} value", 9).unwrap();
                assert_eq!(prev.create_revision, 1);
                model.insert(key, "raw \u{fe} value".to_string());
            }
        }
        assert!(table.remove(ip_key(1, 0).as_bytes()).is_none());
        assert!(table.chunks.len() < chunks, "emptied chunks are dropped");
        assert_eq!(table.len(), model.len());
        assert_eq!(
            table.count(mk_range(
                "cilium/cache/ip/v1/peer001/",
                "cilium/cache/ip/v1/peer0010"
            )),
            0
        );
        assert_eq!(table.count(mk_range("cilium/", "cilium0")), model.len());
        let all = keys_in(&table, (Bound::Unbounded, Bound::Unbounded));
        assert_eq!(all, model.keys().cloned().collect::<Vec<_>>());
        let bytes: usize = model.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert_eq!(table.bytes(), bytes);
        let overwritten = table.get(ip_key(2, 3).as_bytes()).unwrap();
        assert_eq!(overwritten.meta().mod_revision, 9);
        assert_eq!(overwritten.value(), "raw \u{fe} value".as_bytes());
    }

    #[test]
    fn an_unchanged_value_is_not_written_again() {
        let (mut table, _) = mk_filled(2, 100);
        let (key, bytes) = (ip_key(1, 7), table.bytes());
        let held = table.get(key.as_bytes()).unwrap().value();
        let unchanged = table.insert_changed(key.as_bytes(), &held, |_| mk_meta(5));
        assert!(unchanged.is_none());
        assert_eq!(table.get(key.as_bytes()).unwrap().meta(), mk_meta(1));
        let changed = table.insert_changed(key.as_bytes(), b"another", |held| {
            assert_eq!(held, Some(mk_meta(1)));
            mk_meta(5)
        });
        assert_eq!(changed.unwrap().unwrap().value, held);
        assert_eq!(table.get(key.as_bytes()).unwrap().meta(), mk_meta(5));
        let new = ip_key(1, 1000);
        assert_eq!(
            table.insert_changed(new.as_bytes(), b"v", |_| mk_meta(6)),
            Some(None)
        );
        assert_eq!(table.len(), 201);
        assert_eq!(table.bytes(), bytes - held.len() + 7 + new.len() + 1);
    }

    #[test]
    fn meta_is_made_from_what_was_held() {
        let mut table = KeyTable::default();
        let key = b"cilium/.heartbeat";
        table.insert(key, b"t1", |held| {
            assert_eq!(held, None);
            mk_meta(1)
        });
        table.insert(key, b"t2", |held| {
            let held = held.unwrap();
            Meta {
                mod_revision: 2,
                version: held.version + 1,
                ..held
            }
        });
        let meta = table.get(key).unwrap().meta();
        assert_eq!(
            (meta.create_revision, meta.mod_revision, meta.version),
            (1, 2, 2)
        );
        assert_eq!(table.get(key).unwrap().key(), Bytes::from_static(key));
    }

    #[test]
    fn split_keys_compare_as_joined_ones() {
        for (head, tail, key) in [
            ("ab", "c", "abc"),
            ("ab", "c", "abd"),
            ("ab", "c", "ab"),
            ("abc", "", "ab"),
            ("a", "bc", "b"),
            ("", "x", "x/"),
        ] {
            let joined = format!("{head}{tail}");
            assert_eq!(
                cmp_split(head.as_bytes(), tail.as_bytes(), key.as_bytes()),
                joined.as_bytes().cmp(key.as_bytes()),
                "{head}+{tail} vs {key}"
            );
        }
        assert_eq!(prefix_len(b"cilium/cache/ip/v1/c2/10.0.0.1/32"), 22);
        assert_eq!(prefix_len(b"cilium/.heartbeat"), 7);
        assert_eq!(prefix_len(b"plain"), 0);
    }
}
