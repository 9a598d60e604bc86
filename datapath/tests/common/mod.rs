//! Random valid flowmgr files and random packets over a small universe of values, so that
//! packets actually hit the rules (shared by the property tests).

#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datapath::packet::{L3, PacketMeta, ip_proto};
use proptest::prelude::*;

/// Interface names the tables are built with (`eth3` is never named in files).
pub const IFACES: [&str; 4] = ["eth0", "eth1", "eth2", "eth3"];
/// Director names files may use.
pub const DIRECTORS: [&str; 3] = ["web", "mail", "dns-farm"];

fn v4_address(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, host >> 2, host & 3)
}

fn v6_address(host: u8) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        0,
        0,
        0,
        u16::from(host >> 2),
        u16::from(host & 3),
    )
}

/// Optional `not`.
fn not() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => Just(""), 1 => Just("not ")]
}

fn v4_prefix() -> impl Strategy<Value = String> {
    (
        0u8..16,
        prop_oneof![Just(32u8), Just(31), Just(30), Just(28), Just(24), Just(0)],
    )
        .prop_map(|(host, length)| match length {
            32 => v4_address(host).to_string(),
            28 if host % 2 == 0 => format!("{}/255.255.255.240", v4_address(host)),
            _ => format!("{}/{length}", v4_address(host)),
        })
}

fn v6_prefix() -> impl Strategy<Value = String> {
    (
        0u8..16,
        prop_oneof![
            Just(128u8),
            Just(127),
            Just(126),
            Just(124),
            Just(64),
            Just(0)
        ],
    )
        .prop_map(|(host, length)| match length {
            128 => v6_address(host).to_string(),
            _ => format!("{}/{length}", v6_address(host)),
        })
}

fn port_range() -> impl Strategy<Value = String> {
    (20u16..28, 0u16..4).prop_map(|(first, width)| match width {
        0 => first.to_string(),
        _ => format!("{first}:{}", first + width),
    })
}

/// One rule line (without indentation), valid by construction.
fn rule() -> impl Strategy<Value = String> {
    let family = prop_oneof![Just(0u8), Just(4), Just(6)];
    let proto = proptest::option::of((not(), prop_oneof![Just("tcp"), Just("udp"), Just("icmp")]));
    (
        prop_oneof![Just("match"), Just("ignore")],
        family,
        proto,
        proptest::option::of((not(), 0usize..3)),
        proptest::option::of((not(), v4_prefix(), v6_prefix())),
        proptest::option::of((not(), v4_prefix(), v6_prefix())),
        proptest::option::of((not(), port_range())),
        proptest::option::of((not(), port_range())),
        proptest::option::of((not(), 0u8..4)),
    )
        .prop_map(
            |(kind, family, proto, iface, src, dst, sport, dport, icmp)| {
                let mut line = kind.to_owned();
                if let Some((negation, index)) = iface {
                    let _ = write!(line, " {negation}iface {}", IFACES[index]);
                }
                if let Some((negation, name)) = proto {
                    let _ = write!(line, " {negation}proto {name}");
                }
                for (keyword, prefix) in [("src", src), ("dst", dst)] {
                    if let Some((negation, v4, v6)) = prefix {
                        match family {
                            4 => {
                                let _ = write!(line, " {negation}{keyword} {v4}");
                            }
                            6 => {
                                let _ = write!(line, " {negation}{keyword} {v6}");
                            }
                            _ => {}
                        }
                    }
                }
                let ports_allowed = matches!(proto, Some(("", "tcp" | "udp")));
                for (keyword, range) in [("srcport", sport), ("dstport", dport)] {
                    if let (Some((negation, range)), true) = (range, ports_allowed) {
                        let _ = write!(line, " {negation}{keyword} {range}");
                    }
                }
                if let (Some((negation, icmp_type)), Some(("", "icmp")), 0 | 4) =
                    (icmp, proto, family)
                {
                    let _ = write!(line, " {negation}icmptype {icmp_type}");
                }
                line
            },
        )
}

fn policy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("permit".to_owned()),
        Just("deny".to_owned()),
        Just("skip".to_owned()),
        Just(String::new()),
        (0usize..DIRECTORS.len()).prop_map(|index| format!("director {}", DIRECTORS[index])),
        (1u32..300).prop_map(|id| format!("table {id}")),
    ]
}

/// A whole valid file: 1..`max_flows` flows of 0..5 rules.
pub fn flow_file(max_flows: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (policy(), proptest::collection::vec(rule(), 0..5)),
        1..max_flows,
    )
    .prop_map(|flows| {
        let mut text = String::from("# generated\n");
        for (index, (policy, rules)) in flows.iter().enumerate() {
            let _ = writeln!(text, "flow f{index}_x {policy}");
            for rule in rules {
                let _ = writeln!(text, "   {rule}");
            }
            text.push('\n');
        }
        text
    })
}

/// A random IP packet over the same universe (sometimes a fragment without ports).
pub fn packet() -> impl Strategy<Value = PacketMeta> {
    (
        any::<bool>(),
        0u8..16,
        0u8..16,
        prop_oneof![
            Just(ip_proto::TCP),
            Just(ip_proto::UDP),
            Just(ip_proto::ICMP),
            Just(ip_proto::ICMPV6),
            Just(47)
        ],
        (18u16..34, 18u16..34),
        0u8..5,
        0u16..5,
        prop_oneof![4 => Just(false), 1 => Just(true)],
    )
        .prop_map(
            |(ipv6, src, dst, proto, (sport, dport), icmp_type, iface, fragment)| {
                let (src, dst, l3) = if ipv6 {
                    (
                        IpAddr::V6(v6_address(src)),
                        IpAddr::V6(v6_address(dst)),
                        L3::Ipv6,
                    )
                } else {
                    (
                        IpAddr::V4(v4_address(src)),
                        IpAddr::V4(v4_address(dst)),
                        L3::Ipv4,
                    )
                };
                let has_ports = matches!(proto, ip_proto::TCP | ip_proto::UDP) && !fragment;
                let has_icmp = matches!(proto, ip_proto::ICMP | ip_proto::ICMPV6) && !fragment;
                PacketMeta {
                    iface,
                    l3,
                    src: Some(src),
                    dst: Some(dst),
                    proto: Some(proto),
                    sport: has_ports.then_some(sport),
                    dport: has_ports.then_some(dport),
                    icmp_type: has_icmp.then_some(icmp_type),
                    ..PacketMeta::default()
                }
            },
        )
}

/// The table configuration the generated files are built with.
pub fn config(with_directors: bool) -> datapath::flows::TableConfig {
    datapath::flows::TableConfig {
        iface_names: Some(IFACES.iter().map(|name| (*name).to_owned()).collect()),
        director_marks: with_directors.then(|| {
            DIRECTORS
                .iter()
                .enumerate()
                .map(|(index, name)| ((*name).to_owned(), 100 + index as u32))
                .collect()
        }),
    }
}
