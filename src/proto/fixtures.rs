//! Test builders: one fully populated value of each resource kind, shared by the unit
//! tests of `proto`, `cache` and `kvstore::state_watch`.

use crate::model::{
    Affinity, Backend, BackendConditions, CLUSTER_LABEL, Cluster, ClusterId, ClusterName, Endpoint,
    ExportPort, ExportType, IdMode, Identity, IdentityId, InternalTrafficPolicy, IpFamily, L4Addr,
    Label, Labels, NamedPort, Node, NodeAddress, PortMap, Protocol, Service, ServiceExport,
    ServiceName, SessionAffinity, TrafficDistribution,
};

/// A test case: the field an error must name, and how to break a valid message there.
pub type Corruption<T> = (&'static str, fn(&mut T));

pub fn mk_cluster(name: &str, id: u32) -> Cluster {
    Cluster::new(
        ClusterName::new(name).unwrap(),
        ClusterId::new(id, IdMode::Normal).unwrap(),
        IdMode::Normal,
    )
}

/// A node with every field set.
pub fn mk_node(cluster: &Cluster, name: &str) -> Node {
    let mut node = Node::new(name, cluster.name.clone(), cluster.id).unwrap();
    node.addresses = vec![
        NodeAddress {
            kind: "InternalIP".into(),
            ip: "172.18.0.2".parse().unwrap(),
        },
        NodeAddress {
            kind: "CiliumInternalIP".into(),
            ip: "fd00::a".parse().unwrap(),
        },
    ];
    node.ipv4_alloc_cidr = Some("10.244.1.0/24".parse().unwrap());
    node.ipv6_alloc_cidr = Some("fd00:1::/64".parse().unwrap());
    node.ipv4_secondary_alloc_cidrs = vec!["10.245.0.0/16".parse().unwrap()];
    node.ipv6_secondary_alloc_cidrs = vec!["fd00:2::/64".parse().unwrap()];
    node.ipv4_health_ip = Some("10.244.1.134".parse().unwrap());
    node.ipv6_health_ip = Some("fd00:1::134".parse().unwrap());
    node.ipv4_ingress_ip = Some("10.244.1.135".parse().unwrap());
    node.ipv6_ingress_ip = Some("fd00:1::135".parse().unwrap());
    node.source = "custom-resource".into();
    node.encryption_key = 3;
    node.labels = [("kubernetes.io/hostname".to_string(), name.to_string())].into();
    node.annotations = [("network.cilium.io/wg-pub-key".to_string(), "k=".to_string())].into();
    node.node_identity = 6;
    node.wireguard_pub_key = "k=".into();
    node.boot_id = "570d3fd1".into();
    node
}

fn mk_ports(port: u16) -> PortMap {
    [
        (
            "http".to_string(),
            L4Addr {
                protocol: Protocol::Tcp,
                port,
            },
        ),
        (
            String::new(),
            L4Addr {
                protocol: Protocol::Udp,
                port: 53,
            },
        ),
    ]
    .into()
}

/// A global service with local affinity, a frontend and backends in every condition.
pub fn mk_service(cluster: &Cluster, namespace: &str, name: &str) -> Service {
    let backend = |conditions, hostname: Option<&str>| Backend {
        ports: mk_ports(8080),
        conditions,
        hostname: hostname.map(str::to_string),
        zone: hostname.map(|_| "eu-1a".to_string()),
        for_zones: hostname.map(|_| "eu-1a".to_string()).into_iter().collect(),
    };
    let terminating = BackendConditions {
        ready: false,
        serving: true,
        terminating: true,
    };
    Service {
        cluster: cluster.name.clone(),
        cluster_id: cluster.id,
        name: ServiceName::new(namespace, name).unwrap(),
        frontends: [("10.96.0.10".parse().unwrap(), mk_ports(80))].into(),
        backends: [
            (
                "10.244.1.5".parse().unwrap(),
                backend(BackendConditions::READY, Some("cart-0")),
            ),
            ("10.244.1.6".parse().unwrap(), backend(terminating, None)),
            (
                "fd00:1::7".parse().unwrap(),
                backend(BackendConditions::default(), Some("")),
            ),
        ]
        .into(),
        labels: [("team".to_string(), "shop".to_string())].into(),
        selector: [("app".to_string(), name.to_string())].into(),
        include_external: true,
        shared: true,
        affinity: Affinity::Local,
    }
}

/// The identity `local` of `cluster`'s range, labelled for it.
pub fn mk_identity(cluster: &Cluster, local: u32) -> Identity {
    let id = IdentityId::new(cluster.identity_range().first() + local).unwrap();
    let labels: Labels = [
        Label::k8s("app", "cart").unwrap(),
        Label::k8s(CLUSTER_LABEL, cluster.name.as_str()).unwrap(),
        Label::k8s("io.kubernetes.pod.namespace", "shop").unwrap(),
    ]
    .into_iter()
    .collect();
    Identity::new(cluster, id, labels).unwrap()
}

/// An ipcache entry for `prefix` with every field set, owned by identity 307 of
/// `cluster`.
pub fn mk_endpoint(cluster: &Cluster, prefix: &str) -> Endpoint {
    let identity = IdentityId::new(cluster.identity_range().first() + 307).unwrap();
    let mut ep = Endpoint::new(prefix.parse().unwrap(), identity);
    ep.host_ip = Some("172.18.0.2".parse().unwrap());
    ep.encrypt_key = 5;
    ep.metadata = "m".into();
    ep.namespace = Some("shop".into());
    ep.pod = Some("cart-0".into());
    ep.service_account = Some("default".into());
    ep.named_ports = vec![NamedPort {
        name: "http".into(),
        port: L4Addr {
            protocol: Protocol::Tcp,
            port: 8080,
        },
    }];
    ep
}

/// A service export with every field set.
pub fn mk_service_export(cluster: &Cluster, namespace: &str, name: &str) -> ServiceExport {
    ServiceExport {
        cluster: cluster.name.clone(),
        name: ServiceName::new(namespace, name).unwrap(),
        export_created_unix: 1_768_046_400,
        ports: vec![ExportPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            app_protocol: Some("http".into()),
            port: 80,
        }],
        export_type: ExportType::ClusterSetIp,
        session_affinity: SessionAffinity::ClientIp,
        session_affinity_timeout_seconds: Some(300),
        ip_families: vec![IpFamily::V4, IpFamily::V6],
        labels: [("tier".to_string(), "front".to_string())].into(),
        annotations: [("owner".to_string(), "shop".to_string())].into(),
        internal_traffic_policy: Some(InternalTrafficPolicy::Cluster),
        traffic_distribution: Some(TrafficDistribution::PreferClose),
    }
}
