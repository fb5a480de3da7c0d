//! The keys a churn run writes and how every value it writes is told apart: each write
//! carries its sequence number as a **version tag** — an endpoint's host IP, a node's
//! external address, an identity's label, a service's backend address — so an agent's
//! observation names the exact write it saw. Version 0 is the workload's initial value.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;

use super::plan::Op;
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
        })
    }

    /// Which version of key `key` `seen` is; `None` when no version looks like it (a
    /// phantom). Services are compared by name and backend addresses only: Cilium's
    /// copy, which the etcd-direct agents read, carries less than fleetmesh's. The
    /// value a version should have comes from `expected` when it holds it.
    pub fn version_of(&self, key: u32, seen: &Resource, expected: &Expected) -> Option<u32> {
        let version = match (self.template(key)?, seen) {
            (Resource::Endpoint(t), Resource::Endpoint(e)) => {
                // The hot path (most writes): compared field by field, no copy.
                if !same_but_host(t, e) {
                    return None;
                }
                return match e.host_ip {
                    host if host == t.host_ip => Some(0),
                    Some(ip) => version_in(ip),
                    None => None,
                };
            }
            (Resource::Node(_), Resource::Node(n)) => n
                .addresses
                .iter()
                .find(|a| a.kind == TAG_ADDRESS_KIND)
                .map_or(Some(0), |a| version_in(a.ip))?,
            (Resource::Identity(_), Resource::Identity(i)) => match i.labels().get(TAG_LABEL) {
                Some(label) => label.value.parse().ok()?,
                None => 0,
            },
            (Resource::Service(t), Resource::Service(s)) => {
                let ip = *s.backends.keys().next()?;
                if t.backends.contains_key(&ip) {
                    0
                } else {
                    version_in(ip)?
                }
            }
            _ => return None,
        };
        let built;
        let expected = match expected.values.get(&version) {
            Some((of, value)) if *of == key => value,
            Some(_) => return None,
            None => {
                built = self.tagged(key, version).ok()?;
                &built
            }
        };
        let same = match (expected, seen) {
            (Resource::Service(want), Resource::Service(got)) => {
                want.name == got.name && want.backends.keys().eq(got.backends.keys())
            }
            (want, got) => want == got,
        };
        same.then_some(version)
    }
}

/// The values of a run's writes of identities, nodes and services by version, built
/// before the run: every agent checks every write it sees, so building each expected
/// value once, not once per agent on the measured path, keeps the bench's own CPU off
/// what it measures. (Endpoints, most writes, are checked field by field without it.)
#[derive(Default)]
pub struct Expected {
    /// By version: the key written and its value.
    values: HashMap<u32, (u32, Resource)>,
}

impl Expected {
    /// The expected values of `ops`' upserts of keys other than endpoints.
    pub fn of(space: &KeySpace, ops: &[Op]) -> anyhow::Result<Self> {
        let mut values = HashMap::new();
        for op in ops {
            let Some(version) = op.version else {
                continue;
            };
            let template = space.template(op.key).context("no such key")?;
            if template.kind() != Kind::Endpoint {
                values.insert(version, (op.key, space.tagged(op.key, version)?));
            }
        }
        Ok(Self { values })
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

/// Every field but the host IP is equal.
fn same_but_host(a: &Endpoint, b: &Endpoint) -> bool {
    let Endpoint {
        prefix,
        identity,
        host_ip: _,
        encrypt_key,
        metadata,
        namespace,
        pod,
        service_account,
        named_ports,
    } = a;
    *prefix == b.prefix
        && *identity == b.identity
        && *encrypt_key == b.encrypt_key
        && *metadata == b.metadata
        && *namespace == b.namespace
        && *pod == b.pod
        && *service_account == b.service_account
        && *named_ports == b.named_ports
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

    #[test]
    fn every_kind_round_trips_its_version() {
        let space = mk_space(300);
        for key in 0..space.len() as u32 {
            for version in [0, 1, 77, MAX_VERSION] {
                let value = space.tagged(key, version).unwrap();
                let none = Expected::default();
                assert_eq!(
                    space.version_of(key, &value, &none),
                    Some(version),
                    "{value:?}"
                );
                assert_eq!(value.key(), space.template(key).unwrap().key());
            }
        }
    }

    #[test]
    fn expected_values_of_a_phase_classify_like_built_ones() {
        let space = mk_space(300);
        let others: Vec<u32> = [Kind::Identity, Kind::Node, Kind::Service]
            .iter()
            .flat_map(|k| space.keys_of(*k))
            .collect();
        let ops: Vec<Op> = others
            .iter()
            .zip(1..)
            .map(|(key, version)| Op {
                key: *key,
                version: Some(version),
            })
            .collect();
        let expected = Expected::of(&space, &ops).unwrap();
        assert_eq!(expected.values.len(), ops.len());
        for op in &ops {
            let version = op.version.unwrap();
            let value = space.tagged(op.key, version).unwrap();
            assert_eq!(space.version_of(op.key, &value, &expected), Some(version));
            // A version's value under another key is no version of that key.
            let other = others.iter().find(|k| **k != op.key).unwrap();
            assert_eq!(space.version_of(*other, &value, &expected), None);
        }
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
        let none = Expected::default();
        let last = space.len() as u32 - 1;
        let Resource::Endpoint(mut e) = space.tagged(last, 5).unwrap() else {
            panic!("the workload ends with endpoints")
        };
        e.pod = Some("someone-else".into());
        assert_eq!(
            space.version_of(last, &Resource::Endpoint(e.clone()), &none),
            None
        );
        e.pod = space.tagged(last, 5).ok().and_then(|r| match r {
            Resource::Endpoint(e) => e.pod,
            _ => None,
        });
        e.host_ip = Some("192.168.1.1".parse().unwrap());
        assert_eq!(space.version_of(last, &Resource::Endpoint(e), &none), None);
        // Another key's value.
        let first = space.tagged(0, 3).unwrap();
        assert_eq!(space.version_of(last, &first, &none), None);
    }
}
