//! The demo's three clusters, as Kubernetes YAML compiled into the binary so that
//! `fleetmesh demo` runs from any directory.

/// cluster1 is the README's example cluster.
pub const CLUSTER1: &[(&str, &str)] = &[
    (
        "namespaces.yaml",
        include_str!("../../examples/manifests/namespaces.yaml"),
    ),
    (
        "nodes.yaml",
        include_str!("../../examples/manifests/nodes.yaml"),
    ),
    (
        "shop.yaml",
        include_str!("../../examples/manifests/shop.yaml"),
    ),
    (
        "payments.yaml",
        include_str!("../../examples/manifests/payments.yaml"),
    ),
    (
        "legacy.yaml",
        include_str!("../../examples/manifests/legacy.yaml"),
    ),
];
pub const CLUSTER2: &[(&str, &str)] = &[(
    "cluster2.yaml",
    include_str!("../../examples/demo/cluster2.yaml"),
)];
pub const CLUSTER3: &[(&str, &str)] = &[(
    "cluster3.yaml",
    include_str!("../../examples/demo/cluster3.yaml"),
)];

/// The condition lines of cluster1's ready checkout backends.
const READY: &str = "ready: true\n    serving: true";
const UNREADY: &str = "ready: false\n    serving: false";

/// cluster1's shop.yaml with every checkout backend failing its readiness probe, or
/// `None` if the file no longer has the two ready backends this edit expects.
pub fn shop_all_unready() -> Option<String> {
    let shop = CLUSTER1.iter().find(|(name, _)| *name == "shop.yaml")?.1;
    (shop.matches(READY).count() == 2).then(|| shop.replace(READY, UNREADY))
}
