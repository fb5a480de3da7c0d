//! Profile → validated fleet. Every problem is collected (not just the first), each
//! naming the member and the field, so that one run shows everything to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use super::cidr::overlaps;
use super::lock::{LOCK_FILE, Lock};
use super::profile::{KustomizeSpec, MemberSpec, Profile};
use super::topology::{Visibility, visibility};
use crate::model::{ClusterId, ClusterName, IdMode, IpPrefix};

/// One thing wrong with a profile: where (a member and a field, or a top-level field)
/// and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `member `a` (members[0])`, or empty for a top-level field.
    pub member: String,
    /// The profile field at fault, e.g. `id` or `topology.hubs[1]`.
    pub field: String,
    pub message: String,
}

impl Problem {
    fn member(index: usize, name: &str, field: &str, message: String) -> Self {
        Self {
            member: format!("member `{name}` (members[{index}])"),
            field: field.to_string(),
            message,
        }
    }

    fn top(field: &str, message: String) -> Self {
        Self {
            member: String::new(),
            field: field.to_string(),
            message,
        }
    }

    pub(super) fn topology(field: String, message: String) -> Self {
        Self {
            member: String::new(),
            field,
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.member.is_empty() {
            write!(f, "{}: ", self.member)?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Where peers dial a member's apiserver.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    /// A DNS name or an IP address (without brackets).
    pub host: String,
    pub port: u16,
}

impl Address {
    /// Parses `host:port` or `[v6]:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| format!("{text:?} is not [address]:port"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
            (host, port)
        } else {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| format!("{text:?} is not host:port"))?;
            if host.contains(':') {
                return Err(format!("{text:?}: write an IPv6 address as [address]:port"));
            }
            (host, port)
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!("{text:?} has no valid host"));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{text:?}: the port must be in 1..=65535")),
        };
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip() {
            Some(IpAddr::V6(_)) => write!(f, "[{}]:{}", self.host, self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// A validated member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: ClusterName,
    pub id: ClusterId,
    /// True if the id was assigned by this run (not in the profile, not in the lock).
    pub id_assigned: bool,
    pub address: Address,
    pub pod_cidrs: Vec<IpPrefix>,
    pub service_cidrs: Vec<IpPrefix>,
}

/// A validated profile: members with their final ids, and who sees whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    pub mesh: ClusterName,
    pub mode: IdMode,
    /// In the profile's order.
    pub members: Vec<Member>,
    pub sees: Visibility,
    /// The members' kustomize overlays, when the profile asks for them.
    pub kustomize: Option<KustomizeSpec>,
    /// The port of the members' etcd API, when the profile asks for it.
    pub etcd_api_port: Option<u16>,
    /// The agents' etcd API port for their own Cilium agents, when the profile asks.
    pub kvstoremesh_port: Option<u16>,
}

impl Fleet {
    /// The members whose agents watch `name` (itself excluded).
    pub fn watchers_of(&self, name: &ClusterName) -> BTreeSet<ClusterName> {
        self.sees
            .iter()
            .filter(|(_, seen)| seen.contains(name))
            .map(|(watcher, _)| watcher.clone())
            .collect()
    }

    pub fn member(&self, name: &ClusterName) -> Option<&Member> {
        self.members.iter().find(|m| &m.name == name)
    }

    /// What the next run must keep: ids and who sees whom.
    pub fn to_lock(&self) -> Lock {
        Lock {
            mesh: self.mesh.to_string(),
            max_connected_clusters: self.mode.max_cluster_id(),
            members: self
                .members
                .iter()
                .map(|m| super::lock::LockedMember {
                    name: m.name.clone(),
                    id: m.id.get(),
                    sees: self.sees.get(&m.name).cloned().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// Validates `profile`; `previous` is the last plan's lock, whose ids are kept. Returns
/// every problem found.
pub fn validate(profile: &Profile, previous: Option<&Lock>) -> Result<Fleet, Vec<Problem>> {
    let mut problems = Vec::new();
    let mesh = ClusterName::new(&profile.mesh)
        .map_err(|e| problems.push(Problem::top("mesh", e.to_string())))
        .ok();
    let mode = IdMode::from_max_connected_clusters(profile.max_connected_clusters)
        .map_err(|e| problems.push(Problem::top("maxConnectedClusters", e.to_string())))
        // Go on in normal mode so that the members' own problems are reported too.
        .unwrap_or_default();

    if profile.members.is_empty() {
        problems.push(Problem::top(
            "members",
            "a mesh needs at least one member".into(),
        ));
    }
    let max = mode.max_cluster_id() as usize;
    if profile.members.len() > max {
        problems.push(Problem::top(
            "members",
            format!(
                "{} members, but a mesh with maxConnectedClusters {max} holds at most {max}",
                profile.members.len()
            ),
        ));
    }

    let kustomize = profile.kustomize.as_ref().and_then(|k| {
        let base = k.base.trim();
        let bad = base.is_empty()
            || base
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\'');
        if bad {
            problems.push(Problem::top(
                "kustomize.base",
                format!(
                    "{:?} is not a kustomize resource (a path or URL without spaces or quotes)",
                    k.base
                ),
            ));
            return None;
        }
        Some(KustomizeSpec {
            base: base.to_string(),
            store: k.store,
        })
    });

    let etcd_api_port = profile.etcd_api.and_then(|e| {
        if e.port == 0 {
            problems.push(Problem::top(
                "etcdApi.port",
                "must be in 1..=65535".to_string(),
            ));
            return None;
        }
        Some(e.port)
    });

    let mut seen_names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seen_addresses: BTreeMap<Address, usize> = BTreeMap::new();
    // Members whose name is valid and unique, with what the later steps need.
    let mut accepted: Vec<(usize, ClusterName, Option<Address>, Cidrs)> = Vec::new();
    for (i, spec) in profile.members.iter().enumerate() {
        let mut problem = |field: &str, message: String| {
            problems.push(Problem::member(i, &spec.name, field, message));
        };
        let name = ClusterName::new(&spec.name).map_err(|e| problem("name", e.to_string()));
        if let Some(first) = seen_names.insert(&spec.name, i) {
            problem("name", format!("listed twice (also members[{first}])"));
            seen_names.insert(&spec.name, first);
            continue;
        }
        let address = Address::parse(&spec.address)
            .map_err(|e| problem("address", e))
            .ok();
        if let Some(addr) = &address
            && let Some(first) = seen_addresses.insert(addr.clone(), i)
        {
            problem(
                "address",
                format!("{addr} is also members[{first}]'s address"),
            );
        }
        let cidrs = parse_cidrs(spec, &mut problem);
        if let Ok(name) = name {
            accepted.push((i, name, address, cidrs));
        }
    }

    check_overlaps(&profile.members, &accepted, &mut problems);
    let ids = assign_ids(&profile.members, &accepted, mode, previous, &mut problems);

    let names: Vec<ClusterName> = accepted.iter().map(|(_, n, ..)| n.clone()).collect();
    let listed: BTreeSet<&str> = profile.members.iter().map(|m| m.name.as_str()).collect();
    let sees = visibility(&profile.topology, &names, &listed, &mut problems);

    let mesh = match mesh {
        Some(mesh) if problems.is_empty() => mesh,
        _ => return Err(problems),
    };
    let mut members = Vec::new();
    for ((_, name, address, cidrs), id) in accepted.into_iter().zip(ids) {
        // Both are present when no problem was reported.
        if let (Some(address), Some((id, id_assigned))) = (address, id) {
            members.push(Member {
                name,
                id,
                id_assigned,
                address,
                pod_cidrs: cidrs.pod,
                service_cidrs: cidrs.service,
            });
        }
    }
    Ok(Fleet {
        mesh,
        mode,
        members,
        sees,
        kustomize,
        etcd_api_port,
        kvstoremesh_port: profile.kvstoremesh.map(|k| k.port),
    })
}

#[derive(Clone, Debug, Default)]
struct Cidrs {
    pod: Vec<IpPrefix>,
    service: Vec<IpPrefix>,
}

fn parse_cidrs(spec: &MemberSpec, problem: &mut impl FnMut(&str, String)) -> Cidrs {
    let mut parse = |field: &str, list: &[String]| {
        list.iter()
            .filter_map(|text| match text.parse::<IpPrefix>() {
                Ok(p) if text.contains('/') => Some(p),
                _ => {
                    problem(field, format!("{text:?} is not a CIDR (address/length)"));
                    None
                }
            })
            .collect()
    };
    Cidrs {
        pod: parse("podCIDRs", &spec.pod_cidrs),
        service: parse("serviceCIDRs", &spec.service_cidrs),
    }
}

/// Every prefix of a member against every prefix of the members listed before it: pod
/// and service ranges must not share an address across members.
fn check_overlaps(
    specs: &[MemberSpec],
    accepted: &[(usize, ClusterName, Option<Address>, Cidrs)],
    problems: &mut Vec<Problem>,
) {
    let fields = |c: &Cidrs| -> Vec<(&'static str, IpPrefix)> {
        let pod = c.pod.iter().map(|p| ("podCIDRs", *p));
        pod.chain(c.service.iter().map(|p| ("serviceCIDRs", *p)))
            .collect()
    };
    for (j, (index, _, _, cidrs)) in accepted.iter().enumerate() {
        for (field, prefix) in fields(cidrs) {
            for (_, other, _, other_cidrs) in &accepted[..j] {
                for (other_field, other_prefix) in fields(other_cidrs) {
                    if overlaps(prefix, other_prefix) {
                        problems.push(Problem::member(
                            *index,
                            &specs[*index].name,
                            field,
                            format!(
                                "{prefix} overlaps member `{other}`'s {other_field} {other_prefix}"
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// Each accepted member's id and whether this run assigned it: the profile's id, else
/// the lock's, else the lowest free one. A profile id that differs from the lock's is a
/// problem: an id never changes silently.
fn assign_ids(
    specs: &[MemberSpec],
    accepted: &[(usize, ClusterName, Option<Address>, Cidrs)],
    mode: IdMode,
    previous: Option<&Lock>,
    problems: &mut Vec<Problem>,
) -> Vec<Option<(ClusterId, bool)>> {
    let mut fixed: Vec<Option<ClusterId>> = Vec::with_capacity(accepted.len());
    let mut owners: BTreeMap<ClusterId, &ClusterName> = BTreeMap::new();
    for (index, name, ..) in accepted {
        let spec = &specs[*index];
        let mut problem = |message: String| {
            problems.push(Problem::member(*index, &spec.name, "id", message));
        };
        let locked = previous.and_then(|l| l.member(name)).map(|m| m.id);
        let wanted = match (spec.id, locked) {
            (Some(id), Some(was)) if id != was => {
                problem(format!(
                    "the profile says {id} but the previous plan ({LOCK_FILE}) gave it {was}; \
                     an id never changes: keep {was}, or remove the member first"
                ));
                None
            }
            (Some(id), _) | (None, Some(id)) => Some(id),
            (None, None) => None,
        };
        let id = wanted.and_then(|id| {
            ClusterId::new(id, mode)
                .map_err(|e| problem(e.to_string()))
                .ok()
        });
        if let Some(id) = id
            && let Some(owner) = owners.insert(id, name)
        {
            problem(format!("{id} is already member `{owner}`'s"));
            owners.insert(id, owner);
        }
        fixed.push(id);
    }

    let mut next = 1;
    let mut out = Vec::with_capacity(accepted.len());
    for ((index, name, ..), id) in accepted.iter().zip(fixed) {
        if let Some(id) = id {
            out.push(Some((id, false)));
            continue;
        }
        if specs[*index].id.is_some() {
            // Refused above.
            out.push(None);
            continue;
        }
        let free = (next..=mode.max_cluster_id())
            .filter_map(|n| ClusterId::new(n, mode).ok())
            .find(|id| !owners.contains_key(id));
        match free {
            Some(id) => {
                owners.insert(id, name);
                next = id.get() + 1;
                out.push(Some((id, true)));
            }
            // More members than ids is reported once, for the whole list.
            None if accepted.len() > mode.max_cluster_id() as usize => out.push(None),
            None => {
                problems.push(Problem::member(
                    *index,
                    name.as_str(),
                    "id",
                    format!("no free id left in 1..={}", mode.max_cluster_id()),
                ));
                out.push(None);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(members: &str, topology: &str) -> Profile {
        Profile::parse(&format!(
            "mesh: prod\nmembers:\n{members}topology: {topology}\n"
        ))
        .unwrap()
    }

    fn member(name: &str, extra: &str, n: u32) -> String {
        format!("- {{name: {name}, address: \"10.0.0.{n}:9891\"{extra}}}\n")
    }

    fn problems(p: &Profile, lock: Option<&Lock>) -> Vec<String> {
        validate(p, lock)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn ids(fleet: &Fleet) -> Vec<(String, u32, bool)> {
        fleet
            .members
            .iter()
            .map(|m| (m.name.to_string(), m.id.get(), m.id_assigned))
            .collect()
    }

    #[test]
    fn each_bad_case_of_the_acceptance_gets_exactly_one_message_naming_member_and_field() {
        let full = "{kind: full-mesh}";
        let cases: [(Profile, &str); 5] = [
            (
                profile(
                    &(member("a", ", id: 1", 1) + &member("b", ", id: 1", 2)),
                    full,
                ),
                "member `b` (members[1]): id: 1 is already member `a`'s",
            ),
            (
                profile(&(member("a", "", 1) + &member("a", "", 2)), full),
                "member `a` (members[1]): name: listed twice (also members[0])",
            ),
            (
                profile(&(member("a", "", 1) + &member("Bad_Name", "", 2)), full),
                "member `Bad_Name` (members[1]): name: invalid cluster name \"Bad_Name\"",
            ),
            (
                profile(
                    &(member("a", "", 1) + &member("b", "", 2)),
                    "{kind: links, links: [{from: a, to: ghost}]}",
                ),
                "topology.links[0].to: `ghost` is not a member",
            ),
            (
                profile(
                    &(member("a", ", podCIDRs: [10.0.0.0/8]", 1)
                        + &member("b", ", podCIDRs: [10.2.0.0/16]", 2)),
                    full,
                ),
                "member `b` (members[1]): podCIDRs: 10.2.0.0/16 overlaps member `a`'s podCIDRs 10.0.0.0/8",
            ),
        ];
        for (p, expected) in cases {
            let found = problems(&p, None);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].starts_with(expected), "{expected} vs {found:?}");
        }
    }

    #[test]
    fn more_members_than_the_mode_allows_is_one_problem() {
        let members: String = (0..256)
            .map(|i| format!("- {{name: m{i}, address: \"m{i}.example:9891\"}}\n"))
            .collect();
        let p = profile(&members, "{kind: full-mesh}");
        let found = problems(&p, None);
        assert_eq!(
            found,
            ["members: 256 members, but a mesh with maxConnectedClusters 255 holds at most 255"]
        );

        let extended = Profile {
            max_connected_clusters: 511,
            ..p
        };
        let fleet = validate(&extended, None).unwrap();
        assert_eq!(fleet.members.len(), 256);
        assert_eq!(fleet.members[255].id.get(), 256);
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let p = Profile::parse(
            "mesh: Prod\nmaxConnectedClusters: 300\nmembers:\n\
             - {name: a, id: 0, address: nowhere, podCIDRs: [banana]}\n\
             - {name: b, address: \"10.0.0.2:0\", serviceCIDRs: [10.0.0.1]}\n\
             topology: {kind: hub-spoke, hubs: []}\n",
        )
        .unwrap();
        let found = problems(&p, None);
        for expected in [
            "mesh: invalid cluster name",
            "maxConnectedClusters: invalid max-connected-clusters 300",
            "member `a` (members[0]): address: \"nowhere\" is not host:port",
            "member `a` (members[0]): podCIDRs: \"banana\" is not a CIDR",
            "member `a` (members[0]): id: invalid cluster id 0",
            "member `b` (members[1]): address: \"10.0.0.2:0\": the port must be in 1..=65535",
            "member `b` (members[1]): serviceCIDRs: \"10.0.0.1\" is not a CIDR",
            "topology.hubs: a hub-spoke topology needs at least one hub",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(expected)),
                "{expected} not in {found:#?}"
            );
        }
        assert_eq!(found.len(), 8, "{found:#?}");
    }

    #[test]
    fn an_empty_profile_and_a_shared_address_are_refused() {
        let p = Profile::parse("mesh: m\ntopology: {kind: full-mesh}\n").unwrap();
        assert_eq!(
            problems(&p, None),
            ["members: a mesh needs at least one member"]
        );
        let p = profile(
            "- {name: a, address: \"h:1\"}\n- {name: b, address: \"h:1\"}\n",
            "{kind: full-mesh}",
        );
        assert_eq!(
            problems(&p, None),
            ["member `b` (members[1]): address: h:1 is also members[0]'s address"]
        );
    }

    #[test]
    fn addresses_parse_with_names_v4_and_bracketed_v6() {
        let a = Address::parse("api.example:9891").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.ip()),
            ("api.example", 9891, None)
        );
        let a = Address::parse("[fd00::1]:9891").unwrap();
        assert_eq!(a.ip(), Some("fd00::1".parse().unwrap()));
        assert_eq!(a.to_string(), "[fd00::1]:9891");
        for bad in ["fd00::1:9891", ":9891", "h:", "h:99999", "[nope]:1", "h"] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_fill_the_lowest_free_slots_around_explicit_ones() {
        let p = profile(
            &(member("a", "", 1)
                + &member("b", ", id: 1", 2)
                + &member("c", "", 3)
                + &member("d", ", id: 3", 4)),
            "{kind: full-mesh}",
        );
        let fleet = validate(&p, None).unwrap();
        assert_eq!(
            ids(&fleet),
            [
                ("a".into(), 2, true),
                ("b".into(), 1, false),
                ("c".into(), 4, true),
                ("d".into(), 3, false)
            ]
        );
    }

    #[test]
    fn ids_from_the_previous_plan_are_kept_and_never_change_silently() {
        let first = profile(
            &(member("a", "", 1) + &member("b", "", 2)),
            "{kind: full-mesh}",
        );
        let lock = validate(&first, None).unwrap().to_lock();
        // A new member listed first does not take a's or b's id.
        let second = profile(
            &(member("new", "", 3) + &member("a", "", 1) + &member("b", "", 2)),
            "{kind: full-mesh}",
        );
        let fleet = validate(&second, Some(&lock)).unwrap();
        assert_eq!(
            ids(&fleet),
            [
                ("new".into(), 3, true),
                ("a".into(), 1, false),
                ("b".into(), 2, false)
            ]
        );
        // Saying the same id explicitly is fine; another one is refused.
        let same = profile(
            &(member("a", ", id: 1", 1) + &member("b", "", 2)),
            "{kind: full-mesh}",
        );
        assert!(validate(&same, Some(&lock)).is_ok());
        let changed = profile(
            &(member("a", ", id: 7", 1) + &member("b", "", 2)),
            "{kind: full-mesh}",
        );
        let found = problems(&changed, Some(&lock));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(
                "member `a` (members[0]): id: the profile says 7 but the previous plan (fleet.lock.yaml) gave it 1"
            ),
            "{found:?}"
        );
        // A new member may not take a kept id.
        let clash = profile(
            &(member("a", "", 1) + &member("b", "", 2) + &member("c", ", id: 2", 3)),
            "{kind: full-mesh}",
        );
        assert_eq!(
            problems(&clash, Some(&lock)),
            ["member `c` (members[2]): id: 2 is already member `b`'s"]
        );
    }

    #[test]
    fn watchers_are_the_members_that_see_one() {
        let p = profile(
            &(member("hub", "", 1) + &member("s1", "", 2) + &member("s2", "", 3)),
            "{kind: hub-spoke, hubs: [hub]}",
        );
        let fleet = validate(&p, None).unwrap();
        let name = |n: &str| ClusterName::new(n).unwrap();
        assert_eq!(
            fleet.watchers_of(&name("hub")),
            [name("s1"), name("s2")].into()
        );
        assert_eq!(fleet.watchers_of(&name("s1")), [name("hub")].into());
    }
}
