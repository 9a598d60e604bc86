//! Coverage of the kernel diff, and the known differences held to account.
//!
//! Compared: every bundled scenario with open-loop traffic, 24 real captures of
//! `../shared/corpus/real` (TCP, UDP, DNS, ICMP, fragments, floods, nmap scans, reflection,
//! bad checksums) and 4 real IPv6 captures through `scenarios/appliances/game.toml`, the
//! corpus's kernel case (web conversations through a NAT director) and an IPv6 hop-limit-1
//! packet. Each comparison must have no unexplained disagreement AND at least its measured
//! number of agreeing packets (so an explanation cannot silently absorb what used to
//! agree). Then every built-in known difference is deleted in turn and the same recorded
//! outcomes compared again: some comparison must then fail, or the entry is not
//! load-bearing (an unused entry fails too, as `sim diff --strict` does for users' files).
//! Packets are capped (scenarios: 1500, captures: 600) and injected 50 µs apart.

mod kernel_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use datapath::packet::builder::PacketBuilder;
use kernel_support::{corpus, data, kernel_tests_enabled, lock, own_namespaces, write_pcap};
use sim::kernel::diff::{
    DiffInput, Explanation, Sides, built_in_explanations, load_explanations, render, run_sides,
    scenario_explanation_path,
};
use sim::kernel::scenario_input;

const GAP: Duration = Duration::from_micros(50);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Bundled scenarios with open-loop traffic, and the packets that must agree (measured).
const SCENARIOS: [(&str, u64); 4] = [
    ("synflood", 552),
    ("udpflood", 1500),
    ("replay-real", 126),
    ("flows-doc", 50),
];

/// Real captures through the game appliance, and the packets that must agree (measured;
/// the rest are explained).
const CAPTURES: [(&str, u64); 28] = [
    ("esnet__nmap_80_all.pcap", 216),
    ("esnet__one_way_all_flags.pcap", 31),
    ("esnet__two_way_all_flags.pcap", 390),
    ("gopacket__test_dns.pcap", 10),
    ("gopacket__test_ethernet.pcap", 10),
    ("stopddos__amp.TCP.reflection.SYNACK.pcap", 597),
    (
        "stopddos__amp.TCP.syn.optionallyACK.optionallysamePort.pcapng",
        599,
    ),
    ("stopddos__amp.dns.RRSIG.fragmented.pcap", 596),
    ("stopddos__pkt.TCP.DOMINATE.syn.ecn.cwr.pcapng", 600),
    ("stopddos__pkt.TCP.synflood.spoofed.pcap", 0),
    ("tcpdump__dns_tcp.pcap", 11),
    ("tcpdump__dns_udp.pcap", 2),
    ("tcpdump__print-flags.pcap", 8),
    ("tcpreplay__test.pcap", 157),
    ("zeek__5-pings.pcap", 10),
    ("zeek__fragmented-1.pcap", 3),
    ("zeek__fragmented-4.pcap", 4),
    ("zeek__get.pcap", 14),
    ("zeek__icmp.pcap", 12),
    ("zeek__tcp.pcap", 9),
    ("zeek__wikipedia.pcap", 126),
    ("zeek__nmap-vsn.pcap", 44),
    ("zeek__var-services-std-ports.pcap", 259),
    ("zeek__ip4-tcp-bad-chksum.pcap", 0),
    ("zeek__ipv6.pcap", 17),
    ("zeek__ipv6-http-atomic-frag.pcap", 34),
    ("zeek__ipv6-fragmented-dns.pcap", 8),
    ("tcpdump__icmpv6.pcap", 5),
];

/// One comparison: its input, its own explanations, both sides' recorded outcomes.
struct Comparison {
    name: String,
    input: DiffInput,
    own: Vec<Explanation>,
    sides: Sides,
    min_agreed: u64,
}

impl Comparison {
    fn run(name: &str, input: DiffInput, own: Vec<Explanation>, min_agreed: u64) -> Self {
        let sides = run_sides(&input, GAP).expect("diff runs");
        Self {
            name: name.into(),
            input,
            own,
            sides,
            min_agreed,
        }
    }

    /// Unexplained disagreements with these built-in entries plus the comparison's own.
    fn unexplained_with(&self, built_in: &[Explanation]) -> usize {
        let mut all = built_in.to_vec();
        all.extend(self.own.iter().cloned());
        self.sides.compare(&self.input, &all, GAP).unexplained()
    }
}

fn scenario(name: &str, min_agreed: u64) -> Comparison {
    let path = repo(&format!("scenarios/{name}.toml"));
    let input = DiffInput::scenario(&path, None, 1_500).expect("scenario input");
    assert!(!input.packets.is_empty(), "{name}: open-loop packets");
    let own = scenario_explanation_path(&path);
    let own = if own.exists() {
        load_explanations(&[own]).expect("explanations")
    } else {
        Vec::new()
    };
    Comparison::run(name, input, own, min_agreed)
}

fn capture(name: &str, min_agreed: u64) -> Comparison {
    let appliance = repo("scenarios/appliances/game.toml");
    let input = DiffInput::captures(&appliance, &[corpus().join(name)], 1, 600).expect("captures");
    Comparison::run(name, input, Vec::new(), min_agreed)
}

/// The corpus's kernel case (`pcaps/cases/gen/conversation-web.web-vip.kernel.toml`) and
/// an IPv6 UDP packet with hop limit 1 through `sim/tests/data/kernel/ipv6.toml`.
fn fixtures() -> Vec<Comparison> {
    let appliance = repo("pcaps/cases/appliances/web-vip.toml");
    let capture = repo("pcaps/gen/conversation-web.pcap");
    let input = DiffInput::captures(&appliance, &[capture], 1, 600).expect("case");
    let web = Comparison::run("conversation-web.web-vip", input, Vec::new(), 5);
    let hop_limit_one = PacketBuilder::eth()
        .ipv6(
            "2001:db8:5::1".parse().expect("v6"),
            "2001:db8:f::1".parse().expect("v6"),
        )
        .udp(40_000, 53)
        .payload(b"q")
        .ttl(1)
        .build();
    let pcap = write_pcap("hop-limit.pcap", &[hop_limit_one]);
    let input = DiffInput::captures(&data("ipv6.toml"), &[pcap], 1, 10).expect("fixture");
    let hop = Comparison::run("ipv6 hop limit 1", input, Vec::new(), 1);
    vec![web, hop]
}

fn run_all() -> Vec<Comparison> {
    let mut all: Vec<Comparison> = SCENARIOS
        .iter()
        .map(|(name, min)| scenario(name, *min))
        .collect();
    all.extend(CAPTURES.iter().map(|(name, min)| capture(name, *min)));
    all.extend(fixtures());
    all
}

#[test]
fn every_comparison_meets_its_agreement_and_every_known_difference_is_load_bearing() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let before = own_namespaces();
    let comparisons = run_all();
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let built_in = built_in_explanations();
    for c in &comparisons {
        let mut all = built_in.clone();
        all.extend(c.own.iter().cloned());
        let report = c.sides.compare(&c.input, &all, GAP);
        let text = render(&report);
        let (compared, agreed) = report.totals();
        eprintln!("{}: {agreed}/{compared} agree", c.name);
        assert_eq!(report.unexplained(), 0, "{}:\n{text}", c.name);
        assert!(compared > 0, "{}: compared nothing\n{text}", c.name);
        assert!(
            agreed >= c.min_agreed,
            "{}: {agreed} agree, at least {} expected\n{text}",
            c.name,
            c.min_agreed
        );
        let unused_own: Vec<&str> = c
            .own
            .iter()
            .filter(|e| report.explained_per_entry.get(&e.name) == Some(&0))
            .map(|e| e.name.as_str())
            .collect();
        assert!(unused_own.is_empty(), "{}: unused {unused_own:?}", c.name);
    }
    let mut not_load_bearing = Vec::new();
    for entry in &built_in {
        let without: Vec<Explanation> = built_in
            .iter()
            .filter(|e| e.name != entry.name)
            .cloned()
            .collect();
        let failing = comparisons
            .iter()
            .filter(|c| c.unexplained_with(&without) > 0)
            .count();
        eprintln!("without {}: {failing} comparison(s) fail", entry.name);
        if failing == 0 {
            not_load_bearing.push(entry.name.clone());
        }
    }
    assert!(
        not_load_bearing.is_empty(),
        "known differences no comparison needs (delete them or make them precise): {not_load_bearing:?}"
    );
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
