//! IPv6 `[[nat]]` rules against the kernel: the compiled nft `ip6` nat table beside the
//! `ip` one (a snapshot, no root needed), and a port forward (DNAT), SNAT and MASQUERADE of
//! IPv6 TCP and UDP, alone and composed (DNAT then MASQUERADE), in the same run as an IPv4
//! MASQUERADE. The rewritten 5-tuple of each connection's first packet (as it leaves toward
//! the server) and of the server's reply (as it leaves toward the client, un-NATed) agree
//! packet for packet; a masquerade whose port is taken gets another port on both sides (the
//! kernel's is random, as for IPv4) and that difference is explained. Root only; under
//! CI=true a missing kernel side fails.

mod kernel_support;

use std::net::IpAddr;
use std::time::Duration;

use datapath::packet::builder::PacketBuilder;
use kernel_support::{data, kernel_tests_enabled, lock, own_namespaces, write_pcap};
use sim::kernel::diff::{render, run_diff};

const GAP: Duration = Duration::from_micros(300);

fn address(text: &str) -> IpAddr {
    text.parse().expect("address")
}

fn builder(src: &str, dst: &str) -> PacketBuilder {
    match (address(src), address(dst)) {
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::eth().ipv6(s, d),
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::eth().ipv4(s, d),
        _ => panic!("one family per packet"),
    }
}

fn tcp(src: &str, sport: u16, dst: &str, dport: u16, reply: bool) -> Vec<u8> {
    let builder = builder(src, dst).tcp(sport, dport);
    let builder = if reply {
        builder.syn_ack().seq_ack(99, 1)
    } else {
        builder.syn()
    };
    builder.mss(1440).build()
}

fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    builder(src, dst)
        .udp(sport, dport)
        .payload(b"query")
        .build()
}

const INSIDE6: &str = "2001:db8:3::1";
const FORWARDED: &str = "2001:db8:f::30";
const FORWARD_TARGET: &str = "2001:db8:3::4";

/// Connection packets: requests, then the replies the servers send.
fn frames() -> Vec<Vec<u8>> {
    let outsider = "2001:db8:a::7";
    vec![
        // DNAT (port forward) alone, and its reply.
        tcp(outsider, 40_000, FORWARDED, 80, false),
        tcp(FORWARD_TARGET, 8080, outsider, 40_000, true),
        // SNAT, and its reply.
        tcp("2001:db8:cc::5", 41_000, "2001:db8:3::2", 8080, false),
        tcp("2001:db8:3::2", 8080, INSIDE6, 41_000, true),
        // MASQUERADE, TCP and UDP, and their replies.
        tcp("2001:db8:c::7", 42_000, "2001:db8:3::3", 8080, false),
        tcp("2001:db8:3::3", 8080, INSIDE6, 42_000, true),
        udp("2001:db8:c::9", 5353, "2001:db8:3::2", 53),
        udp("2001:db8:3::2", 53, INSIDE6, 5353),
        // DNAT then MASQUERADE, and the reply undone twice.
        tcp("2001:db8:c::8", 43_000, FORWARDED, 80, false),
        tcp(FORWARD_TARGET, 8080, INSIDE6, 43_000, true),
        // No rule: forwarded unchanged.
        tcp("2001:db8:a::9", 45_000, "2001:db8:3::2", 8080, false),
        // IPv4 MASQUERADE in the same run, and its reply.
        tcp("198.51.100.7", 46_000, "10.0.3.3", 8080, false),
        tcp("10.0.3.3", 8080, "10.0.3.1", 46_000, true),
        // Masquerade clash: the second client's port is taken (its reply is not sent: the
        // kernel's new port is random).
        tcp("2001:db8:c::10", 44_000, "2001:db8:3::2", 8080, false),
        tcp("2001:db8:c::11", 44_000, "2001:db8:3::2", 8080, false),
    ]
}

#[test]
fn ipv6_nat_rules_compile_to_an_nft_ip6_nat_table() {
    let rules = sim::kernel::rules_for(&data("nat-rules6.toml")).expect("rules compile");
    assert_eq!(rules.ipv6_refused, None);
    insta::assert_snapshot!(format!(
        "## nat\n{}\n## features\n{}",
        rules.nat_nft,
        rules.render_features()
    ));
}

#[test]
fn ipv6_dnat_snat_and_masquerade_rewrites_agree_with_the_kernel() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let pcap = write_pcap("nat-rules6.pcap", &frames());
    let before = own_namespaces();
    let report = run_diff(&data("nat-rules6.toml"), &[pcap], &[], GAP, 1).expect("diff runs");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let text = render(&report);
    assert!(report.not_injected.is_empty(), "{text}");
    assert_eq!(report.unexplained(), 0, "{text}");
    assert_eq!(report.totals(), (15, 14), "{text}");
    // Everything agrees but the clashing masquerade's port, which is explained.
    let [clash] = report.disagreements.as_slice() else {
        panic!("one disagreement:\n{text}");
    };
    assert_eq!(clash.ordinal, 14, "{text}");
    assert!(clash.kernel_rule.contains("clash"), "{text}");
    assert!(
        clash
            .simulator
            .ends_with("forward tcp [2001:db8:3::1]:44001 > [2001:db8:3::2]:8080"),
        "{text}"
    );
    assert!(
        clash.kernel.starts_with("forward tcp [2001:db8:3::1]:"),
        "{text}"
    );
    let ip6_nat_hits = report
        .kernel_rule_hits
        .keys()
        .filter(|rule| rule.contains("ip6 lbsim_nat6"))
        .count();
    assert!(ip6_nat_hits >= 3, "{text}");
}

#[test]
fn the_simulator_rewrites_an_ipv6_port_forward_and_its_reply() {
    let path = data("nat-rules6.toml");
    let config = sim::appliance::ApplianceConfig::load(&path).expect("appliance");
    let mut pipeline =
        sim::appliance::build_pipeline(&config, path.parent().unwrap(), 1, &[]).expect("builds");
    let request = tcp("2001:db8:a::7", 40_000, FORWARDED, 80, false);
    let decided = pipeline.process(0, 0, datapath::packet::LinkType::Ethernet, request, 80);
    assert_eq!(decided.verdict, datapath::verdict::Verdict::Forward);
    let sent = pipeline.take_emitted().remove(0).frame;
    let meta = datapath::packet::parse(
        datapath::packet::LinkType::Ethernet,
        &sent,
        sent.len() as u32,
        0,
    );
    assert_eq!(meta.invalid, None);
    assert_eq!(
        (meta.dst, meta.dport),
        (Some(address(FORWARD_TARGET)), Some(8080))
    );
}
