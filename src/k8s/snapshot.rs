//! What a source publishes: the state one cluster should export, as of one moment.

use crate::model::DesiredState;

/// What a source (the manifest directory, the kube watchers) says the cluster should
/// export, as of one read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub state: DesiredState,
    /// Every object the source could not read or convert, one line each, naming it.
    pub problems: Vec<String>,
}
