//! How model values that have no serde form of their own (the model stays free of any
//! one wire format) are written in the views' JSON, for the query API and the CLI:
//! service names and prefixes as their usual strings, ports as
//! `{"protocol": "TCP", "port": 80}` by port name, labels as `source:key=value` strings.

use serde::{Deserialize, Serialize};

use crate::model::{Backend, BackendConditions, PortMap, Protocol};

/// Any value with `Display` and `FromStr` (service names, prefixes) as a JSON string.
pub(super) mod as_string {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct PortRepr {
    protocol: Protocol,
    port: u16,
}

/// A [`PortMap`] as `{"<name>": {"protocol": "TCP", "port": 80}}`.
pub(super) mod port_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::PortRepr;
    use crate::model::{L4Addr, PortMap};

    pub fn serialize<S: Serializer>(ports: &PortMap, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(ports.iter().map(|(name, a)| {
            (
                name,
                PortRepr {
                    protocol: a.protocol,
                    port: a.port,
                },
            )
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PortMap, D::Error> {
        let ports = BTreeMap::<String, PortRepr>::deserialize(d)?;
        Ok(ports
            .into_iter()
            .map(|(name, p)| {
                let addr = L4Addr {
                    protocol: p.protocol,
                    port: p.port,
                };
                (name, addr)
            })
            .collect())
    }
}

#[derive(Serialize, Deserialize)]
struct BackendRepr {
    #[serde(with = "port_map")]
    ports: PortMap,
    conditions: BackendConditions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    for_zones: Vec<String>,
}

/// A [`Backend`] as an object with its ports, conditions and topology.
pub(super) mod backend {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::BackendRepr;
    use crate::model::Backend;

    pub fn serialize<S: Serializer>(b: &Backend, s: S) -> Result<S::Ok, S::Error> {
        BackendRepr::from(b).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Backend, D::Error> {
        BackendRepr::deserialize(d).map(Backend::from)
    }
}

impl From<&Backend> for BackendRepr {
    fn from(b: &Backend) -> Self {
        Self {
            ports: b.ports.clone(),
            conditions: b.conditions,
            hostname: b.hostname.clone(),
            zone: b.zone.clone(),
            for_zones: b.for_zones.clone(),
        }
    }
}

impl From<BackendRepr> for Backend {
    fn from(r: BackendRepr) -> Self {
        Self {
            ports: r.ports,
            conditions: r.conditions,
            hostname: r.hostname,
            zone: r.zone,
            for_zones: r.for_zones,
        }
    }
}

/// Optional [`Labels`](crate::model::Labels) as a list of `source:key=value` strings,
/// sorted by key.
pub(super) mod labels {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::model::{Label, Labels};

    pub fn serialize<S: Serializer>(labels: &Option<Labels>, s: S) -> Result<S::Ok, S::Error> {
        match labels {
            None => s.serialize_none(),
            Some(labels) => s.collect_seq(labels.iter().map(ToString::to_string)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Labels>, D::Error> {
        let Some(strings) = Option::<Vec<String>>::deserialize(d)? else {
            return Ok(None);
        };
        strings
            .iter()
            .map(|s| s.parse::<Label>().map_err(serde::de::Error::custom))
            .collect::<Result<Labels, _>>()
            .map(Some)
    }
}
