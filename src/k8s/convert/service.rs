use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{ConvertProblem, Obj, endpoint_slice, l4_addr, list_or_single, string_map};
use crate::model::{self, Affinity, Cluster, PortMap, ServiceName};

/// Marks a service global (Cilium's annotation, then its older alias).
const GLOBAL: [&str; 2] = ["service.cilium.io/global", "io.cilium/global-service"];
/// `"false"` keeps a global service's local backends out of the export.
const SHARED: [&str; 2] = ["service.cilium.io/shared", "io.cilium/shared-service"];
/// Which backends a global service prefers.
const AFFINITY: [&str; 2] = ["service.cilium.io/affinity", "io.cilium/service-affinity"];
/// The clusterIP of a headless service.
const HEADLESS: &str = "None";

/// The first of an annotation's names that is set, with its value.
fn annotation<'a>(
    service: &'a Service,
    names: [&'static str; 2],
) -> Option<(&'static str, &'a str)> {
    let annotations = service.metadata.annotations.as_ref()?;
    names
        .into_iter()
        .find_map(|name| annotations.get(name).map(|v| (name, v.as_str())))
}

/// Whether the service is annotated global (`"true"`, any case).
pub fn is_global(service: &Service) -> bool {
    annotation(service, GLOBAL).is_some_and(|(_, v)| v.eq_ignore_ascii_case("true"))
}

/// A global service as this cluster exports it, with its backends from `slices` (the
/// EndpointSlices labelled with its name, in its namespace). `None` when the service is
/// not global or fails validation. An invalid affinity is reported and read as `none`;
/// an invalid slice is reported and its backends are left out.
pub fn service_to_model(
    cluster: &Cluster,
    service: &Service,
    slices: &[&EndpointSlice],
) -> (Option<model::Service>, Vec<ConvertProblem>) {
    if !is_global(service) {
        return (None, Vec::new());
    }
    let obj = Obj::namespaced("Service", &service.metadata);
    let mut problems = Vec::new();
    let converted = convert(cluster, service, &obj, &mut problems);
    match converted {
        Ok(mut svc) => {
            let (backends, slice_problems) = endpoint_slice::merge_backends(slices);
            svc.backends = backends;
            problems.extend(slice_problems);
            (Some(svc), problems)
        }
        Err(p) => {
            problems.push(p);
            (None, problems)
        }
    }
}

/// Everything but the backends; a soft problem (affinity) goes to `problems`, a hard one
/// is the error.
fn convert(
    cluster: &Cluster,
    service: &Service,
    obj: &Obj<'_>,
    problems: &mut Vec<ConvertProblem>,
) -> Result<model::Service, ConvertProblem> {
    obj.require_name()?;
    let name = ServiceName::new(obj.namespace, obj.name).map_err(|e| obj.problem("metadata", e))?;
    let shared = !annotation(service, SHARED).is_some_and(|(_, v)| v.eq_ignore_ascii_case("false"));
    let affinity = match annotation(service, AFFINITY) {
        None => Affinity::None,
        Some((key, value)) => value.parse().unwrap_or_else(|e| {
            problems.push(obj.problem(
                &format!("metadata.annotations[{key}]"),
                format!("{e}; using none"),
            ));
            Affinity::None
        }),
    };
    let default_spec = ServiceSpec::default();
    let spec = service.spec.as_ref().unwrap_or(&default_spec);
    let ports = port_map(spec, obj)?;
    let frontends = frontend_ips(spec, obj)?
        .into_iter()
        .map(|ip| (ip, ports.clone()))
        .collect();
    Ok(model::Service {
        cluster: cluster.name.clone(),
        cluster_id: cluster.id,
        name,
        frontends,
        backends: BTreeMap::new(),
        labels: string_map(service.metadata.labels.as_ref()),
        selector: string_map(spec.selector.as_ref()),
        include_external: true,
        shared,
        affinity,
    })
}

/// The service ports by name (empty for an unnamed port).
fn port_map(spec: &ServiceSpec, obj: &Obj<'_>) -> Result<PortMap, ConvertProblem> {
    let mut ports = PortMap::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        let addr =
            l4_addr(port.protocol.as_deref(), port.port).map_err(|e| obj.problem(&field, e))?;
        let name = port.name.clone().unwrap_or_default();
        if ports.insert(name.clone(), addr).is_some() {
            return Err(obj.problem(&field, format!("port name {name:?} is used twice")));
        }
    }
    Ok(ports)
}

/// The ClusterIPs; none for a headless service.
fn frontend_ips(spec: &ServiceSpec, obj: &Obj<'_>) -> Result<Vec<IpAddr>, ConvertProblem> {
    let list = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    list_or_single(
        ("spec.clusterIPs", list),
        ("spec.clusterIP", spec.cluster_ip.as_deref()),
    )
    .into_iter()
    .filter(|(_, ip)| *ip != HEADLESS)
    .map(|(field, ip)| {
        ip.parse()
            .map_err(|_| obj.problem(&field, format!("{ip:?} is not an IP address")))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::convert::fixtures::{mk_cluster, mk_endpoint, mk_service, mk_slice};
    use crate::model::{L4Addr, Protocol};

    const GLOBAL_TRUE: (&str, &str) = ("service.cilium.io/global", "true");

    fn convert_alone(service: &Service) -> (Option<model::Service>, Vec<ConvertProblem>) {
        service_to_model(&mk_cluster(), service, &[])
    }

    #[test]
    fn only_global_services_are_exported() {
        for (annotations, global) in [
            (vec![], false),
            (vec![("service.cilium.io/global", "false")], false),
            (vec![("service.cilium.io/global", "yes")], false),
            (vec![("service.cilium.io/global", "TRUE")], true),
            (vec![("io.cilium/global-service", "true")], true),
        ] {
            let svc = mk_service("test", "echo", &annotations, &[("http", 80)]);
            let (converted, problems) = convert_alone(&svc);
            assert_eq!(converted.is_some(), global, "{annotations:?}");
            assert!(problems.is_empty());
        }
    }

    #[test]
    fn a_global_service_carries_its_frontends_labels_and_settings() {
        let mut svc = mk_service(
            "test",
            "echo",
            &[
                GLOBAL_TRUE,
                ("io.cilium/shared-service", "False"),
                ("service.cilium.io/affinity", "remote"),
            ],
            &[("http", 80), ("dns", 53)],
        );
        if let Some(spec) = svc.spec.as_mut() {
            spec.cluster_ips = Some(vec!["10.96.0.10".to_string(), "fd00::10".to_string()]);
            if let Some(ports) = spec.ports.as_mut() {
                ports[1].protocol = Some("UDP".to_string());
            }
        }
        let (converted, problems) = convert_alone(&svc);
        assert!(problems.is_empty(), "{problems:?}");
        let s = converted.unwrap();
        assert_eq!(s.name.to_string(), "test/echo");
        assert_eq!(s.cluster.as_str(), "cluster1");
        assert_eq!(s.cluster_id.get(), 1);
        assert!(!s.shared);
        assert_eq!(s.affinity, Affinity::Remote);
        assert!(s.include_external);
        assert_eq!(s.frontends.len(), 2);
        let ports = &s.frontends[&"fd00::10".parse::<IpAddr>().unwrap()];
        assert_eq!(
            ports["dns"],
            L4Addr {
                protocol: Protocol::Udp,
                port: 53
            }
        );
        assert_eq!(ports["http"].protocol, Protocol::Tcp);
        assert_eq!(s.labels["app"], "echo");
        assert_eq!(s.selector["app"], "echo");
        assert!(s.backends.is_empty());
    }

    #[test]
    fn shared_defaults_to_true_and_affinity_to_none() {
        let svc = mk_service(
            "test",
            "echo",
            &[GLOBAL_TRUE, ("service.cilium.io/shared", "no")],
            &[],
        );
        let s = convert_alone(&svc).0.unwrap();
        assert!(s.shared);
        assert_eq!(s.affinity, Affinity::None);
    }

    #[test]
    fn an_invalid_affinity_is_reported_and_the_service_still_exported() {
        let svc = mk_service(
            "test",
            "echo",
            &[GLOBAL_TRUE, ("io.cilium/service-affinity", "nearest")],
            &[("http", 80)],
        );
        let (converted, problems) = convert_alone(&svc);
        assert_eq!(converted.unwrap().affinity, Affinity::None);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].object, "Service test/echo");
        assert!(
            problems[0]
                .message
                .starts_with("metadata.annotations[io.cilium/service-affinity]: invalid affinity"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn headless_services_have_no_frontends() {
        let mut svc = mk_service("test", "echo", &[GLOBAL_TRUE], &[("http", 80)]);
        if let Some(spec) = svc.spec.as_mut() {
            spec.cluster_ip = Some(HEADLESS.to_string());
            spec.cluster_ips = Some(vec![HEADLESS.to_string()]);
        }
        assert!(convert_alone(&svc).0.unwrap().frontends.is_empty());
    }

    #[test]
    fn cluster_ip_is_used_without_cluster_ips() {
        let mut svc = mk_service("test", "echo", &[GLOBAL_TRUE], &[("http", 80)]);
        if let Some(spec) = svc.spec.as_mut() {
            spec.cluster_ips = None;
            spec.cluster_ip = Some("10.96.1.1".to_string());
        }
        let frontends = convert_alone(&svc).0.unwrap().frontends;
        assert_eq!(
            frontends
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["10.96.1.1"]
        );
    }

    #[test]
    fn invalid_services_are_refused_naming_the_field() {
        let mut bad_ip = mk_service("test", "echo", &[GLOBAL_TRUE], &[("http", 80)]);
        if let Some(spec) = bad_ip.spec.as_mut() {
            spec.cluster_ips = Some(vec!["10.96.0.10".to_string(), "bogus".to_string()]);
        }
        let (converted, problems) = convert_alone(&bad_ip);
        assert!(converted.is_none());
        assert_eq!(
            problems[0].to_string(),
            "Service test/echo: spec.clusterIPs[1]: \"bogus\" is not an IP address"
        );

        let twice = mk_service(
            "test",
            "echo",
            &[GLOBAL_TRUE],
            &[("http", 80), ("http", 81)],
        );
        assert_eq!(
            convert_alone(&twice).1[0].message,
            "spec.ports[1]: port name \"http\" is used twice"
        );

        let bad_port = mk_service("test", "echo", &[GLOBAL_TRUE], &[("http", 0)]);
        assert_eq!(
            convert_alone(&bad_port).1[0].message,
            "spec.ports[0]: port 0 is outside 1..=65535"
        );

        let bad_name = mk_service("test", "Echo", &[GLOBAL_TRUE], &[]);
        let (converted, problems) = convert_alone(&bad_name);
        assert!(converted.is_none());
        assert!(
            problems[0]
                .message
                .starts_with("metadata: invalid service name"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn backends_come_from_the_slices_with_their_conditions() {
        let svc = mk_service("test", "echo", &[GLOBAL_TRUE], &[("http", 80)]);
        let a = mk_slice(
            "test",
            "echo",
            "echo-a",
            &[("http", 8080)],
            vec![
                mk_endpoint("10.0.0.1", None),
                mk_endpoint("10.0.0.2", Some(false)),
            ],
        );
        let bad = mk_slice("test", "echo", "echo-b", &[], vec![mk_endpoint("x", None)]);
        let (converted, problems) = service_to_model(&mk_cluster(), &svc, &[&a, &bad]);
        let s = converted.unwrap();
        assert_eq!(s.backends.len(), 2);
        let ready: Vec<_> = s.backends.values().map(|b| b.conditions.ready).collect();
        assert_eq!(ready, [true, false]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].object, "EndpointSlice test/echo-b");
    }
}
