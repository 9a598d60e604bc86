//! `[[nat]]` rules against the kernel (nft `nat` table): a port forward (DNAT), SNAT and
//! MASQUERADE, alone and composed (DNAT then MASQUERADE), TCP and UDP. The rewritten
//! 5-tuple of each connection's first packet (as it leaves toward the server) and of the
//! server's reply (as it leaves toward the client, un-NATed) agree packet for packet; a
//! masquerade whose port is taken gets another port on both sides (the kernel's is random)
//! and that difference is explained. Root only; under CI=true a missing kernel side fails.

mod kernel_support;

use std::net::Ipv4Addr;
use std::time::Duration;

use datapath::packet::builder::PacketBuilder;
use kernel_support::{data, kernel_tests_enabled, lock, own_namespaces, write_pcap};
use sim::kernel::diff::{render, run_diff};

const GAP: Duration = Duration::from_micros(300);

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, reply: bool) -> Vec<u8> {
    let builder = PacketBuilder::eth()
        .ipv4(Ipv4Addr::from(src), Ipv4Addr::from(dst))
        .tcp(sport, dport);
    let builder = if reply {
        builder.syn_ack().seq_ack(99, 1)
    } else {
        builder.syn()
    };
    builder.mss(1460).build()
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(Ipv4Addr::from(src), Ipv4Addr::from(dst))
        .udp(sport, dport)
        .payload(b"query")
        .build()
}

const INSIDE: [u8; 4] = [10, 0, 3, 1];
const FORWARDED: [u8; 4] = [192, 0, 2, 30];
const FORWARD_TARGET: [u8; 4] = [10, 0, 3, 4];

/// (connection packets, expected forward text of each) — requests then replies.
fn frames() -> Vec<Vec<u8>> {
    let (outsider, masqueraded, snatted) = ([100, 64, 0, 7], [198, 51, 100, 7], [203, 0, 113, 5]);
    vec![
        // DNAT (port forward) alone, and its reply.
        tcp(outsider, 40_000, FORWARDED, 80, false),
        tcp(FORWARD_TARGET, 8080, outsider, 40_000, true),
        // SNAT, and its reply.
        tcp(snatted, 41_000, [10, 0, 3, 2], 8080, false),
        tcp([10, 0, 3, 2], 8080, INSIDE, 41_000, true),
        // MASQUERADE, TCP and UDP, and their replies.
        tcp(masqueraded, 42_000, [10, 0, 3, 3], 8080, false),
        tcp([10, 0, 3, 3], 8080, INSIDE, 42_000, true),
        udp([198, 51, 100, 9], 5353, [10, 0, 3, 2], 53),
        udp([10, 0, 3, 2], 53, INSIDE, 5353),
        // DNAT then MASQUERADE, and the reply undone twice.
        tcp([198, 51, 100, 8], 43_000, FORWARDED, 80, false),
        tcp(FORWARD_TARGET, 8080, INSIDE, 43_000, true),
        // Masquerade clash: the second client's port is taken (its reply is not sent: the
        // kernel's new port is random).
        tcp([198, 51, 100, 10], 44_000, [10, 0, 3, 2], 8080, false),
        tcp([198, 51, 100, 11], 44_000, [10, 0, 3, 2], 8080, false),
    ]
}

#[test]
fn dnat_snat_and_masquerade_rewrites_agree_with_the_kernel() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let pcap = write_pcap("nat-rules.pcap", &frames());
    let before = own_namespaces();
    let report = run_diff(&data("nat-rules.toml"), &[pcap], &[], GAP, 1).expect("diff runs");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let text = render(&report);
    assert!(report.not_injected.is_empty(), "{text}");
    assert_eq!(report.unexplained(), 0, "{text}");
    let nat = &report.by_feature["nat"];
    assert_eq!(nat.compared, 12, "{text}");
    // Everything agrees but the clashing masquerade's port, which is explained.
    assert_eq!(nat.agreed, 11, "{text}");
    assert_eq!(report.disagreements.len(), 1, "{text}");
    let clash = &report.disagreements[0];
    assert_eq!(clash.ordinal, 11, "{text}");
    assert!(clash.kernel_rule.contains("clash"), "{text}");
    assert!(
        clash
            .simulator
            .ends_with("forward tcp 10.0.3.1:44001 > 10.0.3.2:8080"),
        "{text}"
    );
    assert!(clash.kernel.starts_with("forward tcp 10.0.3.1:"), "{text}");
}
