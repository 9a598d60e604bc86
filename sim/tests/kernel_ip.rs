//! The IP layer's fixture table (`datapath::ip::fixtures`: martian classes, TTL / hop
//! limit 0-1-2, DF + MTU, fragmentation without DF, fragment sets complete / reordered /
//! incomplete / overlapping) through the Linux kernel: every packet must agree, with
//! nothing explained away, ICMP errors down to the bytes they quote and fragmented
//! datagrams down to each fragment's offset, length and flags. The datapath's own test
//! (datapath/tests/ip_layer.rs) checks the simulator's side against the table's expected
//! outcomes, so agreement pins the kernel to them too. Then routes: with the main table
//! written out, a destination without a route gets ICMP net unreachable (IPv6: no route),
//! rate-limited as `ip_error` does.

mod kernel_support;

use std::time::Duration;

use datapath::ip::fixtures::{Expect, cases};
use kernel_support::{data, kernel_tests_enabled, lock, own_namespaces, write_pcap};
use sim::kernel::diff::{DiffInput, Sides, run_sides};
use sim::kernel::outcome::{FragmentShape, Outcome};

const GAP: Duration = Duration::from_micros(300);

/// Both sides of `frames` through `appliance`; the comparison must find no difference.
fn both_sides(appliance: &str, name: &str, frames: &[Vec<u8>]) -> Sides {
    let pcap = write_pcap(name, frames);
    let before = own_namespaces();
    let input = DiffInput::captures(&data(appliance), &[pcap], 1, 10_000).expect("input");
    let sides = run_sides(&input, GAP).expect("both sides run");
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    let report = sides.compare(&input, &[], GAP);
    let rendered = sim::kernel::diff::render(&report);
    assert!(report.disagreements.is_empty(), "{rendered}");
    assert!(report.not_injected.is_empty(), "{rendered}");
    let total = frames.len() as u64;
    assert_eq!(report.totals(), (total, total), "{rendered}");
    sides
}

/// The quoted bytes of both sides' ICMP error for packet `index`, which must be there.
fn quotes(sides: &Sides, index: usize) -> (String, String) {
    let quote = |outcome: &Outcome| match outcome {
        Outcome::Answer { frame } => frame.quote.clone().expect("an ICMP error quotes"),
        other => panic!("packet {index}: {} is not an ICMP error", other.text()),
    };
    (
        quote(&sides.sim[index].outcome),
        quote(&sides.kernel.packets[index].outcome),
    )
}

#[test]
fn the_ip_layer_fixtures_agree_with_the_kernel() {
    if !kernel_tests_enabled() {
        return;
    }
    let _serial = lock();
    let frames: Vec<(Vec<u8>, Expect)> = cases().into_iter().flat_map(|c| c.frames).collect();
    let bytes: Vec<Vec<u8>> = frames.iter().map(|(f, _)| f.clone()).collect();
    let sides = both_sides("ip-layer.toml", "ip-layer.pcap", &bytes);
    let mut icmp = 0;
    let mut fragmented = 0;
    for (index, (frame, expect)) in frames.iter().enumerate() {
        match expect {
            Expect::Icmp(..) => {
                // The kernel quotes the datagram as received (TTL not yet decremented),
                // at most 576 − 28 bytes (IPv4) or 1280 − 48 (IPv6).
                let (ours, theirs) = quotes(&sides, index);
                assert_eq!(ours, theirs, "packet {index}");
                let ip = &frame[14..];
                let meta = datapath::packet::parse(
                    datapath::packet::LinkType::Ethernet,
                    frame,
                    frame.len() as u32,
                    0,
                );
                if meta.frag.is_fragment {
                    // The reassembled datagram: 28 + 40 bytes (IPv4), 48 + 40 (IPv6).
                    let whole = if ip[0] >> 4 == 4 { 68 } else { 88 };
                    assert_eq!(theirs.len() / 2, whole, "packet {index}");
                    icmp += 1;
                    continue;
                }
                let ip_len = if ip[0] >> 4 == 4 {
                    usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(548)
                } else {
                    (40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))).min(1232)
                };
                assert_eq!(theirs.len() / 2, ip_len, "packet {index}");
                assert_eq!(
                    &theirs[..2 * ip_len],
                    hex(&ip[..ip_len]).as_str(),
                    "packet {index}"
                );
                icmp += 1;
            }
            Expect::Fragments(shapes) => {
                let want: Vec<FragmentShape> = shapes
                    .iter()
                    .map(|&(offset, length, more)| FragmentShape {
                        offset,
                        length,
                        more,
                        df: false,
                    })
                    .collect();
                for outcome in [
                    &sides.sim[index].outcome,
                    &sides.kernel.packets[index].outcome,
                ] {
                    let Outcome::Forward { frame } = outcome else {
                        panic!("packet {index}: {} is not a forward", outcome.text());
                    };
                    assert_eq!(frame.fragments, want, "packet {index}");
                }
                fragmented += 1;
            }
            _ => {}
        }
    }
    assert_eq!((icmp, fragmented), (10, 2));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn udp(src: &str, dst: &str) -> Vec<u8> {
    datapath::packet::builder::PacketBuilder::eth()
        .ip(src.parse().unwrap(), dst.parse().unwrap())
        .udp(40_000, 53)
        .payload(&[0x61; 16])
        .build()
}

#[test]
fn a_destination_without_a_route_gets_net_unreachable_as_from_the_kernel() {
    if !kernel_tests_enabled() {
        return;
    }
    let _serial = lock();
    let frames = vec![
        udp("198.51.100.30", "192.0.2.80"),      // routed by main
        udp("198.51.100.31", "203.0.113.80"),    // no route: 3/0
        udp("198.51.100.31", "203.0.113.81"),    // 3/0 again (ip_error's burst: 2)
        udp("198.51.100.31", "203.0.113.82"),    // rate-limited: dropped
        udp("2001:db8:1::31", "2001:db8::80"),   // routed
        udp("2001:db8:1::31", "2001:db8:9::80"), // no route: ICMPv6 1/0
    ];
    let sides = both_sides("no-route.toml", "no-route.pcap", &frames);
    let kinds: Vec<String> = sides
        .kernel
        .packets
        .iter()
        .map(|p| p.outcome.text())
        .collect();
    assert_eq!(
        kinds,
        [
            "forward udp 198.51.100.30:40000 > 192.0.2.80:53",
            "answer icmp 3/0",
            "answer icmp 3/0",
            "drop",
            "forward udp [2001:db8:1::31]:40000 > [2001:db8::80]:53",
            "answer icmp 1/0",
        ]
    );
    for index in [1, 2, 5] {
        let (ours, theirs) = quotes(&sides, index);
        assert_eq!(ours, theirs, "packet {index}");
    }
}
