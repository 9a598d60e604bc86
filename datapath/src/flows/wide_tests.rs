//! Differential tests of the indexed walk on wide tables: hundreds of flows, flows longer
//! than a 64-bit word of the index, `skip` flows and `ignore` rules that hold in most
//! flows. `classify` and `classify_counted` must agree with `trace` (the reference
//! interpreter) rule for rule. Files and packets come from a fixed-seed generator.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{FlowTable, StepOutcome, TableConfig};
use crate::packet::{L3, PacketMeta, ip_proto};

/// Xorshift generator: the same files and packets on every run.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn negation(&mut self) -> &'static str {
        if self.below(4) == 0 { "not " } else { "" }
    }
}

/// One rule line over a small universe of values, valid by construction.
fn rule_line(generator: &mut Generator) -> String {
    let mut line = String::from(if generator.below(3) == 0 {
        "ignore"
    } else {
        "match"
    });
    let proto = generator.below(5);
    if proto < 3 {
        let name = ["tcp", "udp", "icmp"][proto as usize];
        let negation = if generator.below(5) == 0 { "not " } else { "" };
        line.push_str(&format!(" {negation}proto {name}"));
        if negation.is_empty() && proto < 2 && generator.below(2) == 0 {
            let first = 20 + generator.below(6);
            let last = first + generator.below(3);
            line.push_str(&format!(" {}dstport {first}:{last}", generator.negation()));
        }
        if negation.is_empty() && proto == 2 && generator.below(2) == 0 {
            let icmp_type = generator.below(3);
            line.push_str(&format!(" {}icmptype {icmp_type}", generator.negation()));
        }
    }
    if generator.below(2) == 0 {
        let length = [32, 31, 30, 0][generator.below(4) as usize];
        let host = generator.below(8);
        line.push_str(&format!(
            " {}src 10.0.0.{host}/{length}",
            generator.negation()
        ));
    }
    if generator.below(3) == 0 {
        let host = generator.below(8);
        line.push_str(&format!(" {}dst 10.0.1.{host}/31", generator.negation()));
    }
    line
}

/// A file of `flows` flows; about one flow in eight is longer than a word (64 rules).
fn wide_file(generator: &mut Generator, flows: usize) -> String {
    let mut text = String::new();
    let mut rules = 0;
    for index in 0..flows {
        let policy = ["permit", "deny", "skip", "", "table 7"][generator.below(5) as usize];
        text.push_str(&format!("flow f{index} {policy}\n"));
        let count = if generator.below(8) == 0 {
            60 + generator.below(100)
        } else {
            1 + generator.below(6)
        };
        for _ in 0..count.min(4000 - rules) {
            text.push_str(&format!("  {}\n", rule_line(generator)));
            rules += 1;
        }
    }
    text
}

fn packet(generator: &mut Generator) -> PacketMeta {
    let proto = [ip_proto::TCP, ip_proto::UDP, ip_proto::ICMP, 47][generator.below(4) as usize];
    let transport = proto == ip_proto::TCP || proto == ip_proto::UDP;
    let (src, dst) = if generator.below(10) == 0 {
        let host = generator.below(8) as u16;
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, host)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, host)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, generator.below(8) as u8)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 1, generator.below(8) as u8)),
        )
    };
    PacketMeta {
        l3: if src.is_ipv4() { L3::Ipv4 } else { L3::Ipv6 },
        src: Some(src),
        dst: Some(dst),
        proto: Some(proto),
        sport: transport.then_some(1000),
        dport: transport.then(|| 20 + generator.below(9) as u16),
        icmp_type: (proto == ip_proto::ICMP).then(|| generator.below(3) as u8),
        ..PacketMeta::default()
    }
}

fn check_table(text: &str, generator: &mut Generator) {
    let table = FlowTable::from_source(text, &TableConfig::default())
        .unwrap_or_else(|errors| panic!("generated file rejected: {errors:?}"));
    let mut counters = table.counters();
    for _ in 0..300 {
        let meta = packet(generator);
        let trace = table.trace(&meta);
        assert_eq!(table.classify(&meta), trace.verdict, "{meta:?}");
        let before = counters.rule_hits.clone();
        assert_eq!(table.classify_counted(&meta, &mut counters), trace.verdict);
        let decided: Vec<usize> = trace
            .steps
            .iter()
            .filter(|step| step.outcome == StepOutcome::Held)
            .map(|step| step.rule)
            .collect();
        let counted: Vec<usize> = (0..before.len())
            .filter(|rule| counters.rule_hits[*rule] != before[*rule])
            .collect();
        assert_eq!(decided, counted, "{meta:?}");
    }
}

#[test]
fn wide_tables_agree_with_trace() {
    let mut generator = Generator(0x9e37_79b9_7f4a_7c15);
    for flows in [1, 20, 150, 400, 1200] {
        for _ in 0..4 {
            let text = wide_file(&mut generator, flows);
            check_table(&text, &mut generator);
        }
    }
}

#[test]
fn ignore_held_in_every_flow_reaches_the_catch_all() {
    let mut text = String::new();
    for index in 0..700 {
        text.push_str(&format!(
            "flow f{index} permit\n  ignore not src 172.16.0.0/12\n  match proto tcp dst 10.0.{}.1\n",
            index % 200
        ));
    }
    text.push_str("flow rest deny\n  match\n");
    let table = FlowTable::from_source(&text, &TableConfig::default()).expect("valid");
    let meta = PacketMeta {
        l3: L3::Ipv4,
        src: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1))),
        dst: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 3, 1))),
        proto: Some(ip_proto::TCP),
        sport: Some(1000),
        dport: Some(80),
        ..PacketMeta::default()
    };
    let verdict = table.classify(&meta).expect("the catch-all claims it");
    assert_eq!((verdict.flow, verdict.rule), (700, 1));
    let mut counters = table.counters();
    table.classify_counted(&meta, &mut counters);
    let ignores = (0..700)
        .filter(|flow| counters.rule_hits[flow * 2] == 1)
        .count();
    assert_eq!(ignores, 700);
    assert_eq!(counters.rule_hits[1400], 1);
    let inside = PacketMeta {
        src: Some(IpAddr::V4(Ipv4Addr::new(172, 20, 0, 1))),
        ..meta
    };
    let verdict = table.classify(&inside).expect("flow f3 claims it");
    assert_eq!((verdict.flow, verdict.rule), (3, 2));
}

/// A held `ignore` early in a flow longer than a word must shadow a held `match` at every
/// position of the following words, whatever the flow's alignment to the words.
#[test]
fn held_ignore_shadows_the_rest_of_a_long_flow_across_words() {
    let meta = PacketMeta {
        l3: L3::Ipv4,
        src: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        dst: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1))),
        proto: Some(ip_proto::UDP),
        sport: Some(1000),
        dport: Some(53),
        ..PacketMeta::default()
    };
    for (first, policy) in [("ignore", "permit"), ("match", "skip")] {
        for offset in [0, 1, 2, 31, 62, 63, 64] {
            for filler in [60, 61, 62, 63, 64, 65, 126, 127, 128] {
                let mut text = String::from("flow before permit\n");
                for _ in 0..offset + 1 {
                    text.push_str("  match src 10.9.9.9\n");
                }
                text.push_str(&format!("flow long {policy}\n  {first} src 10.0.0.1\n"));
                for _ in 0..filler {
                    text.push_str("  match src 10.9.9.9\n");
                }
                text.push_str("  match\nflow rest deny\n  match\n");
                let table = FlowTable::from_source(&text, &TableConfig::default()).expect("valid");
                let verdict = table.classify(&meta).expect("the catch-all claims it");
                assert_eq!((verdict.flow, verdict.rule), (2, 1), "{offset} {filler}");
                let mut counters = table.counters();
                table.classify_counted(&meta, &mut counters);
                let counted: Vec<usize> = (0..counters.rule_hits.len())
                    .filter(|rule| counters.rule_hits[*rule] == 1)
                    .collect();
                let long_start = offset + 1;
                let rest = long_start + filler + 2;
                assert_eq!(counted, vec![long_start, rest], "{offset} {filler}");
            }
        }
    }
}

/// Packets over every protocol class, both families, two interfaces and a few ports and
/// ICMP types.
fn assorted_packets() -> Vec<PacketMeta> {
    let mut packets = Vec::new();
    for (proto, transport) in [
        (ip_proto::TCP, true),
        (ip_proto::UDP, true),
        (ip_proto::ICMP, false),
        (47, false),
    ] {
        for v6 in [false, true] {
            for (iface, value) in [(0, 5), (1, 7)] {
                let (src, dst) = if v6 {
                    (
                        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, value)),
                        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, value)),
                    )
                } else {
                    (
                        IpAddr::V4(Ipv4Addr::new(10, 0, 0, value as u8)),
                        IpAddr::V4(Ipv4Addr::new(10, 0, 1, value as u8)),
                    )
                };
                packets.push(PacketMeta {
                    l3: if v6 { L3::Ipv6 } else { L3::Ipv4 },
                    iface,
                    src: Some(src),
                    dst: Some(dst),
                    proto: Some(proto),
                    sport: transport.then_some(value),
                    dport: transport.then_some(value + 100),
                    icmp_type: (proto == ip_proto::ICMP).then_some(value as u8),
                    ..PacketMeta::default()
                });
            }
        }
    }
    packets
}

/// Each kind of rule, alone in its word of the index among rules that never hold, is
/// still found: whichever dimension it is keyed on flags its word.
#[test]
fn a_rule_alone_in_its_word_is_found_whatever_its_key() {
    let rules = [
        "match",
        "ignore",
        "match proto udp",
        "match not proto tcp",
        "match iface eth1",
        "match not iface eth1",
        "match src 10.0.0.5",
        "match not dst 10.0.1.5",
        "match src 2001:db8::7",
        "match not dst 2001:db8::1:5",
        "match proto tcp srcport 7",
        "match proto udp not dstport 105",
        "match proto icmp icmptype 5",
        "match proto icmp not icmptype 5",
        "match iface eth0 proto tcp src 10.0.0.0/8 dstport 100:200",
    ];
    let config = TableConfig {
        iface_names: Some(vec!["eth0".into(), "eth1".into()]),
        director_marks: None,
    };
    for rule in rules {
        let mut text = String::new();
        for index in 0..130 {
            text.push_str(&format!(
                "flow filler{index} permit\n  match dst 192.0.2.1\n"
            ));
        }
        text.push_str(&format!("flow tested permit\n  {rule}\n"));
        for index in 0..70 {
            text.push_str(&format!(
                "flow after{index} permit\n  match src 192.0.2.1\n"
            ));
        }
        text.push_str("flow rest deny\n  match proto tcp\n");
        let table = FlowTable::from_source(&text, &config).expect("valid");
        let mut claimed = 0;
        for meta in assorted_packets() {
            let verdict = table.classify(&meta);
            assert_eq!(verdict, table.trace(&meta).verdict, "{rule}: {meta:?}");
            claimed += usize::from(verdict.is_some_and(|verdict| verdict.flow == 130));
        }
        assert!(claimed > 0 || rule == "ignore", "{rule} never holds");
    }
}
