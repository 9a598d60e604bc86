//! The known differences cannot hide a bug: the built-in file parses and every entry is
//! precise (an entry without a packet class, or with an inexact outcome, is refused), and
//! injected simulator bugs over recorded outcomes are disagreements nothing explains:
//! a flipped allow-list match (both directions), a wrong DNAT port (also behind a jhash
//! director), a drop of the wrong class, an invalid-packet verdict on a valid packet. No
//! kernel needed: the kernel side is a recorded outcome.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use datapath::packet::LinkType;
use datapath::packet::builder::PacketBuilder;
use sim::kernel::diff::{KNOWN_DIFFERENCES, built_in_explanations, compare, parse_explanations};
use sim::kernel::inject::{KernelPacket, KernelRun};
use sim::kernel::outcome::{FrameSummary, Outcome};
use sim::kernel::rules::{BackendMatch, BackendRule, KernelRules};
use sim::kernel::simulate::SimPacket;
use sim::kernel::trace::RuleRef;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 10, 10);
const REAL: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);

fn summary(frame: &[u8]) -> FrameSummary {
    FrameSummary::of(LinkType::Ethernet, frame)
}

fn syn_from(src: Ipv4Addr, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(src, dst)
        .tcp(40_000, dport)
        .syn()
        .build()
}

fn sim_packet(
    input: &[u8],
    stage: &'static str,
    outcome: Outcome,
    backend: Option<SocketAddr>,
) -> SimPacket {
    let verdict = match outcome {
        Outcome::Drop { .. } => "drop",
        _ => "forward",
    };
    SimPacket {
        ordinal: 0,
        input: summary(input),
        ts_ns: 0,
        meta: datapath::packet::parse(
            datapath::packet::LinkType::Ethernet,
            input,
            input.len() as u32,
            0,
        ),
        outcome,
        decision: sim::record::Decision {
            stage,
            verdict,
            reason: None,
            flow: None,
            rule: None,
            backend,
            route: None,
        },
        route: None,
        cost_ns: 1,
    }
}

fn kernel_run(outcome: Outcome, rule: Option<RuleRef>) -> KernelRun {
    let dropped_by_rule = rule.is_some() && matches!(outcome, Outcome::Drop { .. });
    KernelRun {
        packets: vec![KernelPacket {
            ordinal: 0,
            outcome,
            latency_ns: None,
            rule,
            dropped_by_rule,
            last_hook: None,
            next_hop_mac: None,
        }],
        ..KernelRun::default()
    }
}

fn forward(frame: &[u8]) -> Outcome {
    Outcome::Forward {
        frame: summary(frame),
    }
}

fn drop(reason: &str) -> Outcome {
    Outcome::Drop {
        reason: Some(reason.into()),
    }
}

fn shield_rule() -> RuleRef {
    RuleRef {
        family: "netdev".into(),
        table: "lbsim_shield".into(),
        chain: "ingress".into(),
        handle: Some(7),
        text: "ip saddr @deny_default counter drop comment \"shield context default: deny\"".into(),
        verdict: "drop".into(),
    }
}

/// Number of unexplained disagreements of one recorded packet, with the built-in entries.
fn unexplained(sim: SimPacket, kernel: KernelRun, rules: &KernelRules) -> usize {
    compare(&[sim], &kernel, rules, &built_in_explanations()).unexplained()
}

#[test]
fn the_built_in_entries_parse_and_are_named_once() {
    let entries = parse_explanations(KNOWN_DIFFERENCES).expect("valid");
    assert!(entries.len() >= 10, "{}", entries.len());
    assert!(entries.iter().all(|e| !e.packet.eq(&Default::default())));
}

#[test]
fn imprecise_entries_are_refused() {
    let base = "name = \"x\"\nwhy = \"w\"\nmechanism = \"m\"\n";
    let refused = [
        // no packet class at all
        "simulator = { kind = \"drop\", reason = \"ttl\" }\nkernel = { kind = \"forward\" }\npacket = {}\n",
        // a simulator drop without its reason
        "packet = { proto = [\"tcp\"] }\nsimulator = { kind = \"drop\" }\nkernel = { kind = \"forward\" }\n",
        // a kernel drop without its class
        "packet = { proto = [\"tcp\"] }\nsimulator = { kind = \"forward\" }\nkernel = { kind = \"drop\" }\n",
        // an answer without which one
        "packet = { proto = [\"tcp\"] }\nsimulator = { kind = \"forward\" }\nkernel = { kind = \"answer\" }\n",
        // forward against forward without the differing fields
        "packet = { proto = [\"tcp\"] }\nsimulator = { kind = \"forward\" }\nkernel = { kind = \"forward\" }\n",
        // an unknown address class
        "packet = { src = [\"martian\"] }\nsimulator = { kind = \"forward\" }\nkernel = { kind = \"drop\", class = \"routing\" }\n",
    ];
    for entry in refused {
        let text = format!("[[difference]]\n{base}{entry}");
        assert!(parse_explanations(&text).is_err(), "accepted:\n{text}");
    }
    // The former wildcard format (prefixes, `simulator = ""`) is refused too.
    let old = "[[difference]]\nsimulator = \"\"\nkernel = \"drop\"\nwhy = \"w\"\n";
    assert!(parse_explanations(old).is_err());
}

#[test]
fn a_martian_source_drop_agrees_only_with_a_routing_drop() {
    let rules = KernelRules::default();
    let input = syn_from(Ipv4Addr::new(127, 1, 2, 3), VIP, 80);
    let routing_drop = || kernel_run(Outcome::Drop { reason: None }, None);
    // Forwarded by the simulator: no entry explains the kernel's routing drop (the IP
    // layer must drop it).
    let forwarded = sim_packet(&input, "forward", forward(&input), None);
    assert_eq!(unexplained(forwarded, routing_drop(), &rules), 1);
    // The IP layer's drop agrees with the kernel's routing drop ...
    let dropped = || sim_packet(&input, "ip", drop("martian_source"), None);
    let report = compare(
        &[dropped()],
        &routing_drop(),
        &rules,
        &built_in_explanations(),
    );
    assert_eq!((report.totals(), report.disagreements.len()), ((1, 1), 0));
    // ... and not with a drop by a shield rule.
    let by_rule = kernel_run(Outcome::Drop { reason: None }, Some(shield_rule()));
    assert_eq!(unexplained(dropped(), by_rule, &rules), 1);
}

#[test]
fn a_flipped_allow_list_match_is_caught_both_ways() {
    let rules = KernelRules::default();
    let input = syn_from(CLIENT, VIP, 80);
    // The simulator denies a source the kernel's allow list lets through.
    let sim = sim_packet(&input, "shield", drop("denylist"), None);
    assert_eq!(
        unexplained(sim, kernel_run(forward(&input), None), &rules),
        1
    );
    // The simulator lets through a source the kernel's deny set drops.
    let sim = sim_packet(&input, "forward", forward(&input), None);
    let kernel = kernel_run(Outcome::Drop { reason: None }, Some(shield_rule()));
    assert_eq!(unexplained(sim, kernel, &rules), 1);
}

#[test]
fn a_drop_of_another_class_is_a_disagreement() {
    let rules = KernelRules::default();
    let input = syn_from(CLIENT, VIP, 80);
    let sim = sim_packet(&input, "flows", drop("flow_deny"), None);
    let kernel = kernel_run(Outcome::Drop { reason: None }, Some(shield_rule()));
    assert_eq!(unexplained(sim, kernel, &rules), 1);
    let sim = sim_packet(&input, "shield", drop("denylist"), None);
    let kernel = kernel_run(Outcome::Drop { reason: None }, Some(shield_rule()));
    assert_eq!(unexplained(sim, kernel, &rules), 0);
}

#[test]
fn a_wrong_dnat_port_is_caught_whatever_the_scheduler_mechanism() {
    let input = syn_from(CLIENT, VIP, 80);
    let to = |port: u16| forward(&syn_from(CLIENT, REAL, port));
    // The director chose REAL:8080 but the buggy rewrite wrote port 8081.
    let backend = SocketAddr::new(IpAddr::V4(REAL), 8080);
    for matching in [
        BackendMatch::Exact,
        BackendMatch::Jhash,
        BackendMatch::StandIn,
    ] {
        let mut rules = KernelRules::default();
        rules.backends.insert(
            backend,
            BackendRule {
                director: "web".into(),
                mechanism: "nft jhash ip saddr mod 2 (sh emulated), numgen rr stands in".into(),
                matching,
            },
        );
        let sim = || sim_packet(&input, "director", to(8081), Some(backend));
        let kernel = || kernel_run(to(8080), None);
        assert_eq!(unexplained(sim(), kernel(), &rules), 1, "{matching:?}");
        // Without the bug, the same packet agrees.
        let right = sim_packet(&input, "director", to(8080), Some(backend));
        assert_eq!(unexplained(right, kernel(), &rules), 0, "{matching:?}");
    }
}

#[test]
fn an_invalid_verdict_on_a_valid_packet_is_not_explained() {
    let rules = KernelRules::default();
    // A plain SYN with a right checksum, called SYN+FIN or bad-checksum by a buggy parser.
    let input = syn_from(CLIENT, VIP, 80);
    for reason in ["invalid:tcp_syn_fin", "invalid:bad_tcp_checksum"] {
        let sim = sim_packet(&input, "shield", drop(reason), None);
        assert_eq!(
            unexplained(sim, kernel_run(forward(&input), None), &rules),
            1,
            "{reason}"
        );
    }
}

/// The report counts the packets each entry explained; an entry that explained nothing is
/// what `sim diff --strict` refuses.
#[test]
fn explained_packets_are_counted_per_entry_and_unused_entries_found() {
    let rules = KernelRules::default();
    // SYN+FIN: the shield drops it, the kernel's conntrack only marks it invalid and forwards.
    let input = PacketBuilder::eth()
        .ipv4(CLIENT, VIP)
        .tcp(40_000, 80)
        .flags(0x03)
        .build();
    let sim = sim_packet(&input, "shield", drop("invalid:tcp_syn_fin"), None);
    let kernel = kernel_run(forward(&input), None);
    let entries = built_in_explanations();
    let report = compare(&[sim], &kernel, &rules, &entries);
    assert_eq!(report.unexplained(), 0);
    assert_eq!(report.explained_per_entry["tcp-syn-fin-forwarded"], 1);
    let unused = sim::kernel::diff::unused_entries(&report, &entries);
    assert_eq!(unused.len(), entries.len() - 1, "{unused:?}");
    assert!(!unused.iter().any(|n| n == "tcp-syn-fin-forwarded"));
}
