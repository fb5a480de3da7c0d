//! The bytes of one kind's encoded upserts, one after another, addressed by offset:
//! appended to a growing tail, which a snapshot freezes into a shared chunk so that it
//! hands out slices of what is held instead of a copy. A snapshot taken while changes
//! keep coming (a watcher re-listing during churn) then costs a slice handle per entry,
//! however many watchers take one.

use std::ops::Range;

use bytes::Bytes;

/// Append-only bytes in frozen chunks and a tail; offsets never change until the owner
/// rebuilds it (compaction).
#[derive(Default)]
pub(super) struct Arena {
    /// Frozen chunks, each with the offset of its first byte, in offset order.
    frozen: Vec<(usize, Bytes)>,
    /// What was appended since the last freeze.
    tail: Vec<u8>,
    /// The offset of the tail's first byte: the frozen chunks' total length.
    tail_at: usize,
}

impl Arena {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            tail: Vec::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// Bytes ever appended (live or not).
    pub(super) fn len(&self) -> usize {
        self.tail_at + self.tail.len()
    }

    /// Appends `bytes`; returns their offset.
    pub(super) fn push(&mut self, bytes: &[u8]) -> usize {
        let at = self.len();
        self.tail.extend_from_slice(bytes);
        at
    }

    /// The bytes at `range`, which a [`push`](Self::push) returned (offset and length).
    pub(super) fn get(&self, range: Range<usize>) -> &[u8] {
        match range.start.checked_sub(self.tail_at) {
            Some(start) => &self.tail[start..start + range.len()],
            None => {
                let (at, chunk) = self.chunk_of(range.start);
                &chunk[range.start - at..range.end - at]
            }
        }
    }

    /// The bytes at `range` as a shared slice; call [`freeze`](Self::freeze) first, so
    /// that every range lies in a frozen chunk.
    pub(super) fn shared(&self, range: Range<usize>) -> Bytes {
        let (at, chunk) = self.chunk_of(range.start);
        chunk.slice(range.start - at..range.end - at)
    }

    /// Turns the tail into a frozen chunk (no copy).
    pub(super) fn freeze(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let mut tail = std::mem::take(&mut self.tail);
        tail.shrink_to_fit();
        let len = tail.len();
        self.frozen.push((self.tail_at, Bytes::from(tail)));
        self.tail_at += len;
    }

    /// The frozen chunk holding offset `at`, with its first byte's offset.
    fn chunk_of(&self, at: usize) -> (usize, &Bytes) {
        let index = self.frozen.partition_point(|(start, _)| *start <= at);
        let (start, chunk) = &self.frozen[index.saturating_sub(1)];
        (*start, chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_back_from_the_tail_and_from_frozen_chunks() {
        let mut arena = Arena::default();
        let a = arena.push(b"alpha");
        let b = arena.push(b"beta");
        assert_eq!(arena.get(a..a + 5), b"alpha");
        arena.freeze();
        let c = arena.push(b"gamma");
        arena.freeze();
        arena.freeze(); // An empty tail makes no chunk.
        let d = arena.push(b"delta");
        assert_eq!(arena.frozen.len(), 2);
        assert_eq!(arena.len(), 19);
        for (at, want) in [(a, "alpha"), (b, "beta"), (c, "gamma"), (d, "delta")] {
            assert_eq!(arena.get(at..at + want.len()), want.as_bytes());
        }
        arena.freeze();
        assert_eq!(&arena.shared(b..b + 4)[..], b"beta");
        assert_eq!(&arena.shared(c..c + 5)[..], b"gamma");
    }

    #[test]
    fn a_shared_slice_outlives_a_rebuilt_arena() {
        let mut arena = Arena::default();
        let at = arena.push(b"kept");
        arena.freeze();
        let slice = arena.shared(at..at + 4);
        drop(arena);
        assert_eq!(&slice[..], b"kept");
    }
}
