//! Differential test of the parser: the fast-path `parse_with` must give exactly the same
//! `PacketMeta` (every field, and the same first invalid reason) as the reference parser it
//! replaced (`packet_reference/parse_v1.rs`), on random bytes of every link type and on
//! valid frames with bytes overwritten and the capture cut, with every checksum option.

#[path = "packet_reference/parse_v1.rs"]
#[allow(dead_code, clippy::all)]
mod reference;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, ParseOptions, checksum, parse_with};
use proptest::prelude::*;

const LINKS: [u32; 10] = [0, 1, 12, 101, 108, 113, 228, 229, 276, 147];

fn any_link() -> impl Strategy<Value = LinkType> {
    prop::sample::select(LINKS.to_vec()).prop_map(LinkType::from_linktype)
}

/// (verify IPv4 header checksum, verify L4 checksum)
fn any_options() -> impl Strategy<Value = (bool, bool)> {
    (any::<bool>(), any::<bool>())
}

fn any_addresses() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(a, b)| (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)))),
        (any::<u128>(), any::<u128>())
            .prop_map(|(a, b)| (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))),
    ]
}

/// A valid frame: VLAN tags, TCP (with options) / UDP / ICMP, a payload.
fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any_addresses(),
        prop::collection::vec(1u16..4095, 0..3),
        0u8..3,
        any::<u8>(),
        (any::<u16>(), any::<u16>()),
        prop::option::of(any::<u16>()),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(
            |(addresses, vlans, kind, flags, ports, mss, timestamps, payload)| {
                let mut builder = PacketBuilder::eth();
                for vid in &vlans {
                    builder = builder.vlan(*vid);
                }
                let builder = builder.ip(addresses.0, addresses.1);
                let builder = match kind {
                    0 => {
                        let mut tcp = builder.tcp(ports.0, ports.1).flags(flags);
                        if let Some(mss) = mss {
                            tcp = tcp.mss(mss);
                        }
                        if timestamps {
                            tcp = tcp.timestamps(1, 2);
                        }
                        tcp
                    }
                    1 => builder.udp(ports.0, ports.1),
                    _ => builder.echo_request(ports.0, ports.1),
                };
                builder.payload(&payload).build()
            },
        )
}

fn both(
    (ipv4, l4): (bool, bool),
    link: LinkType,
    frame: &[u8],
    wire_len: u32,
) -> (datapath::packet::PacketMeta, datapath::packet::PacketMeta) {
    let fast = ParseOptions {
        verify_ipv4_checksum: ipv4,
        verify_l4_checksum: l4,
    };
    let slow = reference::ParseOptions {
        verify_ipv4_checksum: ipv4,
        verify_l4_checksum: l4,
    };
    (
        parse_with(&fast, link, frame, wire_len, 7),
        reference::parse_with(&slow, link, frame, wire_len, 7),
    )
}

/// An Ethernet/IPv4/TCP frame whose option list is `options` (padded to whole words),
/// lengths and the IPv4 header checksum fixed up; the TCP checksum is left stale (the test parses with them off, or sees
/// the same bad-checksum verdict from both parsers).
fn tcp_with_options(options: &[u8], flags: u8) -> Vec<u8> {
    let mut frame = PacketBuilder::eth()
        .ipv4(Ipv4Addr::new(198, 51, 100, 7), Ipv4Addr::new(192, 0, 2, 10))
        .tcp(40000, 80)
        .flags(flags)
        .build();
    let tcp_at = 14 + 20;
    let mut padded = options.to_vec();
    padded.resize(options.len().div_ceil(4) * 4, 0);
    let at = tcp_at + 20;
    frame.splice(at..at, padded.iter().copied());
    frame[tcp_at + 12] = (((20 + padded.len()) / 4) as u8) << 4;
    let total = (frame.len() - 14) as u16;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame[24..26].fill(0);
    let field = checksum::field_bytes(checksum::partial(&frame[14..34]));
    frame[24..26].copy_from_slice(&field);
    frame
}

/// Option bytes biased towards the kinds the parser reads, with right and wrong lengths.
fn any_option_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(vec![0u8]),
        Just(vec![1u8]),
        any::<[u8; 2]>().prop_map(|[a, b]| vec![2, 4, a, b]),
        any::<u8>().prop_map(|shift| vec![3, 3, shift]),
        Just(vec![4u8, 2]),
        any::<[u8; 8]>().prop_map(|t| [vec![8u8, 10], t.to_vec()].concat()),
        (
            prop::sample::select(vec![2u8, 3, 4, 8, 5, 30, 254]),
            0u8..12
        )
            .prop_map(|(kind, len)| vec![kind, len]),
        prop::collection::vec(any::<u8>(), 1..6),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| {
        let mut bytes = pieces.concat();
        bytes.truncate(40);
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

    #[test]
    fn tcp_option_lists_parse_as_the_reference_does(
        options in any_option_bytes(),
        checks in any_options(),
        flags in any::<u8>(),
    ) {
        let frame = tcp_with_options(&options, flags);
        let (fast, slow) = both(checks, LinkType::Ethernet, &frame, frame.len() as u32);
        prop_assert_eq!(fast, slow);
        let (fast, slow) = both((true, false), LinkType::Ethernet, &frame, frame.len() as u32);
        prop_assert_eq!(&fast, &slow);
        prop_assert!(fast.tcp.is_some() || fast.invalid.is_some());
    }

    #[test]
    fn random_bytes_parse_as_the_reference_does(
        link in any_link(),
        options in any_options(),
        bytes in prop::collection::vec(any::<u8>(), 0..160),
        extra in 0u32..3,
    ) {
        let (fast, slow) = both(options, link, &bytes, bytes.len() as u32 + extra);
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn edited_frames_parse_as_the_reference_does(
        frame in any_frame(),
        options in any_options(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        snapped in any::<bool>(),
    ) {
        let mut frame = frame;
        for (position, value) in edits {
            let at = position.index(frame.len());
            frame[at] = value;
        }
        let cut = cut.index(frame.len() + 1);
        let wire_len = if snapped { frame.len() } else { cut } as u32;
        let (fast, slow) = both(options, LinkType::Ethernet, &frame[..cut], wire_len);
        prop_assert_eq!(fast, slow);
        let (fast, slow) = both(options, LinkType::Ethernet, &frame, frame.len() as u32);
        prop_assert_eq!(fast, slow);
    }
}
