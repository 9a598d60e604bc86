//! Fixture table: for every invalid-packet reason, a packet built from a valid one with one
//! change, and the reason the parser must give. Plus valid packets of every link type.

use std::net::{Ipv4Addr, Ipv6Addr};

use datapath::packet::builder::PacketBuilder;
use datapath::packet::{InvalidReason as R, L3, LinkType, PacketMeta, parse, tcp_flags};
use smoltcp::wire::checksum;

const L3_AT: usize = 14;

fn v4() -> PacketBuilder {
    PacketBuilder::eth().ipv4(Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(192, 0, 2, 10))
}

fn v6() -> PacketBuilder {
    PacketBuilder::eth().ipv6(
        "2001:db8::7".parse().unwrap(),
        "2001:db8::10".parse().unwrap(),
    )
}

fn whole(frame: &[u8]) -> PacketMeta {
    parse(LinkType::Ethernet, frame, frame.len() as u32, 0)
}

/// Parse a capture cut at `cut` bytes of a frame that was longer on the wire.
fn snapped(frame: &[u8], cut: usize) -> PacketMeta {
    parse(LinkType::Ethernet, &frame[..cut], frame.len() as u32, 0)
}

fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[L3_AT] & 0x0f) * 4;
    frame[L3_AT + 10..L3_AT + 12].fill(0);
    let sum = !checksum::data(&frame[L3_AT..L3_AT + ihl]);
    frame[L3_AT + 10..L3_AT + 12].copy_from_slice(&sum.to_be_bytes());
}

fn edited(frame: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut frame = frame;
    edit(&mut frame);
    frame
}

fn tcp_frame() -> Vec<u8> {
    v4().tcp(40000, 80).syn().mss(1460).build()
}

/// (name, frame, link, wire length, expected reason)
fn invalid_cases() -> Vec<(&'static str, PacketMeta, R)> {
    let tcp = tcp_frame();
    let tcp_at = L3_AT + 20;
    let udp = v4().udp(5353, 53).payload(b"query").build();
    let icmp = v4().echo_request(1, 1).payload(b"ping").build();
    let mut cases = vec![
        (
            "unsupported link",
            parse(LinkType::from_linktype(147), &tcp, 60, 0),
            R::UnsupportedLink,
        ),
        ("short ethernet", whole(&tcp[..10]), R::TruncatedLink),
        (
            "short sll",
            parse(LinkType::LinuxSll, &[0; 12], 12, 0),
            R::TruncatedLink,
        ),
        (
            "short null",
            parse(LinkType::Null, &[2, 0], 2, 0),
            R::TruncatedLink,
        ),
        (
            "short vlan tag",
            whole(&edited(tcp[..14].to_vec(), |f| {
                f[12..14].copy_from_slice(&[0x81, 0]);
                f.extend([0, 5])
            })),
            R::TruncatedVlan,
        ),
        (
            "five vlan tags",
            whole(
                &PacketBuilder::eth()
                    .vlan(1)
                    .vlan(2)
                    .vlan(3)
                    .vlan(4)
                    .vlan(5)
                    .ipv4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)
                    .udp(1, 2)
                    .build(),
            ),
            R::TooManyVlanTags,
        ),
        (
            "short mpls",
            whole(&edited(tcp[..14].to_vec(), |f| {
                f[12..14].copy_from_slice(&[0x88, 0x47]);
                f.extend([0, 1])
            })),
            R::TruncatedMpls,
        ),
        ("short ipv4", whole(&tcp[..L3_AT + 12]), R::TruncatedIpv4),
        (
            "short ipv6",
            whole(&v6().udp(1, 2).build()[..L3_AT + 30]),
            R::TruncatedIpv6,
        ),
        (
            "ipv6 hop-by-hop cut",
            whole(&v6().proto(0).payload(&[17, 5]).build()),
            R::TruncatedIpv6Extension,
        ),
        (
            "version 6 in ipv4 ethertype",
            whole(&edited(tcp.clone(), |f| f[L3_AT] = 0x65)),
            R::WrongIpVersion,
        ),
        (
            "ihl 4",
            whole(&edited(tcp.clone(), |f| f[L3_AT] = 0x44)),
            R::BadIpv4HeaderLength,
        ),
        (
            "total length 10",
            whole(&edited(tcp.clone(), |f| {
                f[L3_AT + 2..L3_AT + 4].copy_from_slice(&10u16.to_be_bytes());
                fix_ipv4_checksum(f)
            })),
            R::Ipv4TotalLengthTooShort,
        ),
        (
            "total length past frame",
            whole(&edited(tcp.clone(), |f| {
                let n = u16::from_be_bytes([f[16], f[17]]) + 10;
                f[16..18].copy_from_slice(&n.to_be_bytes());
                fix_ipv4_checksum(f)
            })),
            R::IpLengthBeyondFrame,
        ),
        (
            "ipv4 checksum",
            whole(&edited(tcp.clone(), |f| f[L3_AT + 10] ^= 0xff)),
            R::BadIpv4Checksum,
        ),
        (
            "ipv4 option length 0",
            whole(&bad_ipv4_option()),
            R::BadIpv4Options,
        ),
        (
            "tcp checksum",
            whole(&edited(tcp.clone(), |f| f[tcp_at + 16] ^= 1)),
            R::BadTcpChecksum,
        ),
        (
            "udp checksum",
            whole(&edited(udp.clone(), |f| f[L3_AT + 20 + 6] ^= 1)),
            R::BadUdpChecksum,
        ),
        (
            "icmp checksum",
            whole(&edited(icmp.clone(), |f| f[L3_AT + 20 + 2] ^= 1)),
            R::BadIcmpChecksum,
        ),
        (
            "icmpv6 checksum",
            whole(&edited(v6().echo_request(1, 1).build(), |f| {
                f[L3_AT + 40 + 2] ^= 1
            })),
            R::BadIcmpChecksum,
        ),
        (
            "udp length 4",
            whole(&edited(udp.clone(), |f| {
                f[L3_AT + 24..L3_AT + 26].copy_from_slice(&4u16.to_be_bytes())
            })),
            R::BadUdpLength,
        ),
        (
            "udp length past ip",
            whole(&edited(udp.clone(), |f| {
                f[L3_AT + 24..L3_AT + 26].copy_from_slice(&400u16.to_be_bytes())
            })),
            R::BadUdpLength,
        ),
        (
            "tcp data offset 4",
            whole(&edited(tcp.clone(), |f| f[tcp_at + 12] = 0x40)),
            R::BadTcpDataOffset,
        ),
        (
            "tcp data offset past segment",
            whole(&edited(tcp.clone(), |f| f[tcp_at + 12] = 0xf0)),
            R::BadTcpDataOffset,
        ),
        (
            "tcp option length 1",
            whole(&edited(tcp.clone(), |f| f[tcp_at + 21] = 1)),
            R::BadTcpOptions,
        ),
        (
            "mss option length 3",
            whole(&edited(
                v4().tcp(1, 2).syn().mss(1460).window_scale(2).build(),
                |f| f[tcp_at + 21] = 3,
            )),
            R::BadTcpOptions,
        ),
        (
            "null scan",
            whole(&v4().tcp(40000, 80).flags(0).build()),
            R::TcpNoFlags,
        ),
        (
            "syn+fin",
            whole(
                &v4()
                    .tcp(40000, 80)
                    .flags(tcp_flags::SYN | tcp_flags::FIN)
                    .build(),
            ),
            R::TcpSynFin,
        ),
        (
            "syn+rst",
            whole(
                &v4()
                    .tcp(40000, 80)
                    .flags(tcp_flags::SYN | tcp_flags::RST)
                    .build(),
            ),
            R::TcpSynRst,
        ),
        (
            "fin scan",
            whole(&v4().tcp(40000, 80).flags(tcp_flags::FIN).build()),
            R::TcpFinWithoutAck,
        ),
        (
            "xmas scan",
            whole(
                &v4()
                    .tcp(40000, 80)
                    .flags(tcp_flags::FIN | tcp_flags::PSH | tcp_flags::URG)
                    .build(),
            ),
            R::TcpFinWithoutAck,
        ),
        (
            "tcp port 0",
            whole(&v4().tcp(0, 80).syn().build()),
            R::PortZero,
        ),
        ("udp port 0", whole(&v4().udp(53, 0).build()), R::PortZero),
        (
            "ping of death",
            whole(&fragment(
                &v4().proto(1).payload(&[0; 100]).build(),
                65_528 / 8,
                false,
            )),
            R::FragmentOversize,
        ),
        (
            "tiny first fragment",
            whole(&fragment(
                &v4()
                    .proto(6)
                    .payload(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1])
                    .build(),
                0,
                true,
            )),
            R::FragmentTiny,
        ),
        (
            "ipv6 fragment header past payload",
            whole(&edited(
                v6().proto(44).payload(&[6, 0, 0, 1, 0, 0, 0, 9]).build(),
                |f| f[L3_AT + 4..L3_AT + 6].copy_from_slice(&4u16.to_be_bytes()),
            )),
            R::FragmentOversize,
        ),
    ];
    cases.push((
        "tcp header cut by snaplen",
        snapped(&tcp, tcp_at + 10),
        R::TruncatedTcp,
    ));
    cases.push((
        "udp header cut by snaplen",
        snapped(&udp, L3_AT + 24),
        R::TruncatedUdp,
    ));
    cases.push((
        "icmp message 4 bytes",
        whole(&v4().proto(1).payload(&[8, 0, 0xf7, 0xff]).build()),
        R::TruncatedIcmp,
    ));
    cases
}

fn bad_ipv4_option() -> Vec<u8> {
    let mut frame = v4().udp(1000, 53).build();
    // Grow the header to 24 bytes with an option whose length byte is 0.
    frame.splice(L3_AT + 20..L3_AT + 20, [0x07, 0x00, 0x00, 0x00]);
    frame[L3_AT] = 0x46;
    let total = u16::from_be_bytes([frame[16], frame[17]]) + 4;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut frame);
    frame
}

/// Turn an IPv4 frame into a fragment at `offset_units` × 8 bytes.
fn fragment(frame: &[u8], offset_units: u16, more: bool) -> Vec<u8> {
    let mut frame = frame.to_vec();
    let word = offset_units | if more { 0x2000 } else { 0 };
    frame[L3_AT + 6..L3_AT + 8].copy_from_slice(&word.to_be_bytes());
    fix_ipv4_checksum(&mut frame);
    frame
}

#[test]
fn every_invalid_case_gets_its_reason() {
    let cases = invalid_cases();
    let mut failures = Vec::new();
    for (name, meta, expected) in &cases {
        if meta.invalid != Some(*expected) {
            failures.push(format!(
                "{name}: expected {expected}, got {:?}",
                meta.invalid
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_parser_reason_has_a_fixture() {
    let covered: std::collections::BTreeSet<R> = invalid_cases().iter().map(|c| c.2).collect();
    // FragmentOverlap needs state across packets: see the fragment tracker's tests.
    let missing: Vec<_> = R::ALL
        .iter()
        .filter(|r| !covered.contains(r) && **r != R::FragmentOverlap)
        .collect();
    assert!(missing.is_empty(), "reasons without a fixture: {missing:?}");
}

#[test]
fn fields_survive_a_checksum_failure() {
    let meta = whole(&edited(tcp_frame(), |f| f[L3_AT + 20 + 16] ^= 1));
    assert_eq!(meta.invalid, Some(R::BadTcpChecksum));
    assert_eq!(
        (meta.sport, meta.dport, meta.tcp_flags),
        (Some(40000), Some(80), tcp_flags::SYN)
    );
}

#[test]
fn snapped_captures_are_not_invalid() {
    let frame = v4().tcp(40000, 443).payload(&[7; 1000]).build();
    let meta = snapped(&frame, 96);
    assert_eq!(meta.invalid, None);
    assert_eq!(meta.ip_len as usize, frame.len() - L3_AT);
    assert_eq!(meta.payload_len, 1000);
}

#[test]
fn ethernet_padding_is_not_invalid() {
    let mut frame = v4().tcp(40000, 80).syn().build();
    frame.resize(60.max(frame.len()), 0);
    frame.extend([0u8; 6]);
    assert_eq!(whole(&frame).invalid, None);
}

#[test]
fn link_types_reach_the_same_ip_packet() {
    let ip = PacketBuilder::raw_ip()
        .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
        .udp(1234, 53)
        .build();
    let ip6 = PacketBuilder::raw_ip()
        .ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST)
        .udp(1, 2)
        .build();
    let with = |header: &[u8], body: &[u8]| [header, body].concat();
    let mut sll = [0u8; 16];
    sll[14..16].copy_from_slice(&0x0800u16.to_be_bytes());
    let mut sll2 = [0u8; 20];
    sll2[0..2].copy_from_slice(&0x0800u16.to_be_bytes());
    let cases = [
        (LinkType::RawIp, ip.clone()),
        (LinkType::Ipv4, ip.clone()),
        (LinkType::Null, with(&2u32.to_le_bytes(), &ip)),
        (LinkType::Null, with(&2u32.to_be_bytes(), &ip)),
        (LinkType::Loop, with(&2u32.to_be_bytes(), &ip)),
        (LinkType::LinuxSll, with(&sll, &ip)),
        (LinkType::LinuxSll2, with(&sll2, &ip)),
    ];
    for (link, frame) in cases {
        let meta = parse(link, &frame, frame.len() as u32, 0);
        assert_eq!(meta.invalid, None, "{link:?}");
        assert_eq!((meta.l3, meta.dport), (L3::Ipv4, Some(53)), "{link:?}");
    }
    for (link, frame) in [
        (LinkType::RawIp, ip6.clone()),
        (LinkType::Ipv6, ip6.clone()),
        (LinkType::Null, with(&30u32.to_le_bytes(), &ip6)),
    ] {
        let meta = parse(link, &frame, frame.len() as u32, 0);
        assert_eq!(
            (meta.l3, meta.invalid, meta.dport),
            (L3::Ipv6, None, Some(2)),
            "{link:?}"
        );
    }
}

#[test]
fn ipv6_extension_headers_lead_to_the_transport_header() {
    // hop-by-hop (8 bytes) → destination options (8 bytes) → fragment (first, more) → UDP.
    let udp = [0x04, 0xd2, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00];
    let mut payload = vec![60, 0, 1, 4, 0, 0, 0, 0];
    payload.extend([44, 0, 1, 4, 0, 0, 0, 0]);
    payload.extend([17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]);
    payload.extend(udp);
    let frame = v6().proto(0).payload(&payload).build();
    let meta = whole(&frame);
    assert_eq!(meta.invalid, None);
    assert_eq!(meta.proto, Some(17));
    assert_eq!((meta.sport, meta.dport), (Some(1234), Some(53)));
    assert!(meta.frag.is_fragment && meta.frag.more && meta.frag.offset == 0);
    assert_eq!(meta.frag.id, 0xdead_beef);
    assert_eq!(usize::from(meta.l4_offset), L3_AT + 40 + 24);
}

#[test]
fn non_first_fragments_have_no_ports() {
    let frame = fragment(&v4().proto(17).payload(&[1; 40]).build(), 185, false);
    let meta = whole(&frame);
    assert_eq!(meta.invalid, None);
    assert!(meta.frag.is_fragment);
    assert_eq!(
        (meta.frag.offset, meta.sport, meta.l4_offset),
        (1480, None, 0)
    );
}

#[test]
fn vlan_stacks_are_read_outermost_first() {
    let frame = PacketBuilder::eth()
        .qinq(300)
        .vlan(42)
        .ipv4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)
        .udp(1, 2)
        .build();
    let meta = whole(&frame);
    assert_eq!(
        (meta.vlans(), meta.inner_vlan()),
        (&[300u16, 42][..], Some(42))
    );
    assert_eq!(usize::from(meta.l3_offset), 14 + 8);
}
