//! The keys a churn run writes and how every value it writes is told apart: each write
//! carries its sequence number as a **version tag** — an endpoint's host IP, a node's
//! external address, an identity's label, a service's backend address — so an agent's
//! observation names the exact write it saw. Version 0 is the workload's initial value.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use foldhash::fast::FixedState;

use crate::bench::workload::Workload;
use crate::model::{
    Cluster, Endpoint, Identity, Kind, Label, NodeAddress, Resource, ResourceKey, Service,
};

/// Tagged addresses are 11.0.0.0 + version: outside every address the workload uses.
const TAG_BASE: u32 = 0x0B00_0000;
/// Versions fit the low 24 bits of a tagged address (16 M writes per run).
pub const MAX_VERSION: u32 = (1 << 24) - 1;
/// The identity label carrying the version.
const TAG_LABEL: &str = "bench-version";
/// The node address kind carrying the version.
const TAG_ADDRESS_KIND: &str = "ExternalIP";
/// Any fixed seed: fingerprints are compared within one run.
const FINGERPRINT_SEED: u64 = 0x5EED;

/// Every key of a workload, numbered, with its initial value.
pub struct KeySpace {
    pub cluster: Cluster,
    templates: Vec<Resource>,
    index: HashMap<ResourceKey, u32>,
    /// The endpoints' host addresses count up with their key numbers (as the workload
    /// makes them): the first address, its key number and how many. Looking an endpoint
    /// up is then arithmetic — it is most of every agent's observations, and the bench
    /// should spend its CPU on what it measures.
    endpoint_run: Option<(u32, u32, u32)>,
}

impl KeySpace {
    pub fn new(workload: &Workload) -> Self {
        let templates = workload.resources.clone();
        let index = templates
            .iter()
            .enumerate()
            .map(|(i, r)| (r.key(), i as u32))
            .collect();
        let endpoint_run = endpoint_run(&templates);
        Self {
            cluster: workload.cluster.clone(),
            templates,
            index,
            endpoint_run,
        }
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// The number of `key`, if it is one of the workload's.
    pub fn key_of(&self, key: &ResourceKey) -> Option<u32> {
        if let (ResourceKey::Endpoint(prefix), Some((first_ip, first_key, count))) =
            (key, self.endpoint_run)
            && let IpAddr::V4(ip) = prefix.addr()
            && prefix.is_host()
        {
            let offset = u32::from(ip).wrapping_sub(first_ip);
            return (offset < count).then_some(first_key + offset);
        }
        self.index.get(key).copied()
    }

    /// The numbers of the keys of `kind`.
    pub fn keys_of(&self, kind: Kind) -> Vec<u32> {
        (0..self.templates.len() as u32)
            .filter(|k| self.templates[*k as usize].kind() == kind)
            .collect()
    }

    /// The initial value of key `key`.
    pub fn template(&self, key: u32) -> Option<&Resource> {
        self.templates.get(key as usize)
    }

    /// The value version `version` of key `key` has.
    pub fn tagged(&self, key: u32, version: u32) -> anyhow::Result<Resource> {
        let template = self.template(key).context("no such key")?;
        if version == 0 {
            return Ok(template.clone());
        }
        let tag = tag_ip(version);
        Ok(match template {
            Resource::Endpoint(e) => Resource::Endpoint(Endpoint {
                host_ip: Some(tag),
                ..e.clone()
            }),
            Resource::Node(n) => {
                let mut node = n.clone();
                node.addresses.push(NodeAddress {
                    kind: TAG_ADDRESS_KIND.into(),
                    ip: tag,
                });
                Resource::Node(node)
            }
            Resource::Identity(i) => {
                let mut labels = i.labels().clone();
                labels.insert(Label::k8s(TAG_LABEL, &version.to_string())?);
                Resource::Identity(Identity::new(&self.cluster, i.id(), labels)?)
            }
            Resource::Service(s) => {
                let backend = s.backends.values().next().cloned().unwrap_or_default();
                Resource::Service(Service {
                    backends: [(tag, backend)].into(),
                    ..s.clone()
                })
            }
            Resource::ServiceExport(_) => anyhow::bail!("the benchmark writes no service exports"),
        })
    }
}

/// What an agent saw of one key, filed on the measured path: the version the value's
/// tag claims (0, the initial value, when it has none) and a fingerprint of what is
/// compared. Making one reads nothing but the value: comparing with the key space's
/// templates there cost a cache miss or more per delivery, times 255 agents, on the
/// threads whose latency is measured. [`Confirmer`] checks the claim after the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sighting {
    pub version: u32,
    pub fingerprint: u64,
}

impl Sighting {
    /// `None` when the value can be no write's: it carries a tag no write has, or it is
    /// a service without backends. A phantom outright.
    pub fn of(seen: &Resource) -> Option<Self> {
        let version = match seen {
            Resource::Endpoint(e) => e.host_ip.and_then(version_in).unwrap_or(0),
            Resource::Node(n) => n
                .addresses
                .iter()
                .find(|a| a.kind == TAG_ADDRESS_KIND)
                .map_or(Some(0), |a| version_in(a.ip))?,
            Resource::Identity(i) => match i.labels().get(TAG_LABEL) {
                Some(label) => label.value.parse().ok()?,
                None => 0,
            },
            Resource::Service(s) => s
                .backends
                .keys()
                .next()
                .map(|ip| version_in(*ip))?
                .unwrap_or(0),
            // The benchmark writes none: whatever is seen is a phantom.
            Resource::ServiceExport(_) => return None,
        };
        Some(Self {
            version,
            fingerprint: fingerprint(seen),
        })
    }
}

/// A hash of what a check compares: everything, but for services only the name and
/// the backend addresses — Cilium's copy, which the etcd-direct agents read, carries
/// less than fleetmesh's. Fixed seed, so that every agent's fingerprints compare.
fn fingerprint(resource: &Resource) -> u64 {
    let mut hasher = FixedState::with_seed(FINGERPRINT_SEED).build_hasher();
    match resource {
        Resource::Service(s) => {
            s.name.hash(&mut hasher);
            s.backends.keys().for_each(|ip| ip.hash(&mut hasher));
        }
        other => other.hash(&mut hasher),
    }
    hasher.finish()
}

/// Checks sightings against the values the writes had, building each version's
/// expected value once for all agents.
pub struct Confirmer<'a> {
    space: &'a KeySpace,
    /// By key and version: the fingerprint of the value written (`None`: no such key).
    expected: HashMap<(u32, u32), Option<u64>>,
}

impl<'a> Confirmer<'a> {
    pub fn new(space: &'a KeySpace) -> Self {
        Self {
            space,
            expected: HashMap::new(),
        }
    }

    /// Whether `sighting` is what version `sighting.version` of `key` wrote (the
    /// fingerprints are equal: 64-bit hashes, so a wrong value passes with odds of 2⁻⁶⁴).
    pub fn confirm(&mut self, key: u32, sighting: Sighting) -> bool {
        let space = self.space;
        let expected = *self
            .expected
            .entry((key, sighting.version))
            .or_insert_with(|| {
                space
                    .tagged(key, sighting.version)
                    .ok()
                    .map(|r| fingerprint(&r))
            });
        expected == Some(sighting.fingerprint)
    }
}

/// The run of endpoint keys whose host addresses count up with their key numbers, when
/// every endpoint is in it.
fn endpoint_run(templates: &[Resource]) -> Option<(u32, u32, u32)> {
    let mut run: Option<(u32, u32, u32)> = None;
    for (key, resource) in templates.iter().enumerate() {
        let Resource::Endpoint(e) = resource else {
            continue;
        };
        let IpAddr::V4(ip) = e.prefix.addr() else {
            return None;
        };
        if !e.prefix.is_host() {
            return None;
        }
        let (ip, key) = (u32::from(ip), key as u32);
        run = match run {
            None => Some((ip, key, 1)),
            Some((first_ip, first_key, count))
                if ip == first_ip.wrapping_add(count) && key == first_key + count =>
            {
                Some((first_ip, first_key, count + 1))
            }
            Some(_) => return None,
        };
    }
    run
}

fn tag_ip(version: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(TAG_BASE + (version & MAX_VERSION)))
}

fn version_in(ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(v4) => u32::from(v4)
            .checked_sub(TAG_BASE)
            .filter(|v| *v <= MAX_VERSION && *v > 0),
        IpAddr::V6(_) => None,
    }
}

/// A key space of `endpoints` endpoints (and the rest), for tests.
#[cfg(test)]
pub(super) fn mk_space(endpoints: u32) -> KeySpace {
    use crate::bench::workload::Sizes;
    use crate::model::{ClusterId, ClusterName, IdMode};
    let cluster = Cluster::new(
        ClusterName::new("source").unwrap(),
        ClusterId::new(2, IdMode::Normal).unwrap(),
        IdMode::Normal,
    );
    let sizes = Sizes::for_endpoints(endpoints, &cluster);
    KeySpace::new(&Workload::generate(&cluster, sizes).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IpPrefix;

    /// The version `seen` is of `key`, as the recorder and the check after the run
    /// tell it together.
    fn version_of(confirmer: &mut Confirmer, key: u32, seen: &Resource) -> Option<u32> {
        let sighting = Sighting::of(seen)?;
        confirmer.confirm(key, sighting).then_some(sighting.version)
    }

    #[test]
    fn every_kind_round_trips_its_version() {
        let space = mk_space(300);
        let mut confirmer = Confirmer::new(&space);
        for key in 0..space.len() as u32 {
            for version in [0, 1, 77, MAX_VERSION] {
                let value = space.tagged(key, version).unwrap();
                assert_eq!(
                    version_of(&mut confirmer, key, &value),
                    Some(version),
                    "{value:?}"
                );
                assert_eq!(value.key(), space.template(key).unwrap().key());
            }
        }
    }

    #[test]
    fn a_version_of_one_key_is_no_version_of_another() {
        let space = mk_space(300);
        let mut confirmer = Confirmer::new(&space);
        let others: Vec<u32> = [Kind::Identity, Kind::Node, Kind::Service]
            .iter()
            .flat_map(|k| space.keys_of(*k))
            .collect();
        for (key, version) in others.iter().zip(1..) {
            let value = space.tagged(*key, version).unwrap();
            assert_eq!(version_of(&mut confirmer, *key, &value), Some(version));
            let other = others.iter().find(|k| *k != key).unwrap();
            assert_eq!(version_of(&mut confirmer, *other, &value), None);
        }
    }

    #[test]
    fn a_service_is_compared_by_name_and_backend_addresses_only() {
        let space = mk_space(300);
        let mut confirmer = Confirmer::new(&space);
        let service = space.keys_of(Kind::Service)[0];
        let Resource::Service(mut s) = space.tagged(service, 12).unwrap() else {
            panic!("a service key holds a service")
        };
        // What Cilium's copy of a service does not carry.
        s.shared = !s.shared;
        s.backends.values_mut().for_each(|b| b.ports.clear());
        let seen = Resource::Service(s);
        assert_eq!(version_of(&mut confirmer, service, &seen), Some(12));
    }

    #[test]
    fn every_key_is_found_by_its_number() {
        let space = mk_space(300);
        assert!(space.endpoint_run.is_some());
        for key in 0..space.len() as u32 {
            let resource_key = space.template(key).unwrap().key();
            assert_eq!(space.key_of(&resource_key), Some(key));
        }
        let outside = IpPrefix::host("10.200.0.1".parse().unwrap());
        assert_eq!(space.key_of(&ResourceKey::Endpoint(outside)), None);
    }

    #[test]
    fn a_value_no_version_has_is_a_phantom() {
        let space = mk_space(300);
        let mut confirmer = Confirmer::new(&space);
        let last = space.len() as u32 - 1;
        let Resource::Endpoint(mut e) = space.tagged(last, 5).unwrap() else {
            panic!("the workload ends with endpoints")
        };
        e.pod = Some("someone-else".into());
        let seen = Resource::Endpoint(e.clone());
        assert_eq!(version_of(&mut confirmer, last, &seen), None);
        e.pod = space.tagged(last, 5).ok().and_then(|r| match r {
            Resource::Endpoint(e) => e.pod,
            _ => None,
        });
        e.host_ip = Some("192.168.1.1".parse().unwrap());
        let seen = Resource::Endpoint(e);
        assert_eq!(version_of(&mut confirmer, last, &seen), None);
        // Another key's value.
        let first = space.tagged(0, 3).unwrap();
        assert_eq!(version_of(&mut confirmer, last, &first), None);
        // A service whose backend no write had.
        let service = space.keys_of(Kind::Service)[0];
        let Resource::Service(mut s) = space.tagged(service, 9).unwrap() else {
            panic!("a service key holds a service")
        };
        let backend = s.backends.values().next().cloned().unwrap();
        s.backends = [("10.9.9.9".parse().unwrap(), backend)].into();
        let seen = Resource::Service(s);
        assert_eq!(version_of(&mut confirmer, service, &seen), None);
    }
}
