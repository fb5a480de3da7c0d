//! Pod names without an allocation per entry: a name is split into its last few bytes,
//! kept inline, and the rest (its stem), interned. Pods of one ReplicaSet, DaemonSet or
//! StatefulSet differ only in their last 5 or so characters (`web-7d4b9c8f6d-x2k9p`,
//! `web-7d4b9c8f6d-q8r4t`), so their stems are shared and each entry costs 12 bytes
//! where a `Box<str>` cost 16 plus a heap block of 32 or more.

use std::sync::Arc;

use super::intern::{Interner, Sym};

/// The bytes of a name kept inline: a Kubernetes random suffix and its dash.
const TAIL: usize = 6;
/// `len` of an entry without a pod name.
const NO_POD: u8 = u8::MAX;

/// A pod name, or none, as an ipcache entry keeps it.
#[derive(Debug)]
pub(super) struct CompactPod {
    /// The interned start of the name; `None` when the name fits in `tail`.
    stem: Option<Sym>,
    tail: [u8; TAIL],
    /// How many bytes of `tail` are used, or [`NO_POD`].
    len: u8,
}

/// Where `name` splits: the last [`TAIL`] bytes at most, starting at a char boundary.
fn split(name: &str) -> (&str, &str) {
    let mut at = name.len().saturating_sub(TAIL);
    while !name.is_char_boundary(at) {
        at += 1;
    }
    name.split_at(at)
}

impl CompactPod {
    /// No pod name.
    const NONE: Self = Self {
        stem: None,
        tail: [0; TAIL],
        len: NO_POD,
    };

    /// `pod` compact, its stem interned in `stems`; pair with [`release`](Self::release).
    pub fn new(stems: &mut Interner<Arc<str>>, pod: Option<&str>) -> Self {
        let mut compact = Self::NONE;
        compact.replace(stems, pod);
        compact
    }

    /// The inline part; `None` without a pod name.
    fn tail(&self) -> Option<&str> {
        let bytes = self.tail.get(..usize::from(self.len))?;
        // Copied from a `&str` cut at char boundaries (`split`).
        Some(std::str::from_utf8(bytes).expect("a pod name's tail is whole characters"))
    }

    fn stem<'a>(&self, stems: &'a Interner<Arc<str>>) -> &'a str {
        self.stem.and_then(|s| stems.get(s)).map_or("", |s| &**s)
    }

    /// The name back.
    pub fn name(&self, stems: &Interner<Arc<str>>) -> Option<String> {
        let tail = self.tail()?;
        let stem = self.stem(stems);
        let mut name = String::with_capacity(stem.len() + tail.len());
        name.push_str(stem);
        name.push_str(tail);
        Some(name)
    }

    /// Whether this is `pod`, compared without allocating (a name splits one way only).
    pub fn is(&self, stems: &Interner<Arc<str>>, pod: Option<&str>) -> bool {
        match (self.tail(), pod) {
            (None, None) => true,
            (Some(tail), Some(name)) => {
                let (stem, other_tail) = split(name);
                tail == other_tail && self.stem(stems) == stem
            }
            _ => false,
        }
    }

    /// Makes this `pod`, keeping the stem's handle when it is the same (a pod's update
    /// seldom renames it); whether it changed.
    pub fn replace(&mut self, stems: &mut Interner<Arc<str>>, pod: Option<&str>) -> bool {
        if self.is(stems, pod) {
            return false;
        }
        let (stem, tail, len) = match pod {
            Some(name) => {
                let (stem, tail) = split(name);
                // `split` keeps at most TAIL (< 255) bytes inline.
                (Some(stem).filter(|s| !s.is_empty()), tail, tail.len() as u8)
            }
            None => (None, "", NO_POD),
        };
        self.stem = stems.replace(self.stem, stem);
        self.tail = [0; TAIL];
        self.tail[..tail.len()].copy_from_slice(tail.as_bytes());
        self.len = len;
        true
    }

    /// Gives the stem's reference back.
    pub fn release(self, stems: &mut Interner<Arc<str>>) {
        if let Some(s) = self.stem {
            stems.release(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_compare_in_place() {
        let mut stems = Interner::default();
        for pod in [
            None,
            Some(""),
            Some("a"),
            Some("web-0"),
            Some("123456"),
            Some("1234567"),
            Some("web-7d4b9c8f6d-x2k9p"),
            Some("pod-10.2.0.1"),
            Some("ünïcødé-ñämé"),
            Some("ab€€"),
            Some("€ab€"),
        ] {
            let c = CompactPod::new(&mut stems, pod);
            assert_eq!(c.name(&stems).as_deref(), pod, "{pod:?}");
            assert!(c.is(&stems, pod), "{pod:?}");
            for other in [None, Some(""), Some("web-1"), Some("web-7d4b9c8f6d-x2k9q")] {
                assert_eq!(c.is(&stems, other), other == pod, "{pod:?} vs {other:?}");
            }
            c.release(&mut stems);
        }
        assert_eq!(stems.len(), 0, "every stem released");
    }

    #[test]
    fn replicas_share_one_stem_until_the_last_is_released() {
        let mut stems = Interner::default();
        let a = CompactPod::new(&mut stems, Some("web-7d4b9c8f6d-x2k9p"));
        let b = CompactPod::new(&mut stems, Some("web-7d4b9c8f6d-q8r4t"));
        let short = CompactPod::new(&mut stems, Some("web-0"));
        assert_eq!(a.stem, b.stem);
        assert_eq!(short.stem, None, "a short name is all inline");
        assert_eq!(stems.len(), 1);
        a.release(&mut stems);
        assert_eq!(b.name(&stems).as_deref(), Some("web-7d4b9c8f6d-q8r4t"));
        b.release(&mut stems);
        assert_eq!(stems.len(), 0);
        short.release(&mut stems);
    }

    #[test]
    fn a_compact_pod_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<CompactPod>(), 12);
    }
}
