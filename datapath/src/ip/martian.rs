//! The kernel's address classes for the routing decision of a received packet.
//!
//! IPv4 follows `ip_route_input_slow` / `ip_route_input_rcu` (net/ipv4/route.c):
//! - martian source: multicast (224/4), limited broadcast (255.255.255.255), 0.0.0.0 (only
//!   that address: since Linux 5.3 `ipv4_is_zeronet` is `addr == 0`, the rest of 0/8 is
//!   unicast), loopback (127/8, `route_localnet` off);
//! - martian destination: 0.0.0.0, loopback;
//! - not unicast-forwarded: multicast destinations (no multicast routing: delivered locally
//!   when the group is joined, else dropped), the limited broadcast and the directed broadcast
//!   of a connected network (`brd_input`: local delivery).
//!
//! IPv6 follows `ipv6_rcv` / `ip6_rcv_core` (net/ipv6/ip6_input.c) and `ip6_forward`
//! (net/ipv6/ip6_output.c): multicast, loopback, unspecified and link-local sources are never
//! forwarded (`ip6_forward`'s "security critical" check; link-local sources get an ICMPv6
//! "beyond scope" error), nor are loopback, unspecified and link-local
//! destinations (no route: link-local routes are per interface); multicast destinations are
//! not forwarded (no multicast routing).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why the routing decision refuses a packet, by address class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A source address no router accepts.
    MartianSource,
    /// IPv6 link-local source: not forwarded, answered with ICMPv6 "beyond scope".
    LinkLocalSource,
    /// A destination address no router forwards to.
    MartianDestination,
    /// Multicast or broadcast destination: not unicast-forwarded.
    NotUnicast,
}

/// The refusal of a packet `src → dst`, if any. `broadcasts` are the directed-broadcast
/// addresses of the appliance's connected IPv4 networks.
#[inline]
pub fn refusal(src: IpAddr, dst: IpAddr, broadcasts: &[Ipv4Addr]) -> Option<Refusal> {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => refusal_v4(src, dst, broadcasts),
        (IpAddr::V6(src), IpAddr::V6(dst)) => refusal_v6(src, dst),
        _ => None,
    }
}

/// IPv4, in `ip_route_input_slow`'s order.
pub fn refusal_v4(src: Ipv4Addr, dst: Ipv4Addr, broadcasts: &[Ipv4Addr]) -> Option<Refusal> {
    let (s, d) = (u32::from(src), u32::from(dst));
    // Fast path: both addresses in 1.0.0.0–126.255.255.255 or 128.0.0.0–223.255.255.255.
    let plain = |a: u32| {
        let first = a >> 24;
        (1..224).contains(&first) && first != 127
    };
    if plain(s) && plain(d) && broadcasts.is_empty() {
        return None;
    }
    if src.is_multicast() || src.is_broadcast() {
        return Some(Refusal::MartianSource);
    }
    if dst.is_broadcast() || (s == 0 && d == 0) {
        return Some(Refusal::NotUnicast);
    }
    if s == 0 {
        return Some(Refusal::MartianSource);
    }
    if d == 0 || dst.is_loopback() {
        return Some(Refusal::MartianDestination);
    }
    if src.is_loopback() {
        return Some(Refusal::MartianSource);
    }
    if dst.is_multicast() || broadcasts.contains(&dst) {
        return Some(Refusal::NotUnicast);
    }
    None
}

fn link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// IPv6 (`ip6_rcv_core`, `ip6_route_input`, `ip6_forward`).
pub fn refusal_v6(src: Ipv6Addr, dst: Ipv6Addr) -> Option<Refusal> {
    if src.is_multicast() || src.is_loopback() || src.is_unspecified() {
        return Some(Refusal::MartianSource);
    }
    if dst.is_multicast() {
        return Some(Refusal::NotUnicast);
    }
    if dst.is_loopback() || dst.is_unspecified() || link_local(dst) {
        return Some(Refusal::MartianDestination);
    }
    link_local(src).then_some(Refusal::LinkLocalSource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_classes_follow_ip_route_input_slow() {
        let v4 = |s: &str, d: &str| refusal_v4(s.parse().unwrap(), d.parse().unwrap(), &[]);
        assert_eq!(v4("198.51.100.1", "192.0.2.1"), None);
        assert_eq!(v4("0.1.2.3", "192.0.2.1"), None, "0/8 is unicast since 5.3");
        assert_eq!(v4("240.0.0.1", "192.0.2.1"), None, "class E is routed");
        assert_eq!(v4("0.0.0.0", "192.0.2.1"), Some(Refusal::MartianSource));
        assert_eq!(v4("224.0.0.5", "192.0.2.1"), Some(Refusal::MartianSource));
        assert_eq!(
            v4("255.255.255.255", "192.0.2.1"),
            Some(Refusal::MartianSource)
        );
        assert_eq!(v4("127.0.0.1", "192.0.2.1"), Some(Refusal::MartianSource));
        assert_eq!(
            v4("192.0.2.9", "127.0.0.1"),
            Some(Refusal::MartianDestination)
        );
        assert_eq!(
            v4("192.0.2.9", "0.0.0.0"),
            Some(Refusal::MartianDestination)
        );
        assert_eq!(v4("0.0.0.0", "0.0.0.0"), Some(Refusal::NotUnicast));
        assert_eq!(v4("192.0.2.9", "239.1.1.1"), Some(Refusal::NotUnicast));
        assert_eq!(v4("0.0.0.0", "255.255.255.255"), Some(Refusal::NotUnicast));
        let directed = refusal_v4(
            "192.0.2.9".parse().unwrap(),
            "10.0.0.255".parse().unwrap(),
            &["10.0.0.255".parse().unwrap()],
        );
        assert_eq!(directed, Some(Refusal::NotUnicast));
    }

    #[test]
    fn ipv6_classes_follow_ip6_forward() {
        let v6 = |s: &str, d: &str| refusal_v6(s.parse().unwrap(), d.parse().unwrap());
        assert_eq!(v6("2001:db8::1", "2001:db8::2"), None);
        assert_eq!(v6("fe80::1", "2001:db8::2"), Some(Refusal::LinkLocalSource));
        assert_eq!(v6("::1", "2001:db8::2"), Some(Refusal::MartianSource));
        assert_eq!(v6("::", "2001:db8::2"), Some(Refusal::MartianSource));
        assert_eq!(v6("ff02::1", "2001:db8::2"), Some(Refusal::MartianSource));
        assert_eq!(v6("2001:db8::1", "ff02::1"), Some(Refusal::NotUnicast));
        assert_eq!(
            v6("2001:db8::1", "fe80::2"),
            Some(Refusal::MartianDestination)
        );
        assert_eq!(v6("2001:db8::1", "::1"), Some(Refusal::MartianDestination));
    }
}
