//! 802.1Q-tagged packets against the kernel: shield contexts per VLAN (nft `vlan id N`
//! in the netdev ingress chain), tagged packets forwarded by the LB after the shield (the
//! tag is cleared in a later ingress chain: this kernel has no 8021q sub-interfaces), and
//! the tagged frames of real captures. Every run must agree (or be explained) and leave
//! no namespace behind; stacked tags (QinQ) are counted as not injected.

mod kernel_support;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use datapath::packet::builder::PacketBuilder;
use kernel_support::{corpus, data, kernel_tests_enabled, lock, own_namespaces, write_pcap};
use sim::kernel::diff::{DiffInput, DiffReport, render, run_diff, run_input};

const GAP: Duration = Duration::from_micros(200);

fn udp(vlan: Option<u16>, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let builder = PacketBuilder::eth();
    let builder = match vlan {
        Some(id) => builder.vlan(id),
        None => builder,
    };
    builder
        .ipv4(Ipv4Addr::from(src), Ipv4Addr::from(dst))
        .udp(40_000, 53)
        .payload(b"q")
        .build()
}

const VIP: [u8; 4] = [192, 0, 2, 10];
const OTHER: [u8; 4] = [192, 0, 2, 99];

/// One fixture: VLAN, source, destination, forwarded by the shield?
type Row = (Option<u16>, [u8; 4], [u8; 4], bool);

/// The shield's decision per context.
const TABLE: [Row; 12] = [
    (Some(100), [203, 0, 113, 200], VIP, true), // VLAN 100 allowlist
    (Some(100), [203, 0, 113, 5], VIP, false),  // instance denylist
    (Some(100), [10, 6, 1, 1], VIP, true),      // dst context's deny not used
    (Some(200), [203, 0, 113, 200], VIP, false), // no allowlist in VLAN 200
    (Some(200), [10, 5, 1, 1], VIP, false),     // VLAN 200 deny
    (Some(200), [10, 6, 1, 1], VIP, true),
    (Some(300), [10, 6, 1, 1], VIP, false), // no VLAN 300 context: dst context
    (Some(300), [10, 5, 1, 1], VIP, true),
    (None, [10, 6, 1, 1], VIP, false),
    (None, [10, 5, 1, 1], VIP, true),
    (Some(100), [10, 6, 1, 1], OTHER, true), // default context
    (Some(200), [203, 0, 113, 200], OTHER, false),
];

fn assert_no_leftovers<T>(run: impl FnOnce() -> T) -> T {
    let before = own_namespaces();
    let result = run();
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    result
}

#[test]
fn shield_contexts_per_vlan_agree_with_the_kernel() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let frames: Vec<Vec<u8>> = TABLE.iter().map(|&(v, s, d, _)| udp(v, s, d)).collect();
    let pcap = write_pcap("vlan.pcap", &frames);
    let report: DiffReport = assert_no_leftovers(|| {
        run_diff(&data("shield-vlan.toml"), &[pcap], &[], GAP, 1).expect("diff runs")
    });
    let text = render(&report);
    assert!(report.disagreements.is_empty(), "{text}");
    assert!(report.not_injected.is_empty(), "{text}");
    assert_eq!(report.totals(), (12, 12), "{text}");
    let forwarded = TABLE.iter().filter(|row| row.3).count() as u64;
    let shield = &report.stages["shield"];
    assert_eq!(shield.compared, 12 - forwarded, "{text}");
}

/// Real captures with 802.1Q frames: ICMP in VLAN 123, an HTTP segment in VLAN 165, the
/// same SYN untagged / tagged / double-tagged, and one HTTP flow untagged, in VLAN 42 and
/// in QinQ.
#[test]
fn tagged_frames_of_real_captures_agree_or_are_explained() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let appliance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/appliances/game.toml");
    let captures = [
        ("zeek__icmp_dot1q.pcap", false),
        ("tcpdump__ipv4_tcp_http_xml.pcap", false),
        ("zeek__vlan-pcp-dei.pcapng", true),
        ("zeek__vlan-collisions.pcap", true),
    ];
    for (name, has_qinq) in captures {
        let input =
            DiffInput::captures(&appliance, &[corpus().join(name)], 1, 600).expect("captures");
        let report = assert_no_leftovers(|| run_input(&input, &[], GAP).expect("diff runs"));
        let text = render(&report);
        assert_eq!(report.unexplained(), 0, "{name}:\n{text}");
        assert!(report.totals().0 > 0, "{name}: compared nothing\n{text}");
        let qinq = report.not_injected.keys().any(|why| why.contains("QinQ"));
        assert_eq!(qinq, has_qinq, "{name}:\n{text}");
    }
}
