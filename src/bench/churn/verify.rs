//! One agent's observations against what was written: correctness and latencies.
//!
//! Per key, the writes of the phase are known in order (one key's writes never overlap:
//! see [`super::writer`]), so an agent must observe exactly that sequence after the
//! key's initial value (which its listing brought). Walking the observations of a key
//! with a cursor into its writes:
//!
//! - a value of a write at or after the cursor is **delivered** (writes it skipped stay
//!   unseen); its latency is measured from the write's intended send time and from its
//!   acknowledgement by the store;
//! - a value of a write before the cursor is a **flap** when the key was just seen
//!   deleted (it came back without a write between), else a **duplicate** when it was
//!   seen before, else **out of order** (it arrived after a newer one);
//! - a delete matches the next delete written at or after the cursor; with none, it is
//!   a **duplicate** when the key was already seen deleted, **out of order** when an
//!   earlier delete was never seen, else a **phantom**;
//! - a value no write has (or a key outside the workload) is a **phantom**;
//! - a write never seen is **lost**, unless a listing the agent made again (after its
//!   watch was canceled with a compact revision, as etcd cancels a watcher that fell
//!   behind its history) brought a newer value or the deletion of the key: then it is
//!   **superseded**, as for a Cilium agent that re-lists.

use std::time::{Duration, Instant};

use super::plan::Phase;
use super::recorder::{Observation, Seen};
use crate::bench::correctness::Correctness;

/// When each write was meant to go out and when the store acknowledged it.
pub struct Timing {
    /// The first write's intended send time.
    pub start: Instant,
    /// Writes per second.
    pub rate: f64,
    /// Per write, when the store acknowledged it (`None`: it failed).
    pub acks: Vec<Option<Instant>>,
}

impl Timing {
    /// When write `i` was meant to be sent.
    pub fn intended(&self, i: usize) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// What one agent saw of a phase.
#[derive(Debug, Default)]
pub struct AgentOutcome {
    pub correctness: Correctness,
    /// Writes delivered (in order or not).
    pub delivered: u64,
    /// Per delivered write: from its intended send time to the agent's view, in µs.
    pub from_intended_us: Vec<u32>,
    /// Per delivered write: from the store's acknowledgement to the agent's view, in µs.
    pub from_ack_us: Vec<u32>,
    /// The last delivery.
    pub last_delivery: Option<Instant>,
    /// Writes a listing made again passed over (see the module's notes).
    pub superseded: u64,
}

/// The writes of each key, as indices into `phase.ops`.
pub fn writes_by_key(phase: &Phase) -> Vec<Vec<usize>> {
    let mut by_key = vec![Vec::new(); phase.initial.len()];
    for (i, op) in phase.ops.iter().enumerate() {
        if let Some(writes) = by_key.get_mut(op.key as usize) {
            writes.push(i);
        }
    }
    by_key
}

/// Checks one agent's `observations` (plus `unknown` changes of keys outside the
/// workload) against `phase`, whose writes by key are `by_key`.
pub fn check(
    phase: &Phase,
    by_key: &[Vec<usize>],
    mut observations: Vec<Observation>,
    unknown: u64,
    timing: &Timing,
) -> AgentOutcome {
    let mut out = AgentOutcome {
        correctness: Correctness {
            phantom: unknown,
            duplicate: Some(0),
            out_of_order: Some(0),
            ..Correctness::default()
        },
        ..AgentOutcome::default()
    };
    // Stable: each key's observations stay in the order they were applied.
    observations.sort_by_key(|o| o.key);
    let mut rest = observations.as_slice();
    for (key, writes) in by_key.iter().enumerate() {
        let split = rest.partition_point(|o| o.key as usize == key);
        let (mine, after) = rest.split_at(split);
        rest = after;
        let initial = phase.initial.get(key).copied().flatten();
        KeyWalk::new(phase, writes, initial, timing, &mut out).run(mine);
    }
    // Observations of key numbers beyond the phase's (there are none: the key space is
    // the phase's) would be left in `rest`.
    out.correctness.phantom += rest.len() as u64;
    out
}

/// The walk through one key's observations.
struct KeyWalk<'a> {
    phase: &'a Phase,
    writes: &'a [usize],
    initial: Option<u32>,
    timing: &'a Timing,
    out: &'a mut AgentOutcome,
    seen: Vec<bool>,
    initial_seen: bool,
    cursor: usize,
    /// The last observation was a delete.
    deleted: bool,
}

impl<'a> KeyWalk<'a> {
    fn new(
        phase: &'a Phase,
        writes: &'a [usize],
        initial: Option<u32>,
        timing: &'a Timing,
        out: &'a mut AgentOutcome,
    ) -> Self {
        Self {
            phase,
            writes,
            initial,
            timing,
            out,
            seen: vec![false; writes.len()],
            initial_seen: false,
            cursor: 0,
            deleted: initial.is_none(),
        }
    }

    fn run(mut self, observations: &[Observation]) {
        for o in observations {
            match o.seen {
                Seen::Phantom => self.out.correctness.phantom += 1,
                Seen::Version(v) if Some(v) == self.initial => self.initial_value(),
                Seen::Version(v) => self.value(v, o.at, o.relisted),
                Seen::Deleted => self.delete(o.at, o.relisted),
            }
        }
        let unseen = self.seen.iter().filter(|s| !**s).count() as u64;
        let initial_lost = self.initial.is_some() && !self.initial_seen;
        self.out.correctness.lost += unseen + u64::from(initial_lost);
    }

    fn initial_value(&mut self) {
        let c = &mut self.out.correctness;
        if self.cursor > 0 && self.deleted {
            c.flaps += 1;
        } else if self.initial_seen {
            bump(&mut c.duplicate);
        } else if self.cursor > 0 {
            bump(&mut c.out_of_order);
        }
        self.initial_seen = true;
        self.deleted = false;
    }

    fn value(&mut self, version: u32, at: Instant, relisted: bool) {
        let found = self
            .writes
            .iter()
            .position(|i| self.phase.ops[*i].version == Some(version));
        let Some(w) = found else {
            self.out.correctness.phantom += 1;
            return;
        };
        if w >= self.cursor {
            self.deliver(w, at, relisted);
        } else {
            let c = &mut self.out.correctness;
            if self.deleted {
                c.flaps += 1;
            } else if self.seen[w] {
                bump(&mut c.duplicate);
            } else {
                bump(&mut c.out_of_order);
            }
            self.mark_late(w);
        }
        self.deleted = false;
    }

    fn delete(&mut self, at: Instant, relisted: bool) {
        let is_delete = |i: &usize| self.phase.ops[*i].version.is_none();
        if let Some(w) = (self.cursor..self.writes.len()).find(|w| is_delete(&self.writes[*w])) {
            self.deliver(w, at, relisted);
        } else if self.deleted {
            bump(&mut self.out.correctness.duplicate);
        } else if let Some(w) =
            (0..self.cursor).find(|w| is_delete(&self.writes[*w]) && !self.seen[*w])
        {
            bump(&mut self.out.correctness.out_of_order);
            self.mark_late(w);
        } else {
            self.out.correctness.phantom += 1;
        }
        self.deleted = true;
    }

    /// Write `w` arrived in order.
    /// Write `w` is seen; if a listing made again brought it, the unseen writes before
    /// it are superseded.
    fn deliver(&mut self, w: usize, at: Instant, relisted: bool) {
        if relisted {
            for skipped in self.cursor..w {
                if !self.seen[skipped] {
                    self.seen[skipped] = true;
                    self.out.superseded += 1;
                }
            }
        }
        let op = self.writes[w];
        self.cursor = w + 1;
        self.seen[w] = true;
        self.out.delivered += 1;
        let micros = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        let intended = self.timing.intended(op);
        self.out
            .from_intended_us
            .push(micros(at.saturating_duration_since(intended)));
        // A watch may deliver before the writer hears back from the store: that is 0.
        if let Some(Some(acked)) = self.timing.acks.get(op) {
            self.out
                .from_ack_us
                .push(micros(at.saturating_duration_since(*acked)));
        }
        self.out.last_delivery = self.out.last_delivery.max(Some(at));
    }

    /// Write `w` arrived after a newer one: delivered, but counted wrong already.
    fn mark_late(&mut self, w: usize) {
        if !self.seen[w] {
            self.seen[w] = true;
            self.out.delivered += 1;
        }
    }
}

fn bump(counter: &mut Option<u64>) {
    *counter = Some(counter.unwrap_or(0) + 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::churn::plan::Op;

    /// Key 0 starts at version 0 and gets 5, a delete, then 7; key 1 starts absent
    /// and gets 6.
    fn mk_phase() -> Phase {
        let op = |key, version| Op { key, version };
        Phase {
            initial: vec![Some(0), None],
            ops: vec![op(0, Some(5)), op(0, None), op(1, Some(6)), op(0, Some(7))],
        }
    }

    fn mk_timing(start: Instant) -> Timing {
        Timing {
            start,
            rate: 1000.0,
            acks: (0..4)
                .map(|i| Some(start + Duration::from_millis(i)))
                .collect(),
        }
    }

    fn run(seen: &[(u32, Seen)]) -> AgentOutcome {
        run_relisting_from(seen, seen.len())
    }

    /// The observations from the `relisted`th on came with a listing made again.
    fn run_relisting_from(seen: &[(u32, Seen)], relisted: usize) -> AgentOutcome {
        let start = Instant::now();
        let phase = mk_phase();
        let at = start + Duration::from_millis(10);
        let observations = seen
            .iter()
            .enumerate()
            .map(|(i, (key, seen))| Observation {
                key: *key,
                seen: *seen,
                at,
                relisted: i >= relisted,
            })
            .collect();
        check(
            &phase,
            &writes_by_key(&phase),
            observations,
            0,
            &mk_timing(start),
        )
    }

    use Seen::{Deleted, Phantom, Version};

    #[test]
    fn exactly_the_writes_in_order_is_clean() {
        let out = run(&[
            (0, Version(0)),
            (0, Version(5)),
            (1, Version(6)),
            (0, Deleted),
            (0, Version(7)),
        ]);
        assert!(out.correctness.is_clean(), "{:?}", out.correctness);
        assert_eq!(out.delivered, 4);
        // Key 0's writes (0, 1, 3), then key 1's (2); write i was due and acknowledged
        // at i ms, seen at 10 ms.
        assert_eq!(out.from_intended_us, [10_000, 9_000, 7_000, 8_000]);
        assert_eq!(out.from_ack_us, out.from_intended_us);
    }

    #[test]
    fn every_kind_of_wrong_is_counted() {
        // Missing listing value, 5 skipped (lost), 7 then its older delete (out of
        // order), key 1 twice (duplicate), a value never written (phantom).
        let out = run(&[
            (0, Version(7)),
            (0, Deleted),
            (1, Version(6)),
            (1, Version(6)),
            (1, Version(9)),
            (1, Phantom),
        ]);
        let c = &out.correctness;
        assert_eq!((c.lost, c.phantom), (2, 2), "{c:?}");
        assert_eq!(
            (c.duplicate, c.out_of_order, c.flaps),
            (Some(1), Some(1), 0)
        );
    }

    #[test]
    fn a_value_back_after_its_delete_is_a_flap() {
        let out = run(&[
            (0, Version(0)),
            (0, Version(5)),
            (0, Deleted),
            (0, Version(5)),
            (1, Version(6)),
            (0, Version(7)),
        ]);
        let c = &out.correctness;
        assert_eq!((c.flaps, c.lost), (1, 0), "{c:?}");
        assert_eq!(c.duplicate, Some(0));
        // A delete nobody wrote.
        let out = run(&[
            (0, Version(0)),
            (0, Version(5)),
            (0, Deleted),
            (1, Version(6)),
            (1, Deleted),
            (0, Version(7)),
        ]);
        assert_eq!(out.correctness.phantom, 1);
    }

    #[test]
    fn writes_a_listing_made_again_passed_over_are_superseded_not_lost() {
        // Key 0's 5 and its delete were never watched: the listing brought 7.
        let out = run_relisting_from(&[(0, Version(0)), (1, Version(6)), (0, Version(7))], 2);
        assert!(out.correctness.is_clean(), "{:?}", out.correctness);
        assert_eq!((out.delivered, out.superseded), (2, 2));
        // The same observations from the watch: lost.
        let out = run(&[(0, Version(0)), (1, Version(6)), (0, Version(7))]);
        assert_eq!((out.correctness.lost, out.superseded), (2, 0));
        // A deletion the listing showed: the value written before it is superseded.
        let out = run_relisting_from(&[(0, Version(0)), (0, Deleted)], 1);
        assert_eq!((out.delivered, out.superseded), (1, 1));
        assert_eq!(out.correctness.lost, 2, "7 and 6 were written after: lost");
    }
}
