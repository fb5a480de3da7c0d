//! A map keyed by IP prefix that stores IPv4 host prefixes (`/32`), the bulk of an
//! ipcache (one per pod IP), under a 4-byte key: an [`IpPrefix`] takes 18 bytes, which
//! alignment turns into 20 or more in every bucket of a hash table. Every other prefix
//! (IPv6, CIDRs) is kept under its full key in a second map.

use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv4Addr};

use foldhash::HashMap;

use crate::model::IpPrefix;

/// The IPv4 address of a host prefix, as a number; `None` for any other prefix.
fn v4_host(prefix: IpPrefix) -> Option<u32> {
    match prefix.addr() {
        IpAddr::V4(addr) if prefix.is_host() => Some(u32::from(addr)),
        _ => None,
    }
}

fn v4_prefix(addr: u32) -> IpPrefix {
    IpPrefix::host(IpAddr::V4(Ipv4Addr::from(addr)))
}

/// Values by prefix, IPv4 hosts apart. Hashed with foldhash, as the rest of the
/// ipcache (see [`IpCache`](super::ipcache::IpCache)).
pub(super) struct PrefixMap<V> {
    v4_hosts: HashMap<u32, V>,
    others: HashMap<IpPrefix, V>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        Self {
            v4_hosts: HashMap::default(),
            others: HashMap::default(),
        }
    }
}

impl<V> PrefixMap<V> {
    pub fn get(&self, prefix: IpPrefix) -> Option<&V> {
        match v4_host(prefix) {
            Some(addr) => self.v4_hosts.get(&addr),
            None => self.others.get(&prefix),
        }
    }

    pub fn get_mut(&mut self, prefix: IpPrefix) -> Option<&mut V> {
        match v4_host(prefix) {
            Some(addr) => self.v4_hosts.get_mut(&addr),
            None => self.others.get_mut(&prefix),
        }
    }

    pub fn contains(&self, prefix: IpPrefix) -> bool {
        self.get(prefix).is_some()
    }

    /// The value under `prefix`, made by `make` if there is none.
    pub fn get_or_insert_with(&mut self, prefix: IpPrefix, make: impl FnOnce() -> V) -> &mut V {
        match v4_host(prefix) {
            Some(addr) => self.v4_hosts.entry(addr).or_insert_with(make),
            None => self.others.entry(prefix).or_insert_with(make),
        }
    }

    /// Stores `value` under `prefix` if it holds nothing, in one look-up; else hands
    /// `value` back, leaving what is held.
    pub fn try_insert(&mut self, prefix: IpPrefix, value: V) -> Result<(), V> {
        fn vacant<K: std::hash::Hash + Eq, V>(entry: Entry<'_, K, V>, value: V) -> Result<(), V> {
            match entry {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                    Ok(())
                }
                Entry::Occupied(_) => Err(value),
            }
        }
        match v4_host(prefix) {
            Some(addr) => vacant(self.v4_hosts.entry(addr), value),
            None => vacant(self.others.entry(prefix), value),
        }
    }

    pub fn remove(&mut self, prefix: IpPrefix) -> Option<V> {
        match v4_host(prefix) {
            Some(addr) => self.v4_hosts.remove(&addr),
            None => self.others.remove(&prefix),
        }
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (IpPrefix, &V)> {
        let v4 = self.v4_hosts.iter().map(|(a, v)| (v4_prefix(*a), v));
        v4.chain(self.others.iter().map(|(p, v)| (*p, v)))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.v4_hosts.len() + self.others.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    #[test]
    fn v4_hosts_and_other_prefixes_are_distinct_keys() {
        let mut map = PrefixMap::default();
        let keys = [
            "10.2.0.1",
            "10.2.0.1/24",
            "10.2.0.0/24",
            "::ffff:10.2.0.1",
            "fd00::1",
            "fd00::/64",
            "0.0.0.0/0",
            "0.0.0.0",
        ];
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(map.try_insert(p(k), i), Ok(()), "{k}");
        }
        assert_eq!(map.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(map.get(p(k)), Some(&i), "{k}");
        }
        assert_eq!(map.v4_hosts.len(), 2, "10.2.0.1 and 0.0.0.0 only");
        let mut listed: Vec<(IpPrefix, usize)> = map.iter().map(|(k, v)| (k, *v)).collect();
        listed.sort_by_key(|(_, v)| *v);
        let expected: Vec<(IpPrefix, usize)> =
            keys.iter().enumerate().map(|(i, k)| (p(k), i)).collect();
        assert_eq!(listed, expected);

        *map.get_mut(p("10.2.0.1")).unwrap() = 10;
        assert_eq!(map.remove(p("10.2.0.1")), Some(10));
        assert!(!map.contains(p("10.2.0.1")));
        assert!(map.contains(p("10.2.0.1/24")));
        assert_eq!(map.remove(p("fd00::1")), Some(4));
        assert_eq!(map.remove(p("fd00::1")), None);
    }

    #[test]
    fn try_insert_inserts_once_then_hands_the_value_back() {
        let mut map = PrefixMap::default();
        for k in ["10.0.0.1", "fd00::/64"] {
            assert_eq!(map.try_insert(p(k), 1), Ok(()));
            assert_eq!(map.try_insert(p(k), 2), Err(2));
            assert_eq!(map.get(p(k)), Some(&1));
            *map.get_or_insert_with(p(k), || 9) += 2;
            assert_eq!(map.get_mut(p(k)).copied(), Some(3));
        }
        *map.get_or_insert_with(p("10.0.0.2"), || 7) += 1;
        assert_eq!(map.get(p("10.0.0.2")), Some(&8));
    }
}
