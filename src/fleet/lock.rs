//! `DIR/fleet.lock.yaml`: what the previous plan decided (ids, who sees whom), so that a
//! re-run keeps every id and can say what changes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::ClusterName;

/// The lock file's name inside the output directory.
pub const LOCK_FILE: &str = "fleet.lock.yaml";

/// The previous plan's decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lock {
    pub mesh: String,
    pub max_connected_clusters: u32,
    pub members: Vec<LockedMember>,
}

/// One member as the previous plan left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedMember {
    pub name: ClusterName,
    pub id: u32,
    /// The members its agent watches (itself excluded).
    #[serde(default)]
    pub sees: BTreeSet<ClusterName>,
}

impl Lock {
    pub fn parse(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    /// The file's contents, with a header saying where it comes from.
    pub fn render(&self) -> Result<String, serde_yaml::Error> {
        let body = serde_yaml::to_string(self)?;
        Ok(format!(
            "# Written by `fleetmesh fleet plan`: the ids it assigned and who sees whom.\n\
             # Keep it with the output; ids are kept stable by reading it back.\n{body}"
        ))
    }

    pub fn member(&self, name: &ClusterName) -> Option<&LockedMember> {
        self.members.iter().find(|m| &m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_round_trips_through_its_text() {
        let lock = Lock {
            mesh: "prod".into(),
            max_connected_clusters: 255,
            members: vec![LockedMember {
                name: ClusterName::new("a").unwrap(),
                id: 4,
                sees: [ClusterName::new("b").unwrap()].into_iter().collect(),
            }],
        };
        let text = lock.render().unwrap();
        assert!(text.starts_with("# Written by"), "{text}");
        assert_eq!(Lock::parse(&text).unwrap(), lock);
        assert!(
            Lock::parse("mesh: m\nmaxConnectedClusters: 255\nmembers: [{name: Bad, id: 1}]\n")
                .is_err()
        );
    }
}
