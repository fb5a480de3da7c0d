//! Topology → visibility: which members each member's agent watches.

use std::collections::{BTreeMap, BTreeSet};

use super::Problem;
use super::profile::TopologySpec;
use crate::model::ClusterName;

/// For each member, the members its agent watches (itself excluded).
pub type Visibility = BTreeMap<ClusterName, BTreeSet<ClusterName>>;

/// The visibility `spec` gives `members`. A name in the topology that is not a member is
/// a problem, unless it is one of `listed` (a member listed with a name refused for
/// another reason, already reported).
pub fn visibility(
    spec: &TopologySpec,
    members: &[ClusterName],
    listed: &BTreeSet<&str>,
    problems: &mut Vec<Problem>,
) -> Visibility {
    let mut sees: Visibility = members
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    let lookup = |field: String, name: &str, problems: &mut Vec<Problem>| {
        let found = members.iter().find(|m| m.as_str() == name).cloned();
        if found.is_none() && !listed.contains(name) {
            problems.push(Problem::topology(
                field,
                format!("`{name}` is not a member"),
            ));
        }
        found
    };
    match spec {
        TopologySpec::FullMesh {} => {
            for (member, seen) in &mut sees {
                seen.extend(members.iter().filter(|m| *m != member).cloned());
            }
        }
        TopologySpec::HubSpoke { hubs } => {
            if hubs.is_empty() {
                problems.push(Problem::topology(
                    "topology.hubs".into(),
                    "a hub-spoke topology needs at least one hub".into(),
                ));
            }
            let mut hub_set = BTreeSet::new();
            for (i, hub) in hubs.iter().enumerate() {
                let field = format!("topology.hubs[{i}]");
                if let Some(hub) = lookup(field.clone(), hub, problems)
                    && !hub_set.insert(hub.clone())
                {
                    problems.push(Problem::topology(field, format!("`{hub}` is listed twice")));
                }
            }
            for (member, seen) in &mut sees {
                if hub_set.contains(member) {
                    seen.extend(members.iter().filter(|m| *m != member).cloned());
                } else {
                    seen.extend(hub_set.iter().cloned());
                }
            }
        }
        TopologySpec::Links { links } => {
            for (i, link) in links.iter().enumerate() {
                let from = lookup(format!("topology.links[{i}].from"), &link.from, problems);
                let to = lookup(format!("topology.links[{i}].to"), &link.to, problems);
                let (Some(from), Some(to)) = (from, to) else {
                    continue;
                };
                if from == to {
                    problems.push(Problem::topology(
                        format!("topology.links[{i}]"),
                        format!("`{from}` links to itself (every agent watches its own apiserver anyway)"),
                    ));
                } else if let Some(seen) = sees.get_mut(&from)
                    && !seen.insert(to.clone())
                {
                    problems.push(Problem::topology(
                        format!("topology.links[{i}]"),
                        format!("the link {from} → {to} is listed twice"),
                    ));
                }
            }
        }
    }
    sees
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::profile::LinkSpec;

    fn names(list: &[&str]) -> Vec<ClusterName> {
        list.iter().map(|n| ClusterName::new(n).unwrap()).collect()
    }

    fn run(spec: &TopologySpec, members: &[&str]) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
        let mut problems = Vec::new();
        let sees = visibility(spec, &names(members), &BTreeSet::new(), &mut problems);
        let sees = sees
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|n| n.to_string()).collect()))
            .collect();
        (sees, problems.iter().map(|p| p.to_string()).collect())
    }

    fn seen(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn full_mesh_everyone_sees_everyone_else() {
        let (sees, problems) = run(&TopologySpec::FullMesh {}, &["a", "b", "c"]);
        assert!(problems.is_empty());
        assert_eq!(sees["a"], seen(&["b", "c"]));
        assert_eq!(sees["c"], seen(&["a", "b"]));
    }

    #[test]
    fn hub_spoke_spokes_see_hubs_only_and_hubs_see_everyone() {
        let spec = TopologySpec::HubSpoke {
            hubs: vec!["hub".into(), "hub2".into()],
        };
        let (sees, problems) = run(&spec, &["hub", "hub2", "s1", "s2"]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(sees["hub"], seen(&["hub2", "s1", "s2"]));
        assert_eq!(sees["hub2"], seen(&["hub", "s1", "s2"]));
        assert_eq!(sees["s1"], seen(&["hub", "hub2"]));
        assert_eq!(sees["s2"], seen(&["hub", "hub2"]));
    }

    #[test]
    fn links_are_directed() {
        let spec = TopologySpec::Links {
            links: vec![LinkSpec {
                from: "a".into(),
                to: "b".into(),
            }],
        };
        let (sees, problems) = run(&spec, &["a", "b"]);
        assert!(problems.is_empty());
        assert_eq!(sees["a"], seen(&["b"]));
        assert!(sees["b"].is_empty());
    }

    #[test]
    fn unknown_missing_repeated_and_self_references_are_each_reported() {
        let spec = TopologySpec::HubSpoke { hubs: vec![] };
        let (_, problems) = run(&spec, &["a"]);
        assert_eq!(
            problems,
            ["topology.hubs: a hub-spoke topology needs at least one hub"]
        );

        let spec = TopologySpec::HubSpoke {
            hubs: vec!["a".into(), "x".into(), "a".into()],
        };
        let (_, problems) = run(&spec, &["a"]);
        assert_eq!(
            problems,
            [
                "topology.hubs[1]: `x` is not a member",
                "topology.hubs[2]: `a` is listed twice"
            ]
        );

        let link = |from: &str, to: &str| LinkSpec {
            from: from.into(),
            to: to.into(),
        };
        let spec = TopologySpec::Links {
            links: vec![
                link("a", "nope"),
                link("a", "a"),
                link("a", "b"),
                link("a", "b"),
            ],
        };
        let (_, problems) = run(&spec, &["a", "b"]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(problems[0], "topology.links[0].to: `nope` is not a member");
        assert!(problems[1].starts_with("topology.links[1]: `a` links to itself"));
        assert_eq!(
            problems[2],
            "topology.links[3]: the link a → b is listed twice"
        );
    }

    #[test]
    fn a_name_refused_elsewhere_is_not_reported_again() {
        let spec = TopologySpec::HubSpoke {
            hubs: vec!["Bad_Hub".into()],
        };
        let mut problems = Vec::new();
        let listed: BTreeSet<&str> = ["Bad_Hub"].into_iter().collect();
        visibility(&spec, &names(&["a"]), &listed, &mut problems);
        assert!(problems.is_empty());
    }
}
