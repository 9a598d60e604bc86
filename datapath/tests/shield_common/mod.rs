//! Helpers shared by the shield integration tests.
#![allow(dead_code)]

use std::net::IpAddr;
use std::ops::ControlFlow;

use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, PacketMeta, parse};
use datapath::shield::{EmitBuffer, EmittedFrame, Shield, ShieldConfig, build};
use datapath::verdict::{DropReason, TimeNs, Verdict};

/// Seed of every test shield.
pub const SEED: u64 = 7;
/// Interfaces of the test appliance.
pub const IFACES: [&str; 2] = ["eth0", "eth1"];

/// A shield from the contents of a `[shield]` table.
pub fn shield(text: &str) -> Shield {
    let config: ShieldConfig = toml::from_str(text).expect("test configuration parses");
    build(&config, SEED, &IFACES).expect("test configuration builds")
}

/// What a frame did.
#[derive(Debug)]
pub struct Outcome {
    /// The verdict.
    pub flow: ControlFlow<Verdict>,
    /// The frame after processing (rewritten in place for proxied connections).
    pub frame: Vec<u8>,
    /// Frames the shield emitted.
    pub emitted: Vec<EmittedFrame>,
}

/// Parse and run one frame.
pub fn run(shield: &mut Shield, now: TimeNs, frame: &[u8], iface: u16) -> Outcome {
    let mut frame = frame.to_vec();
    let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, iface);
    let mut emit = EmitBuffer::new();
    let flow = shield.process(now, &mut frame, &meta, &mut emit);
    for emitted in emit.frames() {
        let parsed = meta_of(&emitted.bytes);
        assert_eq!(
            parsed.invalid, None,
            "emitted frame must be valid: {parsed:?}"
        );
    }
    Outcome {
        flow,
        frame,
        emitted: emit.frames().to_vec(),
    }
}

/// Parse a frame (interface 0).
pub fn meta_of(frame: &[u8]) -> PacketMeta {
    parse(LinkType::Ethernet, frame, frame.len() as u32, 0)
}

/// Passed on.
pub const PASS: ControlFlow<Verdict> = ControlFlow::Continue(());
/// Answered by the shield.
pub const REPLY: ControlFlow<Verdict> = ControlFlow::Break(Verdict::Reply);

/// Dropped for `reason`.
pub fn dropped(reason: DropReason) -> ControlFlow<Verdict> {
    ControlFlow::Break(Verdict::Drop(reason))
}

/// An address.
pub fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

/// A TCP frame from `src:sport` to `dst:dport` with ACK set.
pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> PacketBuilder {
    PacketBuilder::eth().ip(ip(src), ip(dst)).tcp(sport, dport)
}

/// A UDP frame.
pub fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> PacketBuilder {
    PacketBuilder::eth().ip(ip(src), ip(dst)).udp(sport, dport)
}
