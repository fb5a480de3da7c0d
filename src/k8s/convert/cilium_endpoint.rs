//! CiliumEndpoint → ipcache entries, as Cilium's clustermesh-apiserver writes them
//! (`ciliumEndpointMapper` in `clustermesh-apiserver/clustermesh/converters.go`).
//!
//! Where fleetmesh deviates from Cilium, and why:
//! - An endpoint still waiting for its identity (no `status.identity`) yields nothing;
//!   Cilium writes its addresses with `ID` 0, which consumers accept (ids below 256 are
//!   allowed), but id 0 means "no identity" and the model's `IdentityId` has no 0. The
//!   agent assigns one moments after creating the endpoint, and the entries follow then.
//!   An explicit id 0 refuses the endpoint with a problem, for the same reason.
//! - An identity that is neither reserved nor inside the cluster's range refuses the
//!   endpoint with a problem; Cilium writes it, and every consumer then skips the entries
//!   (reference §1.5): reporting it here names the object where it can be fixed. An id
//!   that does not fit 24 bits (Cilium truncates it to 32) and an IPsec key outside
//!   0..=255 (Cilium truncates it to 8 bits) refuse it too: truncated, they would name
//!   another identity or key.
//! - An address that is not an IP is left out with a problem (Cilium would write it
//!   under an unusable key); a node IP that is not one is left out with a problem, as
//!   Cilium leaves it empty. The other addresses are still written.

use super::{ConvertProblem, Obj, keep_ok};
use crate::k8s::cilium::{CiliumEndpoint, EndpointNetworking};
use crate::model::{Cluster, Endpoint, IdentityId, IpPrefix};

/// The ipcache entries of a CiliumEndpoint, one per IPv4 and IPv6 address, as Cilium's
/// apiserver writes them: the endpoint's identity, node IP, IPsec key, namespace, pod
/// name and service account. Like Cilium's, they carry no named ports.
///
/// An endpoint without networking yields nothing, and so does one still waiting for its
/// identity (see the module doc). A bad address or node IP is left out and reported; an
/// identity or key that cannot be written refuses the whole endpoint.
pub fn cilium_endpoint_to_model(
    cluster: &Cluster,
    endpoint: &CiliumEndpoint,
) -> (Vec<Endpoint>, Vec<ConvertProblem>) {
    let obj = Obj::namespaced("CiliumEndpoint", &endpoint.metadata);
    let mut problems = Vec::new();
    if let Err(problem) = obj.require_name() {
        return (Vec::new(), vec![problem]);
    }
    let Some(status) = endpoint.status.as_ref() else {
        return (Vec::new(), problems);
    };
    let fields = EndpointFields {
        identity: status.identity.as_ref().and_then(|i| i.id),
        networking: status.networking.as_ref(),
        encryption_key: status.encryption.as_ref().and_then(|e| e.key),
        service_account: status.service_account.as_deref(),
        path: "status.",
        identity_path: "status.identity.id",
    };
    let entries = match fields.entries(cluster, &obj, obj.namespace, obj.name, &mut problems) {
        Ok(entries) => entries,
        Err(problem) => {
            problems.push(problem);
            Vec::new()
        }
    };
    (entries, problems)
}

/// What one endpoint says about its addresses, wherever Cilium publishes it: a
/// CiliumEndpoint's status, or one endpoint of a CiliumEndpointSlice.
pub(super) struct EndpointFields<'a> {
    pub identity: Option<i64>,
    pub networking: Option<&'a EndpointNetworking>,
    pub encryption_key: Option<i64>,
    pub service_account: Option<&'a str>,
    /// Where the fields are in the object, for problems: `status.` or `endpoints[3].`.
    pub path: &'a str,
    /// The full path of the identity field (its name differs between the two).
    pub identity_path: &'a str,
}

impl EndpointFields<'_> {
    /// The entries of the endpoint `namespace/pod`, reporting the values left out in
    /// `problems`; `Err` refuses the endpoint.
    pub(super) fn entries(
        &self,
        cluster: &Cluster,
        obj: &Obj<'_>,
        namespace: &str,
        pod: &str,
        problems: &mut Vec<ConvertProblem>,
    ) -> Result<Vec<Endpoint>, ConvertProblem> {
        let Some(networking) = self.networking else {
            return Ok(Vec::new());
        };
        let Some(raw_id) = self.identity else {
            return Ok(Vec::new());
        };
        let id = u32::try_from(raw_id)
            .ok()
            .and_then(|id| IdentityId::new(id).ok())
            .ok_or_else(|| {
                obj.problem(
                    self.identity_path,
                    format!("{raw_id} is not a numeric identity"),
                )
            })?;
        if !id.is_reserved() {
            obj.require_in_range(self.identity_path, cluster, id)?;
        }
        let raw_key = self.encryption_key.unwrap_or(0);
        let encrypt_key = u8::try_from(raw_key).map_err(|_| {
            obj.problem(
                &format!("{}encryption.key", self.path),
                format!("{raw_key} is outside 0..=255"),
            )
        })?;
        let host_ip = networking
            .node_ip
            .as_deref()
            .filter(|ip| !ip.is_empty())
            .and_then(|ip| {
                let field = format!("{}networking.node", self.path);
                keep_ok(obj.parse_ip(&field, ip), problems)
            });
        let service_account = self.service_account.filter(|sa| !sa.is_empty());

        let mut entries = Vec::new();
        for (i, pair) in networking.addressing.iter().flatten().enumerate() {
            for (family, ip) in [("ipv4", &pair.ipv4), ("ipv6", &pair.ipv6)] {
                let Some(ip) = ip.as_deref().filter(|ip| !ip.is_empty()) else {
                    continue;
                };
                let field = format!("{}networking.addressing[{i}].{family}", self.path);
                let Some(ip) = keep_ok(obj.parse_ip(&field, ip), problems) else {
                    continue;
                };
                let mut entry = Endpoint::new(IpPrefix::host(ip), id);
                entry.host_ip = host_ip;
                entry.encrypt_key = encrypt_key;
                entry.namespace = Some(namespace.to_string());
                entry.pod = Some(pod.to_string());
                entry.service_account = service_account.map(str::to_string);
                entries.push(entry);
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::cilium::EncryptionSpec;
    use crate::k8s::convert::cilium_fixtures::{mk_cilium_endpoint, mk_cluster3};

    fn mk_cep_002() -> CiliumEndpoint {
        let mut cep = mk_cilium_endpoint(
            "bar",
            "cep-002",
            199_475,
            ("10.244.2.74", "fd00:10:244:2::e024"),
            "172.18.0.2",
        );
        if let Some(status) = cep.status.as_mut() {
            status.encryption = Some(EncryptionSpec { key: Some(5) });
        }
        cep
    }

    /// The entries of an endpoint that converts without a problem.
    fn convert_ok(cep: &CiliumEndpoint) -> Vec<Endpoint> {
        let (entries, problems) = cilium_endpoint_to_model(&mk_cluster3(), cep);
        assert_eq!(problems, vec![]);
        entries
    }

    /// The problems of an endpoint that converts with some, and the IPs it still yields.
    fn convert_with_problems(cep: &CiliumEndpoint) -> (Vec<String>, Vec<String>) {
        let (entries, problems) = cilium_endpoint_to_model(&mk_cluster3(), cep);
        (
            entries.iter().map(|e| e.prefix.to_string()).collect(),
            problems.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn an_endpoint_yields_one_entry_per_address() {
        let entries = convert_ok(&mk_cep_002());
        let ips: Vec<String> = entries.iter().map(|e| e.prefix.to_string()).collect();
        assert_eq!(ips, ["10.244.2.74", "fd00:10:244:2::e024"]);
        for entry in &entries {
            assert!(entry.prefix.is_host());
            assert_eq!(entry.identity.get(), 199_475);
            assert_eq!(entry.host_ip, Some("172.18.0.2".parse().unwrap()));
            assert_eq!(entry.encrypt_key, 5);
            assert_eq!(entry.metadata, "");
            assert_eq!(entry.namespace.as_deref(), Some("bar"));
            assert_eq!(entry.pod.as_deref(), Some("cep-002"));
            assert_eq!(entry.service_account.as_deref(), Some("default"));
            assert!(entry.named_ports.is_empty());
        }
    }

    #[test]
    fn endpoints_without_addresses_or_identity_yield_nothing() {
        let mut no_status = mk_cep_002();
        no_status.status = None;
        let mut waiting = mk_cep_002();
        let mut no_networking = mk_cep_002();
        let mut no_addresses = mk_cilium_endpoint("bar", "p", 199_475, ("", ""), "");
        if let Some(status) = waiting.status.as_mut() {
            status.identity = None;
        }
        if let Some(status) = no_networking.status.as_mut() {
            status.networking = None;
        }
        if let Some(n) = no_addresses
            .status
            .as_mut()
            .and_then(|s| s.networking.as_mut())
        {
            n.node_ip = None;
        }
        for cep in [no_status, waiting, no_networking, no_addresses] {
            assert_eq!(convert_ok(&cep), vec![]);
        }
    }

    #[test]
    fn reserved_identities_are_valid_and_a_missing_node_ip_is_none() {
        let cep = mk_cilium_endpoint("bar", "init", 5, ("10.244.2.9", ""), "");
        let entries = convert_ok(&cep);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].identity.get(), 5);
        assert_eq!(entries[0].host_ip, None);
    }

    #[test]
    fn a_bad_address_or_node_ip_is_left_out_and_the_rest_converted() {
        let bad_ip = mk_cilium_endpoint("bar", "p", 199_475, ("10.244.2.9", "nope"), "172.18.0.2");
        assert_eq!(
            convert_with_problems(&bad_ip),
            (
                vec!["10.244.2.9".to_string()],
                vec![
                    "CiliumEndpoint bar/p: status.networking.addressing[0].ipv6: \"nope\" is not an IP address"
                        .to_string()
                ]
            )
        );

        let bad_node = mk_cilium_endpoint("bar", "p", 199_475, ("10.244.2.9", ""), "node-1");
        let (entries, problems) = cilium_endpoint_to_model(&mk_cluster3(), &bad_node);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].host_ip, None);
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            ["CiliumEndpoint bar/p: status.networking.node: \"node-1\" is not an IP address"]
        );
    }

    #[test]
    fn identities_and_keys_that_cannot_be_written_refuse_the_endpoint() {
        let refuse = |cep: &CiliumEndpoint| {
            let (ips, problems) = convert_with_problems(cep);
            assert_eq!(ips, Vec::<String>::new());
            problems
        };
        let out_of_range = mk_cilium_endpoint("bar", "p", 65_541, ("10.244.2.9", ""), "");
        assert_eq!(
            refuse(&out_of_range),
            [
                "CiliumEndpoint bar/p: status.identity.id: identity 65541 is outside cluster 3's range 196608..=262143"
            ]
        );
        for bad_id in [0, -1, 1 << 24] {
            let cep = mk_cilium_endpoint("bar", "p", bad_id, ("10.244.2.9", ""), "");
            assert_eq!(
                refuse(&cep),
                [format!(
                    "CiliumEndpoint bar/p: status.identity.id: {bad_id} is not a numeric identity"
                )]
            );
        }
        let mut bad_key = mk_cep_002();
        if let Some(status) = bad_key.status.as_mut() {
            status.encryption = Some(EncryptionSpec { key: Some(256) });
        }
        assert_eq!(
            refuse(&bad_key),
            ["CiliumEndpoint bar/cep-002: status.encryption.key: 256 is outside 0..=255"]
        );
    }
}
