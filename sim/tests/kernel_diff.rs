//! Simulator vs Linux kernel, packet by packet: the flowmgr documentation examples (every
//! branch), shield deny/allow lists, and rr director order. Each run must agree 100% and
//! leave no namespace behind.

mod kernel_support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use datapath::packet::builder::PacketBuilder;
use kernel_support::{data, kernel_tests_enabled, lock, own_namespaces, write_pcap};
use sim::kernel::diff::{DiffReport, run_diff};
use sim::kernel::inject::{read_inputs, run_kernel};
use sim::kernel::outcome::Outcome;

const GAP: Duration = Duration::from_micros(200);

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("address")
}

fn tcp_syn(src: &str, sport: u16, dst: &str, dport: u16) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(ip(src), ip(dst))
        .tcp(sport, dport)
        .syn()
        .mss(1460)
        .build()
}

fn udp(src: &str, dst: &str, dport: u16) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(ip(src), ip(dst))
        .udp(40_000, dport)
        .payload(b"q")
        .build()
}

fn icmp(src: &str, dst: &str, icmp_type: u8) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(ip(src), ip(dst))
        .icmp(icmp_type, 0)
        .payload(b"ping")
        .build()
}

fn diff(appliance: &str, pcap_name: &str, frames: &[Vec<u8>]) -> DiffReport {
    let pcap = write_pcap(pcap_name, frames);
    let before = own_namespaces();
    let report = run_diff(&data(appliance), &[pcap], &[], GAP, 1).expect("diff runs");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    report
}

fn assert_full_agreement(report: &DiffReport, expected_packets: u64) {
    let rendered = sim::kernel::diff::render(report);
    assert!(report.disagreements.is_empty(), "{rendered}");
    assert!(report.not_injected.is_empty(), "{rendered}");
    assert_eq!(
        report.totals(),
        (expected_packets, expected_packets),
        "{rendered}"
    );
}

/// Every branch of scenarios/flows/doc-examples.flowmgr: ssh (ignore, match, miss), dns
/// (match, miss), ping (rule 1, ignore, rule 3), mail (three ports → director), deny.
fn doc_example_packets() -> Vec<Vec<u8>> {
    vec![
        tcp_syn("192.168.0.5", 1001, "192.168.0.1", 22),
        tcp_syn("10.9.9.9", 1002, "192.168.0.1", 22),
        tcp_syn("192.168.0.5", 1003, "192.168.0.1", 23),
        udp("10.9.9.9", "192.168.0.1", 53),
        udp("10.9.9.9", "192.168.0.1", 54),
        icmp("10.9.9.9", "192.168.0.1", 0),
        icmp("10.9.9.9", "192.168.0.1", 8),
        icmp("192.168.0.7", "192.168.0.1", 8),
        tcp_syn("10.9.9.9", 1004, "192.168.0.2", 110),
        tcp_syn("10.9.9.9", 1005, "192.168.0.2", 143),
        tcp_syn("10.9.9.9", 1006, "192.168.0.2", 25),
        tcp_syn("10.9.9.9", 1007, "192.168.0.2", 80),
        udp("10.9.9.9", "192.168.0.2", 25),
        tcp_syn("10.9.9.9", 1008, "192.168.0.3", 22),
    ]
}

#[test]
fn flowmgr_doc_examples_agree_with_the_kernel_on_every_branch() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let packets = doc_example_packets();
    let report = diff("doc-examples.toml", "doc-examples.pcap", &packets);
    assert_full_agreement(&report, packets.len() as u64);
    let flows = &report.stages["flows"];
    assert!(flows.compared >= 8, "{:?}", report.stages);
}

#[test]
fn shield_deny_and_allow_lists_agree_with_the_kernel() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let packets = vec![
        udp("203.0.113.5", "192.0.2.99", 53),
        udp("198.51.100.200", "192.0.2.10", 53),
        udp("198.51.100.5", "192.0.2.10", 53),
        udp("198.51.100.200", "192.0.2.99", 53),
        tcp_syn("10.1.1.1", 2000, "192.0.2.10", 80),
        icmp("172.16.0.9", "192.0.2.10", 8),
        icmp("172.16.0.9", "192.0.2.99", 8),
        tcp_syn("203.0.113.77", 2001, "192.0.2.10", 443),
    ];
    let report = diff("shield-lists.toml", "shield-lists.pcap", &packets);
    assert_full_agreement(&report, packets.len() as u64);
    let shield = &report.stages["shield"];
    assert_eq!(shield.compared, 5, "{:?}", report.stages);
}

#[test]
fn rr_director_order_agrees_with_the_kernel() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let packets: Vec<Vec<u8>> = (0..7)
        .map(|i| tcp_syn("10.9.9.9", 3000 + i, "192.168.0.2", 25))
        .collect();
    let report = diff("doc-examples.toml", "rr-order.pcap", &packets);
    assert_full_agreement(&report, packets.len() as u64);
    let pcap = write_pcap("rr-order-kernel.pcap", &packets);
    let rules = sim::kernel::rules_for(&data("doc-examples.toml")).expect("rules");
    let before = own_namespaces();
    let run = run_kernel(&read_inputs(&[pcap]).expect("read"), &rules, GAP).expect("kernel run");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let order: Vec<SocketAddr> = run
        .packets
        .iter()
        .map(|p| match &p.outcome {
            Outcome::Forward { frame } => {
                SocketAddr::new(frame.dst.expect("dst"), frame.dport.expect("port"))
            }
            other => panic!("not forwarded: {other:?}"),
        })
        .collect();
    // IPVS order: the last real added is first (the simulator reproduces IPVS).
    let reals = ["10.0.2.3:25", "10.0.2.2:25", "10.0.2.1:25"];
    let expected: Vec<SocketAddr> = (0..7).map(|i| reals[i % 3].parse().unwrap()).collect();
    assert_eq!(order, expected);
}
