//! Node IPs without a look-up per entry: an IPv4 address, nearly every node's, is kept
//! inline; only IPv6 addresses are interned. An interned IPv4 address cost every new
//! or re-homed entry a hash look-up and a reference count in a table of its own, and
//! every comparison a read of that table, for 4 bytes the entry can hold itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::intern::{Interner, Sym};

/// A node IP, or none, as an ipcache entry keeps it. `Copy` like the handle it may
/// hold: each one made by [`replace`](Self::replace) is released exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CompactHost {
    None,
    V4(Ipv4Addr),
    /// Interned in the view's IPv6 node addresses.
    V6(Sym),
}

impl CompactHost {
    /// The address back.
    pub fn get(self, v6: &Interner<Ipv6Addr>) -> Option<IpAddr> {
        match self {
            Self::None => None,
            Self::V4(addr) => Some(IpAddr::V4(addr)),
            Self::V6(sym) => v6.get(sym).copied().map(IpAddr::V6),
        }
    }

    /// Makes this `host`; an interned address is released only when it changes (an
    /// update seldom moves a pod to another node); whether it changed.
    pub fn replace(&mut self, v6: &mut Interner<Ipv6Addr>, host: Option<IpAddr>) -> bool {
        if self.get(v6) == host {
            return false;
        }
        let new = match host {
            None => Self::None,
            Some(IpAddr::V4(addr)) => Self::V4(addr),
            Some(IpAddr::V6(addr)) => Self::V6(v6.intern(&addr)),
        };
        std::mem::replace(self, new).release(v6);
        true
    }

    /// Gives an interned address's reference back.
    pub fn release(self, v6: &mut Interner<Ipv6Addr>) {
        if let Self::V6(sym) = self {
            v6.release(sym);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn ipv4_stays_inline_and_ipv6_is_interned_until_released() {
        let mut v6 = Interner::default();
        let mut host = CompactHost::None;
        for (addr, interned) in [
            (ip("192.168.1.1"), 0),
            (ip("fd00::1"), 1),
            (ip("fd00::1"), 1),
            (ip("fd00::2"), 1),
            (ip("10.0.0.7"), 0),
            (None, 0),
        ] {
            host.replace(&mut v6, addr);
            assert_eq!(host.get(&v6), addr);
            assert_eq!(v6.len(), interned, "{addr:?}");
        }
    }

    #[test]
    fn an_unchanged_ipv6_address_keeps_its_handle() {
        let mut v6 = Interner::default();
        let mut a = CompactHost::None;
        let mut b = CompactHost::None;
        a.replace(&mut v6, ip("fd00::1"));
        b.replace(&mut v6, ip("fd00::1"));
        let held = a;
        a.replace(&mut v6, ip("fd00::1"));
        assert_eq!(a, held);
        a.release(&mut v6);
        assert_eq!(b.get(&v6), ip("fd00::1"), "b still holds its reference");
        b.release(&mut v6);
        assert_eq!(v6.len(), 0);
    }

    #[test]
    fn a_compact_host_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<CompactHost>(), 8);
    }
}
