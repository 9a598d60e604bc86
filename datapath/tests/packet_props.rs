//! Property tests of the parser: no bytes panic it, and what the builder emits parses back to
//! the same fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, parse, tcp_flags};
use proptest::prelude::*;

const LINKS: [u32; 10] = [0, 1, 12, 101, 108, 113, 228, 229, 276, 147];

fn any_link() -> impl Strategy<Value = LinkType> {
    prop::sample::select(LINKS.to_vec()).prop_map(LinkType::from_linktype)
}

#[derive(Debug, Clone)]
enum Transport {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        mss: Option<u16>,
        wscale: Option<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        id: u16,
        seq: u16,
    },
}

fn any_transport() -> impl Strategy<Value = Transport> {
    // Flag sets a legitimate stack sends (the parser rejects the impossible ones).
    let flags = prop::sample::select(vec![
        tcp_flags::SYN,
        tcp_flags::SYN | tcp_flags::ACK,
        tcp_flags::ACK,
        tcp_flags::ACK | tcp_flags::PSH,
        tcp_flags::FIN | tcp_flags::ACK,
        tcp_flags::RST,
        tcp_flags::RST | tcp_flags::ACK,
    ]);
    prop_oneof![
        (
            1..=u16::MAX,
            1..=u16::MAX,
            flags,
            any::<u32>(),
            prop::option::of(any::<u16>()),
            prop::option::of(0u8..15)
        )
            .prop_map(|(sport, dport, flags, seq, mss, wscale)| Transport::Tcp {
                sport,
                dport,
                flags,
                seq,
                mss,
                wscale
            }),
        (1..=u16::MAX, 1..=u16::MAX).prop_map(|(sport, dport)| Transport::Udp { sport, dport }),
        (any::<u16>(), any::<u16>()).prop_map(|(id, seq)| Transport::Icmp { id, seq }),
    ]
}

fn any_addresses() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(a, b)| (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)))),
        (any::<u128>(), any::<u128>())
            .prop_map(|(a, b)| (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(link in any_link(), bytes in prop::collection::vec(any::<u8>(), 0..200), extra in 0u32..2000) {
        let meta = parse(link, &bytes, bytes.len() as u32 + extra, 3);
        prop_assert_eq!(meta.iface, 3);
        prop_assert!(meta.cap_len as usize == bytes.len());
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        addresses in any_addresses(),
        transport in any_transport(),
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut frame = build(addresses, &transport, &[]);
        let at = position.index(frame.len());
        frame[at] = value;
        let cut = cut.index(frame.len() + 1);
        let _ = parse(LinkType::Ethernet, &frame[..cut], frame.len() as u32, 0);
        let _ = parse(LinkType::Ethernet, &frame[..cut], cut as u32, 0);
    }

    #[test]
    fn emit_then_parse_round_trips(
        addresses in any_addresses(),
        transport in any_transport(),
        vlans in prop::collection::vec(1u16..4095, 0..3),
        ttl in 1u8..=255,
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut builder = PacketBuilder::eth();
        for vid in &vlans {
            builder = builder.vlan(*vid);
        }
        let frame = transport_into(builder.ip(addresses.0, addresses.1).ttl(ttl), &transport, &payload).build();
        let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
        prop_assert_eq!(meta.invalid, None);
        prop_assert_eq!(meta.vlans(), vlans.as_slice());
        prop_assert_eq!((meta.src, meta.dst, meta.ttl), (Some(addresses.0), Some(addresses.1), ttl));
        prop_assert_eq!(meta.payload_len as usize, payload.len());
        match transport {
            Transport::Tcp { sport, dport, flags, seq, mss, wscale } => {
                let tcp = meta.tcp.expect("tcp header");
                prop_assert_eq!((meta.sport, meta.dport, meta.tcp_flags), (Some(sport), Some(dport), flags));
                prop_assert_eq!((tcp.seq, tcp.options.mss, tcp.options.window_scale), (seq, mss, wscale));
            }
            Transport::Udp { sport, dport } => {
                prop_assert_eq!((meta.proto, meta.sport, meta.dport), (Some(17), Some(sport), Some(dport)));
            }
            Transport::Icmp { .. } => {
                let echo = if addresses.0.is_ipv4() { 8 } else { 128 };
                prop_assert_eq!(meta.icmp_type, Some(echo));
            }
        }
    }
}

fn transport_into(builder: PacketBuilder, transport: &Transport, payload: &[u8]) -> PacketBuilder {
    let builder = match *transport {
        Transport::Tcp {
            sport,
            dport,
            flags,
            seq,
            mss,
            wscale,
        } => {
            let mut b = builder.tcp(sport, dport).flags(flags).seq_ack(seq, 0);
            if let Some(mss) = mss {
                b = b.mss(mss);
            }
            if let Some(shift) = wscale {
                b = b.window_scale(shift);
            }
            b
        }
        Transport::Udp { sport, dport } => builder.udp(sport, dport),
        Transport::Icmp { id, seq } => builder.echo_request(id, seq),
    };
    builder.payload(payload)
}

fn build(addresses: (IpAddr, IpAddr), transport: &Transport, payload: &[u8]) -> Vec<u8> {
    transport_into(
        PacketBuilder::eth().ip(addresses.0, addresses.1),
        transport,
        payload,
    )
    .build()
}
