//! IPv6 against the kernel: packets tagged in the flow label, the shield's IPv6 lists
//! (instance denylist, a context for an IPv6 destination with its allowlist and denylist)
//! as `ip6` sets in the netdev ingress chain, flows through `ip6tables-restore`, IPv6
//! forwarding through the LB; IPv4 packets in the same run, and a tagged IPv6 frame. Every
//! packet agrees, except the hop-limit-1 one (the kernel answers ICMPv6 time exceeded;
//! explained). IPv6 NAT directors are `ip6` DNAT maps: the rr order, the rewrite and the
//! replies' un-NAT agree; SYN cookies of IPv6 contexts are the ip6tables `SYNPROXY`
//! target (same SYN-ACK options, forged ACKs dropped; nft synproxy would drop every
//! injected IPv6 segment on this kernel: it verifies IPv6 checksums with the IPv4
//! function); fwmark directors of IPv6 reals are `ip6` DNAT-by-mark maps (an IPv6 packet marked for
//! an IPv4 fwmark service is explained); direct-routing directors are plain forwarding;
//! fwmark directors without a kernel counterpart (tun) leave IPv6 packets not injected.

mod kernel_support;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use datapath::packet::builder::PacketBuilder;
use kernel_support::{corpus, data, kernel_tests_enabled, lock, own_namespaces, write_pcap};
use sim::kernel::diff::{DiffInput, render, run_diff, run_input};

const GAP: Duration = Duration::from_micros(200);
const VIP6: &str = "2001:db8:f::1";

fn v6(text: &str) -> Ipv6Addr {
    text.parse().expect("IPv6 address")
}

fn udp6(src: &str, dst: &str, dport: u16) -> PacketBuilder {
    PacketBuilder::eth()
        .ipv6(v6(src), v6(dst))
        .udp(40_000, dport)
        .payload(b"q")
}

fn syn6(src: &str, dport: u16) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv6(v6(src), v6(VIP6))
        .tcp(41_000, dport)
        .syn()
        .mss(1440)
        .build()
}

/// (packet, the outcome kind both sides agree on).
fn fixtures() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (
            udp6("2001:db8:dead::5", "2001:db8:9::9", 53).build(),
            "drop",
        ),
        (udp6("2001:db8:dead:1::5", VIP6, 53).build(), "forward"),
        (udp6("2001:db8:2::5", VIP6, 53).build(), "drop"),
        (syn6("2001:db8:1::7", 22), "forward"),
        (syn6("2001:db8:3::7", 22), "drop"),
        (udp6("2001:db8:bad::1", VIP6, 54).build(), "drop"),
        (udp6("2001:db8:5::1", VIP6, 53).build(), "forward"),
        (
            PacketBuilder::eth()
                .ipv4(Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(192, 0, 2, 80))
                .tcp(42_000, 80)
                .syn()
                .build(),
            "forward",
        ),
        (
            PacketBuilder::eth()
                .ipv4(Ipv4Addr::new(203, 0, 113, 9), Ipv4Addr::new(192, 0, 2, 80))
                .udp(1, 80)
                .build(),
            "drop",
        ),
        (
            PacketBuilder::eth()
                .vlan(5)
                .ipv6(v6("2001:db8:5::1"), v6(VIP6))
                .udp(40_001, 53)
                .build(),
            "forward",
        ),
        (
            PacketBuilder::eth()
                .ipv6(v6("2001:db8:5::1"), v6(VIP6))
                .echo_request(1, 1)
                .build(),
            "drop",
        ),
    ]
}

#[test]
fn ipv6_shield_lists_and_flows_agree_with_the_kernel() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let mut fixtures = fixtures();
    let hop_limit_one = udp6("2001:db8:5::1", VIP6, 53).ttl(1).build();
    fixtures.push((hop_limit_one, "answer"));
    let frames: Vec<Vec<u8>> = fixtures.iter().map(|f| f.0.clone()).collect();
    let pcap = write_pcap("ipv6.pcap", &frames);
    let before = own_namespaces();
    let report = run_diff(&data("ipv6.toml"), &[pcap], &[], GAP, 1).expect("diff runs");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let text = render(&report);
    assert!(report.not_injected.is_empty(), "{text}");
    assert_eq!(report.unexplained(), 0, "{text}");
    // Hop limit 1: both sides answer ICMPv6 time exceeded (the simulator's IP layer).
    assert_eq!(report.totals(), (12, 12), "{text}");
    assert!(report.disagreements.is_empty(), "{text}");
    assert_eq!(report.stages.get("ip").map(|s| s.agreed), Some(1), "{text}");
    assert_eq!(
        report.kernel_counters.get("Icmp6OutTimeExcds"),
        Some(&1),
        "{text}"
    );
    let forwarded = fixtures.iter().filter(|f| f.1 == "forward").count() as u64;
    let forward_stage = report.stages.get("forward").map_or(0, |s| s.compared);
    let flow_accepts = report
        .kernel_rule_hits
        .iter()
        .filter(|(rule, _)| rule.ends_with("accept"))
        .map(|(_, hits)| hits)
        .sum::<u64>();
    // The hop-limit packet's flow accepted it before ip6_forward answered it.
    assert_eq!(forward_stage + flow_accepts, forwarded + 1, "{text}");
    let shield = report.stages.get("shield").map_or(0, |s| s.compared);
    assert_eq!(shield, 3, "{text}");
    let ip6_rules = report
        .kernel_rule_hits
        .keys()
        .filter(|rule| rule.contains("ip6 mangle") || rule.contains("ip6 saddr"))
        .count();
    assert!(ip6_rules >= 4, "{text}");
}

/// The doc examples' fwmark director has IPv4 reals: an IPv6 packet is injected (no
/// longer refused) and both sides drop it (the flows' `alltherest deny`).
#[test]
fn ipv6_packets_are_injected_beside_an_ipv4_fwmark_director() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let pcap = write_pcap("ipv6-doc.pcap", &[syn6("2001:db8:5::1", 22)]);
    let before = own_namespaces();
    let report = run_diff(&data("doc-examples.toml"), &[pcap], &[], GAP, 1).expect("diff runs");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let text = render(&report);
    assert!(report.not_injected.is_empty(), "{text}");
    assert_eq!(report.totals(), (1, 1), "{text}");
}

/// A fwmark director the kernel cannot reproduce (tun forwarding) still keeps IPv6
/// packets out (its marks may be set on them); no root needed.
#[test]
fn a_fwmark_director_without_kernel_counterpart_refuses_ipv6() {
    let rules = sim::kernel::rules_for(&data("fwmark-tun.toml")).expect("rules compile");
    let why = rules.ipv6_refused.expect("refused");
    assert!(
        why.contains("fwmark director with no kernel counterpart"),
        "{why}"
    );
}

fn fwmark6_frames() -> Vec<Vec<u8>> {
    let client = |n: u16| v6(&format!("2001:db8:c::{n}"));
    let syn = |n: u16, dst: &str, dport: u16| {
        PacketBuilder::eth()
            .ipv6(client(n), v6(dst))
            .tcp(30_000 + n, dport)
            .syn()
            .mss(1440)
            .build()
    };
    let mut frames = Vec::new();
    for n in 1..=6u16 {
        frames.push(syn(n, "2001:db8:f::40", if n % 2 == 0 { 443 } else { 80 }));
    }
    // rr in IPVS order (the last real configured first); the port-less real keeps the
    // virtual port.
    let chosen = [
        ("2001:db8:e::4", 80),
        ("2001:db8:e::3", 8080),
        ("2001:db8:e::2", 8080),
    ];
    for (n, (real, port)) in (1..=3u16).zip(chosen) {
        frames.push(
            PacketBuilder::eth()
                .ipv6(v6(real), client(n))
                .tcp(port, 30_000 + n)
                .syn_ack()
                .seq_ack(99, 1)
                .mss(1440)
                .build(),
        );
    }
    for n in 20..=25u16 {
        frames.push(udp6(&format!("2001:db8:c::{n}"), "2001:db8:f::53", 53).build());
    }
    for n in 1..=2u8 {
        frames.push(
            PacketBuilder::eth()
                .ipv4(Ipv4Addr::new(198, 51, 100, n), Ipv4Addr::new(192, 0, 2, 25))
                .tcp(32_000 + u16::from(n), 25)
                .syn()
                .build(),
        );
    }
    // The IPv4 service's replies (rr: 10.0.2.2 first), through a flow table ending in deny.
    for (n, real) in [(1u8, 2u8), (2, 1)] {
        frames.push(
            PacketBuilder::eth()
                .ipv4(
                    Ipv4Addr::new(10, 0, 2, real),
                    Ipv4Addr::new(198, 51, 100, n),
                )
                .tcp(25, 32_000 + u16::from(n))
                .syn_ack()
                .seq_ack(99, 1)
                .build(),
        );
    }
    frames.push(syn(30, "2001:db8:f::25", 25));
    frames
}

/// fwmark directors with IPv6 reals are `ip6` DNAT-by-mark maps (the marks set by the
/// flows' ip6tables mangle chains): rr order, the rewrite (a port-less real keeps the
/// virtual port) and the replies' un-NAT agree (replies pass a flow table ending in deny,
/// IPv6 and IPv4, as in the appliance); sh (jhash) differences are explained, and an IPv6
/// packet marked for the IPv4 fwmark service is passed on by both.
#[test]
fn ipv6_fwmark_directors_agree_on_rr_order_rewrite_and_reply_un_nat() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let pcap = write_pcap("ipv6-fwmark.pcap", &fwmark6_frames());
    let before = own_namespaces();
    let report = run_diff(&data("fwmark6.toml"), &[pcap], &[], GAP, 1).expect("diff runs");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let text = render(&report);
    assert!(report.not_injected.is_empty(), "{text}");
    assert_eq!(report.unexplained(), 0, "{text}");
    assert_eq!(report.totals().0, 20, "{text}");
    let web = &report.by_feature["director web6"];
    assert_eq!((web.compared, web.agreed), (9, 9), "{text}");
    let dns = &report.by_feature["director dns6"];
    assert_eq!(dns.agreed + dns.explained, 6, "{text}");
    let mail = &report.by_feature["director mail"];
    assert_eq!(
        (mail.compared, mail.agreed, mail.explained),
        (4, 4, 0),
        "{text}"
    );
    // The IPv6 packet carrying the IPv4 service's mark is not the service's on either side
    // (a fwmark service is of its reals' family, as in IPVS): the flows decide it.
    let flows = &report.stages["flows"];
    assert_eq!((flows.compared, flows.agreed), (1, 1), "{text}");
}

/// Real IPv6 captures through the game appliance (its director is an IPv4 tuple service,
/// so IPv6 packets are injected): HTTP with atomic fragments, fragmented DNS, ICMPv6
/// neighbour discovery, a mixed IPv6 session. Each agrees or is explained.
#[test]
fn real_ipv6_captures_agree_or_are_explained() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let appliance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/appliances/game.toml");
    let before = own_namespaces();
    for name in [
        "zeek__ipv6.pcap",
        "zeek__ipv6-http-atomic-frag.pcap",
        "zeek__ipv6-fragmented-dns.pcap",
        "tcpdump__icmpv6.pcap",
    ] {
        let input =
            DiffInput::captures(&appliance, &[corpus().join(name)], 1, 600).expect("captures");
        let report = run_input(&input, &[], GAP).expect("diff runs");
        let text = render(&report);
        assert_eq!(report.unexplained(), 0, "{name}:\n{text}");
        assert!(
            report.totals().0 >= 4,
            "{name}: compared too little\n{text}"
        );
        let ipv6_refused = report
            .not_injected
            .keys()
            .any(|why| why.starts_with("IPv6"));
        assert!(!ipv6_refused, "{name}:\n{text}");
    }
    assert_eq!(own_namespaces(), before, "namespaces left behind");
}

#[test]
fn ipv6_nat_directors_agree_on_rr_order_rewrite_and_reply_un_nat() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let client = |n: u16| v6(&format!("2001:db8:c::{n}"));
    let mut frames = Vec::new();
    for n in 1..=4u16 {
        frames.push(
            PacketBuilder::eth()
                .ipv6(client(n), v6("2001:db8:f::80"))
                .tcp(30_000 + n, 80)
                .syn()
                .mss(1440)
                .build(),
        );
    }
    // rr in IPVS order: the last real configured first.
    let reals = ["2001:db8:e::3", "2001:db8:e::2"];
    for n in 1..=4u16 {
        frames.push(
            PacketBuilder::eth()
                .ipv6(v6(reals[usize::from(n - 1) % 2]), client(n))
                .tcp(8080, 30_000 + n)
                .syn_ack()
                .seq_ack(99, 1)
                .mss(1440)
                .build(),
        );
    }
    for n in 20..=27u16 {
        frames.push(
            PacketBuilder::eth()
                .ipv6(client(n), v6("2001:db8:f::81"))
                .tcp(30_000 + n, 80)
                .syn()
                .build(),
        );
    }
    let pcap = write_pcap("ipv6-director.pcap", &frames);
    let before = own_namespaces();
    let report = run_diff(&data("ipv6-director.toml"), &[pcap], &[], GAP, 1).expect("diff runs");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let text = render(&report);
    assert!(report.not_injected.is_empty(), "{text}");
    assert_eq!(report.unexplained(), 0, "{text}");
    let web = &report.by_feature["director web6"];
    assert_eq!((web.compared, web.agreed), (8, 8), "{text}");
    let sticky = &report.by_feature["director sticky6"];
    assert_eq!(sticky.agreed + sticky.explained, 8, "{text}");
}

#[test]
fn ipv6_syn_cookies_agree_with_the_ip6tables_synproxy_target() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let vip = v6("2001:db8:f::30");
    let syn = |n: u16| {
        PacketBuilder::eth()
            .ipv6(v6(&format!("2001:db8:c::{n}")), vip)
            .tcp(31_000 + n, 80)
            .syn()
    };
    let frames = vec![
        syn(1).mss(1440).build(),
        syn(2)
            .mss(1440)
            .window_scale(7)
            .sack_permitted()
            .timestamps(1, 0)
            .build(),
        syn(3).mss(1220).sack_permitted().build(),
        syn(4).build(),
        PacketBuilder::eth()
            .ipv6(v6("2001:db8:c::5"), vip)
            .tcp(31_005, 80)
            .seq_ack(1000, 0x0bad_c0de)
            .build(),
    ];
    let pcap = write_pcap("ipv6-synproxy.pcap", &frames);
    let before = own_namespaces();
    let report = run_diff(&data("ipv6-synproxy.toml"), &[pcap], &[], GAP, 1).expect("diff runs");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let text = render(&report);
    assert!(report.not_injected.is_empty(), "{text}");
    assert!(report.disagreements.is_empty(), "{text}");
    assert_eq!(report.totals(), (5, 5), "{text}");
    let cookies = &report.by_feature["shield SYN cookies"];
    assert_eq!(cookies.compared, 5, "{text}");
    let synproxy_hits = report
        .kernel_rule_hits
        .keys()
        .filter(|rule| rule.contains("ip6 filter FORWARD"))
        .count();
    assert!(synproxy_hits >= 1, "{text}");
}

/// Direct-routing directors are the kernel's plain forwarding (the IP packet is left as it
/// is; only the real server's MAC would tell the backend): IPv6 packets to one are
/// injected and agree with the simulator's DR forward, as IPv4 ones do.
#[test]
fn ipv6_direct_routing_directors_are_plain_forwarding() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let mut frames: Vec<Vec<u8>> = (1..=3u16)
        .map(|n| {
            PacketBuilder::eth()
                .ipv6(v6(&format!("2001:db8:c::{n}")), v6("2001:db8:f::70"))
                .tcp(33_000 + n, 80)
                .syn()
                .mss(1440)
                .build()
        })
        .collect();
    frames.push(
        PacketBuilder::eth()
            .ipv4(
                Ipv4Addr::new(198, 51, 100, 70),
                Ipv4Addr::new(192, 0, 2, 70),
            )
            .tcp(33_100, 80)
            .syn()
            .build(),
    );
    let pcap = write_pcap("ipv6-dr.pcap", &frames);
    let before = own_namespaces();
    let report = run_diff(&data("dr6.toml"), &[pcap], &[], GAP, 1).expect("diff runs");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let text = render(&report);
    assert!(report.not_injected.is_empty(), "{text}");
    assert_eq!(report.totals(), (4, 4), "{text}");
    let director = report.stages.get("director").map_or(0, |s| s.agreed);
    assert_eq!(director, 4, "{text}");
}
