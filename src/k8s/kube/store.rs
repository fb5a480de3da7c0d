//! One kind's objects as the API server last listed and watched them.
//!
//! A watcher's events arrive as kube-runtime's resync protocol: `Init` starts a (re-)list,
//! `InitApply` carries each listed object, `InitDone` ends the list, then `Apply` and
//! `Delete` follow the watch. A re-list is buffered apart and swapped in whole at
//! `InitDone`, so a watch that fails (a `410 Gone`, a dropped connection) keeps exporting
//! what was last listed until the new list is complete; objects the new list no longer
//! has disappear at the swap, exactly once.
//!
//! Objects are read ([`read`]) before the stores' lock is taken and kept behind an `Arc`,
//! so the lock is held for map updates and pointer copies only.

use std::collections::BTreeMap;
use std::sync::Arc;

use ::kube::Resource;
use ::kube::api::DynamicObject;
use ::kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;

/// An object's place in its kind: namespace (empty for cluster-scoped kinds) and name.
type ObjectKey = (String, String);

/// An object as read: the typed object, or why it could not be read (naming it).
type Parsed<K> = Result<Arc<K>, String>;

/// A watcher event with its object read as a `K`.
#[derive(Debug)]
pub(super) enum Read<K> {
    Init,
    InitApply(ObjectKey, Parsed<K>),
    InitDone,
    Apply(ObjectKey, Parsed<K>),
    Delete(ObjectKey),
}

/// Reads the object of a watcher event as a `K` (CPU work done outside the lock).
pub(super) fn read<K>(event: Event<DynamicObject>) -> Read<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    match event {
        Event::Init => Read::Init,
        Event::InitApply(object) => {
            let (key, parsed) = parse(object);
            Read::InitApply(key, parsed)
        }
        Event::InitDone => Read::InitDone,
        Event::Apply(object) => {
            let (key, parsed) = parse(object);
            Read::Apply(key, parsed)
        }
        Event::Delete(object) => Read::Delete(object_key(&object)),
    }
}

/// One object: its latest readable version, and why its latest version could not be
/// read when it could not.
#[derive(Debug)]
struct Entry<K> {
    /// Exported, even when a later version could not be read: withdrawing what the
    /// object last said for a version nobody can read would break what still works.
    good: Option<Arc<K>>,
    problem: Option<Arc<str>>,
}

impl<K> Entry<K> {
    /// The entry for `parsed`, replacing `previous` (the entry of the same object).
    fn new(parsed: Parsed<K>, previous: Option<&Self>) -> Self {
        match parsed {
            Ok(object) => Self {
                good: Some(object),
                problem: None,
            },
            Err(problem) => {
                let good = previous.and_then(|p| p.good.clone());
                let problem = if good.is_some() {
                    format!("{problem} (its last readable version is still exported)")
                } else {
                    problem
                };
                Self {
                    good,
                    problem: Some(problem.into()),
                }
            }
        }
    }
}

/// The objects of one kind.
#[derive(Debug)]
pub(super) struct KindStore<K> {
    objects: BTreeMap<ObjectKey, Entry<K>>,
    /// The re-list in progress, from `Init` to `InitDone`.
    relist: Option<BTreeMap<ObjectKey, Entry<K>>>,
    /// A list has completed at least once: `objects` is the kind's full state.
    synced: bool,
}

impl<K> Default for KindStore<K> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

/// What one kind's store holds at one moment, copied cheaply (pointers) under the lock.
#[derive(Debug)]
pub(super) struct KindSnapshot<K> {
    objects: Vec<Arc<K>>,
    problems: Vec<Arc<str>>,
}

impl<K: Clone> KindSnapshot<K> {
    /// The objects, in namespace/name order, adding a problem line for each object whose
    /// latest version could not be read. Copies each object: done outside the lock.
    pub(super) fn into_objects(self, problems: &mut Vec<String>) -> Vec<K> {
        problems.extend(self.problems.iter().map(ToString::to_string));
        self.objects.into_iter().map(Arc::unwrap_or_clone).collect()
    }
}

impl<K> KindStore<K> {
    /// Applies one watcher event; returns whether the visible state (`objects`, `synced`)
    /// changed.
    pub(super) fn apply(&mut self, event: Read<K>) -> bool {
        match event {
            Read::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Read::InitApply(key, parsed) => {
                let relist = self.relist.get_or_insert_with(BTreeMap::new);
                // A re-list may bring an unreadable version of an object read before.
                let previous = relist.get(&key).or_else(|| self.objects.get(&key));
                let entry = Entry::new(parsed, previous);
                relist.insert(key, entry);
                false
            }
            Read::InitDone => match self.relist.take() {
                Some(relist) => {
                    self.objects = relist;
                    self.synced = true;
                    true
                }
                None => {
                    // kube-runtime always starts a list with `Init`: swapping in nothing
                    // would withdraw every object of the kind.
                    tracing::error!("a list ended that never started; keeping what was listed");
                    false
                }
            },
            Read::Apply(key, parsed) => {
                let entry = Entry::new(parsed, self.objects.get(&key));
                self.objects.insert(key, entry);
                true
            }
            Read::Delete(key) => self.objects.remove(&key).is_some(),
        }
    }

    /// Whether a list has completed: before that, the kind's state is unknown.
    pub(super) fn synced(&self) -> bool {
        self.synced
    }

    /// How many objects the kind holds, readable or not.
    pub(super) fn len(&self) -> usize {
        self.objects.len()
    }

    /// The readable objects and the problems, as pointers: cheap enough to take under
    /// the stores' lock.
    pub(super) fn snapshot(&self) -> KindSnapshot<K> {
        let mut snapshot = KindSnapshot {
            objects: Vec::with_capacity(self.objects.len()),
            problems: Vec::new(),
        };
        for entry in self.objects.values() {
            snapshot.objects.extend(entry.good.clone());
            snapshot.problems.extend(entry.problem.clone());
        }
        snapshot
    }
}

fn object_key(object: &DynamicObject) -> ObjectKey {
    let meta = &object.metadata;
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Reads an object the API server sent as a `K`.
///
/// Objects arrive untyped and are typed here, one by one, so that one malformed object
/// (a field of the wrong type) is a problem naming it rather than a failed list that
/// would hold back every object of its kind.
fn parse<K>(mut object: DynamicObject) -> (ObjectKey, Parsed<K>)
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let key = object_key(&object);
    // List items may omit apiVersion and kind; a typed object checks them when present.
    object.types = Some(::kube::api::TypeMeta {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
    });
    let parsed = serde_json::to_value(&object)
        .and_then(serde_json::from_value::<K>)
        .map(Arc::new)
        .map_err(|e| format!("{}: {e}", describe::<K>(&key)));
    (key, parsed)
}

/// `Kind namespace/name` (`Kind name` for cluster-scoped kinds), as conversion problems
/// name objects.
fn describe<K: Resource<DynamicType = ()>>((namespace, name): &ObjectKey) -> String {
    let kind = K::kind(&());
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;

    fn mk_pod(name: &str, ip: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "1"},
            "status": {"podIP": ip},
        }))
        .unwrap()
    }

    fn names_and_ips(store: &KindStore<Pod>) -> Vec<(String, Option<String>)> {
        let mut problems = Vec::new();
        store
            .snapshot()
            .into_objects(&mut problems)
            .into_iter()
            .map(|p| {
                let ip = p.status.and_then(|s| s.pod_ip);
                (p.metadata.name.unwrap(), ip)
            })
            .collect()
    }

    #[test]
    fn a_relist_is_swapped_in_whole_when_it_completes() {
        let mut store = KindStore::<Pod>::default();
        assert!(!store.apply(read(Event::Init)));
        assert!(!store.apply(read(Event::InitApply(mk_pod("a", "10.0.0.1")))));
        assert!(!store.apply(read(Event::InitApply(mk_pod("b", "10.0.0.2")))));
        assert!(!store.synced());
        assert!(store.apply(read(Event::InitDone)));
        assert!(store.synced());
        assert_eq!(names_and_ips(&store).len(), 2);

        assert!(store.apply(read(Event::Apply(mk_pod("a", "10.0.0.9")))));
        assert!(store.apply(read(Event::Delete(mk_pod("b", "10.0.0.2")))));
        assert!(!store.apply(read(Event::Delete(mk_pod("b", "10.0.0.2")))));
        assert_eq!(
            names_and_ips(&store),
            [("a".into(), Some("10.0.0.9".into()))]
        );

        // A watch error forces a re-list: until it completes, the last state stays.
        assert!(!store.apply(read(Event::Init)));
        assert!(!store.apply(read(Event::InitApply(mk_pod("c", "10.0.0.3")))));
        assert_eq!(
            names_and_ips(&store),
            [("a".into(), Some("10.0.0.9".into()))]
        );
        assert!(store.synced());
        // A re-list restarted half-way (an error during it) starts its buffer over.
        assert!(!store.apply(read(Event::Init)));
        assert!(!store.apply(read(Event::InitApply(mk_pod("d", "10.0.0.4")))));
        assert!(store.apply(read(Event::InitDone)));
        assert_eq!(
            names_and_ips(&store),
            [("d".into(), Some("10.0.0.4".into()))]
        );
    }

    #[test]
    fn a_malformed_object_is_a_problem_naming_it_and_the_rest_reads() {
        let mut store = KindStore::<Pod>::default();
        let broken: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "broken", "namespace": "shop"},
            "spec": {"containers": 3},
        }))
        .unwrap();
        store.apply(read(Event::Init));
        store.apply(read(Event::InitApply(broken)));
        store.apply(read(Event::InitApply(mk_pod("a", "10.0.0.1"))));
        store.apply(read(Event::InitDone));
        let mut problems = Vec::new();
        let pods = store.snapshot().into_objects(&mut problems);
        assert_eq!(pods.len(), 1);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("Pod shop/broken: invalid type: integer `3`"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn cluster_scoped_objects_are_named_without_a_namespace() {
        let mut store = KindStore::<Node>::default();
        let node: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "worker", "labels": {}},
            "spec": {"podCIDRs": "10.244.0.0/24"},
        }))
        .unwrap();
        store.apply(read(Event::Apply(node)));
        let mut problems = Vec::new();
        assert!(store.snapshot().into_objects(&mut problems).is_empty());
        assert!(problems[0].starts_with("Node worker: "), "{problems:?}");
    }

    fn mk_broken_pod(name: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"containers": 3},
        }))
        .unwrap()
    }

    /// The readable pods' names and the problems.
    fn contents(store: &KindStore<Pod>) -> (Vec<String>, Vec<String>) {
        let mut problems = Vec::new();
        let pods = store.snapshot().into_objects(&mut problems);
        let names = pods.into_iter().filter_map(|p| p.metadata.name).collect();
        (names, problems)
    }

    #[test]
    fn an_unreadable_version_keeps_the_last_readable_one_exported() {
        let mut store = KindStore::<Pod>::default();
        store.apply(read(Event::Init));
        store.apply(read(Event::InitApply(mk_pod("a", "10.0.0.1"))));
        store.apply(read(Event::InitDone));

        assert!(store.apply(read(Event::Apply(mk_broken_pod("a")))));
        let (names, problems) = contents(&store);
        assert_eq!(names, ["a"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("Pod shop/a: invalid type"));
        assert!(
            problems[0].ends_with("(its last readable version is still exported)"),
            "{}",
            problems[0]
        );
        assert_eq!(
            names_and_ips(&store),
            [("a".into(), Some("10.0.0.1".into()))]
        );

        // A re-list that brings the unreadable version keeps it too.
        store.apply(read(Event::Init));
        store.apply(read(Event::InitApply(mk_broken_pod("a"))));
        store.apply(read(Event::InitDone));
        assert_eq!(contents(&store).0, ["a"]);
        assert_eq!(contents(&store).1.len(), 1);

        // A readable version clears the problem.
        store.apply(read(Event::Apply(mk_pod("a", "10.0.0.2"))));
        assert_eq!(contents(&store), (vec!["a".to_string()], vec![]));
        assert_eq!(
            names_and_ips(&store),
            [("a".into(), Some("10.0.0.2".into()))]
        );
    }

    #[test]
    fn a_list_end_without_a_start_keeps_the_objects() {
        let mut store = KindStore::<Pod>::default();
        store.apply(read(Event::Init));
        store.apply(read(Event::InitApply(mk_pod("a", "10.0.0.1"))));
        store.apply(read(Event::InitDone));
        assert!(!store.apply(read(Event::InitDone)));
        assert_eq!(contents(&store).0, ["a"]);
        assert!(store.synced());
    }
}
