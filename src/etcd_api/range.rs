//! Key ranges as etcd's requests name them: a key and a `range_end`.

use std::ops::Bound;

use bytes::Bytes;

/// The keys a request or a permission covers, in byte order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyRange {
    start: Bytes,
    end: RangeEnd,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum RangeEnd {
    /// `start` alone.
    Single,
    /// Up to this key, excluded.
    Before(Bytes),
    /// Every key from `start` on.
    Unbounded,
}

impl KeyRange {
    /// The range of a request's `key` and `range_end`: an empty end is the key alone,
    /// `"\0"` every key from `key` on, anything else the end (excluded).
    pub fn from_request(key: Bytes, range_end: Bytes) -> Self {
        let end = match &range_end[..] {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            _ => RangeEnd::Before(range_end),
        };
        Self { start: key, end }
    }

    /// One key.
    pub fn key(key: &str) -> Self {
        Self {
            start: Bytes::copy_from_slice(key.as_bytes()),
            end: RangeEnd::Single,
        }
    }

    /// Every key that starts with `prefix` (etcd's `--prefix`).
    pub fn prefix(prefix: &str) -> Self {
        let start = Bytes::copy_from_slice(prefix.as_bytes());
        let end = match prefix_end(prefix.as_bytes()) {
            Some(end) => RangeEnd::Before(end),
            None => RangeEnd::Unbounded,
        };
        Self { start, end }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            RangeEnd::Single => key == &self.start[..],
            RangeEnd::Before(end) => &self.start[..] <= key && key < &end[..],
            RangeEnd::Unbounded => &self.start[..] <= key,
        }
    }

    /// Whether every key of `other` is in this range.
    pub fn covers(&self, other: &KeyRange) -> bool {
        if !self.contains(&other.start) {
            return false;
        }
        match (&self.end, &other.end) {
            (_, RangeEnd::Single) => true,
            (RangeEnd::Unbounded, _) => true,
            (RangeEnd::Before(end), RangeEnd::Before(other_end)) => other_end <= end,
            (RangeEnd::Single, RangeEnd::Before(other_end)) => {
                // `[k, k\0)` holds `k` alone.
                other_end.len() == self.start.len() + 1
                    && other_end.starts_with(&self.start)
                    && other_end.last() == Some(&0)
            }
            (_, RangeEnd::Unbounded) => false,
        }
    }

    /// The bounds to walk a `BTreeMap` keyed by bytes.
    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        let start = Bound::Included(&self.start[..]);
        match &self.end {
            RangeEnd::Single => (start, Bound::Included(&self.start[..])),
            RangeEnd::Before(end) if end[..] <= self.start[..] => {
                // An empty range: etcd answers it with nothing.
                (start, Bound::Excluded(&self.start[..]))
            }
            RangeEnd::Before(end) => (start, Bound::Excluded(&end[..])),
            RangeEnd::Unbounded => (start, Bound::Unbounded),
        }
    }
}

/// The first key after every key that starts with `prefix`; `None` when there is none
/// (a prefix of `0xff` bytes only).
fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(Bytes::from(end));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_range(key: &str, end: &str) -> KeyRange {
        KeyRange::from_request(
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::copy_from_slice(end.as_bytes()),
        )
    }

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        let state = KeyRange::prefix("cilium/state/");
        assert_eq!(state, mk_range("cilium/state/", "cilium/state0"));
        assert!(state.contains(b"cilium/state/ip/v1/default/10.0.0.1"));
        assert!(!state.contains(b"cilium/state"));
        assert!(!state.contains(b"cilium/state0"));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(Bytes::from_static(b"b")));
    }

    #[test]
    fn request_ranges_follow_etcd() {
        let single = mk_range("a", "");
        assert!(single.contains(b"a") && !single.contains(b"a\0"));
        let from = mk_range("b", "\0");
        assert!(from.contains(b"zzz") && !from.contains(b"a"));
        let empty = mk_range("b", "a");
        assert!(!empty.contains(b"b"));
    }

    #[test]
    fn a_permission_covers_what_lies_inside_it() {
        let state = KeyRange::prefix("cilium/state/");
        assert!(state.covers(&KeyRange::prefix("cilium/state/nodes/v1/")));
        assert!(state.covers(&KeyRange::key("cilium/state/x")));
        assert!(state.covers(&state));
        assert!(!state.covers(&KeyRange::prefix("cilium/")));
        assert!(!state.covers(&mk_range("cilium/state/", "\0")));
        assert!(!state.covers(&KeyRange::key("cilium/statf")));

        let config = KeyRange::key("cilium/cluster-config/c1");
        assert!(config.covers(&KeyRange::key("cilium/cluster-config/c1")));
        assert!(config.covers(&mk_range(
            "cilium/cluster-config/c1",
            "cilium/cluster-config/c1\0"
        )));
        assert!(!config.covers(&KeyRange::prefix("cilium/cluster-config/c1")));
        assert!(!config.covers(&KeyRange::key("cilium/cluster-config/c2")));
    }
}
