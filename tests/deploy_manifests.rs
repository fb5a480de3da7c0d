//! `deploy/`: every kustomize overlay renders with `kubectl kustomize`, every object parses
//! into its k8s-openapi type, the names objects use for each other match, the configs in
//! the ConfigMaps are valid fleetmesh configs whose paths and ports fit the Deployments, and
//! every container runs as non-root on a read-only root filesystem, fleetmesh's all with
//! the one image reference `scripts/image` tags, named in one place.

// The helpers unwrap what the checks need; clippy's allow-unwrap-in-tests covers only
// #[test] functions.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fleetmesh::agent::AgentConfig;
use fleetmesh::apiserver::{ApiserverConfig, SourceConfig, StoreSettings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Probe, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Every overlay an operator may apply; the test also checks that no other exists untested.
const OVERLAYS: &[&str] = &["embedded", "etcd-sidecar", "nodeport"];
/// Secrets the operator creates (README, "Deploy"): the member's certificates from
/// `fleetmesh fleet plan`, and the mesh CA the rotation CronJob signs with.
const OPERATOR_SECRETS: &[&str] = &["fleetmesh-certs", "fleetmesh-ca"];
/// ConfigMaps the operator creates (or a member overlay generates): the member's peer files
/// from `fleetmesh fleet plan`, and YAML for the manifest source (optional).
const OPERATOR_CONFIG_MAPS: &[&str] = &["fleetmesh-remotes", "fleetmesh-manifests"];
/// The apiserver's Deployment, the one the PodDisruptionBudget and the Service guard.
const APISERVER: &str = "fleetmesh-apiserver";
/// The agent's Deployment.
const AGENT: &str = "fleetmesh-agent";
/// The containers that run fleetmesh's image: the apiserver, the agent and the rotation.
const FLEETMESH_CONTAINERS: &[&str] = &["agent", "apiserver", "rotate"];
/// The other images deploy/ runs: the rotation CronJob's copy and publish steps, and the
/// etcd sidecar.
const OTHER_IMAGES: &[&str] = &["busybox:", "bitnami/kubectl:", "quay.io/coreos/etcd:"];

/// One overlay's output, each object parsed into its k8s-openapi type.
#[derive(Default)]
struct Rendered {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    services: Vec<Service>,
    deployments: Vec<Deployment>,
    cron_jobs: Vec<CronJob>,
    pdbs: Vec<PodDisruptionBudget>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What `scripts/image` tags and deploy/base/kustomization.yaml's `images:` names.
fn fleetmesh_image() -> String {
    format!("fleetmesh:{}", env!("CARGO_PKG_VERSION"))
}

fn kustomize(overlay: &str) -> String {
    kustomize_dir(&repo().join("deploy/overlays").join(overlay))
}

fn kustomize_dir(dir: &Path) -> String {
    let output = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubectl not found on PATH: install kubectl (it renders deploy/ with \
             `kubectl kustomize`; e.g. /usr/bin/kubectl) to run this test"
        ),
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn typed<T: DeserializeOwned>(value: serde_yaml::Value, overlay: &str, kind: &str) -> T {
    serde_yaml::from_value(value)
        .unwrap_or_else(|e| panic!("{overlay}: a {kind} does not parse into its type: {e}"))
}

fn render(overlay: &str) -> Rendered {
    parse_rendered(overlay, &kustomize(overlay))
}

fn parse_rendered(overlay: &str, text: &str) -> Rendered {
    let mut r = Rendered::default();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(document).unwrap();
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let o = overlay;
        match kind.as_str() {
            "Namespace" => r.namespaces.push(typed(value, o, &kind)),
            "ServiceAccount" => r.service_accounts.push(typed(value, o, &kind)),
            "ClusterRole" => r.cluster_roles.push(typed(value, o, &kind)),
            "ClusterRoleBinding" => r.cluster_role_bindings.push(typed(value, o, &kind)),
            "Role" => r.roles.push(typed(value, o, &kind)),
            "RoleBinding" => r.role_bindings.push(typed(value, o, &kind)),
            "ConfigMap" => r.config_maps.push(typed(value, o, &kind)),
            "Secret" => r.secrets.push(typed(unwrapped_secret(value), o, &kind)),
            "Service" => r.services.push(typed(value, o, &kind)),
            "Deployment" => r.deployments.push(typed(value, o, &kind)),
            "CronJob" => r.cron_jobs.push(typed(value, o, &kind)),
            "PodDisruptionBudget" => r.pdbs.push(typed(value, o, &kind)),
            other => panic!("{overlay}: unexpected kind {other:?}; teach this test about it"),
        }
    }
    r
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn namespace(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

impl Rendered {
    fn deployment(&self, wanted: &str) -> &Deployment {
        self.deployments
            .iter()
            .find(|d| name(&d.metadata) == wanted)
            .unwrap_or_else(|| panic!("no Deployment {wanted}"))
    }

    /// Every pod template with who owns it, for the checks common to all pods.
    fn pod_specs(&self) -> Vec<(String, &PodSpec)> {
        let deployments = self.deployments.iter().map(|d| {
            let spec = d.spec.template.spec.as_ref();
            (format!("Deployment {}", name(&d.metadata)), spec)
        });
        let cron_jobs = self.cron_jobs.iter().map(|c| {
            let job = c.spec.job_template.spec.as_ref();
            let spec = job.and_then(|j| j.template.spec.as_ref());
            (format!("CronJob {}", name(&c.metadata)), spec)
        });
        deployments
            .chain(cron_jobs)
            .map(|(owner, spec)| {
                let spec = spec.unwrap_or_else(|| panic!("{owner} has no pod spec"));
                (owner, spec)
            })
            .collect()
    }

    fn config_map(&self, wanted: &str) -> Option<&ConfigMap> {
        self.config_maps
            .iter()
            .find(|c| name(&c.metadata) == wanted)
    }
}

fn pod_labels(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn all_containers(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.init_containers.iter().flatten().chain(&pod.containers)
}

/// The container port `port` names (by name or number) in `container`.
fn container_port(container: &Container, port: &IntOrString) -> Option<i32> {
    container.ports.iter().flatten().find_map(|p| match port {
        IntOrString::String(n) => (p.name.as_deref() == Some(n)).then_some(p.container_port),
        IntOrString::Int(n) => (p.container_port == *n).then_some(p.container_port),
    })
}

fn probe_port(probe: &Probe) -> Option<&IntOrString> {
    probe
        .http_get
        .as_ref()
        .map(|h| &h.port)
        .or(probe.tcp_socket.as_ref().map(|t| &t.port))
}

fn check_pod(r: &Rendered, owner: &str, ns: &str, pod: &PodSpec) {
    let account = pod.service_account_name.as_deref().unwrap_or("default");
    assert!(
        r.service_accounts
            .iter()
            .any(|sa| name(&sa.metadata) == account && namespace(&sa.metadata) == ns),
        "{owner}: ServiceAccount {ns}/{account} does not exist"
    );
    let volumes = pod.volumes.as_deref().unwrap_or_default();
    for volume in volumes {
        if let Some(cm) = &volume.config_map {
            let wanted = cm.name.as_str();
            assert!(
                r.config_map(wanted).is_some() || OPERATOR_CONFIG_MAPS.contains(&wanted),
                "{owner}: volume {} names ConfigMap {wanted}, neither rendered nor created \
                 by the operator",
                volume.name
            );
        }
        if let Some(secret) = &volume.secret {
            let wanted = secret.secret_name.as_deref().unwrap_or_default();
            assert!(
                r.secrets.iter().any(|s| name(&s.metadata) == wanted)
                    || OPERATOR_SECRETS.contains(&wanted),
                "{owner}: volume {} names Secret {wanted}, neither rendered nor created by \
                 the operator",
                volume.name
            );
        }
    }
    for container in all_containers(pod) {
        let c = &container.name;
        for mount in container.volume_mounts.iter().flatten() {
            let volume = volumes
                .iter()
                .find(|v| v.name == mount.name)
                .unwrap_or_else(|| panic!("{owner}/{c}: mount of unknown volume {}", mount.name));
            // A subPath into a rendered ConfigMap must name one of its keys.
            if let (Some(key), Some(cm)) = (&mount.sub_path, &volume.config_map)
                && let Some(map) = r.config_map(&cm.name)
            {
                let data = map.data.clone().unwrap_or_default();
                assert!(
                    data.contains_key(key),
                    "{owner}/{c}: subPath {key} not in ConfigMap {}",
                    cm.name
                );
            }
        }
        let probes = [
            &container.readiness_probe,
            &container.liveness_probe,
            &container.startup_probe,
        ];
        for probe in probes.into_iter().flatten() {
            let port =
                probe_port(probe).unwrap_or_else(|| panic!("{owner}/{c}: probe without port"));
            assert!(
                container_port(container, port).is_some(),
                "{owner}/{c}: probe port {port:?} is not a port of the container"
            );
        }
    }
}

fn check_references(overlay: &str, r: &Rendered) {
    for (owner, pod) in r.pod_specs() {
        check_pod(r, &format!("{overlay}: {owner}"), "fleetmesh", pod);
    }
    for d in &r.deployments {
        let selector = d.spec.selector.match_labels.clone().unwrap_or_default();
        assert!(
            selects(&selector, &pod_labels(d)),
            "{overlay}: Deployment {} does not select its own pods",
            name(&d.metadata)
        );
    }
    for service in &r.services {
        let spec = service.spec.as_ref().unwrap();
        let selector = spec.selector.clone().unwrap_or_default();
        let targets: Vec<&Deployment> = r
            .deployments
            .iter()
            .filter(|d| selects(&selector, &pod_labels(d)))
            .collect();
        assert_eq!(
            targets.len(),
            1,
            "{overlay}: Service {} must select exactly one Deployment's pods",
            name(&service.metadata)
        );
        let pod = targets[0].spec.template.spec.as_ref().unwrap();
        for port in spec.ports.iter().flatten() {
            let target = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            assert!(
                pod.containers
                    .iter()
                    .any(|c| container_port(c, &target).is_some()),
                "{overlay}: Service {} targets port {target:?}, which no container has",
                name(&service.metadata)
            );
        }
    }
    assert_eq!(r.pdbs.len(), 1, "{overlay}: one PodDisruptionBudget");
    for pdb in &r.pdbs {
        let selector = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.match_labels.clone())
            .unwrap_or_default();
        let selected: Vec<&str> = r
            .deployments
            .iter()
            .filter(|d| selects(&selector, &pod_labels(d)))
            .map(|d| name(&d.metadata))
            .collect();
        assert_eq!(
            selected,
            [APISERVER],
            "{overlay}: the PDB guards the apiserver only"
        );
    }
    let account_exists = |account: &str, ns: &str| {
        r.service_accounts
            .iter()
            .any(|sa| name(&sa.metadata) == account && namespace(&sa.metadata) == ns)
    };
    for binding in &r.cluster_role_bindings {
        let b = name(&binding.metadata);
        assert!(
            binding.role_ref.kind == "ClusterRole"
                && r.cluster_roles
                    .iter()
                    .any(|c| name(&c.metadata) == binding.role_ref.name),
            "{overlay}: ClusterRoleBinding {b} refers to a missing role"
        );
        for s in binding.subjects.iter().flatten() {
            let ns = s.namespace.as_deref().unwrap_or_default();
            assert!(
                s.kind == "ServiceAccount" && account_exists(&s.name, ns),
                "{overlay}: ClusterRoleBinding {b}: subject {} {ns}/{} does not exist",
                s.kind,
                s.name
            );
        }
    }
    for binding in &r.role_bindings {
        let b = name(&binding.metadata);
        assert!(
            binding.role_ref.kind == "Role"
                && r.roles
                    .iter()
                    .any(|c| name(&c.metadata) == binding.role_ref.name),
            "{overlay}: RoleBinding {b} refers to a missing role"
        );
        for s in binding.subjects.iter().flatten() {
            let ns = s
                .namespace
                .as_deref()
                .unwrap_or_else(|| namespace(&binding.metadata));
            assert!(
                s.kind == "ServiceAccount" && account_exists(&s.name, ns),
                "{overlay}: RoleBinding {b}: subject {ns}/{} does not exist",
                s.name
            );
        }
    }
    for sa in &r.service_accounts {
        let ns = namespace(&sa.metadata);
        assert!(
            r.namespaces.iter().any(|n| name(&n.metadata) == ns),
            "{overlay}: namespace {ns} of ServiceAccount {} is not rendered",
            name(&sa.metadata)
        );
    }
}

/// Every fleetmesh container runs the one image reference `scripts/image` tags, and every
/// container (fleetmesh's or not) runs as a non-root user, on a read-only root filesystem,
/// without privilege escalation.
fn check_containers(overlay: &str, r: &Rendered) {
    let mut fleetmesh = Vec::new();
    for (owner, pod) in r.pod_specs() {
        let pod_security = pod.security_context.clone().unwrap_or_default();
        for container in all_containers(pod) {
            let c = format!("{overlay}: {owner}/{}", container.name);
            let image = container.image.as_deref().unwrap_or_default();
            if OTHER_IMAGES.iter().all(|other| !image.starts_with(other)) {
                assert_eq!(image, fleetmesh_image(), "{c}: the image");
                fleetmesh.push(container.name.as_str());
            }
            let security = container.security_context.clone().unwrap_or_default();
            let non_root = security.run_as_non_root.or(pod_security.run_as_non_root);
            assert_eq!(non_root, Some(true), "{c}: runAsNonRoot");
            let user = security.run_as_user.or(pod_security.run_as_user);
            assert!(
                user.is_some_and(|uid| uid != 0),
                "{c}: runs as user {user:?}, not a non-root uid"
            );
            assert_eq!(
                security.read_only_root_filesystem,
                Some(true),
                "{c}: readOnlyRootFilesystem"
            );
            assert_eq!(
                security.allow_privilege_escalation,
                Some(false),
                "{c}: allowPrivilegeEscalation"
            );
        }
    }
    fleetmesh.sort_unstable();
    assert_eq!(
        fleetmesh,
        FLEETMESH_CONTAINERS,
        "{overlay}: the containers running {}",
        fleetmesh_image()
    );
}

/// The Deployment's fleetmesh container, the path its `--config` names, and that file's
/// text from the ConfigMap mounted there.
fn mounted_config<'a>(
    r: &'a Rendered,
    deployment: &str,
) -> (&'a PodSpec, &'a Container, PathBuf, String) {
    let pod = r
        .deployment(deployment)
        .spec
        .template
        .spec
        .as_ref()
        .unwrap();
    let container = pod
        .containers
        .iter()
        .find(|c| c.image.as_deref() == Some(fleetmesh_image().as_str()))
        .unwrap_or_else(|| panic!("{deployment}: no fleetmesh container"));
    let args = container.args.clone().unwrap_or_default();
    let at = args
        .iter()
        .position(|a| a == "--config")
        .expect("a --config argument");
    let path = PathBuf::from(&args[at + 1]);
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Path::new(&m.mount_path) == path)
        .unwrap_or_else(|| panic!("{deployment}: nothing mounted at {}", path.display()));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let map_name = &volume
        .config_map
        .as_ref()
        .expect("the config is a ConfigMap")
        .name;
    let data = r
        .config_map(map_name)
        .unwrap()
        .data
        .clone()
        .unwrap_or_default();
    let text = data[mount
        .sub_path
        .as_deref()
        .expect("the config is mounted by subPath")]
    .clone();
    (pod, container, path, text)
}

fn mount_path(container: &Container, volume: &str) -> PathBuf {
    container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume)
        .map(|m| PathBuf::from(&m.mount_path))
        .unwrap_or_else(|| panic!("{}: no mount of volume {volume}", container.name))
}

fn named_port(container: &Container, port: &str) -> u16 {
    let port = container_port(container, &IntOrString::String(port.to_string()))
        .unwrap_or_else(|| panic!("{}: no port {port}", container.name));
    u16::try_from(port).unwrap()
}

/// Checks both configs against the Deployments; returns them for overlay-specific checks.
fn check_configs(overlay: &str, r: &Rendered) -> (ApiserverConfig, AgentConfig) {
    let (_, apiserver, path, text) = mounted_config(r, APISERVER);
    let config = ApiserverConfig::parse(&text, &path)
        .unwrap_or_else(|e| panic!("{overlay}: apiserver.yaml: {e}"));
    let certs = mount_path(apiserver, "certs");
    let grpc = config.grpc.as_ref().expect("the apiserver serves gRPC");
    for file in [&grpc.tls.ca, &grpc.tls.cert, &grpc.tls.key] {
        assert!(
            file.starts_with(&certs),
            "{overlay}: {} is not in the certs Secret",
            file.display()
        );
    }
    assert_eq!(
        grpc.listen.port(),
        named_port(apiserver, "grpc"),
        "{overlay}: gRPC port"
    );
    assert_eq!(
        config.health.listen.port(),
        named_port(apiserver, "health"),
        "{overlay}: health port"
    );
    assert!(
        config.health.listen.ip().is_unspecified(),
        "{overlay}: probes reach the pod IP"
    );
    if let SourceConfig::Manifests(dir) = &config.source {
        assert_eq!(*dir, mount_path(apiserver, "manifests"));
    }
    let apiserver_config = config;

    let (_, agent, path, text) = mounted_config(r, AGENT);
    let config =
        AgentConfig::parse(&text, &path).unwrap_or_else(|e| panic!("{overlay}: agent.yaml: {e}"));
    let remotes = mount_path(agent, "remotes");
    assert_eq!(
        config.remotes_dir, remotes,
        "{overlay}: remotesDir is the mounted remotes"
    );
    // fleet plan's peer files name their certificates as ../certs/<file>.
    assert_eq!(
        remotes.parent().unwrap().join("certs"),
        mount_path(agent, "certs")
    );
    assert_eq!(
        config.api.listen.port(),
        named_port(agent, "api"),
        "{overlay}: API port"
    );
    assert!(
        config.api.listen.ip().is_unspecified(),
        "{overlay}: probes reach the pod IP"
    );
    (apiserver_config, config)
}

fn service_type(r: &Rendered) -> String {
    let service = r
        .services
        .iter()
        .find(|s| name(&s.metadata) == APISERVER)
        .unwrap();
    service
        .spec
        .as_ref()
        .unwrap()
        .type_
        .clone()
        .unwrap_or_default()
}

#[test]
fn every_overlay_is_tested() {
    let mut found: Vec<String> = std::fs::read_dir(repo().join("deploy/overlays"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, OVERLAYS);
}

#[test]
fn every_overlay_renders_parses_and_its_references_match() {
    for overlay in OVERLAYS {
        let r = render(overlay);
        assert_eq!(
            r.deployments.len(),
            2,
            "{overlay}: the apiserver and the agent"
        );
        assert_eq!(r.cron_jobs.len(), 1, "{overlay}: the certificate rotation");
        check_references(overlay, &r);
        check_containers(overlay, &r);
        let (apiserver, _) = check_configs(overlay, &r);
        assert!(
            matches!(apiserver.source, SourceConfig::Kube { kubeconfig: None }),
            "{overlay}: the placeholder config watches the cluster's API in-cluster"
        );
        match (&apiserver.store, *overlay) {
            (StoreSettings::Etcd(etcd), "etcd-sidecar") => {
                assert_eq!(etcd.endpoints, ["http://127.0.0.1:2379"]);
            }
            (StoreSettings::Memory, "embedded" | "nodeport") => {}
            (store, _) => panic!("{overlay}: unexpected store {store:?}"),
        }
        let expected = if *overlay == "nodeport" {
            "NodePort"
        } else {
            "LoadBalancer"
        };
        assert_eq!(
            service_type(&r),
            expected,
            "{overlay}: apiserver Service type"
        );
    }
}

/// Every YAML file under `dir`, recursively.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    files
}

/// Every `image:` value anywhere in `value`.
fn images_in(value: &serde_yaml::Value, found: &mut Vec<String>) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, value) in map {
                match (key.as_str(), value.as_str()) {
                    (Some("image"), Some(image)) => found.push(image.to_string()),
                    _ => images_in(value, found),
                }
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter().for_each(|v| images_in(v, found)),
        _ => {}
    }
}

#[test]
fn the_fleetmesh_image_is_named_in_one_place() {
    let mut named_by = Vec::new();
    for file in yaml_files(&repo().join("deploy")) {
        let text = std::fs::read_to_string(&file).unwrap();
        let shown = file.strip_prefix(repo()).unwrap().display().to_string();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document).unwrap();
            let mut images = Vec::new();
            images_in(&value, &mut images);
            for image in images {
                if OTHER_IMAGES.iter().all(|other| !image.starts_with(other)) {
                    assert_eq!(
                        image, "fleetmesh",
                        "{shown}: a fleetmesh container names its image by the bare name; \
                         its reference is set in deploy/base/kustomization.yaml's images:"
                    );
                }
            }
            if let Some(entries) = value.get("images") {
                named_by.push((shown.clone(), entries.clone()));
            }
        }
    }
    assert_eq!(
        named_by.len(),
        1,
        "kustomizations with images: {named_by:?}"
    );
    let (file, entries) = &named_by[0];
    assert_eq!(file, "deploy/base/kustomization.yaml");
    let entries = entries.as_sequence().unwrap();
    assert_eq!(entries.len(), 1, "{file}: {entries:?}");
    assert_eq!(entries[0]["name"], "fleetmesh", "{file}");
}

#[test]
fn the_apiserver_may_list_and_watch_every_kind_the_kube_source_reads() {
    let r = render("etcd-sidecar");
    let role = r
        .cluster_roles
        .iter()
        .find(|role| role.metadata.name.as_deref() == Some("fleetmesh-apiserver"))
        .expect("the apiserver's ClusterRole");
    let rules = role.rules.as_deref().unwrap_or_default();
    let may = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|rule| {
            let has = |list: &Option<Vec<String>>, item: &str| {
                list.iter().flatten().any(|x| x == item || x == "*")
            };
            has(&rule.api_groups, group)
                && has(&rule.resources, resource)
                && rule.verbs.iter().any(|v| v == verb || v == "*")
        })
    };
    for (group, resource) in [
        ("", "services"),
        ("", "namespaces"),
        ("", "pods"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
        ("cilium.io", "ciliumidentities"),
        ("cilium.io", "ciliumendpoints"),
        ("cilium.io", "ciliumendpointslices"),
        ("cilium.io", "ciliumnodes"),
        ("multicluster.x-k8s.io", "serviceexports"),
    ] {
        for verb in ["list", "watch"] {
            assert!(may(group, resource, verb), "{verb} {group}/{resource}");
        }
    }
}

#[test]
fn the_etcd_sidecar_serves_the_apiserver_on_loopback() {
    let r = render("etcd-sidecar");
    let pod = r.deployment(APISERVER).spec.template.spec.as_ref().unwrap();
    let etcd = all_containers(pod)
        .find(|c| c.name == "etcd")
        .expect("an etcd container in the apiserver's pod");
    let command = etcd.command.clone().unwrap_or_default();
    assert!(
        command.contains(&"--listen-client-urls=http://127.0.0.1:2379".to_string()),
        "{command:?}"
    );
    let embedded = render("embedded");
    let pod = embedded
        .deployment(APISERVER)
        .spec
        .template
        .spec
        .as_ref()
        .unwrap();
    assert!(all_containers(pod).all(|c| c.name != "etcd"));
}

/// `base` as a path relative to `from` (both absolute), as a kustomization names it.
fn relative(from: &Path, base: &Path) -> String {
    let ups = from.components().count() - 1;
    let rest = base.strip_prefix("/").unwrap();
    format!("{}{}", "../".repeat(ups), rest.display())
}

#[test]
fn fleet_plan_writes_each_member_an_overlay_that_deploys_its_configs_and_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fleet");
    let base = relative(&out.join("c1"), &repo().join("deploy/overlays/embedded"));
    let profile = dir.path().join("profile.yaml");
    std::fs::write(
        &profile,
        format!(
            "mesh: m\nmembers:\n\
             - {{name: c1, address: \"c1.example:9891\"}}\n\
             - {{name: c2, address: \"c2.example:443\"}}\n\
             topology: {{kind: full-mesh}}\nkustomize: {{base: \"{base}\"}}\n"
        ),
    )
    .unwrap();
    let plan = Command::new(env!("CARGO_BIN_EXE_fleetmesh"))
        .args(["fleet", "plan"])
        .arg(&profile)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "fleet plan: {}",
        String::from_utf8_lossy(&plan.stderr)
    );

    for (member, peer, port) in [("c1", "c2", 9891), ("c2", "c1", 443)] {
        let label = format!("member {member}");
        let r = parse_rendered(&label, &kustomize_dir(&out.join(member)));
        check_references(&label, &r);
        check_containers(&label, &r);
        let (apiserver, agent) = check_configs(&label, &r);
        assert!(
            matches!(apiserver.source, SourceConfig::Kube { .. }),
            "{label}: in a cluster the apiserver watches the cluster's API"
        );
        assert_eq!(apiserver.cluster.name.as_str(), member);
        assert_eq!(agent.cluster.name.as_str(), member);
        assert!(
            agent.endpoint_slices.is_some(),
            "{label}: the agent writes EndpointSlices"
        );

        let services = r.services.iter().find(|s| name(&s.metadata) == APISERVER);
        let ports = services.unwrap().spec.as_ref().unwrap().ports.clone();
        assert_eq!(ports.unwrap()[0].port, port, "{label}: the address's port");

        // The certificates Secret holds exactly the member's certs/, byte for byte, under
        // the name the rotation CronJob renews.
        let secret = r
            .secrets
            .iter()
            .find(|s| name(&s.metadata) == "fleetmesh-certs")
            .unwrap_or_else(|| panic!("{label}: no Secret fleetmesh-certs"));
        let data = secret.data.clone().unwrap_or_default();
        let mut on_disk: Vec<String> = std::fs::read_dir(out.join(member).join("certs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        assert_eq!(data.keys().cloned().collect::<Vec<_>>(), on_disk, "{label}");
        for (file, bytes) in &data {
            let expected = std::fs::read(out.join(member).join("certs").join(file)).unwrap();
            assert_eq!(bytes.0, expected, "{label}: certs/{file}");
        }

        // The peer files: itself and the other member, each naming certificates the
        // Secret holds where the agent mounts it.
        let (_, agent_container, _, _) = mounted_config(&r, AGENT);
        let remotes_dir = mount_path(agent_container, "remotes");
        let certs_dir = mount_path(agent_container, "certs");
        let remotes = r.config_map("fleetmesh-remotes").unwrap();
        let files = remotes.data.clone().unwrap_or_default();
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        let mut expected = vec![format!("{member}.yaml"), format!("{peer}.yaml")];
        expected.sort();
        assert_eq!(names, expected, "{label}: remotes");
        for (file, text) in &files {
            let peer_config = fleetmesh::remote::PeerConfig::parse(text, &remotes_dir.join(file))
                .unwrap_or_else(|e| panic!("{label}: remotes/{file}: {e}"));
            for path in [
                &peer_config.tls.ca,
                &peer_config.tls.cert,
                &peer_config.tls.key,
            ] {
                let key = normalized(path);
                let key = key
                    .strip_prefix(&certs_dir)
                    .unwrap_or_else(|_| panic!("{label}: remotes/{file} names {}", path.display()));
                assert!(
                    data.contains_key(key.to_str().unwrap()),
                    "{label}: {}",
                    path.display()
                );
            }
        }
    }
}

/// `path` with `a/../` folded away, as the kernel resolves it without symlinks.
fn normalized(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// kustomize wraps long base64 values over lines, which the API server's decoder (Go's)
/// skips and k8s-openapi's does not: join them before parsing.
fn unwrapped_secret(mut secret: serde_yaml::Value) -> serde_yaml::Value {
    if let Some(data) = secret.get_mut("data").and_then(|d| d.as_mapping_mut()) {
        for (_, value) in data.iter_mut() {
            if let Some(text) = value.as_str() {
                *value = text.split_whitespace().collect::<String>().into();
            }
        }
    }
    secret
}
