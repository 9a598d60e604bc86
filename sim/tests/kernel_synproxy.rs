//! The SYN-cookie cross-check: the same SYNs (various MSS / window scale / SACK /
//! timestamp options) through the shield's SYN proxy and through nft synproxy. Both answer
//! with a SYN-ACK carrying the same option set (the cookie values differ: different
//! secrets); a valid cookie ACK makes both open the connection toward the server with the
//! same MSS-table rounding; forged ACKs and ACKs whose cookie counter is two periods old
//! (stale) are rejected by both.
//!
//! Stale cookies in the kernel: waiting two minutes is not possible in a test, so the
//! kernel's counter check is exercised by rewinding the counter bits of a valid cookie by
//! two periods (`cookie - (2 << 24)`), which the kernel rejects before any hash check
//! (`diff >= MAX_SYNCOOKIE_AGE`), exactly as it rejects a genuinely old cookie. The
//! simulator is checked both ways: the rewound cookie, and its own valid cookie presented
//! three virtual minutes later.

mod kernel_support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, PacketMeta, parse, tcp_flags};
use datapath::pipeline::Pipeline;
use datapath::verdict::Verdict;
use kernel_support::{data, kernel_tests_enabled, lock, own_namespaces};
use sim::kernel::inject::{Lab, Side};
use sim::kernel::outcome::options_text;
use sim::kernel::simulate::build;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 30);
const GAP: Duration = Duration::from_micros(500);
const MINUTE_NS: u64 = 60_000_000_000;

/// One SYN's options: (mss, window scale, sack, timestamps).
type Offer = (Option<u16>, Option<u8>, bool, bool);

const OFFERS: [Offer; 8] = [
    (Some(1460), None, false, false),
    (Some(1400), None, false, false),
    (Some(1460), Some(7), true, true),
    (Some(1200), None, false, true),
    (Some(9000), Some(14), false, true),
    (Some(100), None, true, true),
    (Some(1440), Some(2), true, false),
    (None, None, false, false),
];

fn client(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 10 + index as u8)
}

fn syn(index: usize, offer: Offer) -> Vec<u8> {
    let (mss, wscale, sack, ts) = offer;
    let mut builder = PacketBuilder::eth()
        .ipv4(client(index), VIP)
        .tcp(40_000 + index as u16, 80)
        .syn()
        .seq_ack(1_000 * index as u32 + 7, 0)
        .window(64_240);
    if let Some(mss) = mss {
        builder = builder.mss(mss);
    }
    if let Some(shift) = wscale {
        builder = builder.window_scale(shift);
    }
    if sack {
        builder = builder.sack_permitted();
    }
    if ts {
        builder = builder.timestamps(11_111 + index as u32, 0);
    }
    builder.build()
}

/// The third packet for a SYN-ACK: acknowledges `cookie + 1`, echoes its TSval.
fn ack(index: usize, cookie: u32, synack: &PacketMeta) -> Vec<u8> {
    let mut builder = PacketBuilder::eth()
        .ipv4(client(index), VIP)
        .tcp(40_000 + index as u16, 80)
        .flags(tcp_flags::ACK)
        .seq_ack(1_000 * index as u32 + 8, cookie.wrapping_add(1))
        .window(502);
    if let Some((tsval, _)) = synack.tcp.and_then(|t| t.options.timestamps) {
        builder = builder.timestamps(11_112 + index as u32, tsval);
    }
    builder.build()
}

fn meta(frame: &[u8]) -> PacketMeta {
    parse(LinkType::Ethernet, frame, frame.len() as u32, 0)
}

fn cookie_of(synack: &PacketMeta) -> u32 {
    synack.tcp.expect("tcp").seq
}

/// The simulator's SYN-ACK for each SYN.
fn simulator_synacks(pipeline: &mut Pipeline, syns: &[Vec<u8>]) -> Vec<PacketMeta> {
    syns.iter()
        .map(|frame| {
            let len = frame.len() as u32;
            let outcome = pipeline.process(0, 0, LinkType::Ethernet, frame.clone(), len);
            assert_eq!(outcome.verdict, Verdict::Reply);
            let emitted = pipeline.take_emitted();
            meta(&emitted[0].frame)
        })
        .collect()
}

/// Send one ACK through the simulator at `now`: the proxy SYN's MSS, or the drop reason.
fn simulator_ack(pipeline: &mut Pipeline, now: u64, frame: Vec<u8>) -> Result<Option<u16>, String> {
    let len = frame.len() as u32;
    let outcome = pipeline.process(now, 0, LinkType::Ethernet, frame, len);
    match outcome.verdict {
        Verdict::Drop(reason) => Err(reason.name().into_owned()),
        _ => {
            let emitted = pipeline.take_emitted();
            let syn = meta(&emitted.first().expect("a proxy SYN").frame);
            assert_eq!(
                syn.tcp_flags,
                tcp_flags::SYN,
                "a bare SYN toward the server"
            );
            Ok(syn.tcp.and_then(|t| t.options.mss))
        }
    }
}

/// The kernel's SYN-ACK for each SYN (by client address), in order.
fn kernel_synacks(lab: &Lab, syns: &[Vec<u8>]) -> Vec<PacketMeta> {
    let frames = syns.iter().map(|f| (Side::Client, f.clone())).collect();
    let exchange = lab.exchange(frames, GAP).expect("exchange");
    (0..syns.len())
        .map(|index| {
            exchange
                .client
                .frames
                .iter()
                .map(|f| meta(&f.frame))
                .find(|m| m.dst == Some(IpAddr::V4(client(index))))
                .unwrap_or_else(|| panic!("no kernel SYN-ACK for SYN #{index}"))
        })
        .collect()
}

/// Send ACKs into the kernel: per ACK, the MSS of the SYN synproxy sent to the server.
fn kernel_acks(lab: &Lab, acks: &[(usize, Vec<u8>)]) -> Vec<Option<Option<u16>>> {
    let frames = acks
        .iter()
        .map(|(_, f)| (Side::Client, f.clone()))
        .collect();
    let exchange = lab.exchange(frames, GAP).expect("exchange");
    acks.iter()
        .map(|(index, _)| {
            exchange
                .server
                .frames
                .iter()
                .map(|f| meta(&f.frame))
                .find(|m| {
                    m.src == Some(IpAddr::V4(client(*index))) && m.tcp_flags == tcp_flags::SYN
                })
                .map(|m| m.tcp.and_then(|t| t.options.mss))
        })
        .collect()
}

#[test]
fn syn_cookies_agree_with_nft_synproxy() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let before = own_namespaces();
    let path = data("synproxy.toml");
    let config = sim::appliance::ApplianceConfig::load(&path).expect("appliance");
    let base = path.parent().unwrap_or(Path::new("."));
    let (mut pipeline, rules) = build(&config, base, 7).expect("pipeline");
    let syns: Vec<Vec<u8>> = OFFERS.iter().enumerate().map(|(i, o)| syn(i, *o)).collect();
    let sim_synacks = simulator_synacks(&mut pipeline, &syns);
    let lab = Lab::start(&rules).expect("lab");
    let kernel_synacks = kernel_synacks(&lab, &syns);
    for (index, (ours, theirs)) in sim_synacks.iter().zip(&kernel_synacks).enumerate() {
        assert_eq!(theirs.tcp_flags, tcp_flags::SYN | tcp_flags::ACK);
        let (ours_text, theirs_text) = (options_text(ours), options_text(theirs));
        assert_eq!(
            ours_text, theirs_text,
            "SYN-ACK options for {:?}",
            OFFERS[index]
        );
    }
    // Valid cookies: both open the connection with the MSS-table rounding of the offer.
    let valid_sim: Vec<_> = (0..OFFERS.len())
        .map(|i| {
            let frame = ack(i, cookie_of(&sim_synacks[i]), &sim_synacks[i]);
            simulator_ack(&mut pipeline, 1_000_000, frame)
        })
        .collect();
    let kernel_valid: Vec<(usize, Vec<u8>)> = (0..OFFERS.len())
        .map(|i| (i, ack(i, cookie_of(&kernel_synacks[i]), &kernel_synacks[i])))
        .collect();
    let valid_kernel = kernel_acks(&lab, &kernel_valid);
    for index in 0..OFFERS.len() {
        let ours = valid_sim[index]
            .clone()
            .expect("the simulator accepts its valid cookie");
        let theirs = valid_kernel[index].expect("the kernel accepts its valid cookie");
        assert_eq!(ours, theirs, "proxy SYN MSS for {:?}", OFFERS[index]);
    }
    drop(lab);
    assert_eq!(own_namespaces(), before, "namespaces left behind");
}

#[test]
fn forged_and_stale_cookie_acks_are_rejected_by_both() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let before = own_namespaces();
    let path = data("synproxy.toml");
    let config = sim::appliance::ApplianceConfig::load(&path).expect("appliance");
    let base = path.parent().unwrap_or(Path::new("."));
    let (mut pipeline, rules) = build(&config, base, 7).expect("pipeline");
    let offer: Offer = (Some(1460), Some(7), true, true);
    let syns: Vec<Vec<u8>> = (0..3).map(|i| syn(i, offer)).collect();
    let sim_synacks = simulator_synacks(&mut pipeline, &syns);
    let lab = Lab::start(&rules).expect("lab");
    let kernel_synacks = kernel_synacks(&lab, &syns);
    let forged = |c: u32| c ^ 0x0000_5a5a;
    let stale = |c: u32| c.wrapping_sub(2 << 24);
    // Simulator: forged, counter rewound, and its valid cookie three minutes later.
    let sim_forged = simulator_ack(
        &mut pipeline,
        0,
        ack(0, forged(cookie_of(&sim_synacks[0])), &sim_synacks[0]),
    );
    let sim_rewound = simulator_ack(
        &mut pipeline,
        0,
        ack(1, stale(cookie_of(&sim_synacks[1])), &sim_synacks[1]),
    );
    let late = ack(2, cookie_of(&sim_synacks[2]), &sim_synacks[2]);
    let sim_late = simulator_ack(&mut pipeline, 3 * MINUTE_NS, late);
    assert!(
        sim_forged.as_ref().is_err_and(|r| r.contains("cookie")),
        "{sim_forged:?}"
    );
    assert!(
        sim_rewound.as_ref().is_err_and(|r| r.contains("cookie")),
        "{sim_rewound:?}"
    );
    assert_eq!(sim_late, Err("stale_cookie".to_string()));
    let kernel = kernel_acks(
        &lab,
        &[
            (
                0,
                ack(0, forged(cookie_of(&kernel_synacks[0])), &kernel_synacks[0]),
            ),
            (
                1,
                ack(1, stale(cookie_of(&kernel_synacks[1])), &kernel_synacks[1]),
            ),
        ],
    );
    assert_eq!(
        kernel,
        vec![None, None],
        "the kernel opened nothing for forged/stale ACKs"
    );
    drop(lab);
    assert_eq!(own_namespaces(), before, "namespaces left behind");
}
