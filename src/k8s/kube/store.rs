//! One kind's objects as the API server last listed and watched them.
//!
//! A watcher's events arrive as kube-runtime's resync protocol: `Init` starts a (re-)list,
//! `InitApply` carries each listed object, `InitDone` ends the list, then `Apply` and
//! `Delete` follow the watch. A re-list is buffered apart and swapped in whole at
//! `InitDone`, so a watch that fails (a `410 Gone`, a dropped connection) keeps exporting
//! what was last listed until the new list is complete; objects the new list no longer
//! has disappear at the swap, exactly once.

use std::collections::BTreeMap;

use ::kube::Resource;
use ::kube::api::DynamicObject;
use ::kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;

/// An object's place in its kind: namespace (empty for cluster-scoped kinds) and name.
type ObjectKey = (String, String);

/// An object as read: the typed object, or why it could not be read (naming it).
type Parsed<K> = Result<K, String>;

/// The objects of one kind.
#[derive(Debug)]
pub(super) struct KindStore<K> {
    objects: BTreeMap<ObjectKey, Parsed<K>>,
    /// The re-list in progress, from `Init` to `InitDone`.
    relist: Option<BTreeMap<ObjectKey, Parsed<K>>>,
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

impl<K> KindStore<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone,
{
    /// Applies one watcher event; returns whether the visible state (`objects`, `synced`)
    /// changed.
    pub(super) fn apply(&mut self, event: Event<DynamicObject>) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                let (key, parsed) = parse::<K>(object);
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, parsed);
                false
            }
            Event::InitDone => {
                self.objects = self.relist.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Event::Apply(object) => {
                let (key, parsed) = parse::<K>(object);
                self.objects.insert(key, parsed);
                true
            }
            Event::Delete(object) => {
                let key = object_key(&object);
                self.objects.remove(&key).is_some()
            }
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

    /// The readable objects, in namespace/name order, and a problem line for each
    /// unreadable one.
    pub(super) fn objects(&self, problems: &mut Vec<String>) -> Vec<K> {
        let mut objects = Vec::with_capacity(self.objects.len());
        for parsed in self.objects.values() {
            match parsed {
                Ok(object) => objects.push(object.clone()),
                Err(problem) => problems.push(problem.clone()),
            }
        }
        objects
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

    fn names(store: &KindStore<Pod>) -> Vec<(String, Option<String>)> {
        let mut problems = Vec::new();
        store
            .objects(&mut problems)
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
        assert!(!store.apply(Event::Init));
        assert!(!store.apply(Event::InitApply(mk_pod("a", "10.0.0.1"))));
        assert!(!store.apply(Event::InitApply(mk_pod("b", "10.0.0.2"))));
        assert!(!store.synced());
        assert!(store.apply(Event::InitDone));
        assert!(store.synced());
        assert_eq!(names(&store).len(), 2);

        assert!(store.apply(Event::Apply(mk_pod("a", "10.0.0.9"))));
        assert!(store.apply(Event::Delete(mk_pod("b", "10.0.0.2"))));
        assert!(!store.apply(Event::Delete(mk_pod("b", "10.0.0.2"))));
        assert_eq!(names(&store), [("a".into(), Some("10.0.0.9".into()))]);

        // A watch error forces a re-list: until it completes, the last state stays.
        assert!(!store.apply(Event::Init));
        assert!(!store.apply(Event::InitApply(mk_pod("c", "10.0.0.3"))));
        assert_eq!(names(&store), [("a".into(), Some("10.0.0.9".into()))]);
        assert!(store.synced());
        // A re-list restarted half-way (an error during it) starts its buffer over.
        assert!(!store.apply(Event::Init));
        assert!(!store.apply(Event::InitApply(mk_pod("d", "10.0.0.4"))));
        assert!(store.apply(Event::InitDone));
        assert_eq!(names(&store), [("d".into(), Some("10.0.0.4".into()))]);
    }

    #[test]
    fn a_malformed_object_is_a_problem_naming_it_and_the_rest_reads() {
        let mut store = KindStore::<Pod>::default();
        let broken: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "broken", "namespace": "shop"},
            "spec": {"containers": 3},
        }))
        .unwrap();
        store.apply(Event::Init);
        store.apply(Event::InitApply(broken));
        store.apply(Event::InitApply(mk_pod("a", "10.0.0.1")));
        store.apply(Event::InitDone);
        let mut problems = Vec::new();
        let pods = store.objects(&mut problems);
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
        store.apply(Event::Apply(node));
        let mut problems = Vec::new();
        assert!(store.objects(&mut problems).is_empty());
        assert!(problems[0].starts_with("Node worker: "), "{problems:?}");
    }
}
