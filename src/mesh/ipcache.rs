//! The merged ipcache: which cluster, identity and pod own an IP or prefix.
//!
//! This is the largest part of the view (one entry per pod IP of every cluster), so
//! entries are stored compactly and turned back into model [`Endpoint`]s only when read.
//! 40 bytes per entry and a 4-byte key: about 5.6 MiB per 100,000 IPv4 pods with the
//! hash table's slack, of the 12.6–14.8 MiB an agent grew by per 100,000 merged
//! endpoints in `fleetmesh bench memory`.
//!
//! - one map for all clusters, keyed by prefix (IPv4 host prefixes by their 4-byte
//!   address, see [`PrefixMap`]), holding the first claim on each prefix; an IP claimed
//!   by more than one cluster (a conflict, rare) keeps its further claims in a side
//!   map, so the common entry needs no list;
//! - the cluster as a 4-byte slot index; namespaces, service accounts and what varies
//!   little between entries (encryption key, metadata, named ports) as 4-byte interned
//!   handles; an IPv4 node IP inline ([`CompactHost`]); the pod name as an interned
//!   stem and an inline tail ([`CompactPod`]): no entry allocates on its own.

use std::collections::BTreeSet;
use std::mem;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{ClusterName, Endpoint, IdentityId, IpPrefix, Labels, NamedPort};

use super::clusters::ClusterIdx;
use super::host::CompactHost;
use super::intern::{Interner, Sym};
use super::json;
use super::pod::CompactPod;
use super::prefixmap::PrefixMap;

/// What varies little between entries, interned: none of it is usually set, and when
/// IPsec is on every entry of a cluster has the same key; pods of one workload share
/// their named ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Extras {
    encrypt_key: u8,
    metadata: Box<str>,
    named_ports: Box<[NamedPort]>,
}

impl Extras {
    /// Whether `e` has none of the extras (its entry then refers to none).
    fn none_in(e: &Endpoint) -> bool {
        e.encrypt_key == 0 && e.metadata.is_empty() && e.named_ports.is_empty()
    }

    fn is(&self, e: &Endpoint) -> bool {
        self.encrypt_key == e.encrypt_key
            && *self.metadata == e.metadata
            && *self.named_ports == e.named_ports[..]
    }
}

/// One cluster's claim on a prefix (the prefix is the map key).
#[derive(Debug)]
struct CompactEndpoint {
    cluster: ClusterIdx,
    identity: IdentityId,
    host_ip: CompactHost,
    namespace: Option<Sym>,
    service_account: Option<Sym>,
    /// `None` when the entry has none of the extras.
    extras: Option<Sym>,
    pod: CompactPod,
}

/// The interned values entries refer to.
#[derive(Default)]
struct Pools {
    /// Namespaces and service accounts.
    names: Interner<Arc<str>>,
    /// IPv6 node IPs (IPv4 ones are inline).
    hosts_v6: Interner<Ipv6Addr>,
    /// The stems of pod names.
    stems: Interner<Arc<str>>,
    extras: Interner<Arc<Extras>>,
}

impl Pools {
    fn compact(&mut self, cluster: ClusterIdx, e: &Endpoint) -> CompactEndpoint {
        let mut compact = CompactEndpoint {
            cluster,
            identity: e.identity,
            host_ip: CompactHost::None,
            namespace: None,
            service_account: None,
            extras: None,
            pod: CompactPod::new(&mut self.stems, None),
        };
        self.update(&mut compact, e);
        compact
    }

    /// Makes `held` hold `e`; whether anything changed. Each field is compared where it
    /// is stored, in the one pass that updates it: an upsert of what is already held,
    /// the common case of a resync, allocates nothing, and what did not change keeps
    /// its handle (most updates change one field, and each interned field costs a
    /// look-up and a release otherwise). A value interned anew gets a handle of its
    /// own, as the old one is released only after.
    fn update(&mut self, held: &mut CompactEndpoint, e: &Endpoint) -> bool {
        let mut changed = mem::replace(&mut held.identity, e.identity) != e.identity;
        changed |= held.host_ip.replace(&mut self.hosts_v6, e.host_ip);
        for (sym, name) in [
            (&mut held.namespace, e.namespace.as_deref()),
            (&mut held.service_account, e.service_account.as_deref()),
        ] {
            let new = self.names.replace(*sym, name);
            changed |= mem::replace(sym, new) != new;
        }
        let extras_kept = match self.extras(held) {
            Some(x) => x.is(e),
            None => Extras::none_in(e),
        };
        if !extras_kept {
            let extras = (!Extras::none_in(e)).then(|| {
                self.extras.intern(&Extras {
                    encrypt_key: e.encrypt_key,
                    metadata: e.metadata.as_str().into(),
                    named_ports: e.named_ports.clone().into_boxed_slice(),
                })
            });
            if let Some(old) = mem::replace(&mut held.extras, extras) {
                self.extras.release(old);
            }
        }
        changed |= !extras_kept;
        changed |= held.pod.replace(&mut self.stems, e.pod.as_deref());
        changed
    }

    /// The namespace or service account `sym` names.
    fn name(&self, sym: Option<Sym>) -> Option<&str> {
        sym.and_then(|s| self.names.get(s)).map(|s| &**s)
    }

    fn extras(&self, c: &CompactEndpoint) -> Option<&Extras> {
        c.extras.and_then(|s| self.extras.get(s)).map(|x| &**x)
    }

    fn expand(&self, prefix: IpPrefix, c: &CompactEndpoint) -> Endpoint {
        let name = |sym| self.name(sym).map(str::to_string);
        let extras = self.extras(c);
        Endpoint {
            prefix,
            identity: c.identity,
            host_ip: c.host_ip.get(&self.hosts_v6),
            encrypt_key: extras.map_or(0, |x| x.encrypt_key),
            metadata: extras.map(|x| x.metadata.to_string()).unwrap_or_default(),
            namespace: name(c.namespace),
            pod: c.pod.name(&self.stems),
            service_account: name(c.service_account),
            named_ports: extras.map(|x| x.named_ports.to_vec()).unwrap_or_default(),
        }
    }

    fn release(&mut self, c: CompactEndpoint) {
        c.host_ip.release(&mut self.hosts_v6);
        for s in [c.namespace, c.service_account].into_iter().flatten() {
            self.names.release(s);
        }
        if let Some(s) = c.extras {
            self.extras.release(s);
        }
        c.pod.release(&mut self.stems);
    }
}

/// What an upsert did to a cluster's claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Upserted {
    Unchanged,
    Inserted,
    Replaced,
}

/// Every cluster's ipcache entries. The maps hash with foldhash (randomly seeded per
/// process): every delivered endpoint costs a look-up, and SipHash was a tenth of an
/// agent's CPU per delivery in `fleetmesh bench churn`; the keys come from
/// authenticated peers, checked on decode.
#[derive(Default)]
pub(super) struct IpCache {
    /// The first claim on each prefix.
    primary: PrefixMap<CompactEndpoint>,
    /// Further claims on a prefix, one per other cluster: the conflicts.
    others: PrefixMap<Vec<CompactEndpoint>>,
    /// The non-host prefixes held, for longest-prefix look-ups (they are few: CIDR
    /// entries, not pods).
    nets: BTreeSet<IpPrefix>,
    pools: Pools,
}

impl IpCache {
    /// Sets `cluster`'s entry for `e.prefix`.
    pub fn upsert(&mut self, cluster: ClusterIdx, e: &Endpoint) -> Upserted {
        if let Some(held) = claim_mut(&mut self.primary, &mut self.others, cluster, e.prefix) {
            return match self.pools.update(held, e) {
                true => Upserted::Replaced,
                false => Upserted::Unchanged,
            };
        }
        let new = self.pools.compact(cluster, e);
        self.add_claim(e.prefix, new);
        Upserted::Inserted
    }

    /// Removes `cluster`'s entry for `prefix`; `false` if it had none.
    pub fn delete(&mut self, cluster: ClusterIdx, prefix: IpPrefix) -> bool {
        match self.remove(cluster, prefix) {
            Some(old) => {
                self.pools.release(old);
                true
            }
            None => false,
        }
    }

    /// `cluster`'s entry for `prefix`.
    pub fn get(&self, cluster: ClusterIdx, prefix: IpPrefix) -> Option<Endpoint> {
        self.claim(cluster, prefix)
            .map(|c| self.pools.expand(prefix, c))
    }

    /// Every prefix `cluster` holds, sorted (a scan of the whole cache: for resyncs and
    /// drains, not for the data path).
    pub fn prefixes_of(&self, cluster: ClusterIdx) -> Vec<IpPrefix> {
        let mut prefixes: Vec<IpPrefix> = self
            .primary
            .iter()
            .filter(|(_, c)| c.cluster == cluster)
            .map(|(p, _)| p)
            .chain(
                self.others
                    .iter()
                    .filter(|(_, claims)| claims.iter().any(|c| c.cluster == cluster))
                    .map(|(p, _)| p),
            )
            .collect();
        prefixes.sort_unstable();
        prefixes
    }

    /// The clusters claiming `prefix`, in no particular order.
    pub fn claimants(&self, prefix: IpPrefix) -> Vec<ClusterIdx> {
        self.primary
            .get(prefix)
            .into_iter()
            .chain(self.others.get(prefix).into_iter().flatten())
            .map(|c| c.cluster)
            .collect()
    }

    /// The held prefix that best matches `ip`: its host entry, else the longest
    /// non-host prefix containing it.
    pub fn find(&self, ip: IpAddr) -> Option<IpPrefix> {
        let host = IpPrefix::host(ip);
        if self.primary.contains(host) {
            return Some(host);
        }
        self.nets
            .iter()
            .filter(|net| contains(**net, ip))
            .max_by_key(|net| net.prefix_len())
            .copied()
    }

    /// Every prefix claimed by more than one cluster, sorted.
    pub fn conflicted(&self) -> Vec<IpPrefix> {
        let mut prefixes: Vec<IpPrefix> = self.others.iter().map(|(p, _)| p).collect();
        prefixes.sort_unstable();
        prefixes
    }

    fn claim(&self, cluster: ClusterIdx, prefix: IpPrefix) -> Option<&CompactEndpoint> {
        let first = self.primary.get(prefix)?;
        if first.cluster == cluster {
            return Some(first);
        }
        self.others
            .get(prefix)?
            .iter()
            .find(|c| c.cluster == cluster)
    }

    /// Stores the claim of a cluster that has none on `prefix` yet.
    fn add_claim(&mut self, prefix: IpPrefix, new: CompactEndpoint) {
        if let Err(new) = self.primary.try_insert(prefix, new) {
            self.others.get_or_insert_with(prefix, Vec::new).push(new);
        } else if !prefix.is_host() {
            self.nets.insert(prefix);
        }
    }

    /// Takes a cluster's claim out; a removed first claim is replaced by a further one.
    fn remove(&mut self, cluster: ClusterIdx, prefix: IpPrefix) -> Option<CompactEndpoint> {
        let first = self.primary.get_mut(prefix)?;
        if first.cluster != cluster {
            let claims = self.others.get_mut(prefix)?;
            let at = claims.iter().position(|c| c.cluster == cluster)?;
            let old = claims.swap_remove(at);
            if claims.is_empty() {
                self.others.remove(prefix);
            }
            return Some(old);
        }
        let next = match self.others.get_mut(prefix) {
            Some(claims) => {
                let next = claims.pop();
                if claims.is_empty() {
                    self.others.remove(prefix);
                }
                next
            }
            None => None,
        };
        match next {
            Some(next) => Some(mem::replace(first, next)),
            None => {
                self.nets.remove(&prefix);
                self.primary.remove(prefix)
            }
        }
    }
}

/// A cluster's claim on a prefix, to change in place: one look-up for an update, not
/// one to compare and one to store. (A function of the two maps, so that the caller
/// can use the pools meanwhile.)
fn claim_mut<'a>(
    primary: &'a mut PrefixMap<CompactEndpoint>,
    others: &'a mut PrefixMap<Vec<CompactEndpoint>>,
    cluster: ClusterIdx,
    prefix: IpPrefix,
) -> Option<&'a mut CompactEndpoint> {
    let first = primary.get_mut(prefix)?;
    if first.cluster == cluster {
        return Some(first);
    }
    others
        .get_mut(prefix)?
        .iter_mut()
        .find(|c| c.cluster == cluster)
}

/// Whether `prefix` contains `ip` (same family, equal in the first `len` bits).
fn contains(prefix: IpPrefix, ip: IpAddr) -> bool {
    let len = u32::from(prefix.prefix_len());
    match (prefix.addr(), ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// Who owns an IP, as `fleetmesh lookup` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcacheEntryView {
    pub cluster: ClusterName,
    /// The entry that matched: the IP's host entry, or the longest prefix containing it.
    #[serde(with = "json::as_string")]
    pub prefix: IpPrefix,
    pub identity: IdentityId,
    pub host_ip: Option<IpAddr>,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub service_account: Option<String>,
    /// The identity's labels, when the identity is known.
    #[serde(with = "json::labels")]
    pub labels: Option<Labels>,
}

impl IpcacheEntryView {
    pub(super) fn new(cluster: ClusterName, e: Endpoint, labels: Option<Labels>) -> Self {
        Self {
            cluster,
            prefix: e.prefix,
            identity: e.identity,
            host_ip: e.host_ip,
            namespace: e.namespace,
            pod: e.pod,
            service_account: e.service_account,
            labels,
        }
    }
}

/// A prefix that more than one cluster claims: usually overlapping pod CIDRs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConflict {
    #[serde(with = "json::as_string")]
    pub prefix: IpPrefix,
    /// The claiming clusters, the one look-ups answer with first (local, then by name).
    pub clusters: Vec<ClusterName>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::clusters::{ClusterTable, LOCAL};
    use crate::mesh::fixtures::{mk_endpoint, mk_name};

    fn mk_clusters() -> (ClusterTable, ClusterIdx, ClusterIdx) {
        let mut t = ClusterTable::new(mk_name("local"));
        let a = t.enter(&mk_name("a"));
        let b = t.enter(&mk_name("b"));
        (t, a, b)
    }

    #[test]
    fn entries_round_trip_through_the_compact_form() {
        let (_, a, _) = mk_clusters();
        let mut cache = IpCache::default();
        let mut e = mk_endpoint("10.1.0.5", 70_000);
        e.metadata = "cilium-global".into();
        e.named_ports = vec![NamedPort {
            name: "http".into(),
            port: crate::model::L4Addr {
                protocol: crate::model::Protocol::Tcp,
                port: 80,
            },
        }];
        assert_eq!(cache.upsert(a, &e), Upserted::Inserted);
        assert_eq!(cache.get(a, e.prefix), Some(e.clone()));
        assert_eq!(cache.upsert(a, &e), Upserted::Unchanged);

        let mut moved = e.clone();
        moved.host_ip = Some("172.18.0.9".parse().unwrap());
        assert_eq!(cache.upsert(a, &moved), Upserted::Replaced);
        assert_eq!(cache.get(a, e.prefix), Some(moved));
    }

    #[test]
    fn an_upsert_differing_in_any_one_field_replaces_the_entry() {
        let (_, a, _) = mk_clusters();
        let mut base = mk_endpoint("10.1.0.5", 70_000);
        base.encrypt_key = 3;
        let edits: [fn(&mut Endpoint); 14] = [
            |e| e.identity = IdentityId::new(70_001).unwrap(),
            |e| e.encrypt_key = 7,
            |e| e.encrypt_key = 0,
            |e| e.host_ip = None,
            |e| e.host_ip = Some("172.18.0.3".parse().unwrap()),
            |e| e.host_ip = Some("fd00:18::2".parse().unwrap()),
            |e| e.namespace = Some("other".into()),
            |e| e.service_account = None,
            |e| e.pod = Some("other-pod".into()),
            |e| e.pod = None,
            // The same stem, another tail.
            |e| e.pod = Some("pod-10.1.0.6".into()),
            |e| e.pod = Some("web-7d4b9c8f6d-q8r4t".into()),
            |e| e.metadata = "m".into(),
            |e| {
                e.named_ports = vec![NamedPort {
                    name: "dns".into(),
                    port: crate::model::L4Addr {
                        protocol: crate::model::Protocol::Udp,
                        port: 53,
                    },
                }]
            },
        ];
        // From an IPv4 node (inline) and from an IPv6 one (pooled).
        let bases = ["172.18.0.2", "fd00:18::1"].map(|node| {
            let mut base = base.clone();
            base.host_ip = Some(node.parse().unwrap());
            base
        });
        for (base, (i, edit)) in bases
            .iter()
            .flat_map(|base| edits.iter().enumerate().map(move |e| (base, e)))
        {
            let at = format!("edit {i} from node {:?}", base.host_ip);
            let mut cache = IpCache::default();
            cache.upsert(a, base);
            let mut changed = base.clone();
            edit(&mut changed);
            assert_ne!(changed, *base, "{at} changes nothing");
            assert_eq!(cache.upsert(a, &changed), Upserted::Replaced, "{at}");
            assert_eq!(cache.upsert(a, &changed), Upserted::Unchanged, "{at}");
            assert_eq!(cache.get(a, base.prefix), Some(changed.clone()), "{at}");
            // Changed in place: the pools hold what a fresh entry would, no more, and
            // every reference goes back with the entry.
            let mut fresh = IpCache::default();
            fresh.upsert(a, &changed);
            assert_eq!(pooled(&cache), pooled(&fresh), "{at}");
            assert!(cache.delete(a, base.prefix));
            assert_eq!(pooled(&cache), [0; 4], "{at}");
        }
    }

    /// Distinct values held by each pool: names, IPv6 hosts, stems, extras.
    fn pooled(cache: &IpCache) -> [usize; 4] {
        let p = &cache.pools;
        [
            p.names.len(),
            p.hosts_v6.len(),
            p.stems.len(),
            p.extras.len(),
        ]
    }

    #[test]
    fn interned_values_are_freed_with_their_last_entry() {
        let (_, a, b) = mk_clusters();
        let mut cache = IpCache::default();
        // On an IPv6 node: an IPv4 node IP is inline, not pooled (see `CompactHost`).
        let node = Some("fd00:18::2".parse().unwrap());
        let mut e1 = mk_endpoint("10.1.0.5", 70_000);
        e1.pod = Some("web-7d4b9c8f6d-x2k9p".into());
        e1.encrypt_key = 3;
        e1.host_ip = node;
        let mut e2 = mk_endpoint("fd00::6", 70_000);
        e2.pod = Some("web-7d4b9c8f6d-q8r4t".into());
        e2.encrypt_key = 3;
        e2.host_ip = node;
        cache.upsert(a, &e1);
        cache.upsert(b, &e2);
        // Both share the namespace, the service account, the node IP, the pod name's
        // stem and the encryption key.
        assert_eq!(pooled(&cache), [2, 1, 1, 1]);
        assert!(cache.delete(a, e1.prefix));
        assert_eq!(pooled(&cache), [2, 1, 1, 1]);
        assert_eq!(cache.get(b, e2.prefix), Some(e2.clone()));

        // A replacement releases what the replaced entry held.
        let mut moved = e2.clone();
        moved.pod = Some("db-0".into());
        moved.encrypt_key = 0;
        moved.namespace = None;
        assert_eq!(cache.upsert(b, &moved), Upserted::Replaced);
        assert_eq!(pooled(&cache), [1, 1, 0, 0]);
        assert!(cache.delete(b, e2.prefix));
        assert_eq!(pooled(&cache), [0, 0, 0, 0]);
        assert!(!cache.delete(b, e2.prefix));
    }

    #[test]
    fn ipv6_and_cidr_entries_live_beside_ipv4_hosts() {
        let (_, a, b) = mk_clusters();
        let mut cache = IpCache::default();
        let prefixes = [
            "10.1.0.5",
            "10.1.0.4/31",
            "fd00::5",
            "fd00::/64",
            "::ffff:10.1.0.5",
        ];
        for (i, p) in prefixes.iter().enumerate() {
            let mut e = mk_endpoint("10.1.0.5", 70_000 + i as u32);
            e.prefix = p.parse().unwrap();
            assert_eq!(cache.upsert(a, &e), Upserted::Inserted, "{p}");
        }
        for (i, p) in prefixes.iter().enumerate() {
            let got = cache.get(a, p.parse().unwrap()).unwrap();
            assert_eq!(
                got.identity,
                IdentityId::new(70_000 + i as u32).unwrap(),
                "{p}"
            );
            assert_eq!(cache.get(b, p.parse().unwrap()), None, "{p}");
        }
        let mut held: Vec<String> = cache.prefixes_of(a).iter().map(|p| p.to_string()).collect();
        held.sort();
        let mut expected: Vec<String> = prefixes
            .iter()
            .map(|p| p.parse::<IpPrefix>().unwrap().to_string())
            .collect();
        expected.sort();
        assert_eq!(held, expected);
        let find = |ip: &str| cache.find(ip.parse().unwrap()).map(|p| p.to_string());
        assert_eq!(find("10.1.0.4").as_deref(), Some("10.1.0.4/31"));
        assert_eq!(find("fd00::7").as_deref(), Some("fd00::/64"));
        assert_eq!(find("fd00::5").as_deref(), Some("fd00::5"));
    }

    #[test]
    fn conflicts_on_ipv6_and_cidr_prefixes_are_kept_and_resolved() {
        let (_, a, b) = mk_clusters();
        for prefix in ["fd00::5", "10.1.0.0/24", "fd00::/64"] {
            let mut cache = IpCache::default();
            let mut ea = mk_endpoint("10.1.0.5", 70_000);
            ea.prefix = prefix.parse().unwrap();
            let mut eb = ea.clone();
            eb.identity = IdentityId::new(140_000).unwrap();
            eb.pod = Some("other-pod-abcdefgh".into());
            cache.upsert(a, &ea);
            cache.upsert(b, &eb);
            assert_eq!(cache.conflicted(), vec![ea.prefix], "{prefix}");
            assert_eq!(cache.prefixes_of(b), vec![ea.prefix], "{prefix}");
            assert_eq!(cache.get(a, ea.prefix), Some(ea.clone()), "{prefix}");
            assert_eq!(cache.get(b, ea.prefix), Some(eb.clone()), "{prefix}");
            // Updating the further claim leaves the first alone.
            eb.encrypt_key = 2;
            assert_eq!(cache.upsert(b, &eb), Upserted::Replaced, "{prefix}");
            assert_eq!(cache.get(a, ea.prefix), Some(ea.clone()), "{prefix}");
            assert!(cache.delete(b, ea.prefix), "{prefix}");
            assert!(cache.conflicted().is_empty(), "{prefix}");
            assert_eq!(cache.claimants(ea.prefix), vec![a], "{prefix}");
            assert!(cache.delete(a, ea.prefix), "{prefix}");
            assert_eq!(cache.find(ea.prefix.addr()), None, "{prefix}");
            assert_eq!(pooled(&cache), [0, 0, 0, 0], "{prefix}");
        }
    }

    #[test]
    fn a_prefix_claimed_twice_keeps_both_claims() {
        let (_, a, b) = mk_clusters();
        let mut cache = IpCache::default();
        let ea = mk_endpoint("10.1.0.5", 70_000);
        let mut eb = mk_endpoint("10.1.0.5", 140_000);
        eb.pod = Some("other".into());
        cache.upsert(a, &ea);
        cache.upsert(b, &eb);
        assert_eq!(cache.conflicted(), vec![ea.prefix]);
        let mut claimants = cache.claimants(ea.prefix);
        claimants.sort();
        assert_eq!(claimants, vec![a, b]);
        assert_eq!(cache.get(b, ea.prefix), Some(eb.clone()));

        // Removing the first claim promotes the other one.
        assert!(cache.delete(a, ea.prefix));
        assert_eq!(cache.claimants(ea.prefix), vec![b]);
        assert!(cache.conflicted().is_empty());
        assert_eq!(cache.find(ea.prefix.addr()), Some(ea.prefix));
        assert!(cache.delete(b, ea.prefix));
        assert_eq!(cache.find(ea.prefix.addr()), None);
    }

    #[test]
    fn look_ups_fall_back_to_the_longest_prefix() {
        let mut cache = IpCache::default();
        for p in ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "fd00::/64"] {
            let mut e = mk_endpoint("10.9.9.9", 2);
            e.prefix = p.parse().unwrap();
            cache.upsert(LOCAL, &e);
        }
        let find =
            |cache: &IpCache, ip: &str| cache.find(ip.parse().unwrap()).map(|p| p.to_string());
        assert_eq!(find(&cache, "10.1.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(find(&cache, "10.1.2.4").as_deref(), Some("10.1.0.0/16"));
        assert_eq!(find(&cache, "10.2.0.1").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(find(&cache, "fd00::5").as_deref(), Some("fd00::/64"));
        assert_eq!(find(&cache, "11.0.0.1"), None);

        cache.delete(LOCAL, "10.1.0.0/16".parse().unwrap());
        assert_eq!(find(&cache, "10.1.2.4").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(cache.prefixes_of(LOCAL).len(), 3);
    }

    #[test]
    fn prefix_containment_handles_the_edges() {
        let p = |s: &str| s.parse::<IpPrefix>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(contains(p("0.0.0.0/0"), ip("203.0.113.1")));
        assert!(contains(p("10.0.0.0/31"), ip("10.0.0.1")));
        assert!(!contains(p("10.0.0.0/31"), ip("10.0.0.2")));
        assert!(!contains(p("10.0.0.0/8"), ip("::ffff:10.0.0.1")));
        assert!(contains(p("::/0"), ip("fd00::1")));
    }

    #[test]
    fn entries_stay_small() {
        // With its 4-byte key, 44 bytes a bucket for an IPv4 pod, and the hash table's
        // control byte (see the module doc).
        assert_eq!(mem::size_of::<CompactEndpoint>(), 40);
    }
}
