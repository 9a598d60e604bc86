//! Fixture table of the IP layer (`datapath::ip::fixtures`, also run through the Linux
//! kernel by sim/tests/kernel_ip.rs): martian classes, TTL / hop limit 0-1-2, DF + MTU,
//! fragment sets complete / reordered / incomplete / overlapping; then rp_filter modes,
//! forwarding off, the ICMP rate limit and reassembly timeouts, which need settings or
//! time the kernel comparison does not vary.

use std::net::IpAddr;

use datapath::ip::fixtures::{Expect, FIXTURE_MTU, cases};
use datapath::ip::{IpConfig, IpInterface, IpLayer, RpFilter};
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, ParseOptions, parse_with};
use datapath::pipeline::Pipeline;
use datapath::verdict::{NS_PER_SEC, Stage, Verdict};

fn pipeline(config: IpConfig) -> Pipeline {
    Pipeline::default().with_ip(IpLayer::new(config))
}

fn fixture_config() -> IpConfig {
    IpConfig {
        mtu: FIXTURE_MTU,
        conntrack: true,
        ..IpConfig::default()
    }
}

/// Run frames at 1 ms intervals; a held fragment takes its datagram's outcome.
fn outcomes(pipeline: &mut Pipeline, frames: &[Vec<u8>]) -> Vec<Expect> {
    let mut out: Vec<Option<Expect>> = Vec::new();
    let mut held = Vec::new();
    for (index, frame) in frames.iter().enumerate() {
        let now = index as u64 * 1_000_000;
        let outcome = pipeline.process(
            now,
            0,
            LinkType::Ethernet,
            frame.clone(),
            frame.len() as u32,
        );
        let emitted = pipeline.take_emitted();
        let duplicate =
            matches!(outcome.verdict, Verdict::Drop(r) if r.name() == "fragment_duplicate");
        if outcome.stage == Stage::Ip && (outcome.verdict == Verdict::Pass || duplicate) {
            held.push(index);
            out.push(None);
            continue;
        }
        let expect = match outcome.verdict {
            Verdict::Drop(reason) => {
                Expect::Drop(Box::leak(reason.name().into_owned().into_boxed_str()))
            }
            Verdict::Reply => {
                let answer = &emitted.first().expect("an ICMP error is sent").frame;
                let meta = parse_with(
                    &ParseOptions::default(),
                    LinkType::Ethernet,
                    answer,
                    answer.len() as u32,
                    0,
                );
                assert_eq!(meta.invalid, None, "the ICMP error is a valid packet");
                Expect::Icmp(meta.icmp_type.unwrap(), meta.icmp_code.unwrap())
            }
            Verdict::Pass | Verdict::Forward => {
                assert!(!emitted.is_empty(), "a forwarded packet is sent");
                forwarded(&emitted, frame)
            }
        };
        for earlier in held.drain(..) {
            out[earlier] = Some(expect.clone());
        }
        out.push(Some(expect));
    }
    out.into_iter()
        .map(|o| o.unwrap_or(Expect::Drop("reassembly_incomplete")))
        .collect()
}

/// A forward, or the fragments a whole datagram (`input`) left as (each a valid IPv4
/// packet with the datagram's ID and the TTL decremented).
fn forwarded(emitted: &[datapath::pipeline::EmittedFrame], input: &[u8]) -> Expect {
    let opts = ParseOptions::default();
    let parse = |f: &[u8]| parse_with(&opts, LinkType::Ethernet, f, f.len() as u32, 0);
    let metas: Vec<_> = emitted.iter().map(|e| parse(&e.frame)).collect();
    if parse(input).frag.is_fragment || !metas[0].frag.is_fragment {
        return Expect::Forward;
    }
    let shapes: Vec<(u32, u32, bool)> = metas
        .iter()
        .map(|m| {
            assert_eq!(m.invalid, None, "a valid fragment");
            assert_eq!((m.frag.id, m.ttl), (metas[0].frag.id, 63));
            (m.frag.offset, m.ip_len, m.frag.more)
        })
        .collect();
    Expect::Fragments(Box::leak(shapes.into_boxed_slice()))
}

#[test]
fn every_fixture_case_has_its_outcome() {
    for case in cases() {
        let mut p = pipeline(fixture_config());
        let frames: Vec<Vec<u8>> = case.frames.iter().map(|(f, _)| f.clone()).collect();
        let expected: Vec<Expect> = case.frames.iter().map(|(_, e)| e.clone()).collect();
        assert_eq!(outcomes(&mut p, &frames), expected, "{}", case.name);
    }
}

#[test]
fn forwarded_packets_leave_with_the_ttl_decremented_and_fragments_whole() {
    let mut p = pipeline(fixture_config());
    let frame = PacketBuilder::eth()
        .ipv4(
            "198.51.100.1".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
        )
        .ttl(9)
        .udp(1, 2)
        .build();
    p.process(0, 0, LinkType::Ethernet, frame.clone(), frame.len() as u32);
    let sent = &p.emitted()[0].frame;
    let meta = parse_with(
        &ParseOptions::default(),
        LinkType::Ethernet,
        sent,
        sent.len() as u32,
        0,
    );
    assert_eq!((meta.ttl, meta.invalid), (8, None));
    let complete = &cases()
        .into_iter()
        .find(|c| c.name == "fragments complete")
        .unwrap()
        .frames;
    let mut p = pipeline(fixture_config());
    p.process(0, 0, LinkType::Ethernet, complete[0].0.clone(), 60);
    assert!(p.emitted().is_empty(), "held until complete");
    p.process(1, 0, LinkType::Ethernet, complete[1].0.clone(), 60);
    let sent: Vec<_> = p.emitted().iter().map(|e| e.frame.clone()).collect();
    assert_eq!(sent.len(), 2);
    for (frame, original) in sent.iter().zip(complete) {
        let meta = parse_with(
            &ParseOptions::default(),
            LinkType::Ethernet,
            frame,
            frame.len() as u32,
            0,
        );
        assert_eq!((meta.ttl, meta.invalid), (63, None));
        assert_eq!(frame[34..], original.0[34..], "payload unchanged");
    }
}

fn udp_from(src: &str, ttl: u8) -> Vec<u8> {
    PacketBuilder::eth()
        .ipv4(src.parse().unwrap(), "192.0.2.80".parse().unwrap())
        .ttl(ttl)
        .udp(40_000, 53)
        .build()
}

#[test]
fn rp_filter_modes_check_the_route_back_to_the_source() {
    // Interface 0: 10.0.0.1/24 (client side); interface 1: 192.0.2.1/24, default route.
    let interfaces = vec![
        IpInterface {
            iface: 0,
            address: "10.0.0.1".parse().unwrap(),
            prefix: 24,
        },
        IpInterface {
            iface: 1,
            address: "192.0.2.1".parse().unwrap(),
            prefix: 24,
        },
    ];
    let table = [
        // (mode, default route, ingress, source, passes)
        (RpFilter::Off, None, 0, "203.0.113.9", true),
        (RpFilter::Strict, Some(1), 0, "10.0.0.9", true),
        (RpFilter::Strict, Some(1), 0, "203.0.113.9", false),
        (RpFilter::Strict, Some(1), 1, "203.0.113.9", true),
        (RpFilter::Loose, Some(1), 0, "203.0.113.9", true),
        (RpFilter::Loose, None, 0, "203.0.113.9", false),
        (RpFilter::Loose, None, 0, "192.0.2.7", true),
    ];
    for (mode, default_route, iface, src, passes) in table {
        let config = IpConfig {
            rp_filter: mode,
            interfaces: interfaces.clone(),
            default_route,
            ..IpConfig::default()
        };
        let mut p = pipeline(config);
        let frame = udp_from(src, 64);
        let outcome = p.process(
            0,
            iface,
            LinkType::Ethernet,
            frame.clone(),
            frame.len() as u32,
        );
        let expected = if passes {
            Verdict::Pass
        } else {
            Verdict::Drop(datapath::DropReason::RpFilter)
        };
        assert_eq!(
            outcome.verdict, expected,
            "{mode:?} {default_route:?} iface {iface} {src}"
        );
    }
}

#[test]
fn forwarding_off_drops_silently() {
    let config = IpConfig {
        forwarding: false,
        ..IpConfig::default()
    };
    let mut p = pipeline(config);
    let frame = udp_from("198.51.100.1", 64);
    let outcome = p.process(0, 0, LinkType::Ethernet, frame.clone(), frame.len() as u32);
    assert_eq!(
        outcome.verdict,
        Verdict::Drop(datapath::DropReason::ForwardingOff)
    );
    assert!(p.emitted().is_empty());
}

#[test]
fn time_exceeded_is_rate_limited_per_source_and_sent_from_the_ingress_address() {
    let config = IpConfig {
        interfaces: vec![IpInterface {
            iface: 0,
            address: "10.0.0.1".parse().unwrap(),
            prefix: 24,
        }],
        ..IpConfig::default()
    };
    let mut p = pipeline(config);
    let frame = udp_from("198.51.100.1", 1);
    let verdicts: Vec<Verdict> = (0..8)
        .map(|i| {
            p.process(i, 0, LinkType::Ethernet, frame.clone(), frame.len() as u32)
                .verdict
        })
        .collect();
    let limited = Verdict::Drop(datapath::DropReason::TtlExceeded);
    assert_eq!(verdicts[..6], [Verdict::Reply; 6]);
    assert_eq!(verdicts[6..], [limited; 2]);
    let outcome = p.process(
        NS_PER_SEC,
        0,
        LinkType::Ethernet,
        frame.clone(),
        frame.len() as u32,
    );
    assert_eq!(
        outcome.verdict,
        Verdict::Reply,
        "one more after the interval"
    );
    let answer = &p.emitted()[0].frame;
    let meta = parse_with(
        &ParseOptions::default(),
        LinkType::Ethernet,
        answer,
        answer.len() as u32,
        0,
    );
    assert_eq!(meta.src, Some("10.0.0.1".parse::<IpAddr>().unwrap()));
    assert_eq!(meta.dst, Some("198.51.100.1".parse::<IpAddr>().unwrap()));
    assert_eq!(&answer[0..6], &frame[6..12], "back to the sender's MAC");
    // The quoted datagram is the packet as received.
    assert_eq!(&answer[42..42 + frame.len() - 14], &frame[14..]);
    assert_eq!(p.ip().unwrap().counters().icmp_rate_limited, 2);
}

#[test]
fn without_connection_tracking_fragments_are_forwarded_one_by_one() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "fragments incomplete")
        .unwrap();
    let mut p = pipeline(IpConfig::default());
    let frame = case.frames[0].0.clone();
    let outcome = p.process(0, 0, LinkType::Ethernet, frame.clone(), frame.len() as u32);
    assert_eq!(outcome.verdict, Verdict::Pass);
    assert_eq!(p.emitted().len(), 1);
}

#[test]
fn an_incomplete_datagram_times_out_after_ipfrag_time() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "fragments reordered")
        .unwrap();
    let mut p = pipeline(fixture_config());
    let (last, first) = (&case.frames[0].0, &case.frames[1].0);
    p.process(0, 0, LinkType::Ethernet, last.clone(), 60);
    // 30 s later the queue is gone: the first fragment starts a new, incomplete one.
    let outcome = p.process(30 * NS_PER_SEC, 0, LinkType::Ethernet, first.clone(), 60);
    assert_eq!((outcome.stage, outcome.verdict), (Stage::Ip, Verdict::Pass));
    assert!(p.emitted().is_empty());
    assert_eq!(p.ip().unwrap().defrag.counters().timeouts, 1);
}

fn answer_type(p: &Pipeline) -> Option<(u8, u8)> {
    let answer = &p.emitted().first()?.frame;
    let meta = parse_with(
        &ParseOptions::default(),
        LinkType::Ethernet,
        answer,
        answer.len() as u32,
        0,
    );
    meta.icmp_type.zip(meta.icmp_code)
}

#[test]
fn without_a_route_a_written_main_table_answers_net_unreachable_rate_limited() {
    let config = IpConfig {
        interfaces: vec![IpInterface {
            iface: 0,
            address: "198.51.100.254".parse().unwrap(),
            prefix: 24,
        }],
        unreachable_without_route: true,
        ..IpConfig::default()
    };
    let mut p = pipeline(config.clone());
    // 192.0.2.80: no route (only 198.51.100.0/24 is connected).
    let frame = udp_from("198.51.100.1", 64);
    let mut sent = Vec::new();
    for i in 0..4 {
        let outcome = p.process(i, 0, LinkType::Ethernet, frame.clone(), frame.len() as u32);
        sent.push((outcome.verdict, answer_type(&p)));
    }
    let limited = Verdict::Drop(datapath::DropReason::NoRoute);
    // ip_error's bucket (5 s, 1 s each) and the ICMP one (6 s, 1 s each) share the peer's
    // tokens: two answers in a burst.
    let reply = (Verdict::Reply, Some((3, 0)));
    assert_eq!(sent, [reply, reply, (limited, None), (limited, None)]);
    // TTL 1 without a route: the routing decision comes first (net unreachable).
    let mut p = pipeline(config.clone());
    let expiring = udp_from("198.51.100.2", 1);
    p.process(0, 0, LinkType::Ethernet, expiring.clone(), 60);
    assert_eq!(answer_type(&p), Some((3, 0)));
    // A routed destination is forwarded; IPv6 without a route gets "no route" (1/0).
    let mut p = pipeline(config.clone());
    let routed = PacketBuilder::eth()
        .ipv4(
            "203.0.113.1".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
        )
        .udp(1, 53)
        .build();
    let outcome = p.process(0, 0, LinkType::Ethernet, routed.clone(), 60);
    assert_eq!(outcome.verdict, Verdict::Pass);
    let v6 = PacketBuilder::eth()
        .ipv6(
            "2001:db8:1::1".parse().unwrap(),
            "2001:db8::80".parse().unwrap(),
        )
        .udp(1, 53)
        .build();
    p.process(1, 0, LinkType::Ethernet, v6.clone(), v6.len() as u32);
    assert_eq!(answer_type(&p), Some((1, 0)));
    // Without a written main table the same packet is forwarded.
    let mut p = pipeline(IpConfig {
        unreachable_without_route: false,
        ..config
    });
    let outcome = p.process(0, 0, LinkType::Ethernet, frame.clone(), 60);
    assert_eq!(outcome.verdict, Verdict::Pass);
}

#[test]
fn icmp_errors_and_later_fragments_get_no_icmp_error() {
    let mut p = pipeline(IpConfig::default());
    let error = PacketBuilder::eth()
        .ipv4(
            "198.51.100.1".parse().unwrap(),
            "192.0.2.80".parse().unwrap(),
        )
        .ttl(1)
        .icmp(3, 1)
        .build();
    let outcome = p.process(0, 0, LinkType::Ethernet, error.clone(), error.len() as u32);
    let expired = Verdict::Drop(datapath::DropReason::TtlExceeded);
    assert_eq!(outcome.verdict, expired);
    assert!(p.emitted().is_empty());
    let echo = PacketBuilder::eth()
        .ipv4(
            "198.51.100.1".parse().unwrap(),
            "192.0.2.80".parse().unwrap(),
        )
        .ttl(1)
        .icmp(8, 0)
        .build();
    let outcome = p.process(1, 0, LinkType::Ethernet, echo.clone(), echo.len() as u32);
    assert_eq!(
        outcome.verdict,
        Verdict::Reply,
        "an echo request is answered"
    );
    let whole = PacketBuilder::eth()
        .ipv4(
            "198.51.100.3".parse().unwrap(),
            "192.0.2.80".parse().unwrap(),
        )
        .ttl(1)
        .udp(40_000, 53)
        .payload(&[0x61; 32])
        .build();
    let later = &datapath::ip::fixtures::fragments(&whole, 7, &[(8, 8, false)])[0];
    let outcome = p.process(2, 0, LinkType::Ethernet, later.clone(), 60);
    assert_eq!(outcome.verdict, expired);
    assert!(p.emitted().is_empty());
}
