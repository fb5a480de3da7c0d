//! Whether two IP prefixes share an address.

use std::net::IpAddr;

use crate::model::IpPrefix;

/// True if `a` and `b` are of one family and one contains the other's first address
/// (two prefixes either nest or are disjoint).
pub fn overlaps(a: IpPrefix, b: IpPrefix) -> bool {
    let len = u32::from(a.prefix_len().min(b.prefix_len()));
    match (a.addr(), b.addr()) {
        (IpAddr::V4(x), IpAddr::V4(y)) => same_leading_bits(
            u128::from(u32::from(x)) << 96,
            u128::from(u32::from(y)) << 96,
            len,
        ),
        (IpAddr::V6(x), IpAddr::V6(y)) => same_leading_bits(u128::from(x), u128::from(y), len),
        _ => false,
    }
}

/// True if the first `len` bits (from the top) of `x` and `y` are equal.
fn same_leading_bits(x: u128, y: u128, len: u32) -> bool {
    // `checked_shr` covers len 0: every address matches.
    (x ^ y).checked_shr(128 - len).unwrap_or(0) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    #[test]
    fn nested_and_equal_prefixes_overlap_disjoint_ones_do_not() {
        for (a, b, expected) in [
            ("10.0.0.0/8", "10.1.0.0/16", true),
            ("10.1.0.0/16", "10.0.0.0/8", true),
            ("10.1.0.0/16", "10.1.0.0/16", true),
            ("10.1.0.0/16", "10.2.0.0/16", false),
            ("10.1.0.0/16", "10.1.255.255", true),
            ("10.1.0.0/16", "10.2.0.1", false),
            ("0.0.0.0/0", "192.168.0.0/24", true),
            ("fd00::/64", "fd00::1", true),
            ("fd00::/64", "fd00:0:0:1::/64", false),
            ("::/0", "10.0.0.0/8", false),
            ("10.0.0.0/8", "fd00::/8", false),
        ] {
            assert_eq!(overlaps(p(a), p(b)), expected, "{a} vs {b}");
        }
    }
}
