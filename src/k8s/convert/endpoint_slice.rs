use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};

use super::{ConvertProblem, Obj, l4_addr};
use crate::model::{Backend, BackendConditions, PortMap};

/// Label that ties an EndpointSlice to the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Address type of slices that hold DNS names instead of IPs; Cilium ignores them too.
const FQDN_ADDRESS_TYPE: &str = "FQDN";

/// Kubernetes' reading of absent conditions: ready unless said otherwise, serving when
/// ready, not terminating.
pub fn backend_conditions(conditions: Option<&EndpointConditions>) -> BackendConditions {
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    BackendConditions {
        ready,
        serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
        terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
    }
}

/// The backends one EndpointSlice lists, in its order. Every address carries all of the
/// slice's numbered ports. A slice of DNS names has none.
pub fn slice_backends(slice: &EndpointSlice) -> Result<Vec<(IpAddr, Backend)>, ConvertProblem> {
    let obj = Obj::namespaced("EndpointSlice", &slice.metadata);
    obj.require_name()?;
    if slice.address_type == FQDN_ADDRESS_TYPE {
        return Ok(Vec::new());
    }
    let mut ports = PortMap::new();
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        // A port without a number means "all ports" to kube-proxy; Cilium's backends need
        // one, so such a port adds nothing.
        let Some(number) = port.port else { continue };
        let addr = l4_addr(port.protocol.as_deref(), number)
            .map_err(|e| obj.problem(&format!("ports[{i}]"), e))?;
        ports.insert(port.name.clone().unwrap_or_default(), addr);
    }
    let mut backends = Vec::new();
    for (i, endpoint) in slice.endpoints.iter().flatten().enumerate() {
        let for_zones = endpoint
            .hints
            .as_ref()
            .and_then(|h| h.for_zones.as_ref())
            .map(|zones| zones.iter().map(|z| z.name.clone()).collect())
            .unwrap_or_default();
        let backend = Backend {
            ports: ports.clone(),
            conditions: backend_conditions(endpoint.conditions.as_ref()),
            hostname: endpoint.hostname.clone(),
            zone: endpoint.zone.clone(),
            for_zones,
        };
        for (j, address) in endpoint.addresses.iter().enumerate() {
            let ip: IpAddr = address.parse().map_err(|_| {
                obj.problem(
                    &format!("endpoints[{i}].addresses[{j}]"),
                    format!("{address:?} is not an IP address"),
                )
            })?;
            backends.push((ip, backend.clone()));
        }
    }
    Ok(backends)
}

/// The slices of each service, by (namespace, service name), each list in slice-name order
/// so that merging them is deterministic.
pub(super) fn by_service(slices: &[EndpointSlice]) -> BTreeMap<(&str, &str), Vec<&EndpointSlice>> {
    let mut index: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let Some(service) = service {
            let namespace = Obj::namespaced("EndpointSlice", &slice.metadata).namespace;
            index.entry((namespace, service)).or_default().push(slice);
        }
    }
    for list in index.values_mut() {
        list.sort_by_key(|s| s.metadata.name.as_deref().unwrap_or_default());
    }
    index
}

/// Merges the slices of one service. An address listed by several slices gets the union
/// of their ports; its conditions, hostname and zone come from the first of them. A slice
/// that fails validation is reported and left out; the others still count.
pub(super) fn merge_backends(
    slices: &[&EndpointSlice],
) -> (BTreeMap<IpAddr, Backend>, Vec<ConvertProblem>) {
    let mut merged: BTreeMap<IpAddr, Backend> = BTreeMap::new();
    let mut problems = Vec::new();
    for slice in slices {
        match slice_backends(slice) {
            Ok(backends) => {
                for (ip, backend) in backends {
                    match merged.get_mut(&ip) {
                        Some(known) => {
                            for (name, port) in backend.ports {
                                known.ports.entry(name).or_insert(port);
                            }
                        }
                        None => {
                            merged.insert(ip, backend);
                        }
                    }
                }
            }
            Err(p) => problems.push(p),
        }
    }
    (merged, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::convert::fixtures::{mk_endpoint, mk_slice};
    use crate::model::{L4Addr, Protocol};
    use k8s_openapi::api::discovery::v1::{EndpointHints, EndpointPort, ForZone};

    fn tcp(port: u16) -> L4Addr {
        L4Addr {
            protocol: Protocol::Tcp,
            port,
        }
    }

    #[test]
    fn absent_conditions_follow_kubernetes() {
        assert_eq!(backend_conditions(None), BackendConditions::READY);
        let not_ready = EndpointConditions {
            ready: Some(false),
            ..EndpointConditions::default()
        };
        assert_eq!(
            backend_conditions(Some(&not_ready)),
            BackendConditions {
                ready: false,
                serving: false,
                terminating: false
            }
        );
        let draining = EndpointConditions {
            ready: Some(false),
            serving: Some(true),
            terminating: Some(true),
        };
        assert_eq!(
            backend_conditions(Some(&draining)),
            BackendConditions {
                ready: false,
                serving: true,
                terminating: true
            }
        );
    }

    #[test]
    fn slices_give_every_address_the_slice_ports_and_hints() {
        let mut endpoint = mk_endpoint("10.0.0.1", None);
        endpoint.addresses.push("10.0.0.2".to_string());
        endpoint.zone = Some("eu-1a".to_string());
        endpoint.hostname = Some("echo-0".to_string());
        endpoint.hints = Some(EndpointHints {
            for_zones: Some(vec![ForZone {
                name: "eu-1a".to_string(),
            }]),
            ..EndpointHints::default()
        });
        let mut slice = mk_slice("test", "echo", "echo-a", &[("http", 8080)], vec![endpoint]);
        if let Some(ports) = slice.ports.as_mut() {
            // A port without a number adds nothing.
            ports.push(EndpointPort::default());
        }
        let backends = slice_backends(&slice).unwrap();
        assert_eq!(backends.len(), 2);
        let (ip, b) = &backends[1];
        assert_eq!(ip.to_string(), "10.0.0.2");
        assert_eq!(b.ports, PortMap::from([("http".to_string(), tcp(8080))]));
        assert_eq!(b.zone.as_deref(), Some("eu-1a"));
        assert_eq!(b.hostname.as_deref(), Some("echo-0"));
        assert_eq!(b.for_zones, ["eu-1a"]);
        assert_eq!(b.conditions, BackendConditions::READY);
    }

    #[test]
    fn fqdn_slices_have_no_backends() {
        let mut slice = mk_slice(
            "test",
            "echo",
            "echo-a",
            &[("http", 80)],
            vec![mk_endpoint("example.com", None)],
        );
        slice.address_type = FQDN_ADDRESS_TYPE.to_string();
        assert!(slice_backends(&slice).unwrap().is_empty());
    }

    #[test]
    fn invalid_slices_name_the_field() {
        let bad_ip = mk_slice(
            "test",
            "echo",
            "echo-a",
            &[("http", 80)],
            vec![mk_endpoint("10.0.0.300", None)],
        );
        assert_eq!(
            slice_backends(&bad_ip).unwrap_err().to_string(),
            "EndpointSlice test/echo-a: endpoints[0].addresses[0]: \"10.0.0.300\" is not an IP address"
        );
        let mut bad_proto = mk_slice("test", "echo", "echo-b", &[("http", 80)], vec![]);
        if let Some(p) = bad_proto.ports.as_mut() {
            p[0].protocol = Some("ICMP".to_string());
        }
        let err = slice_backends(&bad_proto).unwrap_err();
        assert_eq!(err.object, "EndpointSlice test/echo-b");
        assert!(
            err.message.starts_with("ports[0]: invalid protocol"),
            "{err}"
        );
        let bad_port = mk_slice("test", "echo", "echo-c", &[("http", 70_000)], vec![]);
        assert_eq!(
            slice_backends(&bad_port).unwrap_err().message,
            "ports[0]: port 70000 is outside 1..=65535"
        );
    }

    #[test]
    fn slices_merge_ports_and_keep_the_first_conditions() {
        let a = mk_slice(
            "test",
            "echo",
            "echo-a",
            &[("http", 80)],
            vec![mk_endpoint("10.0.0.1", Some(true))],
        );
        let b = mk_slice(
            "test",
            "echo",
            "echo-b",
            &[("metrics", 9090)],
            vec![
                mk_endpoint("10.0.0.1", Some(false)),
                mk_endpoint("10.0.0.2", Some(false)),
            ],
        );
        let bad = mk_slice(
            "test",
            "echo",
            "echo-c",
            &[],
            vec![mk_endpoint("nope", None)],
        );
        let (merged, problems) = merge_backends(&[&a, &b, &bad]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].object, "EndpointSlice test/echo-c");
        assert_eq!(merged.len(), 2);
        let first = &merged[&"10.0.0.1".parse::<IpAddr>().unwrap()];
        assert_eq!(first.ports.len(), 2);
        assert!(first.conditions.ready);
        assert!(
            !merged[&"10.0.0.2".parse::<IpAddr>().unwrap()]
                .conditions
                .ready
        );
    }

    #[test]
    fn slices_are_indexed_by_service_in_name_order() {
        let a = mk_slice("test", "echo", "echo-b", &[], vec![]);
        let b = mk_slice("test", "echo", "echo-a", &[], vec![]);
        let mut orphan = mk_slice("test", "echo", "other", &[], vec![]);
        orphan.metadata.labels = None;
        let slices = [a, b, orphan];
        let index = by_service(&slices);
        assert_eq!(index.len(), 1);
        let names: Vec<_> = index[&("test", "echo")]
            .iter()
            .map(|s| s.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["echo-a", "echo-b"]);
    }
}
