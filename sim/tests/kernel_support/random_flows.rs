//! Random valid flowmgr files and random packets over one small universe of addresses,
//! ports and ICMP types, so that the packets actually hit the rules: the kernel tests' copy
//! of the idea behind datapath's property-test generator (IPv4 only, no interfaces, no
//! directors or tables: policies permit, deny, skip or none). Deterministic: everything is
//! drawn from a seeded ChaCha8 stream.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, tcp_flags};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use sim::kernel::inject::InputPacket;

/// A seeded random stream with the few draws the generators need.
pub struct Draw(ChaCha8Rng);

impl Draw {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u32) -> u32 {
        self.0.next_u32() % bound
    }

    /// True once in `one_in` draws.
    pub fn one_in(&mut self, one_in: u32) -> bool {
        self.below(one_in) == 0
    }

    /// One element of `items`.
    pub fn pick<'i, T>(&mut self, items: &'i [T]) -> &'i T {
        &items[self.below(items.len() as u32) as usize]
    }
}

/// Host `index` (0..16) of the universe: 10.20.0.0 .. 10.20.3.3.
pub fn host(index: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 20, (index >> 2) as u8, (index & 3) as u8)
}

fn negation(draw: &mut Draw) -> &'static str {
    if draw.one_in(4) { "not " } else { "" }
}

fn prefix(draw: &mut Draw) -> String {
    let address = host(draw.below(16));
    match *draw.pick(&[32u8, 32, 31, 30, 28, 24, 0]) {
        32 => address.to_string(),
        28 if draw.one_in(2) => format!("{address}/255.255.255.240"),
        length => format!("{address}/{length}"),
    }
}

fn port_range(draw: &mut Draw) -> String {
    let first = 20 + draw.below(8);
    match draw.below(4) {
        0 | 1 => first.to_string(),
        width => format!("{first}:{}", first + width),
    }
}

/// One rule line (without indentation), valid by construction.
fn rule(draw: &mut Draw) -> String {
    let mut line = draw.pick(&["match", "ignore"]).to_string();
    let proto = (!draw.one_in(4)).then(|| (negation(draw), *draw.pick(&["tcp", "udp", "icmp"])));
    if let Some((not, name)) = proto {
        let _ = write!(line, " {not}proto {name}");
    }
    for keyword in ["src", "dst"] {
        if draw.one_in(2) {
            let _ = write!(line, " {}{keyword} {}", negation(draw), prefix(draw));
        }
    }
    if let Some(("", "tcp" | "udp")) = proto {
        for keyword in ["srcport", "dstport"] {
            if draw.one_in(2) {
                let _ = write!(line, " {}{keyword} {}", negation(draw), port_range(draw));
            }
        }
    }
    if let (Some(("", "icmp")), true) = (proto, draw.one_in(2)) {
        let _ = write!(line, " {}icmptype {}", negation(draw), draw.below(5));
    }
    line
}

/// A whole valid file: 1..=5 flows of 0..=4 rules each.
pub fn flow_file(draw: &mut Draw) -> String {
    let mut text = String::from("# generated\n");
    for index in 0..=draw.below(5) {
        let policy = draw.pick(&["permit", "deny", "skip", ""]);
        let _ = writeln!(text, "flow f{index} {policy}");
        for _ in 0..draw.below(5) {
            let _ = writeln!(text, "   {}", rule(draw));
        }
        text.push('\n');
    }
    text
}

/// A random frame over the same universe: TCP (SYN or ACK), UDP, ICMP (types 0..=4 and 8)
/// or GRE (a protocol no rule names), ports 18..34.
pub fn frame(draw: &mut Draw) -> Vec<u8> {
    let (src, dst) = (host(draw.below(16)), host(draw.below(16)));
    let (sport, dport) = (18 + draw.below(16) as u16, 18 + draw.below(16) as u16);
    let builder = PacketBuilder::eth().ipv4(src, dst);
    match draw.below(7) {
        0 | 1 => builder.tcp(sport, dport).syn().mss(1460).build(),
        2 => builder
            .tcp(sport, dport)
            .flags(tcp_flags::ACK)
            .seq_ack(1000, 2000)
            .build(),
        3 | 4 => builder.udp(sport, dport).payload(b"q").build(),
        5 => {
            let icmp_type = *draw.pick(&[0u8, 1, 2, 3, 4, 8]);
            builder.icmp(icmp_type, 0).payload(b"ping").build()
        }
        _ => builder.proto(47).payload(b"gre-").build(),
    }
}

/// `frames` as input packets, 1 µs apart.
pub fn inputs(frames: Vec<Vec<u8>>) -> Vec<InputPacket> {
    frames
        .into_iter()
        .enumerate()
        .map(|(index, data)| InputPacket {
            ts_ns: index as u64 * 1_000,
            link: LinkType::Ethernet,
            interface: 0,
            orig_len: data.len() as u32,
            data,
        })
        .collect()
}
