//! Fixture tables for the flowmgr evaluator: the appliance documentation's examples and a
//! file with every keyword. Each case: packet (built on the wire, then parsed) → expected
//! flow, rule and action; `classify` must also agree with the reference `trace`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datapath::flows::{FlowAction, FlowTable, TableConfig};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, PacketMeta, ParseOptions, parse_with};

const DOC_EXAMPLES: &str = include_str!("../../scenarios/flows/doc-examples.flowmgr");
const EVERY_KEYWORD: &str = include_str!("../../scenarios/flows/every-keyword.flowmgr");

fn v4(text: &str) -> IpAddr {
    IpAddr::V4(text.parse::<Ipv4Addr>().expect("fixture address"))
}

fn v6(text: &str) -> IpAddr {
    IpAddr::V6(text.parse::<Ipv6Addr>().expect("fixture address"))
}

enum L4 {
    Tcp(u16, u16),
    Udp(u16, u16),
    Icmp(u8),
    Other(u8),
}

fn packet(src: IpAddr, dst: IpAddr, l4: L4, iface: u16) -> PacketMeta {
    let builder = PacketBuilder::eth().ip(src, dst);
    let builder = match l4 {
        L4::Tcp(sport, dport) => builder.tcp(sport, dport).syn(),
        L4::Udp(sport, dport) => builder.udp(sport, dport),
        L4::Icmp(icmp_type) => builder.icmp(icmp_type, 0),
        L4::Other(proto) => builder.proto(proto).payload(&[0; 8]),
    };
    let frame = builder.build();
    let wire_len = u32::try_from(frame.len()).expect("small frame");
    // Protocol 1 over IPv6 has no checksum the parser knows how to verify.
    let options = ParseOptions {
        verify_l4_checksum: false,
        ..ParseOptions::default()
    };
    let meta = parse_with(&options, LinkType::Ethernet, &frame, wire_len, iface);
    assert_eq!(meta.invalid, None, "fixture packet must be valid");
    meta
}

/// (flow name, rule number, action), or `None` for unclassified.
type Expected = Option<(&'static str, u32, FlowAction)>;

fn check(table: &FlowTable, case: &str, meta: &PacketMeta, expected: Expected) {
    let verdict = table.classify(meta);
    let got = verdict.map(|v| (table.flows()[v.flow].name.as_str(), v.rule, v.action));
    assert_eq!(got, expected, "case {case}");
    assert_eq!(
        table.trace(meta).verdict,
        verdict,
        "trace disagrees: case {case}"
    );
}

#[test]
fn doc_examples_hit_every_branch() {
    let table = FlowTable::from_source(DOC_EXAMPLES, &TableConfig::default()).expect("valid");
    let (lan, wan) = (v4("192.168.0.7"), v4("198.51.100.9"));
    let (gateway, mail) = (v4("192.168.0.1"), v4("192.168.0.2"));
    let mark = FlowAction::Mark(1);
    let (accept, drop) = (FlowAction::Accept, FlowAction::Drop);
    #[rustfmt::skip]
    let cases: Vec<(&str, PacketMeta, Expected)> = vec![
        ("ssh from lan", packet(lan, gateway, L4::Tcp(40000, 22), 0), Some(("ssh", 2, accept))),
        ("ssh from wan: ignored, falls through", packet(wan, gateway, L4::Tcp(40000, 22), 0), Some(("alltherest", 1, drop))),
        ("lan to 23: ssh rules run out", packet(lan, gateway, L4::Tcp(40000, 23), 0), Some(("alltherest", 1, drop))),
        ("dns", packet(wan, gateway, L4::Udp(5353, 53), 0), Some(("dns", 1, accept))),
        ("dns over tcp", packet(wan, gateway, L4::Tcp(5353, 53), 0), Some(("alltherest", 1, drop))),
        ("echo reply from wan", packet(wan, gateway, L4::Icmp(0), 0), Some(("ping", 1, accept))),
        ("echo request from wan", packet(wan, gateway, L4::Icmp(8), 0), Some(("alltherest", 1, drop))),
        ("echo request from lan", packet(lan, gateway, L4::Icmp(8), 0), Some(("ping", 3, accept))),
        ("icmp from lan to mail host", packet(lan, mail, L4::Icmp(8), 0), Some(("alltherest", 1, drop))),
        ("pop3", packet(wan, mail, L4::Tcp(40000, 110), 0), Some(("mail", 1, mark))),
        ("imap", packet(wan, mail, L4::Tcp(40000, 143), 0), Some(("mail", 2, mark))),
        ("smtp", packet(lan, mail, L4::Tcp(40000, 25), 0), Some(("mail", 3, mark))),
        ("smtp over udp", packet(lan, mail, L4::Udp(40000, 25), 0), Some(("alltherest", 1, drop))),
        ("gre", packet(wan, mail, L4::Other(47), 0), Some(("alltherest", 1, drop))),
        ("ipv6 ssh: IPv4 rules never match", packet(v6("2001:db8::1"), v6("2001:db8::2"), L4::Tcp(1, 22), 0), Some(("alltherest", 1, drop))),
    ];
    for (case, meta, expected) in &cases {
        check(&table, case, meta, *expected);
    }
}

fn keyword_table() -> FlowTable {
    let config = TableConfig {
        iface_names: Some(vec!["eth0".into(), "eth1".into(), "eth2".into()]),
        director_marks: Some([("web-farm".to_owned(), 80)].into_iter().collect()),
    };
    FlowTable::from_source(EVERY_KEYWORD, &config).expect("valid")
}

#[allow(clippy::type_complexity)]
fn keyword_cases() -> Vec<(&'static str, PacketMeta, Expected)> {
    let (eth0, eth1, eth2) = (0, 1, 2);
    let (admin, vip, outside) = (v4("10.1.2.3"), v4("192.0.2.10"), v4("198.51.100.9"));
    let (backup_net, blackhole_net) = (v4("198.51.100.20"), v4("203.0.113.5"));
    let (web, backup) = (FlowAction::Mark(80), FlowAction::Mark(0x10000 | 100));
    let (accept, drop) = (FlowAction::Accept, FlowAction::Drop);
    let (client6, vip6, dead6) = (
        v6("2001:db8::99"),
        v6("2001:db8::10"),
        v6("2001:db8:dead::1"),
    );
    #[rustfmt::skip]
    let cases = vec![
        ("admin ssh on eth0", packet(admin, vip, L4::Tcp(40000, 22), eth0), Some(("admin", 2, accept))),
        ("admin high port", packet(admin, vip, L4::Tcp(40000, 8443), eth0), Some(("admin", 3, accept))),
        ("admin low source port", packet(admin, vip, L4::Tcp(1000, 8443), eth0), None),
        ("admin to port 21", packet(admin, vip, L4::Tcp(40000, 21), eth0), None),
        ("web on eth1", packet(outside, vip, L4::Tcp(40000, 80), eth1), Some(("web", 1, web))),
        ("web 81 on eth1", packet(outside, vip, L4::Tcp(40000, 81), eth1), Some(("web", 1, web))),
        ("web on eth2: ignored as not udp", packet(outside, vip, L4::Tcp(40000, 80), eth2), None),
        ("web over ipv6", packet(client6, vip6, L4::Tcp(40000, 443), eth2), Some(("web", 2, web))),
        ("quic", packet(outside, vip, L4::Udp(40000, 443), eth2), Some(("quic", 1, web))),
        ("quic from port 53", packet(outside, vip, L4::Udp(53, 443), eth2), None),
        ("backup", packet(outside, backup_net, L4::Tcp(40000, 873), eth2), Some(("backup", 1, backup))),
        ("backup from excluded host", packet(v4("198.51.100.7"), backup_net, L4::Tcp(1, 873), eth2), None),
        ("backup on eth0", packet(outside, backup_net, L4::Tcp(1, 873), eth0), None),
        ("maintenance matches but skips", packet(outside, vip, L4::Tcp(1, 8080), eth0), None),
        ("echo request", packet(outside, vip, L4::Icmp(8), eth0), Some(("pings", 2, accept))),
        ("echo reply ignored", packet(outside, vip, L4::Icmp(0), eth0), None),
        ("echo request to blackhole", packet(outside, blackhole_net, L4::Icmp(8), eth0), Some(("blackhole", 1, drop))),
        ("icmpv6 is not icmp", packet(dead6, vip6, L4::Icmp(128), eth0), Some(("pings", 3, accept))),
        ("ipv6 udp", packet(client6, vip6, L4::Udp(1, 2), eth0), Some(("pings", 3, accept))),
        ("ipv6 protocol 1 from dead net", packet(dead6, vip6, L4::Other(1), eth0), Some(("blackhole", 2, drop))),
        ("ipv4 udp elsewhere", packet(outside, vip, L4::Udp(1, 2), eth0), None),
    ];
    cases
}

#[test]
fn every_keyword_file_classifies() {
    let table = keyword_table();
    for (case, meta, expected) in &keyword_cases() {
        check(&table, case, meta, *expected);
    }
}

#[test]
fn counters_count_decisions_per_flow_and_rule() {
    let table = keyword_table();
    let mut counters = table.counters();
    for (_, meta, _) in &keyword_cases() {
        table.classify_counted(meta, &mut counters);
    }
    table.classify_counted(&PacketMeta::default(), &mut counters);
    let mut lines = Vec::new();
    for (index, flow) in table.flows().iter().enumerate() {
        lines.push(format!(
            "flow {:<12} hits {}",
            flow.name, counters.flow_hits[index]
        ));
        for (offset, rule) in table.flow_rules(index).iter().enumerate() {
            let hits = counters.rule_hits[flow.first_rule + offset];
            lines.push(format!("  rule {} hits {hits}", rule.number));
        }
    }
    lines.push(format!("unclassified {}", counters.unclassified));
    lines.push(format!("not ip {}", counters.not_ip));
    insta::assert_snapshot!(lines.join("\n"));
}
