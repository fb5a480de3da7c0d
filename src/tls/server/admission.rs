//! Which TCP connections may start a TLS handshake: limits that keep a flood of clients
//! that never finish their handshake from starving real peers.
//!
//! - At most [`MAX_HANDSHAKES`] handshakes run at once, and at most
//!   [`MAX_HANDSHAKES_PER_SOURCE`] from one source address: one host cannot take them all.
//! - The last [`RESERVED_FOR_KNOWN`] of them are only for sources that have completed a
//!   handshake before (peers reconnecting): a flood from many addresses cannot take those.
//! - A connection over a limit is closed at once, never queued, so the kernel's backlog
//!   never fills with clients waiting behind the flood.
//!
//! Refusals are counted, and logged at a bounded rate
//! ([`LogBudget`](crate::report::LogBudget)).

use std::collections::HashMap;
use std::net::IpAddr;
use tokio::time::Instant;

/// Handshakes in flight at most: bounds the memory and descriptors a flood can hold.
pub const MAX_HANDSHAKES: usize = 1024;
/// Handshakes in flight from one source address at most: a node's agents reconnecting
/// together fit many times over.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 32;
/// Handshake slots only sources that completed a handshake before may take.
pub const RESERVED_FOR_KNOWN: usize = 128;
/// Sources remembered as known; the least recently seen is forgotten first.
const KNOWN_SOURCES: usize = 4096;

/// Why a connection was refused before its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its source address has [`MAX_HANDSHAKES_PER_SOURCE`] handshakes running.
    SourceBusy,
    /// Every slot it may take is busy.
    Full,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::SourceBusy => "too many handshakes from its address",
            Refusal::Full => "every handshake slot taken",
        }
    }
}

/// The handshakes in flight, by source, and the sources that completed one.
#[derive(Debug, Default)]
pub struct Admission {
    in_flight: usize,
    by_source: HashMap<IpAddr, usize>,
    known: HashMap<IpAddr, Instant>,
}

impl Admission {
    /// Takes a slot for a handshake from `source`, or says why not.
    pub fn admit(&mut self, source: IpAddr) -> Result<(), Refusal> {
        let from_source = self.by_source.get(&source).copied().unwrap_or(0);
        if from_source >= MAX_HANDSHAKES_PER_SOURCE {
            return Err(Refusal::SourceBusy);
        }
        let limit = if self.known.contains_key(&source) {
            MAX_HANDSHAKES
        } else {
            MAX_HANDSHAKES - RESERVED_FOR_KNOWN
        };
        if self.in_flight >= limit {
            return Err(Refusal::Full);
        }
        self.in_flight += 1;
        *self.by_source.entry(source).or_default() += 1;
        Ok(())
    }

    /// A handshake from `source` ended; `completed` if the peer proved a trusted
    /// certificate.
    pub fn release(&mut self, source: IpAddr, completed: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(n) = self.by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.by_source.remove(&source);
            }
        }
        if completed {
            if self.known.len() >= KNOWN_SOURCES && !self.known.contains_key(&source) {
                let oldest = self
                    .known
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    self.known.remove(&oldest);
                }
            }
            self.known.insert(source, Instant::now());
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_source_cannot_take_every_slot() {
        let mut admission = Admission::default();
        for _ in 0..MAX_HANDSHAKES_PER_SOURCE {
            admission.admit(ip(1)).unwrap();
        }
        assert_eq!(admission.admit(ip(1)), Err(Refusal::SourceBusy));
        assert_eq!(admission.admit(ip(2)), Ok(()));
        admission.release(ip(1), false);
        assert_eq!(admission.admit(ip(1)), Ok(()));
    }

    #[test]
    fn the_reserved_slots_are_for_known_sources_only() {
        let mut admission = Admission::default();
        admission.admit(ip(200)).unwrap();
        admission.release(ip(200), true);
        // Strangers from many addresses fill every slot open to them.
        let mut last = 0u32;
        let stranger = |n: u32| IpAddr::from([10, 1, (n / 256) as u8, (n % 256) as u8]);
        while admission.admit(stranger(last)).is_ok() {
            last += 1;
        }
        assert_eq!(admission.in_flight(), MAX_HANDSHAKES - RESERVED_FOR_KNOWN);
        assert_eq!(admission.admit(stranger(last)), Err(Refusal::Full));
        // A peer that completed a handshake before still gets in.
        assert_eq!(admission.admit(ip(200)), Ok(()));
        // A failed handshake makes no one known.
        admission.release(ip(200), true);
        admission.release(stranger(0), false);
        admission.admit(stranger(0)).unwrap();
        assert_eq!(admission.admit(stranger(0)), Err(Refusal::Full));
    }
}
