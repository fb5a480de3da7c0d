//! Ipcache values (`cilium/state/ip/v1/default/<ip>[/<len>]`): Cilium's `IPIdentityPair`
//! JSON.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    CodecError, decode_mask, encode_mask, from_json, optional_ip_string, parse_ip,
    parse_optional_ip, to_json_bytes,
};
use crate::model::{Endpoint, IdentityId, IpPrefix, L4Addr, NamedPort};

/// The wire shape, in Cilium's field order. Missing fields read as Go's zero values.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct IpIdentityPairJson {
    #[serde(rename = "IP")]
    ip: String,
    /// Base64 mask bytes; `null` for a host entry.
    #[serde(rename = "Mask")]
    mask: Option<String>,
    #[serde(rename = "HostIP")]
    host_ip: String,
    #[serde(rename = "ID")]
    id: u32,
    #[serde(rename = "Key")]
    key: u8,
    #[serde(rename = "Metadata")]
    metadata: String,
    #[serde(rename = "K8sNamespace", skip_serializing_if = "String::is_empty")]
    k8s_namespace: String,
    #[serde(rename = "K8sPodName", skip_serializing_if = "String::is_empty")]
    k8s_pod_name: String,
    #[serde(rename = "K8sServiceAccount", skip_serializing_if = "String::is_empty")]
    k8s_service_account: String,
    #[serde(
        rename = "NamedPorts",
        deserialize_with = "super::null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    named_ports: Vec<NamedPortJson>,
}

#[derive(Serialize, Deserialize)]
struct NamedPortJson {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Port")]
    port: u16,
    #[serde(rename = "Protocol")]
    protocol: String,
}

/// Go's `omitempty` cannot tell an empty string from none: both read back as none.
fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// An ipcache entry as Cilium's `IPIdentityPair` JSON.
pub fn encode_endpoint(ep: &Endpoint) -> Bytes {
    let wire = IpIdentityPairJson {
        ip: ep.prefix.addr().to_string(),
        mask: (!ep.prefix.is_host()).then(|| encode_mask(ep.prefix)),
        host_ip: optional_ip_string(ep.host_ip),
        id: ep.identity.get(),
        key: ep.encrypt_key,
        metadata: ep.metadata.clone(),
        k8s_namespace: ep.namespace.clone().unwrap_or_default(),
        k8s_pod_name: ep.pod.clone().unwrap_or_default(),
        k8s_service_account: ep.service_account.clone().unwrap_or_default(),
        named_ports: ep
            .named_ports
            .iter()
            .map(|p| NamedPortJson {
                name: p.name.clone(),
                port: p.port.port,
                protocol: p.port.protocol.as_str().to_string(),
            })
            .collect(),
    };
    to_json_bytes(&wire)
}

/// Decodes Cilium's `IPIdentityPair` JSON. Whether the prefix matches the key and the
/// identity lies in the peer's range is the consumer's check.
pub fn decode_endpoint(bytes: &[u8]) -> Result<Endpoint, CodecError> {
    let wire: IpIdentityPairJson = from_json("ipcache entry", bytes)?;
    let addr = parse_ip("ipcache IP", &wire.ip)?;
    let prefix = match &wire.mask {
        None => IpPrefix::host(addr),
        Some(mask) => decode_mask("ipcache Mask", addr, mask)?,
    };
    let identity = IdentityId::new(wire.id).map_err(CodecError::model("ipcache ID"))?;
    let mut ep = Endpoint::new(prefix, identity);
    ep.host_ip = parse_optional_ip("ipcache HostIP", &wire.host_ip)?;
    ep.encrypt_key = wire.key;
    ep.metadata = wire.metadata;
    ep.namespace = non_empty(wire.k8s_namespace);
    ep.pod = non_empty(wire.k8s_pod_name);
    ep.service_account = non_empty(wire.k8s_service_account);
    ep.named_ports = wire
        .named_ports
        .into_iter()
        .map(|p| {
            let protocol = p
                .protocol
                .parse()
                .map_err(CodecError::model("ipcache NamedPorts Protocol"))?;
            Ok(NamedPort {
                name: p.name,
                port: L4Addr {
                    protocol,
                    port: p.port,
                },
            })
        })
        .collect::<Result<_, CodecError>>()?;
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::kvstore::codec::tests::assert_truncations_fail;
    use crate::model::Protocol;

    /// The example of the reference, §1.5 (from Cilium's `ciliumendpoints.txtar`).
    fn mk_reference_json() -> Value {
        json!({ "IP": "10.244.2.74", "Mask": null, "HostIP": "172.18.0.2", "ID": 199475,
                "Key": 5, "Metadata": "", "K8sNamespace": "bar", "K8sPodName": "cep-002",
                "K8sServiceAccount": "default" })
    }

    fn decode_value(v: &Value) -> Result<Endpoint, CodecError> {
        decode_endpoint(v.to_string().as_bytes())
    }

    #[test]
    fn reference_entry_decodes_and_re_encodes() {
        let reference = mk_reference_json();
        let ep = decode_value(&reference).unwrap();
        assert_eq!(ep.prefix, IpPrefix::host("10.244.2.74".parse().unwrap()));
        assert_eq!(ep.identity.get(), 199_475);
        assert_eq!(ep.host_ip, Some("172.18.0.2".parse().unwrap()));
        assert_eq!(ep.encrypt_key, 5);
        assert_eq!(ep.namespace.as_deref(), Some("bar"));
        assert_eq!(ep.pod.as_deref(), Some("cep-002"));
        assert_eq!(ep.service_account.as_deref(), Some("default"));
        assert!(ep.named_ports.is_empty());

        let encoded: Value = serde_json::from_slice(&encode_endpoint(&ep)).unwrap();
        assert_eq!(encoded, reference);
    }

    #[test]
    fn prefix_entries_carry_a_base64_mask() {
        let mut ep = Endpoint::new("10.0.5.0/24".parse().unwrap(), IdentityId::new(2).unwrap());
        ep.metadata = "cidr".into();
        let encoded: Value = serde_json::from_slice(&encode_endpoint(&ep)).unwrap();
        assert_eq!(
            encoded,
            json!({"IP": "10.0.5.0", "Mask": "////AA==", "HostIP": "", "ID": 2, "Key": 0,
                   "Metadata": "cidr"})
        );
        assert_eq!(decode_endpoint(&encode_endpoint(&ep)).unwrap(), ep);

        let v6 = Endpoint::new("fd00:1::/64".parse().unwrap(), IdentityId::new(2).unwrap());
        let encoded: Value = serde_json::from_slice(&encode_endpoint(&v6)).unwrap();
        assert_eq!(encoded["Mask"], "//////////8AAAAAAAAAAA==");
        assert_eq!(decode_endpoint(&encode_endpoint(&v6)).unwrap(), v6);
    }

    #[test]
    fn named_ports_round_trip() {
        let mut ep = Endpoint::new("fd00::7".parse().unwrap(), IdentityId::new(65_600).unwrap());
        ep.host_ip = Some("fd00::1".parse().unwrap());
        ep.pod = Some("web-0".into());
        ep.named_ports = vec![
            NamedPort {
                name: "http".into(),
                port: L4Addr {
                    protocol: Protocol::Tcp,
                    port: 8080,
                },
            },
            NamedPort {
                name: "dns".into(),
                port: L4Addr {
                    protocol: Protocol::Udp,
                    port: 53,
                },
            },
        ];
        let bytes = encode_endpoint(&ep);
        let encoded: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(encoded["Mask"], Value::Null);
        assert_eq!(
            encoded["NamedPorts"],
            json!([{"Name": "http", "Port": 8080, "Protocol": "TCP"},
                   {"Name": "dns", "Port": 53, "Protocol": "UDP"}])
        );
        assert!(encoded.get("K8sNamespace").is_none());
        assert_eq!(decode_endpoint(&bytes).unwrap(), ep);
    }

    #[test]
    fn malformed_entries_are_refused() {
        let with = |field: &str, value: Value| {
            let mut v = mk_reference_json();
            v[field] = value;
            decode_value(&v).unwrap_err()
        };
        assert!(matches!(
            decode_endpoint(b"\"10.0.0.1\""),
            Err(CodecError::Json { .. })
        ));
        assert!(matches!(
            with("IP", json!("10.244.2")),
            CodecError::Address {
                what: "ipcache IP",
                ..
            }
        ));
        assert!(matches!(
            with("HostIP", json!("host")),
            CodecError::Address {
                what: "ipcache HostIP",
                ..
            }
        ));
        assert!(matches!(
            with("ID", json!(0)),
            CodecError::Model {
                what: "ipcache ID",
                ..
            }
        ));
        assert!(matches!(
            with("Mask", json!("***")),
            CodecError::Mask { .. }
        ));
        assert!(matches!(
            with("Mask", json!("AP///w==")),
            CodecError::Model {
                what: "ipcache Mask",
                ..
            }
        ));
        assert!(matches!(
            with(
                "NamedPorts",
                json!([{"Name": "x", "Port": 1, "Protocol": "ANY"}])
            ),
            CodecError::Model {
                what: "ipcache NamedPorts Protocol",
                ..
            }
        ));
        assert_truncations_fail(
            &encode_endpoint(&decode_value(&mk_reference_json()).unwrap()),
            decode_endpoint,
        );
    }
}
