//! Coverage of the kernel diff: every bundled scenario with open-loop traffic, and 24 real
//! captures of `../shared/corpus/real` (TCP, UDP, DNS, ICMP, fragments, floods, nmap scans,
//! reflection, bad checksums) through `scenarios/appliances/game.toml`: every disagreement
//! must be explained by a checked-in explanation file. Packets are capped (scenarios: 1500,
//! captures: 600) and injected 50 µs apart so the whole file stays well under a minute.

mod kernel_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kernel_support::{corpus, kernel_tests_enabled, lock, own_namespaces};
use sim::kernel::diff::{
    DiffInput, load_explanations, render, run_input, scenario_explanation_path,
};
use sim::kernel::scenario_input;

const GAP: Duration = Duration::from_micros(50);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `../shared/corpus/real` of the repository (the first ancestor that has it: worktrees
/// sit deeper than the main checkout).
const CAPTURES: [&str; 24] = [
    "esnet__nmap_80_all.pcap",
    "esnet__one_way_all_flags.pcap",
    "esnet__two_way_all_flags.pcap",
    "gopacket__test_dns.pcap",
    "gopacket__test_ethernet.pcap",
    "stopddos__amp.TCP.reflection.SYNACK.pcap",
    "stopddos__amp.TCP.syn.optionallyACK.optionallysamePort.pcapng",
    "stopddos__amp.dns.RRSIG.fragmented.pcap",
    "stopddos__pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng",
    "stopddos__pkt.TCP.synflood.spoofed.pcap",
    "tcpdump__dns_tcp.pcap",
    "tcpdump__dns_udp.pcap",
    "tcpdump__print-flags.pcap",
    "tcpreplay__test.pcap",
    "zeek__5-pings.pcap",
    "zeek__fragmented-1.pcap",
    "zeek__fragmented-4.pcap",
    "zeek__get.pcap",
    "zeek__icmp.pcap",
    "zeek__tcp.pcap",
    "zeek__wikipedia.pcap",
    "zeek__nmap-vsn.pcap",
    "zeek__var-services-std-ports.pcap",
    "zeek__ip4-tcp-bad-chksum.pcap",
];

#[test]
fn bundled_scenarios_with_open_loop_traffic_agree_or_are_explained() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let before = own_namespaces();
    for name in ["synflood", "udpflood", "replay-real", "flows-doc"] {
        let path = repo(&format!("scenarios/{name}.toml"));
        let input = DiffInput::scenario(&path, None, 1_500).expect("scenario input");
        assert!(!input.packets.is_empty(), "{name}: open-loop packets");
        let own = scenario_explanation_path(&path);
        let explanations = if own.exists() {
            load_explanations(&[own]).expect("explanations")
        } else {
            Vec::new()
        };
        let report = run_input(&input, &explanations, GAP).expect("diff runs");
        let text = render(&report);
        assert_eq!(report.unexplained(), 0, "{name}:\n{text}");
        assert!(report.totals().0 > 0, "{name}: compared nothing\n{text}");
    }
    assert_eq!(own_namespaces(), before, "namespaces left behind");
}

#[test]
fn closed_loop_scenarios_are_listed_as_not_replayed() {
    for name in ["nat-masquerade", "failover", "multiport-fwmark"] {
        let loaded = sim::scenario::load(&repo(&format!("scenarios/{name}.toml"))).expect("load");
        let input = scenario_input::collect(&loaded, 1_000).expect("collect");
        assert!(input.packets.is_empty(), "{name}");
        assert!(
            input.notes.iter().all(|n| n.contains("closed loop")) && !input.notes.is_empty(),
            "{name}: {:?}",
            input.notes
        );
    }
}

#[test]
fn real_captures_through_the_game_appliance_agree_or_are_explained() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let before = own_namespaces();
    let corpus = corpus();
    let appliance = repo("scenarios/appliances/game.toml");
    let mut compared_captures = 0;
    for name in CAPTURES {
        let input =
            DiffInput::captures(&appliance, &[corpus.join(name)], 1, 600).expect("captures");
        let report = run_input(&input, &[], GAP).expect("diff runs");
        let text = render(&report);
        assert_eq!(report.unexplained(), 0, "{name}:\n{text}");
        compared_captures += usize::from(report.totals().0 > 0);
    }
    assert!(
        compared_captures >= 20,
        "{compared_captures} captures compared"
    );
    assert_eq!(own_namespaces(), before, "namespaces left behind");
}
