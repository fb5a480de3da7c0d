//! What a churn run writes: a deterministic sequence of operations over the workload's
//! keys with the scenario's mix — of every 10 writes, 7 endpoint upserts (2 of them
//! re-creating an endpoint deleted before, so the set stays about constant), 2 endpoint
//! deletes and 1 write of an identity, a node or a service in turn. Each write's value
//! carries its sequence number as its version (see [`super::keys`]).

use std::collections::VecDeque;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::keys::{KeySpace, MAX_VERSION};
use crate::bench::workload::encode;
use crate::model::Kind;

/// The same seed every run: both systems of a run, and runs of the same size, write the
/// same keys in the same order.
pub const SEED: u64 = 0x6368_7572_6e21;

/// One slot of the repeating mix.
#[derive(Clone, Copy)]
enum Slot {
    /// Upsert a live endpoint.
    Update,
    /// Re-create the endpoint deleted longest ago.
    Recreate,
    Delete,
    /// An identity, a node or a service, in turn.
    Other,
}

/// The mix, spread out so that no kind comes in runs.
const CYCLE: [Slot; 10] = [
    Slot::Update,
    Slot::Delete,
    Slot::Update,
    Slot::Other,
    Slot::Update,
    Slot::Recreate,
    Slot::Update,
    Slot::Delete,
    Slot::Update,
    Slot::Recreate,
];
/// The kinds `Slot::Other` takes in turn.
const OTHERS: [Kind; 3] = [Kind::Identity, Kind::Node, Kind::Service];

/// One write: key `key` gets version `version` (its sequence number), or is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub key: u32,
    /// `None`: a delete.
    pub version: Option<u32>,
}

/// The writes of one run, and what every key held before them.
pub struct Phase {
    /// Per key: the version held when the phase starts (`None`: absent).
    pub initial: Vec<Option<u32>>,
    pub ops: Vec<Op>,
}

/// The store writes of one operation: keys with their values (`None`: delete).
pub type StoreWrites = Vec<(String, Option<Bytes>)>;

/// The state of the keys as the writes so far left it; phases continue from it.
pub struct Plan {
    space: Arc<KeySpace>,
    current: Vec<Option<u32>>,
    live: Vec<u32>,
    deleted: VecDeque<u32>,
    others: [Vec<u32>; 3],
    next_version: u32,
    step: usize,
    others_step: usize,
    rng: SmallRng,
}

impl Plan {
    /// Every key of `space` present with its initial value.
    pub fn new(space: Arc<KeySpace>) -> Self {
        Self {
            current: vec![Some(0); space.len()],
            live: space.keys_of(Kind::Endpoint),
            deleted: VecDeque::new(),
            others: OTHERS.map(|k| space.keys_of(k)),
            next_version: 1,
            step: 0,
            others_step: 0,
            rng: SmallRng::seed_from_u64(SEED),
            space,
        }
    }

    /// The next `count` writes.
    pub fn phase(&mut self, count: usize) -> anyhow::Result<Phase> {
        if u64::from(self.next_version) + count as u64 > u64::from(MAX_VERSION) {
            bail!("a run holds at most {MAX_VERSION} writes");
        }
        if self.live.is_empty() && self.deleted.is_empty() {
            bail!("a churn run needs at least one endpoint");
        }
        let initial = self.current.clone();
        let ops = (0..count).map(|_| self.next_op()).collect();
        Ok(Phase { initial, ops })
    }

    /// The store keys and values of `op`, as the exporter writes them.
    pub fn store_writes(&self, op: Op) -> anyhow::Result<StoreWrites> {
        let cluster = &self.space.cluster;
        Ok(match op.version {
            Some(version) => encode(cluster, &self.space.tagged(op.key, version)?)
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect(),
            None => {
                let template = self.space.template(op.key).context("no such key")?;
                encode(cluster, template)
                    .into_iter()
                    .map(|(k, _)| (k, None))
                    .collect()
            }
        })
    }

    fn next_op(&mut self) -> Op {
        let slot = CYCLE[self.step % CYCLE.len()];
        self.step += 1;
        let slot = match slot {
            Slot::Recreate if self.deleted.is_empty() => Slot::Update,
            Slot::Update | Slot::Delete if self.live.is_empty() => Slot::Recreate,
            slot => slot,
        };
        let version = self.next_version;
        self.next_version += 1;
        let (key, version) = match slot {
            Slot::Update => (
                self.live[self.rng.random_range(0..self.live.len())],
                Some(version),
            ),
            Slot::Recreate => {
                let key = self.deleted.pop_front().unwrap_or_default();
                self.live.push(key);
                (key, Some(version))
            }
            Slot::Delete => {
                let key = self
                    .live
                    .swap_remove(self.rng.random_range(0..self.live.len()));
                self.deleted.push_back(key);
                (key, None)
            }
            Slot::Other => {
                let keys = &self.others[self.others_step % OTHERS.len()];
                self.others_step += 1;
                (keys[self.rng.random_range(0..keys.len())], Some(version))
            }
        };
        self.current[key as usize] = version;
        Op { key, version }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::churn::keys::mk_space;

    #[test]
    fn the_mix_is_seven_two_one_and_the_set_stays_constant() {
        let space = Arc::new(mk_space(1_000));
        let endpoints = space.keys_of(Kind::Endpoint);
        let mut plan = Plan::new(space.clone());
        let phase = plan.phase(1_000).unwrap();
        let is_endpoint = |op: &Op| endpoints.contains(&op.key);
        let deletes = phase.ops.iter().filter(|o| o.version.is_none()).count();
        let upserts = phase
            .ops
            .iter()
            .filter(|o| o.version.is_some() && is_endpoint(o))
            .count();
        assert_eq!((upserts, deletes), (700, 200));
        let present = plan.current.iter().filter(|v| v.is_some()).count();
        // Every delete but the last cycle's is re-created.
        assert!(space.len() - present <= 2, "{present} of {}", space.len());
        // Versions are the sequence numbers.
        let versions: Vec<u32> = phase.ops.iter().filter_map(|o| o.version).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn plans_are_deterministic_and_phases_continue() {
        let space = Arc::new(mk_space(500));
        let a = Plan::new(space.clone()).phase(300).unwrap().ops;
        let mut plan = Plan::new(space);
        assert_eq!(plan.phase(300).unwrap().ops, a);
        let after = plan.current.clone();
        let next = plan.phase(10).unwrap();
        assert_eq!(next.initial, after);
        assert_eq!(next.ops[0].version, Some(301));
    }

    #[test]
    fn deletes_write_every_key_of_the_resource_and_upserts_their_values() {
        let space = Arc::new(mk_space(100));
        let plan = Plan::new(space.clone());
        let endpoint = space.keys_of(Kind::Endpoint)[0];
        let delete = plan
            .store_writes(Op {
                key: endpoint,
                version: None,
            })
            .unwrap();
        assert_eq!(delete.len(), 1);
        assert!(delete[0].1.is_none());
        let service = space.keys_of(Kind::Service)[0];
        let put = plan
            .store_writes(Op {
                key: service,
                version: Some(9),
            })
            .unwrap();
        // fleetmesh's copy and Cilium's.
        assert_eq!(put.len(), 2);
        assert!(put.iter().all(|(_, v)| v.is_some()));
    }
}
