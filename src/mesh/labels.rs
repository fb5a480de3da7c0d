//! Identity labels as the view keeps them: Cilium's one-line kvstore form
//! (`source:key=value;` sorted by key) in one allocation, turned back into [`Labels`]
//! only when read.
//!
//! Measured by `fleetmesh bench memory` (massif, 20,000 endpoints and 2,000 identities):
//! a `Labels` map of three labels costs about 1 KiB (a B-tree node, the key twice, three
//! `String`s per label) — 10 MiB per 100,000 endpoints at one identity per ten pods,
//! more than the ipcache itself. The line form costs its length, about 90 bytes.

use crate::model::Labels;

/// One identity's labels, compact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CompactLabels(Box<str>);

impl CompactLabels {
    pub fn new(labels: &Labels) -> Self {
        Self(labels.to_kvstore_string().into_boxed_str())
    }

    /// The labels back. The form round-trips for every valid `Labels` (a key holds no
    /// `;` or `=`, a source no `:`, a value no `;`), so this never fails on what `new`
    /// made; `None` would mean a model rule changed without this form following it.
    pub fn labels(&self) -> Option<Labels> {
        Labels::parse_kvstore_string(&self.0).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Label;

    fn mk_labels(labels: &[(&str, &str, &str)]) -> Labels {
        labels
            .iter()
            .map(|(s, k, v)| Label::new(s, k, v).unwrap())
            .collect()
    }

    #[test]
    fn labels_round_trip_through_the_line_form() {
        for labels in [
            mk_labels(&[]),
            mk_labels(&[("k8s", "app", "cart")]),
            mk_labels(&[
                ("k8s", "io.cilium.k8s.policy.cluster", "c2"),
                ("k8s", "app", "a=b:c"),
                ("k8s", "empty", ""),
                ("reserved", "host", ""),
                ("k8s", "io.kubernetes.pod.namespace", "shop"),
            ]),
        ] {
            let compact = CompactLabels::new(&labels);
            assert_eq!(compact.labels(), Some(labels));
        }
    }

    #[test]
    fn equal_labels_are_equal_compact_and_small() {
        let a = mk_labels(&[("k8s", "app", "cart"), ("k8s", "tier", "web")]);
        let b = mk_labels(&[("k8s", "tier", "web"), ("k8s", "app", "cart")]);
        let c = mk_labels(&[("k8s", "app", "cart"), ("k8s", "tier", "db")]);
        assert_eq!(CompactLabels::new(&a), CompactLabels::new(&b));
        assert_ne!(CompactLabels::new(&a), CompactLabels::new(&c));
        assert_eq!(std::mem::size_of::<CompactLabels>(), 16);
        assert_eq!(
            CompactLabels::new(&a).0.len(),
            "k8s:app=cart;k8s:tier=web;".len()
        );
    }
}
