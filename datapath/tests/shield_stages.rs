//! Fixture table for the shield stages: input packet → expected verdict → expected output
//! packet, for every stage, list kind, both address families, VLAN contexts and first-match
//! ordering.

mod shield_common;

use std::ops::ControlFlow;

use datapath::packet::builder::{DST_MAC, PacketBuilder, SRC_MAC};
use datapath::packet::{InvalidReason, tcp_flags};
use datapath::shield::SessionKey;
use datapath::shield::cookie::SynCookies;
use datapath::verdict::{DropReason, Verdict};
use shield_common::*;

const CONFIG: &str = r#"
deny = ["203.0.113.0/24", "2001:db8:bad::/48", "198.51.100.66"]
unmatched_drop = "on"
surge = "off"
ttl_filter = "off"

[default]
allow_proto = ["icmp"]

[[context]]
dst = "192.0.2.10"
protected_tcp_ports = [80, 443]
allow_src = ["198.51.100.0/24", "203.0.113.7"]
allow_proto = ["icmp"]
allow_tcp_ports = [22]
allow_udp_ports = [53]
syn_cookies = "on"

[[context]]
dst = "2001:db8::10"
protected_tcp_ports = [443]
allow_src = ["2001:db8:600d::/48"]
allow_proto = ["icmpv6"]
allow_tcp_ports = [22]
allow_udp_ports = [53]
syn_cookies = "on"

[[context]]
dst = "192.0.2.10"
vlan = 100
protected_tcp_ports = [8080]
syn_cookies = "off"
unmatched_drop = "off"

[[context]]
dst = "192.0.2.20"
protected_tcp_ports = [80]
"#;

const NOW: u64 = 1_000_000_000;

/// The cookie SYN-ACK the shield must send for a SYN (no timestamps: MSS only, window 0).
fn cookie_syn_ack(syn: &PacketBuilder, vlan: Option<u16>, isn: u32, mss: u16) -> Vec<u8> {
    let frame = syn.build();
    let meta = meta_of(&frame);
    let (src, dst) = (meta.src.unwrap(), meta.dst.unwrap());
    let (sport, dport) = (meta.sport.unwrap(), meta.dport.unwrap());
    let flow = SessionKey {
        src,
        dst,
        sport,
        dport,
    };
    let (cookie, _) = SynCookies::new(SEED).generate(NOW, &flow, isn, mss);
    let mut reply = PacketBuilder::eth().macs(DST_MAC, SRC_MAC);
    if let Some(vlan) = vlan {
        reply = reply.vlan(vlan);
    }
    reply
        .ip(dst, src)
        .ip_id(0)
        .tcp(dport, sport)
        .syn_ack()
        .seq_ack(cookie, isn.wrapping_add(1))
        .window(0)
        .mss(1460)
        .build()
}

struct Fixture {
    name: &'static str,
    input: PacketBuilder,
    verdict: ControlFlow<Verdict>,
    /// Expected emitted frame, if any.
    output: Option<Vec<u8>>,
}

fn fixture(name: &'static str, input: PacketBuilder, verdict: ControlFlow<Verdict>) -> Fixture {
    Fixture {
        name,
        input,
        verdict,
        output: None,
    }
}

fn syn(src: &str, dst: &str, dport: u16) -> PacketBuilder {
    tcp(src, 40_000, dst, dport)
        .syn()
        .seq_ack(1000, 0)
        .mss(1460)
}

fn fixtures() -> Vec<Fixture> {
    let syn_v4 = syn("192.0.2.200", "192.0.2.10", 443);
    let syn_v6 = syn("2001:db8:1::5", "2001:db8::10", 443);
    let syn_vlan200 = syn("192.0.2.200", "192.0.2.10", 80).vlan(200);
    vec![
        // Stage 1: invalid.
        fixture(
            "invalid: SYN+FIN",
            tcp("192.0.2.200", 1, "192.0.2.10", 443).flags(tcp_flags::SYN | tcp_flags::FIN),
            dropped(DropReason::Invalid(InvalidReason::TcpSynFin)),
        ),
        // Stage 2: denylist, both families, prefix and host.
        fixture(
            "deny v4 prefix (before allow_udp_ports)",
            udp("203.0.113.5", 1000, "192.0.2.10", 53),
            dropped(DropReason::Denylist),
        ),
        fixture(
            "deny v6 prefix (before allow_tcp_ports)",
            tcp("2001:db8:bad::1", 1000, "2001:db8::10", 22),
            dropped(DropReason::Denylist),
        ),
        fixture(
            "deny v4 host in the default context",
            udp("198.51.100.66", 1000, "192.0.2.99", 53),
            dropped(DropReason::Denylist),
        ),
        fixture(
            "denied host allowlisted by prefix in this context",
            udp("198.51.100.66", 1000, "192.0.2.10", 9),
            PASS,
        ),
        fixture(
            "denied prefix, allowlisted host",
            udp("203.0.113.7", 1000, "192.0.2.10", 9),
            PASS,
        ),
        // Stage 3: allowlists, every kind, both families.
        fixture(
            "allow_src v4 beats protection",
            syn("198.51.100.20", "192.0.2.10", 443),
            PASS,
        ),
        fixture(
            "allow_src v6",
            udp("2001:db8:600d::9", 1000, "2001:db8::10", 9),
            PASS,
        ),
        fixture(
            "allow_proto icmp",
            PacketBuilder::eth()
                .ip(ip("192.0.2.200"), ip("192.0.2.10"))
                .echo_request(1, 1),
            PASS,
        ),
        fixture(
            "allow_proto icmpv6",
            PacketBuilder::eth()
                .ip(ip("2001:db8:1::5"), ip("2001:db8::10"))
                .echo_request(1, 1),
            PASS,
        ),
        fixture(
            "allow_tcp_ports v4",
            tcp("192.0.2.200", 1000, "192.0.2.10", 22),
            PASS,
        ),
        fixture(
            "allow_tcp_ports v6",
            tcp("2001:db8:1::5", 1000, "2001:db8::10", 22),
            PASS,
        ),
        fixture(
            "allow_udp_ports v4",
            udp("192.0.2.200", 1000, "192.0.2.10", 53),
            PASS,
        ),
        fixture(
            "allow_udp_ports v6",
            udp("2001:db8:1::5", 1000, "2001:db8::10", 53),
            PASS,
        ),
        fixture(
            "UDP to an allowed TCP port is not allowed",
            udp("192.0.2.200", 1000, "192.0.2.10", 22),
            dropped(DropReason::Unmatched),
        ),
        // Stage 4: protected ports.
        Fixture {
            name: "protected v4 SYN → cookie SYN-ACK",
            output: Some(cookie_syn_ack(&syn_v4, None, 1000, 1460)),
            input: syn_v4,
            verdict: REPLY,
        },
        Fixture {
            name: "protected v6 SYN → cookie SYN-ACK",
            output: Some(cookie_syn_ack(&syn_v6, None, 1000, 1460)),
            input: syn_v6,
            verdict: REPLY,
        },
        fixture(
            "protected ACK with a forged cookie",
            tcp("192.0.2.200", 40_000, "192.0.2.10", 443).seq_ack(1001, 12345),
            dropped(DropReason::BadCookie),
        ),
        fixture(
            "protected RST without session",
            tcp("192.0.2.200", 40_000, "192.0.2.10", 443).rst(),
            dropped(DropReason::NoSession),
        ),
        // VLAN contexts.
        fixture(
            "vlan 100 context: cookies off, SYN passes",
            syn("192.0.2.200", "192.0.2.10", 8080).vlan(100),
            PASS,
        ),
        fixture(
            "vlan 100 context: port 80 unprotected, unmatched passes",
            syn("192.0.2.200", "192.0.2.10", 80).vlan(100),
            PASS,
        ),
        fixture(
            "no vlan: dst context, 8080 unmatched → drop",
            syn("192.0.2.200", "192.0.2.10", 8080),
            dropped(DropReason::Unmatched),
        ),
        Fixture {
            name: "vlan 200 falls back to the dst context; reply keeps the tag",
            output: Some(cookie_syn_ack(&syn_vlan200, Some(200), 1000, 1460)),
            input: syn_vlan200,
            verdict: REPLY,
        },
        // Stage 5 and the default context.
        fixture(
            "default context allows icmp",
            PacketBuilder::eth()
                .ip(ip("192.0.2.200"), ip("192.0.2.99"))
                .echo_request(1, 1),
            PASS,
        ),
        fixture(
            "a context does not inherit the default's allow_proto",
            PacketBuilder::eth()
                .ip(ip("192.0.2.200"), ip("192.0.2.20"))
                .echo_request(1, 1),
            dropped(DropReason::Unmatched),
        ),
        fixture(
            "default context: unmatched drop",
            udp("192.0.2.200", 1000, "192.0.2.99", 123),
            dropped(DropReason::Unmatched),
        ),
    ]
}

#[test]
fn stage_fixtures() {
    for fixture in fixtures() {
        let mut shield = shield(CONFIG);
        let outcome = run(&mut shield, NOW, &fixture.input.build(), 0);
        assert_eq!(outcome.flow, fixture.verdict, "{}", fixture.name);
        let emitted: Vec<&Vec<u8>> = outcome.emitted.iter().map(|f| &f.bytes).collect();
        match &fixture.output {
            Some(expected) => assert_eq!(emitted, vec![expected], "{}", fixture.name),
            None => assert!(emitted.is_empty(), "{}: emitted {emitted:?}", fixture.name),
        }
    }
}

#[test]
fn verdicts_are_counted_per_context() {
    let mut shield = shield(CONFIG);
    for fixture in fixtures() {
        run(&mut shield, NOW, &fixture.input.build(), 0);
    }
    let report: Vec<(String, std::collections::BTreeMap<String, u64>)> = shield
        .contexts()
        .map(|id| (shield.context_name(id), shield.counters(id).entries()))
        .collect();
    insta::assert_yaml_snapshot!(report);
}

#[test]
fn interfaces_without_an_instance_pass_untouched() {
    let mut shield = shield(
        r#"
        interfaces = ["eth1"]
        deny = ["0.0.0.0/0"]
        "#,
    );
    let frame = udp("192.0.2.200", 1, "192.0.2.10", 53).build();
    assert_eq!(run(&mut shield, NOW, &frame, 0).flow, PASS);
    assert_eq!(
        run(&mut shield, NOW, &frame, 1).flow,
        dropped(DropReason::Denylist)
    );
}

#[test]
fn instances_have_their_own_contexts() {
    let mut shield = shield(
        r#"
        interfaces = ["eth0"]
        [[instance]]
        interfaces = ["eth1"]
        unmatched_drop = "on"
        "#,
    );
    let frame = udp("192.0.2.200", 1, "192.0.2.10", 53).build();
    assert_eq!(run(&mut shield, NOW, &frame, 0).flow, PASS);
    assert_eq!(
        run(&mut shield, NOW, &frame, 1).flow,
        dropped(DropReason::Unmatched)
    );
    let names: Vec<String> = shield.contexts().map(|c| shield.context_name(c)).collect();
    assert_eq!(names, ["shield/default", "shield.instance[0]/default"]);
}
