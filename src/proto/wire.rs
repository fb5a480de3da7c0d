//! Field-level conversions shared by the resource conversions: addresses, prefixes,
//! ports and narrowed integers. Everything read from the wire is checked here, with
//! the field named in the error.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use super::ProtoError;
use super::v1;
use crate::model::{ClusterId, ClusterName, IpPrefix, L4Addr, PortMap};

/// An address as 4 or 16 bytes.
pub(super) fn ip_to_wire(ip: IpAddr) -> Bytes {
    match ip {
        IpAddr::V4(v4) => Bytes::copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => Bytes::copy_from_slice(&v6.octets()),
    }
}

pub(super) fn optional_ip_to_wire(ip: Option<IpAddr>) -> Bytes {
    ip.map(ip_to_wire).unwrap_or_default()
}

/// An address from 4 or 16 bytes.
pub(super) fn ip_from_wire(field: &'static str, bytes: &[u8]) -> Result<IpAddr, ProtoError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::V6(Ipv6Addr::from(v6)));
    }
    Err(ProtoError::value(
        field,
        hex::encode(bytes),
        "an address is 4 or 16 bytes",
    ))
}

/// An address from 4 or 16 bytes, or none from empty bytes.
pub(super) fn optional_ip_from_wire(
    field: &'static str,
    bytes: &[u8],
) -> Result<Option<IpAddr>, ProtoError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    ip_from_wire(field, bytes).map(Some)
}

/// A textual address, `""` for none.
pub(super) fn optional_text(value: Option<impl Display>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// An address in text, or none from `""`.
pub(super) fn text_ip_from_wire(
    field: &'static str,
    text: &str,
) -> Result<Option<IpAddr>, ProtoError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| ProtoError::value(field, text, "not an IP address"))
}

/// A prefix as `<ip>/<len>` (always with the length, so a host prefix reads back as one).
pub(super) fn prefix_to_wire(prefix: IpPrefix) -> String {
    format!("{}/{}", prefix.addr(), prefix.prefix_len())
}

/// A prefix from `<ip>/<len>` (or a bare address), or none from `""`.
pub(super) fn prefix_from_wire(
    field: &'static str,
    text: &str,
) -> Result<Option<IpPrefix>, ProtoError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(ProtoError::model(field))
}

pub(super) fn prefixes_from_wire(
    field: &'static str,
    texts: &[String],
) -> Result<Vec<IpPrefix>, ProtoError> {
    texts
        .iter()
        .map(|t| prefix_from_wire(field, t)?.ok_or(ProtoError::Missing { field }))
        .collect()
}

/// A `u32` on the wire that the model holds in a narrower type.
pub(super) fn narrow<T: TryFrom<u32>>(field: &'static str, value: u32) -> Result<T, ProtoError> {
    T::try_from(value).map_err(|_| ProtoError::value(field, value, "out of range"))
}

pub(super) fn ports_to_wire(ports: &PortMap) -> Vec<v1::Port> {
    ports
        .iter()
        .map(|(name, addr)| l4_to_wire(name, *addr))
        .collect()
}

pub(super) fn l4_to_wire(name: &str, addr: L4Addr) -> v1::Port {
    v1::Port {
        name: name.to_string(),
        protocol: addr.protocol.as_str().to_string(),
        port: u32::from(addr.port),
    }
}

pub(super) fn l4_from_wire(field: &'static str, port: &v1::Port) -> Result<L4Addr, ProtoError> {
    Ok(L4Addr {
        protocol: port.protocol.parse().map_err(ProtoError::model(field))?,
        port: narrow(field, port.port)?,
    })
}

/// Ports by name; a name given twice is refused (which of the two would be meant?).
pub(super) fn ports_from_wire(
    field: &'static str,
    ports: Vec<v1::Port>,
) -> Result<PortMap, ProtoError> {
    let mut map = PortMap::new();
    for port in ports {
        let addr = l4_from_wire(field, &port)?;
        insert_unique(&mut map, port.name, addr, field)?;
    }
    Ok(map)
}

/// Inserts into a map built from a repeated field, refusing a key given twice.
pub(super) fn insert_unique<K: Ord + Display, V>(
    map: &mut BTreeMap<K, V>,
    key: K,
    value: V,
    field: &'static str,
) -> Result<(), ProtoError> {
    match map.entry(key) {
        Entry::Vacant(slot) => {
            slot.insert(value);
            Ok(())
        }
        Entry::Occupied(slot) => Err(ProtoError::value(field, slot.key(), "given twice")),
    }
}

/// Checks that a resource names the serving cluster, by name and by id.
pub(super) fn check_cluster(
    (name_field, name): (&'static str, &str),
    (id_field, id): (&'static str, u32),
    peer: &crate::model::Cluster,
) -> Result<(ClusterName, ClusterId), ProtoError> {
    if name != peer.name.as_str() {
        return Err(ProtoError::WrongCluster {
            field: name_field,
            found: name.to_string(),
            expected: peer.name.to_string(),
        });
    }
    if id != peer.id.get() {
        return Err(ProtoError::WrongCluster {
            field: id_field,
            found: id.to_string(),
            expected: peer.id.to_string(),
        });
    }
    Ok((peer.name.clone(), peer.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_4_or_16_bytes() {
        for ip in ["10.1.2.3", "fd00::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_from_wire("t", &ip_to_wire(ip)).unwrap(), ip);
        }
        let err = ip_from_wire("endpoint.ip", &[10, 0, 0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid endpoint.ip \"0a0000\": an address is 4 or 16 bytes"
        );
        assert_eq!(optional_ip_from_wire("t", &[]).unwrap(), None);
    }

    #[test]
    fn prefixes_keep_their_length() {
        let host: IpPrefix = "10.0.0.1".parse().unwrap();
        assert_eq!(prefix_to_wire(host), "10.0.0.1/32");
        assert_eq!(
            prefix_from_wire("t", &prefix_to_wire(host)).unwrap(),
            Some(host)
        );
        assert_eq!(prefix_from_wire("t", "").unwrap(), None);
        assert!(matches!(
            prefix_from_wire("node.ipv4_alloc_cidr", "10.0.0.0/33"),
            Err(ProtoError::Model {
                field: "node.ipv4_alloc_cidr",
                ..
            })
        ));
    }

    #[test]
    fn ports_are_checked() {
        let port = |name: &str, protocol: &str, port: u32| v1::Port {
            name: name.to_string(),
            protocol: protocol.to_string(),
            port,
        };
        let ok = ports_from_wire("p", vec![port("", "UDP", 53), port("http", "TCP", 80)]);
        assert_eq!(ok.unwrap().len(), 2);
        for (bad, why) in [
            (vec![port("a", "TCP", 70_000)], "out of range"),
            (vec![port("a", "ICMP", 1)], "invalid p"),
            (
                vec![port("a", "TCP", 1), port("a", "UDP", 2)],
                "given twice",
            ),
        ] {
            let err = ports_from_wire("p", bad).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }
}
