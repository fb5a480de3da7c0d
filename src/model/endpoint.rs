use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::{IdentityId, L4Addr, ModelError};

/// An IP address with a prefix length; a host prefix (/32, /128) prints as the bare
/// address, as Cilium's ipcache keys do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, ModelError> {
        if len > max_len(addr) {
            return Err(ModelError::IpPrefix(format!("{addr}/{len}")));
        }
        Ok(Self { addr, len })
    }

    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: max_len(addr),
        }
    }

    pub fn addr(self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(self) -> u8 {
        self.len
    }

    pub fn is_host(self) -> bool {
        self.len == max_len(self.addr)
    }

    /// The netmask as bytes (4 or 16), as Go's `net.IPMask` holds it.
    pub fn mask_bytes(self) -> Vec<u8> {
        let total = usize::from(max_len(self.addr)) / 8;
        (0..total)
            .map(|i| {
                let bits = usize::from(self.len).saturating_sub(i * 8).min(8);
                (0xff_u16 << (8 - bits)) as u8
            })
            .collect()
    }

    /// The prefix from an address and a Go `net.IPMask` (4 or 16 bytes of leading ones).
    pub fn from_mask(addr: IpAddr, mask: &[u8]) -> Result<Self, ModelError> {
        let bad = || ModelError::IpPrefix(format!("{addr} with mask {mask:?}"));
        if mask.len() * 8 != usize::from(max_len(addr)) {
            return Err(bad());
        }
        let len: u32 = mask.iter().map(|b| b.leading_ones()).sum();
        let candidate = Self::new(addr, len as u8)?;
        if candidate.mask_bytes() != mask {
            return Err(bad());
        }
        Ok(candidate)
    }
}

fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl FromStr for IpPrefix {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ModelError::IpPrefix(s.to_string());
        match s.split_once('/') {
            None => Ok(Self::host(s.parse().map_err(|_| bad())?)),
            Some((addr, len)) => Self::new(
                addr.parse().map_err(|_| bad())?,
                len.parse().map_err(|_| bad())?,
            ),
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// A named container port, carried with ipcache entries for policies on named ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedPort {
    pub name: String,
    pub port: L4Addr,
}

/// An ipcache entry: which identity owns an IP (or prefix), and on which host it lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub prefix: IpPrefix,
    pub identity: IdentityId,
    /// The node hosting the endpoint (the tunnel endpoint); `None` when unknown.
    pub host_ip: Option<IpAddr>,
    /// IPsec key index.
    pub encrypt_key: u8,
    pub metadata: String,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub service_account: Option<String>,
    pub named_ports: Vec<NamedPort>,
}

impl Endpoint {
    /// An entry with only what every entry needs; the optional fields start empty.
    pub fn new(prefix: IpPrefix, identity: IdentityId) -> Self {
        Self {
            prefix,
            identity,
            host_ip: None,
            encrypt_key: 0,
            metadata: String::new(),
            namespace: None,
            pod: None,
            service_account: None,
            named_ports: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_print_like_ipcache_keys() {
        let host: IpPrefix = "10.244.2.74".parse().unwrap();
        assert!(host.is_host());
        assert_eq!(host.to_string(), "10.244.2.74");
        let net: IpPrefix = "10.0.0.0/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        let v6: IpPrefix = "fd00::1".parse().unwrap();
        assert_eq!(v6.prefix_len(), 128);
        assert!("10.0.0.0/33".parse::<IpPrefix>().is_err());
        assert!("not-an-ip".parse::<IpPrefix>().is_err());
    }

    #[test]
    fn masks_round_trip() {
        let p: IpPrefix = "10.244.0.0/24".parse().unwrap();
        assert_eq!(p.mask_bytes(), vec![255, 255, 255, 0]);
        assert_eq!(IpPrefix::from_mask(p.addr(), &p.mask_bytes()).unwrap(), p);
        let p: IpPrefix = "10.0.0.0/12".parse().unwrap();
        assert_eq!(p.mask_bytes(), vec![255, 240, 0, 0]);
        assert!(IpPrefix::from_mask(p.addr(), &[255, 0, 255, 0]).is_err());
        assert!(IpPrefix::from_mask(p.addr(), &[255, 0]).is_err());
    }
}
