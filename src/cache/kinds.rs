use std::fmt;

use crate::model::Kind;

/// A set of [`Kind`]s: what a watcher asked for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KindSet(u8);

impl KindSet {
    pub const ALL: Self = Self(0b1_1111);
    /// What a watcher that names no kind gets: [`Kind::ORIGINAL`].
    pub const ORIGINAL: Self = Self(0b1111);
    pub const EMPTY: Self = Self(0);

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & bit(kind) != 0
    }

    pub fn insert(&mut self, kind: Kind) {
        self.0 |= bit(kind);
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in [`Kind::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

/// A kind's position in per-kind arrays.
pub(super) fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Node => 0,
        Kind::Service => 1,
        Kind::Identity => 2,
        Kind::Endpoint => 3,
        Kind::ServiceExport => 4,
    }
}

fn bit(kind: Kind) -> u8 {
    1 << slot(kind)
}

impl FromIterator<Kind> for KindSet {
    fn from_iter<I: IntoIterator<Item = Kind>>(iter: I) -> Self {
        let mut set = Self::EMPTY;
        for kind in iter {
            set.insert(kind);
        }
        set
    }
}

impl fmt::Display for KindSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for kind in self.iter() {
            write!(f, "{sep}{kind}")?;
            sep = ",";
        }
        Ok(())
    }
}

impl fmt::Debug for KindSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_kinds() {
        let set: KindSet = [Kind::Endpoint, Kind::Node].into_iter().collect();
        assert!(set.contains(Kind::Node) && set.contains(Kind::Endpoint));
        assert!(!set.contains(Kind::Service));
        assert_eq!(set.to_string(), "nodes,endpoints");
        assert_eq!(KindSet::ALL.iter().count(), 5);
        assert_eq!(
            KindSet::ORIGINAL.iter().collect::<Vec<_>>(),
            Kind::ORIGINAL.to_vec()
        );
        assert!(KindSet::EMPTY.is_empty() && !set.is_empty());
    }
}
