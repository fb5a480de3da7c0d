use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterId, ClusterName, IdMode, ModelError};

/// The label every endpoint identity carries, naming its cluster; policies select
/// endpoints of a cluster with it.
pub const CLUSTER_LABEL: &str = "io.cilium.k8s.policy.cluster";

/// Identities up to this value are Cilium's reserved ones (host, world, remote-node,
/// ...): they are valid in any cluster's data.
pub const RESERVED_IDENTITY_MAX: u32 = 255;

/// Numeric identities are 24 bits on the wire.
const IDENTITY_BITS: u32 = 24;

/// A numeric security identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdentityId(u32);

impl IdentityId {
    pub fn new(id: u32) -> Result<Self, ModelError> {
        if id == 0 || id >= 1 << IDENTITY_BITS {
            return Err(ModelError::IdentityId(id.to_string()));
        }
        Ok(Self(id))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    pub fn is_reserved(self) -> bool {
        self.0 <= RESERVED_IDENTITY_MAX
    }
}

impl FromStr for IdentityId {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id: u32 = s
            .parse()
            .map_err(|_| ModelError::IdentityId(s.to_string()))?;
        Self::new(id)
    }
}

impl fmt::Display for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The identities a cluster owns: `[id << bits, ((id + 1) << bits) - 1]`, where `bits`
/// is 16 in normal mode and 15 in extended mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityRange {
    first: u32,
    last: u32,
}

impl IdentityRange {
    pub fn of(cluster: ClusterId, mode: IdMode) -> Self {
        let bits = mode.local_identity_bits();
        let first = cluster.get() << bits;
        Self {
            first,
            last: first + ((1 << bits) - 1),
        }
    }

    pub fn first(self) -> u32 {
        self.first
    }

    pub fn last(self) -> u32 {
        self.last
    }

    pub fn contains(self, id: IdentityId) -> bool {
        (self.first..=self.last).contains(&id.get())
    }
}

impl fmt::Display for IdentityRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.first, self.last)
    }
}

impl Cluster {
    pub fn identity_range(&self) -> IdentityRange {
        IdentityRange::of(self.id, self.mode)
    }
}

/// One security label, `source:key=value` (source `k8s` for everything taken from
/// Kubernetes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub source: String,
    pub key: String,
    pub value: String,
}

impl Label {
    pub fn new(source: &str, key: &str, value: &str) -> Result<Self, ModelError> {
        let refuse = |reason| {
            Err(ModelError::Label {
                label: format!("{source}:{key}={value}"),
                reason,
            })
        };
        if source.is_empty() || source.contains([':', ';', '=']) {
            return refuse("source must be non-empty without ':', ';' or '='");
        }
        if key.is_empty() || key.contains([';', '=']) {
            return refuse("key must be non-empty without ';' or '='");
        }
        if value.contains(';') {
            return refuse("value must not contain ';'");
        }
        Ok(Self {
            source: source.to_string(),
            key: key.to_string(),
            value: value.to_string(),
        })
    }

    /// A label from Kubernetes.
    pub fn k8s(key: &str, value: &str) -> Result<Self, ModelError> {
        Self::new("k8s", key, value)
    }
}

impl FromStr for Label {
    type Err = ModelError;

    /// Parses `source:key=value` (a missing `=value` is an empty value).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (source, rest) = s.split_once(':').ok_or_else(|| ModelError::Label {
            label: s.to_string(),
            reason: "missing 'source:'",
        })?;
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        Self::new(source, key, value)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}={}", self.source, self.key, self.value)
    }
}

/// A set of security labels, one per key, kept sorted by key as Cilium sorts them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(BTreeMap<String, Label>);

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a label, replacing any label with the same key.
    pub fn insert(&mut self, label: Label) {
        self.0.insert(label.key.clone(), label);
    }

    pub fn get(&self, key: &str) -> Option<&Label> {
        self.0.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The cluster these labels name, if any.
    pub fn cluster(&self) -> Option<&str> {
        self.get(CLUSTER_LABEL).map(|l| l.value.as_str())
    }

    /// Cilium's kvstore form: every label as `source:key=value;`, sorted by key.
    pub fn to_kvstore_string(&self) -> String {
        // Pieces pushed into one `String` of the right size, not `format!`ted: agents
        // compact every identity they receive this way (the `Display` of a label is
        // the same `source:key=value`).
        let len = self
            .iter()
            .map(|l| l.source.len() + l.key.len() + l.value.len() + ":=;".len())
            .sum();
        let mut line = String::with_capacity(len);
        for label in self.iter() {
            for piece in [&label.source, ":", &label.key, "=", &label.value, ";"] {
                line.push_str(piece);
            }
        }
        line
    }

    /// Parses Cilium's kvstore form (`source:key=value;` repeated).
    pub fn parse_kvstore_string(s: &str) -> Result<Self, ModelError> {
        let mut labels = Self::new();
        for part in s.split(';').filter(|p| !p.is_empty()) {
            labels.insert(part.parse()?);
        }
        Ok(labels)
    }
}

impl FromIterator<Label> for Labels {
    fn from_iter<I: IntoIterator<Item = Label>>(iter: I) -> Self {
        let mut labels = Self::new();
        for l in iter {
            labels.insert(l);
        }
        labels
    }
}

/// A security identity of one cluster: an id inside the cluster's range and labels that
/// include the cluster label naming that cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    id: IdentityId,
    labels: Labels,
}

impl Identity {
    /// Checks an identity claimed to belong to `cluster` (a peer's data, or our own
    /// export): reserved ids are accepted as they are; any other id must lie in the
    /// cluster's range and carry the cluster label with the cluster's name.
    pub fn new(cluster: &Cluster, id: IdentityId, labels: Labels) -> Result<Self, ModelError> {
        if !id.is_reserved() {
            let range = cluster.identity_range();
            if !range.contains(id) {
                return Err(ModelError::IdentityOutOfRange {
                    id: id.get(),
                    cluster: cluster.id.get(),
                    range: range.to_string(),
                });
            }
            check_cluster_label(id, &labels, &cluster.name)?;
        }
        Ok(Self { id, labels })
    }

    pub fn id(&self) -> IdentityId {
        self.id
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }
}

fn check_cluster_label(
    id: IdentityId,
    labels: &Labels,
    cluster: &ClusterName,
) -> Result<(), ModelError> {
    match labels.cluster() {
        None => Err(ModelError::MissingClusterLabel {
            id: id.get(),
            expected: format!("k8s:{CLUSTER_LABEL}={cluster}"),
        }),
        Some(found) if found != cluster.as_str() => Err(ModelError::WrongClusterLabel {
            id: id.get(),
            found: found.to_string(),
            expected: cluster.to_string(),
        }),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_cluster(name: &str, id: u32) -> Cluster {
        Cluster::new(
            ClusterName::new(name).unwrap(),
            ClusterId::new(id, IdMode::Normal).unwrap(),
            IdMode::Normal,
        )
    }

    #[test]
    fn ranges_split_the_24_bit_space() {
        let c3 = ClusterId::new(3, IdMode::Normal).unwrap();
        let r = IdentityRange::of(c3, IdMode::Normal);
        assert_eq!((r.first(), r.last()), (196_608, 262_143));
        assert!(r.contains(IdentityId::new(196_915).unwrap()));
        let r = IdentityRange::of(c3, IdMode::Extended);
        assert_eq!((r.first(), r.last()), (98_304, 131_071));
        let c511 = ClusterId::new(511, IdMode::Extended).unwrap();
        assert_eq!(
            IdentityRange::of(c511, IdMode::Extended).last(),
            (1 << 24) - 1
        );
    }

    #[test]
    fn label_strings_round_trip_sorted_by_key() {
        let s = "k8s:app=baz;k8s:io.cilium.k8s.policy.cluster=cluster3;k8s:io.kubernetes.pod.namespace=bar;";
        let labels = Labels::parse_kvstore_string(s).unwrap();
        assert_eq!(labels.len(), 3);
        assert_eq!(labels.cluster(), Some("cluster3"));
        assert_eq!(labels.to_kvstore_string(), s);

        let unsorted: Labels = [
            Label::k8s("zeta", "1").unwrap(),
            Label::new("container", "alpha", "").unwrap(),
        ]
        .into_iter()
        .collect();
        assert_eq!(unsorted.to_kvstore_string(), "container:alpha=;k8s:zeta=1;");
    }

    #[test]
    fn labels_refuse_separators() {
        assert!(Label::k8s("a;b", "c").is_err());
        assert!(Label::k8s("a", "c;d").is_err());
        assert!("nosource".parse::<Label>().is_err());
    }

    #[test]
    fn identities_are_checked_against_their_cluster() {
        let c3 = mk_cluster("cluster3", 3);
        let labels =
            Labels::parse_kvstore_string("k8s:app=baz;k8s:io.cilium.k8s.policy.cluster=cluster3;")
                .unwrap();
        let id = IdentityId::new(196_915).unwrap();
        assert!(Identity::new(&c3, id, labels.clone()).is_ok());

        let outside = IdentityId::new(65_536 + 5).unwrap();
        assert!(matches!(
            Identity::new(&c3, outside, labels.clone()),
            Err(ModelError::IdentityOutOfRange { .. })
        ));

        let other = mk_cluster("other", 3);
        assert!(matches!(
            Identity::new(&other, id, labels),
            Err(ModelError::WrongClusterLabel { .. })
        ));
        let unlabelled = Labels::parse_kvstore_string("k8s:app=baz;").unwrap();
        assert!(matches!(
            Identity::new(&c3, id, unlabelled.clone()),
            Err(ModelError::MissingClusterLabel { .. })
        ));
        // Reserved identities are valid in any cluster's data.
        assert!(Identity::new(&c3, IdentityId::new(6).unwrap(), unlabelled).is_ok());
    }
}
