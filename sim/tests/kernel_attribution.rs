//! Per-rule attribution of kernel decisions (nft trace): a packet denied by a shield list
//! is attributed to the shield's nft rule (with its context in the comment), one dropped
//! by a flow's `deny` to the flow's iptables-nft rule, one accepted by a flow to that flow's
//! ACCEPT rule, and a martian source (no rule drops it, the kernel's routing does) to the
//! stack, with the last hook it reached and the LB's IPv4 counters. `sim diff` names the
//! deciding kernel rule in disagreements and counts the hits per rule.

mod kernel_support;

use std::net::Ipv4Addr;
use std::time::Duration;

use datapath::packet::builder::PacketBuilder;
use kernel_support::{data, kernel_tests_enabled, lock, own_namespaces, write_pcap};
use sim::kernel::diff::{render, run_diff};
use sim::kernel::inject::{TraceStatus, read_inputs, run_kernel_traced};

const GAP: Duration = Duration::from_micros(200);

fn udp(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(Ipv4Addr::from(src), Ipv4Addr::from(dst))
        .udp(40_000, dport)
        .payload(b"q")
        .build()
}

fn syn(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(Ipv4Addr::from(src), Ipv4Addr::from(dst))
        .tcp(41_000, dport)
        .syn()
        .build()
}

/// (packet, dropped by an nft rule?, text the deciding rule contains).
fn fixtures() -> Vec<(Vec<u8>, bool, &'static str)> {
    let dns = [192, 168, 0, 1];
    vec![
        (
            udp([203, 0, 113, 5], dns, 53),
            true,
            "nft netdev lbsim_shield ingress handle",
        ),
        (
            udp([198, 51, 100, 7], dns, 53),
            true,
            "drop comment \"shield context 192.168.0.1: deny\"",
        ),
        (
            udp([203, 0, 113, 5], [192, 168, 0, 9], 53),
            true,
            "drop comment \"shield context default: deny\"",
        ),
        (
            syn([10, 9, 9, 9], [192, 168, 0, 3], 22),
            true,
            "iptables-nft ip mangle alltherest (flow alltherest) handle",
        ),
        (
            udp([10, 9, 9, 9], dns, 53),
            false,
            "iptables-nft ip mangle dns (flow dns) handle",
        ),
        (udp([127, 0, 0, 9], dns, 53), false, "(flow dns)"),
    ]
}

#[test]
fn kernel_drops_are_attributed_to_the_deciding_rule() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let fixtures = fixtures();
    let frames: Vec<Vec<u8>> = fixtures.iter().map(|f| f.0.clone()).collect();
    let pcap = write_pcap("attribution.pcap", &frames);
    let rules = sim::kernel::rules_for(&data("attribution.toml")).expect("rules");
    let before = own_namespaces();
    let inputs = read_inputs(std::slice::from_ref(&pcap)).expect("read");
    let run = run_kernel_traced(&inputs, &rules, GAP).expect("kernel run");
    assert_eq!(run.trace, TraceStatus::On);
    for (packet, (_, by_rule, wanted)) in run.packets.iter().zip(&fixtures) {
        let rule = packet.rule.as_ref().map(ToString::to_string);
        let text = rule.clone().unwrap_or_default();
        assert!(text.contains(wanted), "#{}: {rule:?}", packet.ordinal);
        assert_eq!(
            packet.dropped_by_rule, *by_rule,
            "#{}: {rule:?}",
            packet.ordinal
        );
    }
    assert_eq!(run.packets[4].outcome.kind(), "forward");
    let martian = &run.packets[5];
    assert_eq!(martian.outcome.kind(), "drop");
    assert_eq!(martian.last_hook.as_deref(), Some("ip mangle PREROUTING"));
    let report = run_diff(&data("attribution.toml"), &[pcap], &[], GAP, 1).expect("diff");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let text = render(&report);
    assert_eq!(report.unexplained(), 0, "{text}");
    // The martian source agrees now: lbsim's IP layer drops it as the kernel's routing does.
    assert!(report.disagreements.is_empty(), "{text}");
    assert!(
        text.contains("ip                           1/1 = 100.0%"),
        "{text}"
    );
    let hits: u64 = report.kernel_rule_hits.values().sum();
    assert_eq!(hits, 6, "{text}");
    let shield_hits = report
        .kernel_rule_hits
        .iter()
        .filter(|(rule, _)| rule.contains("lbsim_shield"))
        .map(|(_, hits)| hits)
        .sum::<u64>();
    assert_eq!(shield_hits, 3, "{text}");
    assert!(text.contains("kernel rule hits"), "{text}");
    eprintln!("{text}");
}
