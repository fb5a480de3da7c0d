use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ModelError;

/// Longest cluster name Cilium accepts.
const MAX_NAME_LEN: usize = 32;

/// A cluster's name: at most 32 characters, lowercase alphanumerics and `-`, starting and
/// ending with an alphanumeric (Cilium's rule). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterName(Arc<str>);

impl ClusterName {
    pub fn new(name: &str) -> Result<Self, ModelError> {
        let refuse = |reason| {
            Err(ModelError::ClusterName {
                name: name.to_string(),
                reason,
            })
        };
        if name.is_empty() {
            return refuse("empty");
        }
        if name.len() > MAX_NAME_LEN {
            return refuse("longer than 32 characters");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return refuse("only lowercase letters, digits and '-' are allowed");
        }
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let bytes = name.as_bytes();
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return refuse("must start and end with a letter or digit");
        }
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ClusterName {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Serialize for ClusterName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClusterName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// How many clusters a mesh may hold, which fixes how the 24-bit identity space is split:
/// 255 clusters leave 16 bits of identities per cluster, 511 leave 15.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdMode {
    /// Up to 255 clusters, 65,535 identities each.
    #[default]
    Normal,
    /// Up to 511 clusters, 32,767 identities each.
    Extended,
}

impl IdMode {
    /// From Cilium's `max-connected-clusters` value.
    pub fn from_max_connected_clusters(max: u32) -> Result<Self, ModelError> {
        match max {
            255 => Ok(Self::Normal),
            511 => Ok(Self::Extended),
            other => Err(ModelError::MaxConnectedClusters(other)),
        }
    }

    pub fn max_cluster_id(self) -> u32 {
        match self {
            Self::Normal => 255,
            Self::Extended => 511,
        }
    }

    /// Bits of an identity that hold the cluster-local part.
    pub fn local_identity_bits(self) -> u32 {
        match self {
            Self::Normal => 16,
            Self::Extended => 15,
        }
    }
}

/// A cluster's numeric id: 1..=255, or 1..=511 in extended mode. Zero means "no
/// cluster mesh" in Cilium and is never a valid member id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ClusterId(u16);

impl ClusterId {
    pub fn new(id: u32, mode: IdMode) -> Result<Self, ModelError> {
        let max = mode.max_cluster_id();
        if id == 0 || id > max {
            return Err(ModelError::ClusterId { id, max });
        }
        Ok(Self(id as u16))
    }

    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A member cluster as the rest of the mesh sees it: its name, its id and the mesh's id
/// mode, which together fix the identity range it owns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cluster {
    pub name: ClusterName,
    pub id: ClusterId,
    pub mode: IdMode,
}

impl Cluster {
    pub fn new(name: ClusterName, id: ClusterId, mode: IdMode) -> Self {
        Self { name, id, mode }
    }
}

impl fmt::Display for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (id {})", self.name, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_ciliums_rule() {
        for good in ["a", "cluster-1", "c0", "0", &"a".repeat(32)] {
            assert!(ClusterName::new(good).is_ok(), "{good} should be valid");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(33), "ä"] {
            assert!(ClusterName::new(bad).is_err(), "{bad} should be invalid");
        }
    }

    #[test]
    fn cluster_ids_depend_on_the_mode() {
        assert!(ClusterId::new(0, IdMode::Normal).is_err());
        assert_eq!(ClusterId::new(255, IdMode::Normal).unwrap().get(), 255);
        assert!(ClusterId::new(256, IdMode::Normal).is_err());
        assert_eq!(ClusterId::new(511, IdMode::Extended).unwrap().get(), 511);
        assert!(ClusterId::new(512, IdMode::Extended).is_err());
    }

    #[test]
    fn id_mode_comes_from_max_connected_clusters() {
        assert_eq!(IdMode::from_max_connected_clusters(255), Ok(IdMode::Normal));
        assert_eq!(
            IdMode::from_max_connected_clusters(511),
            Ok(IdMode::Extended)
        );
        assert!(IdMode::from_max_connected_clusters(256).is_err());
    }
}
