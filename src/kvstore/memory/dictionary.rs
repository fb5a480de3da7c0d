//! Dictionary coding of the embedded store's values: the fixed parts of the Cilium
//! formats the store holds (JSON field names with their quotes, colons and commas, label
//! sources) are written as one- or two-byte codes. An endpoint's 160-byte ipcache JSON,
//! of which 125 bytes are such glue, is held in 41.
//!
//! Codes are bytes that never occur in UTF-8, so a coded value needs no escaping of its
//! literal bytes: token `i` below [`DIRECT_CODES`]'s length is written as `DIRECT_CODES[i]`,
//! any later token as [`ESCAPE`] followed by its index past the direct ones. A value that
//! contains a code byte (it is not UTF-8, so not one of the formats) is not coded at all:
//! the record keeps it raw and says so.

use std::sync::LazyLock;

/// The one-byte codes, for the first tokens of [`TOKENS`]: the bytes UTF-8 never uses,
/// except [`ESCAPE`].
const DIRECT_CODES: [u8; 12] = [
    0xC0, 0xC1, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE,
];

/// Introduces a two-byte code: the next byte is the token's index past the direct ones.
const ESCAPE: u8 = 0xFF;

/// The fixed parts of the formats, as serde_json writes them compactly: at most 256 (an
/// index is a byte). The first twelve (one-byte codes) are those of the most numerous
/// values, endpoints and identities. Which token a position takes is the longest that
/// matches, whatever the order here.
const TOKENS: &[&[u8]] = &[
    // Ipcache entries (`IPIdentityPair`), one per endpoint: the one-byte codes.
    br#"{"IP":""#,
    br#"","Mask":null,"HostIP":""#,
    br#"","ID":"#,
    br#","Key":0,"Metadata":"","K8sNamespace":""#,
    br#"","K8sPodName":""#,
    br#"","K8sServiceAccount":"default"}"#,
    br#"","K8sServiceAccount":""#,
    br#""}"#,
    // Identities' label strings, one per ten endpoints or so.
    b"k8s:app=",
    b"k8s:io.cilium.k8s.policy.cluster=",
    b"k8s:io.kubernetes.pod.namespace=",
    b"k8s:",
    // Ipcache entries, less common shapes.
    br#"","Mask":""#,
    br#"","HostIP":""#,
    br#","Key":0,"Metadata":""#,
    br#","Key":"#,
    br#","Metadata":""#,
    br#"","K8sNamespace":""#,
    br#"","NamedPorts":[{"Name":""#,
    br#"","Port":"#,
    br#","Protocol":"TCP"}"#,
    br#","Protocol":"UDP"}"#,
    br#","Protocol":""#,
    br#"},{"Name":""#,
    // Identities' labels, less common ones.
    b"k8s:io.cilium.k8s.policy.serviceaccount=",
    b"k8s:io.cilium.k8s.namespace.labels.",
    b"k8s:app.kubernetes.io/name=",
    b"reserved:",
    // Nodes (`Node`, Go field names).
    br#"{"Name":""#,
    br#"","Cluster":""#,
    br#"","IPAddresses":[{"Type":"InternalIP","IP":""#,
    br#"","IPAddresses":[{"Type":""#,
    br#"","IPAddresses":null"#,
    br#""},{"Type":"CiliumInternalIP","IP":""#,
    br#""},{"Type":""#,
    br#"","IP":""#,
    br#""}],"IPv4AllocCIDR":"#,
    br#","IPv4AllocCIDR":"#,
    br#","IPv4SecondaryAllocCIDRs":null,"IPv6AllocCIDR":"#,
    br#","IPv4SecondaryAllocCIDRs":"#,
    br#","IPv6AllocCIDR":"#,
    br#","IPv6SecondaryAllocCIDRs":null,"IPv4HealthIP":""#,
    br#","IPv6SecondaryAllocCIDRs":"#,
    br#","IPv4HealthIP":""#,
    br#"","IPv6HealthIP":"","IPv4IngressIP":"","IPv6IngressIP":"","ClusterID":"#,
    br#"","IPv6HealthIP":""#,
    br#"","IPv4IngressIP":""#,
    br#"","IPv6IngressIP":""#,
    br#"","ClusterID":"#,
    br#","Source":"","EncryptionKey":0,"Labels":"#,
    br#","Source":""#,
    br#"","EncryptionKey":"#,
    br#","Labels":"#,
    br#","Annotations":"#,
    br#","NodeIdentity":0,"WireguardPubKey":"","BootID":""}"#,
    br#","NodeIdentity":"#,
    br#","WireguardPubKey":""#,
    br#"","BootID":""#,
    b"kubernetes.io/hostname",
    b"network.cilium.io/wg-pub-key",
    b"custom-resource",
    // Global services (Cilium's `ClusterService`).
    br#"{"cluster":""#,
    br#"","namespace":""#,
    br#"","name":""#,
    br#"","frontends":{"#,
    br#"},"backends":{"#,
    br#"":{"http":{"Protocol":"TCP","Port":"#,
    br#"":{"Protocol":"TCP","Port":"#,
    br#"":{"Protocol":"UDP","Port":"#,
    br#"{"Protocol":"TCP","Port":"#,
    br#"{"Protocol":"UDP","Port":"#,
    br#"{"Protocol":""#,
    br#"},"hostnames":{"#,
    br#"},"zones":{"#,
    br#""},"zones":{"#,
    br#"{"zone":""#,
    br#"","forZones":[{"name":""#,
    br#""},{"name":""#,
    br#""}]}"#,
    br#"},"labels":{"#,
    br#""},"labels":{"#,
    br#"},"selector":{"#,
    br#""},"selector":{"#,
    br#"},"includeExternal":false,"shared":true,"clusterID":"#,
    br#"},"includeExternal":"#,
    br#""},"includeExternal":"#,
    br#"},""#,
    br#","shared":"#,
    br#","clusterID":"#,
    // fleetmesh's own services.
    br#"","clusterId":"#,
    br#","namespace":""#,
    br#"{"ports":{"#,
    br#"":{"protocol":"TCP","port":"#,
    br#"":{"protocol":"UDP","port":"#,
    br#"{"protocol":"TCP","port":"#,
    br#"{"protocol":"UDP","port":"#,
    br#"{"protocol":""#,
    br#"","port":"#,
    br#"},"conditions":{"ready":true,"serving":true,"terminating":false}"#,
    br#"},"conditions":{"ready":"#,
    br#","serving":"#,
    br#","terminating":"#,
    br#","hostname":""#,
    br#","zone":""#,
    br#"","zone":""#,
    br#","forZones":[""#,
    br#"","forZones":[""#,
    br#"",""#,
    br#""]}"#,
    br#","affinity":"none"}"#,
    br#","affinity":""#,
    // Cluster configs (`CiliumClusterConfig`).
    br#"{"id":"#,
    br#","capabilities":{"syncedCanaries":true,"maxConnectedClusters":"#,
    br#","capabilities":{"#,
    br#""syncedCanaries":true,"#,
    br#""cached":true,"#,
    br#""maxConnectedClusters":"#,
    br#","serviceExportsEnabled":false}}"#,
    br#","serviceExportsEnabled":"#,
    // Values of any format.
    b"null",
    b"true",
    b"false",
];

/// For each byte, the tokens starting with it, longest first: the encoder tries only
/// these at a position, and the first that matches is the longest.
static BY_FIRST_BYTE: LazyLock<[Vec<Candidate>; 256]> = LazyLock::new(|| {
    let mut table: [Vec<Candidate>; 256] = std::array::from_fn(|_| Vec::new());
    for (index, token) in TOKENS.iter().enumerate() {
        // The table holds at most 256 tokens (a test checks), so every index fits.
        if let (Some(&first), Ok(index)) = (token.first(), u8::try_from(index)) {
            let mask = match token.len() {
                len @ 0..4 => (1 << (8 * len)) - 1,
                _ => u32::MAX,
            };
            table[usize::from(first)].push(Candidate {
                head: head(token),
                mask,
                index,
            });
        }
    }
    for candidates in &mut table {
        candidates.sort_by_key(|c| std::cmp::Reverse(token(c.index).len()));
    }
    table
});

/// A token the encoder tries at a position. Many tokens share their first bytes (`","`),
/// so their first four are compared as one number before the whole token is.
struct Candidate {
    head: u32,
    /// The bits of `head` that are the token's (a token may be shorter than four).
    mask: u32,
    index: u8,
}

/// The first four bytes of `bytes` as a number, zeros past its end.
fn head(bytes: &[u8]) -> u32 {
    let mut head = [0; 4];
    let len = bytes.len().min(4);
    head[..len].copy_from_slice(&bytes[..len]);
    u32::from_le_bytes(head)
}

/// Whether `byte` can never be a literal of a coded value: one of [`DIRECT_CODES`] or
/// [`ESCAPE`], spelled as ranges since every byte of a value is checked.
fn is_code_byte(byte: u8) -> bool {
    matches!(byte, 0xC0 | 0xC1 | 0xF5..=0xFF)
}

fn token(index: u8) -> &'static [u8] {
    TOKENS.get(usize::from(index)).copied().unwrap_or_default()
}

/// Appends `value` coded to `out` (written straight into the record being built, so a put
/// allocates nothing more). Returns false, leaving `out` as it was, if coding would not
/// shorten the value (no token in it) or cannot hold it (it contains a code byte).
pub(crate) fn encode_into(value: &[u8], out: &mut Vec<u8>) -> bool {
    let table = &*BY_FIRST_BYTE;
    let start = out.len();
    let mut coded_any = false;
    let mut at = 0;
    while let Some(&byte) = value.get(at) {
        if is_code_byte(byte) {
            out.truncate(start);
            return false;
        }
        let rest = &value[at..];
        let candidates = &table[usize::from(byte)];
        let hit = if candidates.is_empty() {
            None
        } else {
            let rest_head = head(rest);
            candidates
                .iter()
                .find(|c| rest_head & c.mask == c.head && rest.starts_with(token(c.index)))
        };
        match hit {
            Some(&Candidate { index, .. }) => {
                write_code(out, index);
                at += token(index).len();
                coded_any = true;
            }
            None => {
                out.push(byte);
                at += 1;
            }
        }
    }
    if !coded_any {
        out.truncate(start);
    }
    coded_any
}

fn write_code(out: &mut Vec<u8>, index: u8) {
    match DIRECT_CODES.get(usize::from(index)) {
        Some(&code) => out.push(code),
        None => out.extend_from_slice(&[ESCAPE, index - DIRECT_CODES.len() as u8]),
    }
}

/// The token a one-byte code stands for: the inverse of [`DIRECT_CODES`], spelled as a
/// match since decoding looks up every code.
fn direct_index(code: u8) -> Option<u8> {
    match code {
        0xC0 | 0xC1 => Some(code - 0xC0),
        0xF5..=0xFE => Some(code - 0xF5 + 2),
        _ => None,
    }
}

/// The value `coded` stands for, as consecutive pieces: literal runs and tokens.
fn pieces(coded: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = coded.get(at..).filter(|rest| !rest.is_empty())?;
        let first = rest[0];
        if first == ESCAPE {
            // Only `encode_into` writes codes, so the index byte is there; were it not,
            // the value would just end.
            let index = rest.get(1).copied().unwrap_or(u8::MAX);
            at += 2;
            let index = index.saturating_add(DIRECT_CODES.len() as u8);
            return Some(token(index));
        }
        if let Some(index) = direct_index(first) {
            at += 1;
            return Some(token(index));
        }
        let literal = rest
            .iter()
            .position(|&b| is_code_byte(b))
            .unwrap_or(rest.len());
        at += literal;
        Some(&rest[..literal])
    })
}

/// The value `coded` stands for.
pub(crate) fn decode(coded: &[u8]) -> Vec<u8> {
    let len = pieces(coded).map(<[u8]>::len).sum();
    let mut out = Vec::with_capacity(len);
    for piece in pieces(coded) {
        out.extend_from_slice(piece);
    }
    out
}

/// Whether `coded` stands for `value`, compared piece by piece without decoding.
pub(crate) fn decoded_eq(coded: &[u8], value: &[u8]) -> bool {
    let mut rest = value;
    for piece in pieces(coded) {
        match rest.strip_prefix(piece) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::kvstore::codec;
    use crate::model::{
        Capabilities, Cluster, ClusterConfig, ClusterId, Endpoint, IdMode, Identity, IdentityId,
        IpPrefix, Label, Labels, Node, NodeAddress,
    };
    use crate::proto::fixtures;

    /// `value` coded, if it is.
    fn encode(value: &[u8]) -> Option<Vec<u8>> {
        let mut out = b"header".to_vec();
        let coded = encode_into(value, &mut out);
        let header = out.drain(..6).collect::<Vec<u8>>();
        assert_eq!(header, b"header", "the start of the buffer is kept");
        assert!(
            coded || out.is_empty(),
            "a value that is not coded is not written"
        );
        coded.then_some(out)
    }

    /// The example endpoint value of the brief (the benchmark's shape).
    const EXAMPLE: &[u8] = br#"{"IP":"10.1.0.5","Mask":null,"HostIP":"10.0.0.3","ID":65538,"Key":0,"Metadata":"","K8sNamespace":"bench","K8sPodName":"pod-12345","K8sServiceAccount":"default"}"#;

    /// Codes `value`, checks it reads back exactly (decoded and compared), and returns
    /// the coded size (the raw size when it is not coded).
    fn assert_round_trip(value: &[u8]) -> usize {
        match encode(value) {
            Some(coded) => {
                assert_eq!(decode(&coded), value, "{coded:?}");
                assert!(decoded_eq(&coded, value));
                assert!(coded.len() < value.len(), "coding made it longer");
                let mut other = value.to_vec();
                other.push(b'x');
                assert!(!decoded_eq(&coded, &other));
                assert!(!decoded_eq(&coded, &value[..value.len() - 1]));
                coded.len()
            }
            None => value.len(),
        }
    }

    fn mk_cluster() -> Cluster {
        fixtures::mk_cluster("cluster3", 3)
    }

    fn mk_endpoint(ip: &str) -> Endpoint {
        let mut ep = Endpoint::new(ip.parse().unwrap(), IdentityId::new(65_538).unwrap());
        ep.host_ip = Some("10.0.0.3".parse().unwrap());
        ep
    }

    /// Codes `value`, checks it reads back exactly, and that it shrank below a
    /// `factor`th of its size.
    fn assert_shrinks(value: &[u8], factor: usize) {
        let coded = assert_round_trip(value);
        assert!(coded * factor < value.len(), "{coded} of {value:?}");
    }

    #[test]
    fn the_table_is_sound() {
        assert!(TOKENS.len() <= 256);
        assert!(TOKENS.len() > DIRECT_CODES.len());
        let unique: HashSet<_> = TOKENS.iter().collect();
        assert_eq!(unique.len(), TOKENS.len(), "a token is listed twice");
        for (index, token) in TOKENS.iter().enumerate() {
            // Longer than its code, so a coded value is never longer than its value;
            // ASCII, so no token holds a code byte.
            let code_len = if index < DIRECT_CODES.len() { 1 } else { 2 };
            assert!(token.len() > code_len, "{token:?}");
            assert!(token.is_ascii(), "{token:?}");
        }
        for (index, &code) in (0..).zip(&DIRECT_CODES) {
            assert_eq!(direct_index(code), Some(index));
        }
        assert_eq!(direct_index(ESCAPE), None);
        assert_eq!(
            (0..=255).filter_map(direct_index).count(),
            DIRECT_CODES.len()
        );
        for code in DIRECT_CODES.iter().chain([&ESCAPE]) {
            assert!(std::str::from_utf8(&[*code]).is_err());
            assert!(is_code_byte(*code));
        }
        assert_eq!((0..=255u8).filter(|&b| is_code_byte(b)).count(), 13);
    }

    #[test]
    fn the_example_endpoint_is_coded_small() {
        assert_eq!(EXAMPLE.len(), 160);
        let coded = encode(EXAMPLE).unwrap();
        // Six tokens of a byte each (one holds the service account `default`) and the 35
        // bytes of data.
        assert_eq!(coded.len(), 41, "{coded:?}");
        assert_eq!(decode(&coded), EXAMPLE);
        assert!(decoded_eq(&coded, EXAMPLE));
    }

    #[test]
    fn endpoints_of_every_shape_round_trip() {
        let full = {
            let mut ep = mk_endpoint("10.1.0.5");
            ep.namespace = Some("bench".into());
            ep.pod = Some("pod-12345".into());
            ep.service_account = Some("default".into());
            ep
        };
        let value = codec::encode_endpoint(&full);
        assert_eq!(&value[..], EXAMPLE);
        assert!(assert_round_trip(&value) <= 60);

        let bare = mk_endpoint("10.1.0.6");
        let pod_only = {
            let mut ep = mk_endpoint("fd00::6");
            ep.pod = Some("web-0".into());
            ep.service_account = Some("builder".into());
            ep.encrypt_key = 4;
            ep.metadata = "meta".into();
            ep
        };
        let cidr = Endpoint::new(
            "10.5.0.0/24".parse::<IpPrefix>().unwrap(),
            IdentityId::new(2).unwrap(),
        );
        // Every field set, a named port among them.
        let named_ports = fixtures::mk_endpoint(&mk_cluster(), "10.1.0.7");
        for ep in [bare, pod_only, cidr, named_ports] {
            let value = codec::encode_endpoint(&ep);
            assert_shrinks(&value, 2);
        }
    }

    #[test]
    fn identities_round_trip() {
        let cluster = mk_cluster();
        let labels: Labels = [
            Label::k8s("app", "app-17").unwrap(),
            Label::k8s("io.kubernetes.pod.namespace", "bench").unwrap(),
            Label::k8s("io.cilium.k8s.policy.cluster", "cluster3").unwrap(),
            Label::k8s("io.cilium.k8s.policy.serviceaccount", "default").unwrap(),
        ]
        .into_iter()
        .collect();
        let identity = Identity::new(&cluster, IdentityId::new(196_611).unwrap(), labels).unwrap();
        let value = codec::encode_identity(&identity);
        assert_shrinks(&value, 3);
    }

    #[test]
    fn nodes_round_trip() {
        let cluster = mk_cluster();
        let mut node = Node::new("node-7", cluster.name.clone(), cluster.id).unwrap();
        node.addresses.push(NodeAddress {
            kind: "InternalIP".into(),
            ip: "10.0.0.7".parse().unwrap(),
        });
        let value = codec::encode_node(&node);
        assert_shrinks(&value, 5);

        node.addresses.push(NodeAddress {
            kind: "CiliumInternalIP".into(),
            ip: "10.244.0.10".parse().unwrap(),
        });
        node.ipv4_alloc_cidr = Some("10.244.0.0/24".parse().unwrap());
        node.ipv6_alloc_cidr = Some("fd00:10::/64".parse().unwrap());
        node.ipv4_secondary_alloc_cidrs = vec!["10.2.0.0/20".parse().unwrap()];
        node.ipv4_health_ip = Some("10.244.0.134".parse().unwrap());
        node.source = "custom-resource".into();
        node.encryption_key = 3;
        node.labels
            .insert("kubernetes.io/hostname".into(), "node-7".into());
        node.annotations
            .insert("network.cilium.io/wg-pub-key".into(), "VRksOB6Z=".into());
        node.wireguard_pub_key = "VRksOB6Z=".into();
        node.boot_id = "570d3fd1-93db-4862-ba99-6a3c2c10c38f".into();
        let value = codec::encode_node(&node);
        assert_shrinks(&value, 2);
    }

    #[test]
    fn services_of_both_formats_round_trip() {
        let svc = fixtures::mk_service(&mk_cluster(), "bench", "svc-3");
        for value in [
            codec::encode_service(&svc),
            codec::encode_fleetmesh_service(&svc),
        ] {
            assert_shrinks(&value, 2);
        }
    }

    #[test]
    fn cluster_configs_round_trip() {
        for mode in [IdMode::Normal, IdMode::Extended] {
            let cfg = ClusterConfig {
                id: ClusterId::new(3, mode).unwrap(),
                capabilities: Capabilities::fleetmesh(mode),
            };
            let value = codec::encode_cluster_config(&cfg);
            assert_shrinks(&value, 3);
        }
    }

    #[test]
    fn awkward_values_round_trip() {
        let mut all_bytes: Vec<u8> = (0..=255).collect();
        let long: Vec<u8> = EXAMPLE.repeat(1000);
        let tokens_back_to_back: Vec<u8> = TOKENS.concat();
        let cut_short = &EXAMPLE[..EXAMPLE.len() - 1];
        let cut_token = br#"{"IP":"1","Mask":null,"Hos"#;
        assert_eq!(encode(b""), None);
        assert_eq!(encode(b"plain text, no token"), None);
        for value in [
            &b"null"[..],
            br#"{"IP":""#,
            br#"{"IP":"{"IP":""}"#,
            &tokens_back_to_back,
            cut_short,
            cut_token,
            &long,
            "unicode ✓ stays {\"IP\":\"é\"}".as_bytes(),
        ] {
            assert!(encode(value).is_some(), "{value:?}");
            assert_round_trip(value);
        }
        // At most a code per token: a longer token may span two.
        assert!(
            assert_round_trip(&tokens_back_to_back)
                <= DIRECT_CODES.len() + 2 * (TOKENS.len() - DIRECT_CODES.len())
        );
        // A token cut short is no token.
        assert_eq!(encode(b"k8s"), None);
        // Code bytes cannot be literals: such values are not coded.
        all_bytes.extend_from_slice(EXAMPLE);
        for value in [&all_bytes[..], b"null\xff", b"\xc0", b"true\xf5\x00"] {
            assert_eq!(encode(value), None, "{value:?}");
        }
    }
}
