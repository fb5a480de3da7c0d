//! Ports for servers whose address must be known before they start (a fleet profile
//! names every member's address, an etcd its peer URL).
//!
//! Binding port 0 and closing it again is racy: the kernel hands out the same ephemeral
//! ports to every `bind(0)` and `connect` on the machine, so under a parallel test run
//! another socket can take the port before its server binds it. Ports below the
//! ephemeral range are never handed out that way; one is taken at random and checked
//! free, so only another such pick could collide.

use std::net::{Ipv4Addr, TcpListener};

/// Where the kernel's ephemeral range starts when `/proc` does not say.
const DEFAULT_EPHEMERAL_START: u16 = 32768;
/// The lowest port picked: above the well-known and most registered services' ports.
const LOWEST: u16 = 20000;

/// A port on 127.0.0.1 that is free now and outside the kernel's ephemeral range.
pub fn free_port() -> std::io::Result<u16> {
    free_ports(1).map(|ports| ports[0])
}

/// `n` distinct such ports.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let end = ephemeral_start().max(LOWEST + 1000);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n * 1000 {
        if ports.len() == n {
            break;
        }
        let port = rand::random_range(LOWEST..end);
        if !ports.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            ports.push(port);
        }
    }
    if ports.len() < n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("no {n} free ports on 127.0.0.1 between {LOWEST} and {end}"),
        ));
    }
    Ok(ports)
}

fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports = free_ports(20).unwrap();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), 20);
        for port in ports {
            assert!((LOWEST..ephemeral_start()).contains(&port), "{port}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }
}
