//! The IP layer's fixture table, shared by the datapath's tests (the pipeline's verdicts)
//! and the kernel tests (the same packets through the Linux kernel): per outcome a named
//! case of one or more frames and the outcome expected of each frame.
//!
//! Cases assume `[ip] mtu = 1400`, connection tracking on (reassembly) and otherwise the defaults ([`FIXTURE_MTU`]). A held
//! fragment's expected outcome is its datagram's (as the kernel runner attributes it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::packet::builder::PacketBuilder;
use crate::packet::checksum;

/// The egress MTU the fixtures assume.
pub const FIXTURE_MTU: u32 = 1400;

/// What a frame must come to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Forwarded.
    Forward,
    /// Dropped (by the IP layer: the reason's name).
    Drop(&'static str),
    /// Answered with this ICMP / ICMPv6 error (type, code).
    Icmp(u8, u8),
    /// Forwarded in IPv4 fragments: (offset, total length, MF) of each, in order.
    Fragments(&'static [(u32, u32, bool)]),
}

/// One case: frames in order, each with its expected outcome.
#[derive(Clone, Debug)]
pub struct Case {
    /// Name (the outcome it covers).
    pub name: &'static str,
    /// The frames and their expected outcomes.
    pub frames: Vec<(Vec<u8>, Expect)>,
}

fn v4(text: &str) -> IpAddr {
    IpAddr::V4(text.parse::<Ipv4Addr>().expect("IPv4 fixture address"))
}

fn v6(text: &str) -> IpAddr {
    IpAddr::V6(text.parse::<Ipv6Addr>().expect("IPv6 fixture address"))
}

fn udp(src: IpAddr, dst: IpAddr, ttl: u8, payload: usize) -> Vec<u8> {
    PacketBuilder::eth()
        .ip(src, dst)
        .ttl(ttl)
        .udp(40_000, 53)
        .payload(&vec![0x61; payload])
        .build()
}

fn single(name: &'static str, frame: Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        frames: vec![(frame, expect)],
    }
}

/// Every case.
pub fn cases() -> Vec<Case> {
    let mut cases = martian_cases();
    cases.extend(forwarding_cases());
    cases.extend(fragment_cases());
    cases
}

/// Martian and non-unicast addresses (IPv4 and IPv6), and their unicast neighbours.
pub fn martian_cases() -> Vec<Case> {
    let dst = v4("192.0.2.80");
    let src = v4("198.51.100.7");
    let dst6 = v6("2001:db8::80");
    let src6 = v6("2001:db8:1::7");
    let table: [(&'static str, IpAddr, IpAddr, Expect); 17] = [
        (
            "source 0.0.0.0",
            v4("0.0.0.0"),
            dst,
            Expect::Drop("martian_source"),
        ),
        (
            "source 0.1.2.3 (unicast since 5.3)",
            v4("0.1.2.3"),
            dst,
            Expect::Forward,
        ),
        (
            "source 240.0.0.1 (class E routed)",
            v4("240.0.0.1"),
            dst,
            Expect::Forward,
        ),
        (
            "multicast source",
            v4("224.0.0.5"),
            dst,
            Expect::Drop("martian_source"),
        ),
        (
            "broadcast source",
            v4("255.255.255.255"),
            dst,
            Expect::Drop("martian_source"),
        ),
        (
            "loopback source",
            v4("127.0.0.1"),
            dst,
            Expect::Drop("martian_source"),
        ),
        (
            "loopback destination",
            src,
            v4("127.0.0.1"),
            Expect::Drop("martian_destination"),
        ),
        (
            "destination 0.0.0.0",
            src,
            v4("0.0.0.0"),
            Expect::Drop("martian_destination"),
        ),
        (
            "multicast destination",
            src,
            v4("239.1.1.1"),
            Expect::Drop("not_unicast"),
        ),
        (
            "broadcast destination",
            src,
            v4("255.255.255.255"),
            Expect::Drop("not_unicast"),
        ),
        (
            "IPv6 link-local source",
            v6("fe80::1"),
            dst6,
            Expect::Icmp(1, 2),
        ),
        (
            "IPv6 loopback source",
            v6("::1"),
            dst6,
            Expect::Drop("martian_source"),
        ),
        (
            "IPv6 unspecified source",
            v6("::"),
            dst6,
            Expect::Drop("martian_source"),
        ),
        (
            "IPv6 multicast source",
            v6("ff0e::5"),
            dst6,
            Expect::Drop("martian_source"),
        ),
        (
            "IPv6 multicast destination",
            src6,
            v6("ff0e::1:3"),
            Expect::Drop("not_unicast"),
        ),
        (
            "IPv6 link-local destination",
            src6,
            v6("fe80::2"),
            Expect::Drop("martian_destination"),
        ),
        (
            "IPv6 loopback destination",
            src6,
            v6("::1"),
            Expect::Drop("martian_destination"),
        ),
    ];
    table
        .into_iter()
        .map(|(name, s, d, expect)| single(name, udp(s, d, 64, 8), expect))
        .collect()
}

/// TTL / hop limit 0, 1, 2 and DF + MTU.
pub fn forwarding_cases() -> Vec<Case> {
    let dst = v4("192.0.2.80");
    let dst6 = v6("2001:db8::80");
    let big = FIXTURE_MTU as usize; // payload alone: the datagram exceeds the MTU
    vec![
        single(
            "TTL 0",
            udp(v4("198.51.100.10"), dst, 0, 8),
            Expect::Icmp(11, 0),
        ),
        single(
            "TTL 1",
            udp(v4("198.51.100.11"), dst, 1, 8),
            Expect::Icmp(11, 0),
        ),
        single(
            "TTL 2",
            udp(v4("198.51.100.12"), dst, 2, 8),
            Expect::Forward,
        ),
        single(
            "hop limit 1",
            udp(v6("2001:db8:1::11"), dst6, 1, 8),
            Expect::Icmp(3, 0),
        ),
        single(
            "hop limit 2",
            udp(v6("2001:db8:1::12"), dst6, 2, 8),
            Expect::Forward,
        ),
        single(
            "DF over the MTU",
            udp(v4("198.51.100.13"), dst, 64, big),
            Expect::Icmp(3, 4),
        ),
        single(
            "DF at the MTU",
            udp(v4("198.51.100.14"), dst, 64, big - 28),
            Expect::Forward,
        ),
        single(
            "IPv6 over the MTU",
            udp(v6("2001:db8:1::13"), dst6, 64, big),
            Expect::Icmp(2, 0),
        ),
        // ip_do_fragment: 1380 bytes of room after the header, 1376 (a multiple of 8) per
        // fragment but the last.
        single(
            "no DF over the MTU",
            without_df(udp(v4("198.51.100.15"), dst, 64, big)),
            Expect::Fragments(&[(0, 1396, true), (1376, 52, false)]),
        ),
        single(
            "no DF over twice the MTU",
            without_df(udp(v4("198.51.100.16"), dst, 64, 3000)),
            Expect::Fragments(&[(0, 1396, true), (1376, 1396, true), (2752, 276, false)]),
        ),
        single(
            "no DF at the MTU",
            without_df(udp(v4("198.51.100.17"), dst, 64, big - 28)),
            Expect::Forward,
        ),
    ]
}

/// The same IPv4 frame with DF clear (header checksum recomputed).
pub fn without_df(mut frame: Vec<u8>) -> Vec<u8> {
    const L3: usize = 14;
    let header_len = usize::from(frame[L3] & 0x0f) * 4;
    frame[L3 + 6] &= !0x40;
    frame[L3 + 10..L3 + 12].fill(0);
    let sum = checksum::field_bytes(checksum::partial(&frame[L3..L3 + header_len]));
    frame[L3 + 10..L3 + 12].copy_from_slice(&sum);
    frame
}

/// Fragment sets: complete (in and out of order), incomplete, overlapping; IPv4 and IPv6.
pub fn fragment_cases() -> Vec<Case> {
    let (src, dst) = (v4("198.51.100.20"), v4("192.0.2.80"));
    let (src6, dst6) = (v6("2001:db8:1::20"), v6("2001:db8::80"));
    let whole = |s, d| udp(s, d, 64, 40);
    let f = Expect::Forward;
    let complete = fragments(&whole(src, dst), 0x1001, &[(0, 24, true), (24, 24, false)]);
    let reordered = fragments(&whole(src, dst), 0x1002, &[(24, 24, false), (0, 24, true)]);
    let incomplete = fragments(&whole(src, dst), 0x1003, &[(0, 24, true)]);
    let overlapping = fragments(&whole(src, dst), 0x1004, &[(0, 24, true), (16, 32, false)]);
    let complete6 = fragments(
        &whole(src6, dst6),
        0x2001,
        &[(0, 24, true), (24, 24, false)],
    );
    let incomplete6 = fragments(&whole(src6, dst6), 0x2003, &[(24, 24, false)]);
    let overlapping6 = fragments(
        &whole(src6, dst6),
        0x2004,
        &[(0, 24, true), (16, 32, false)],
    );
    let halves = [(0, 24, true), (24, 24, false)];
    let expiring = fragments(&udp(src, dst, 1, 40), 0x1005, &halves);
    let expiring6 = fragments(&udp(src6, dst6, 1, 40), 0x2005, &halves);
    let gone = Expect::Drop("reassembly_incomplete");
    // The parser's overlap check (an invalid packet) sees the overlap before reassembly.
    let failed = Expect::Drop("invalid:fragment_overlap");
    let pair =
        |frames: Vec<Vec<u8>>, a: Expect, b: Expect| frames.into_iter().zip([a, b]).collect();
    vec![
        Case {
            name: "fragments complete",
            frames: pair(complete, f.clone(), f.clone()),
        },
        Case {
            name: "fragments reordered",
            frames: pair(reordered, f.clone(), f.clone()),
        },
        Case {
            name: "fragments incomplete",
            frames: vec![(incomplete[0].clone(), gone.clone())],
        },
        Case {
            name: "fragments overlapping",
            frames: pair(overlapping, failed.clone(), failed.clone()),
        },
        // The error quotes the reassembled datagram (offset and MF cleared).
        Case {
            name: "fragments with TTL 1",
            frames: pair(expiring, Expect::Icmp(11, 0), Expect::Icmp(11, 0)),
        },
        Case {
            name: "IPv6 fragments with hop limit 1",
            frames: pair(expiring6, Expect::Icmp(3, 0), Expect::Icmp(3, 0)),
        },
        Case {
            name: "IPv6 fragments complete",
            frames: pair(complete6, f.clone(), f),
        },
        Case {
            name: "IPv6 fragments incomplete",
            frames: vec![(incomplete6[0].clone(), gone)],
        },
        Case {
            name: "IPv6 fragments overlapping",
            frames: pair(overlapping6, failed.clone(), failed),
        },
    ]
}

/// Cut a whole Ethernet + IP datagram into fragments: `(offset, length, more)` of the IP
/// payload each (offsets multiples of 8), with identification `id`.
pub fn fragments(whole: &[u8], id: u32, pieces: &[(usize, usize, bool)]) -> Vec<Vec<u8>> {
    const L3: usize = 14;
    let v6 = whole[L3] >> 4 == 6;
    let header_len = if v6 {
        40
    } else {
        usize::from(whole[L3] & 0x0f) * 4
    };
    let payload = &whole[L3 + header_len..];
    pieces
        .iter()
        .map(|&(offset, length, more)| {
            let end = (offset + length).min(payload.len());
            let data = &payload[offset.min(end)..end];
            let mut frame = whole[..L3 + header_len].to_vec();
            if v6 {
                let next = frame[L3 + 6];
                frame[L3 + 6] = 44;
                let field = (offset as u16) | u16::from(more);
                frame.extend_from_slice(&[next, 0]);
                frame.extend_from_slice(&field.to_be_bytes());
                frame.extend_from_slice(&id.to_be_bytes());
                let length = (8 + data.len()) as u16;
                frame[L3 + 4..L3 + 6].copy_from_slice(&length.to_be_bytes());
            } else {
                let total = (header_len + data.len()) as u16;
                frame[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
                frame[L3 + 4..L3 + 6].copy_from_slice(&(id as u16).to_be_bytes());
                let field = ((offset / 8) as u16) | if more { 0x2000 } else { 0 };
                frame[L3 + 6..L3 + 8].copy_from_slice(&field.to_be_bytes());
                frame[L3 + 10..L3 + 12].fill(0);
                let sum = checksum::field_bytes(checksum::partial(&frame[L3..L3 + header_len]));
                frame[L3 + 10..L3 + 12].copy_from_slice(&sum);
            }
            frame.extend_from_slice(data);
            frame
        })
        .collect()
}
