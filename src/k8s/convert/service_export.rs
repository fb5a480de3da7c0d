//! ServiceExport + its Service → the export the cluster offers, as Cilium's
//! `MCSAPIServiceSpec` describes it (`FromCiliumServiceToMCSAPIServiceSpec`): the
//! Service's ports, type (headless or not), session affinity, IP families, internal
//! traffic policy and traffic distribution; the export's exported labels and
//! annotations and its creation time.

use k8s_openapi::api::core::v1::Service;

use super::{ConvertProblem, Obj, string_map};
use crate::k8s::mcs::ServiceExport;
use crate::model::{
    Cluster, ExportPort, ExportType, Protocol, ServiceExport as Export, ServiceName,
    SessionAffinity,
};

/// A Service's `clusterIP` when it is headless.
const HEADLESS: &str = "None";
/// The Service type that cannot be exported (it has no endpoints of its own).
const EXTERNAL_NAME: &str = "ExternalName";

/// The export of `export`, or `None` while its Service (`service`, the Service of the
/// same namespace and name) does not exist: Cilium writes an export only once both do.
///
/// Refused with a problem: an export without a creation time (every consumer needs it
/// to settle conflicts; the API server always sets it, a manifest must), an
/// `ExternalName` Service, and values the model does not know.
pub fn service_export_to_model(
    cluster: &Cluster,
    export: &ServiceExport,
    service: Option<&Service>,
) -> Result<Option<Export>, ConvertProblem> {
    let obj = Obj::namespaced("ServiceExport", &export.metadata);
    obj.require_name()?;
    let name =
        ServiceName::new(obj.namespace, obj.name).map_err(|e| obj.problem("metadata.name", e))?;
    let Some(service) = service else {
        return Ok(None);
    };
    let created = export
        .metadata
        .creation_timestamp
        .as_ref()
        .ok_or_else(|| obj.problem("metadata.creationTimestamp", "missing"))?;
    let svc = Obj::namespaced("Service", &service.metadata);
    let spec = service.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some(EXTERNAL_NAME) {
        return Err(obj.problem(
            "metadata.name",
            format!(
                "{} is of type {EXTERNAL_NAME}, which cannot be exported",
                svc.what
            ),
        ));
    }

    let mut ports = Vec::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        let protocol = match port.protocol.as_deref() {
            None | Some("") => Protocol::Tcp,
            Some(p) => p.parse().map_err(|e| svc.problem(&field, e))?,
        };
        let number = u16::try_from(port.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                svc.problem(&field, format!("port {} is outside 1..=65535", port.port))
            })?;
        ports.push(ExportPort {
            name: port.name.clone().unwrap_or_default(),
            protocol,
            app_protocol: port.app_protocol.clone().filter(|a| !a.is_empty()),
            port: number,
        });
    }
    let export_type = if spec.cluster_ip.as_deref() == Some(HEADLESS) {
        ExportType::Headless
    } else {
        ExportType::ClusterSetIp
    };
    let session_affinity = match spec.session_affinity.as_deref() {
        None | Some("") => SessionAffinity::None,
        Some(a) => a
            .parse()
            .map_err(|e| svc.problem("spec.sessionAffinity", e))?,
    };
    let session_affinity_timeout_seconds = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    let mut ip_families = Vec::new();
    for (i, family) in spec.ip_families.iter().flatten().enumerate() {
        let parsed = family
            .parse()
            .map_err(|e| svc.problem(&format!("spec.ipFamilies[{i}]"), e))?;
        ip_families.push(parsed);
    }
    let internal_traffic_policy = spec
        .internal_traffic_policy
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| svc.problem("spec.internalTrafficPolicy", e))?;
    let traffic_distribution = spec
        .traffic_distribution
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e| svc.problem("spec.trafficDistribution", e))?;
    let export_spec = export.spec.as_ref();
    Ok(Some(Export {
        cluster: cluster.name.clone(),
        name,
        export_created_unix: created.0.as_second(),
        ports,
        export_type,
        session_affinity,
        session_affinity_timeout_seconds,
        ip_families,
        labels: string_map(export_spec.and_then(|s| s.exported_labels.as_ref())),
        annotations: string_map(export_spec.and_then(|s| s.exported_annotations.as_ref())),
        internal_traffic_policy,
        traffic_distribution,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::convert::fixtures::{mk_cluster, mk_map, mk_meta, mk_service};
    use crate::k8s::mcs::ServiceExportSpec;
    use crate::model::{InternalTrafficPolicy, IpFamily, TrafficDistribution};
    use k8s_openapi::api::core::v1::{ClientIPConfig, SessionAffinityConfig};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn mk_export(namespace: &str, name: &str) -> ServiceExport {
        let mut metadata = mk_meta(namespace, name);
        metadata.creation_timestamp = Some(Time("2026-01-10T12:00:00Z".parse().unwrap()));
        ServiceExport {
            metadata,
            spec: Some(ServiceExportSpec {
                exported_labels: Some(mk_map(&[("tier", "front")])),
                exported_annotations: None,
            }),
        }
    }

    #[test]
    fn a_cluster_ip_service_exports_its_ports_and_settings() {
        let mut svc = mk_service("shop", "web", &[], &[("http", 80), ("https", 443)]);
        let spec = svc.spec.as_mut().unwrap();
        spec.ports.as_mut().unwrap()[1].app_protocol = Some("https".into());
        spec.session_affinity = Some("ClientIP".into());
        spec.session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(300),
            }),
        });
        spec.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
        spec.internal_traffic_policy = Some("Local".into());
        spec.traffic_distribution = Some("PreferClose".into());
        let export = service_export_to_model(&mk_cluster(), &mk_export("shop", "web"), Some(&svc))
            .unwrap()
            .unwrap();
        assert_eq!(export.name.to_string(), "shop/web");
        assert_eq!(export.export_created_unix, 1_768_046_400);
        assert_eq!(export.export_type, ExportType::ClusterSetIp);
        let ports: Vec<_> = export
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.app_protocol.as_deref()))
            .collect();
        assert_eq!(ports, [("http", 80, None), ("https", 443, Some("https"))]);
        assert_eq!(export.session_affinity, SessionAffinity::ClientIp);
        assert_eq!(export.session_affinity_timeout_seconds, Some(300));
        assert_eq!(export.ip_families, [IpFamily::V4, IpFamily::V6]);
        assert_eq!(
            export.internal_traffic_policy,
            Some(InternalTrafficPolicy::Local)
        );
        assert_eq!(
            export.traffic_distribution,
            Some(TrafficDistribution::PreferClose)
        );
        assert_eq!(export.labels, mk_map(&[("tier", "front")]));
        assert!(export.annotations.is_empty());
    }

    #[test]
    fn a_headless_service_exports_as_headless_and_a_missing_one_not_at_all() {
        let mut svc = mk_service("shop", "db", &[], &[("pg", 5432)]);
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let export = service_export_to_model(&mk_cluster(), &mk_export("shop", "db"), Some(&svc))
            .unwrap()
            .unwrap();
        assert_eq!(export.export_type, ExportType::Headless);
        assert_eq!(export.session_affinity, SessionAffinity::None);
        assert_eq!(
            service_export_to_model(&mk_cluster(), &mk_export("shop", "db"), None),
            Ok(None)
        );
    }

    #[test]
    fn exports_that_cannot_be_written_are_refused_naming_the_field() {
        let svc = mk_service("shop", "web", &[], &[("http", 80)]);
        let mut undated = mk_export("shop", "web");
        undated.metadata.creation_timestamp = None;
        let err = service_export_to_model(&mk_cluster(), &undated, Some(&svc)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ServiceExport shop/web: metadata.creationTimestamp: missing"
        );
        let mut external = svc.clone();
        external.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        let err =
            service_export_to_model(&mk_cluster(), &mk_export("shop", "web"), Some(&external))
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ServiceExport shop/web: metadata.name: Service shop/web is of type ExternalName, which cannot be exported"
        );
        let mut odd = svc;
        odd.spec.as_mut().unwrap().traffic_distribution = Some("Nearest".into());
        let err = service_export_to_model(&mk_cluster(), &mk_export("shop", "web"), Some(&odd))
            .unwrap_err();
        assert!(err.to_string().starts_with("Service shop/web: spec.trafficDistribution: invalid traffic distribution \"Nearest\""), "{err}");
    }
}
