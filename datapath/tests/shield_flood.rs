//! SYN floods against a protected context: the real spoofed flood from the corpus, and a
//! synthetic flood from random spoofed sources that must leave the shield's state bounded.
//!
//! The synthetic flood sends `SHIELD_FLOOD_SYNS` SYNs (default 1 000 000, so the debug test
//! stays fast); run it with 10 000 000 in release:
//! `SHIELD_FLOOD_SYNS=10000000 cargo test --release -p datapath --test shield_flood -- --nocapture`.

mod shield_common;

use std::fs::File;
use std::ops::ControlFlow;

use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, ParseOptions, parse, parse_with};
use datapath::shield::modes::MODE_TIMELINE_CAPACITY;
use datapath::shield::{EmitBuffer, ShieldConfig, build};
use datapath::verdict::{DropReason, Verdict};
use pcap_file::pcap::PcapReader;

const CAPTURE: &str = "shared/corpus/real/stopddos__pkt.TCP.synflood.spoofed.pcap";

/// The corpus lives in `shared/` beside the checkout (`/work/shared` for `/work/main`).
fn capture_path() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join(CAPTURE))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{CAPTURE} not found above {}", manifest.display()))
}

#[test]
fn real_spoofed_syn_flood_gets_cookies_and_creates_no_sessions() {
    let config: ShieldConfig = toml::from_str(
        r#"
        syn_cookies = "on"
        [[context]]
        dst = "10.10.10.10"
        protected_tcp_ports = [25565]
        "#,
    )
    .unwrap();
    let mut shield = build(&config, 7, &[]).unwrap();
    let file = File::open(capture_path()).expect("the corpus capture");
    let mut reader = PcapReader::new(file).expect("a pcap file");
    let mut emit = EmitBuffer::new();
    let (mut first_ns, mut syns, mut packets) = (None, 0u64, 0u64);
    while let Some(packet) = reader.next_packet() {
        let packet = packet.expect("a readable packet");
        let timestamp = packet.timestamp.as_nanos() as u64;
        let now = timestamp - *first_ns.get_or_insert(timestamp);
        let mut frame = packet.data.to_vec();
        let meta = parse(LinkType::Ethernet, &frame, packet.orig_len, 0);
        let flow = shield.process(now, &mut frame, &meta, &mut emit);
        packets += 1;
        if meta.is_syn() {
            syns += 1;
            match flow {
                ControlFlow::Break(Verdict::Reply) => {
                    assert_eq!(emit.len(), 1, "one cookie SYN-ACK per SYN");
                    let reply = &emit.frames()[0].bytes;
                    let syn_ack = parse(LinkType::Ethernet, reply, reply.len() as u32, 0);
                    assert_eq!(syn_ack.invalid, None);
                    assert_eq!(
                        syn_ack.tcp.unwrap().ack,
                        meta.tcp.unwrap().seq.wrapping_add(1)
                    );
                }
                ControlFlow::Break(Verdict::Drop(DropReason::Rate)) => {}
                other => panic!("SYN {packets} got {other:?}"),
            }
        }
        assert_eq!(
            shield.table_stats().sessions,
            0,
            "no known session is created"
        );
    }
    assert!(syns > 20_000, "the capture is a SYN flood ({syns} SYNs)");
    let context = shield.contexts().nth(1).unwrap();
    let mut report = shield.counters(context).entries();
    report.insert("packets".into(), packets);
    report.insert("syns".into(), syns);
    report.insert(
        "table.sessions".into(),
        shield.table_stats().sessions as u64,
    );
    report.insert("table.sources".into(), shield.table_stats().sources as u64);
    insta::assert_yaml_snapshot!(report);
}

/// xorshift64* — the test's own seeded generator.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn synthetic_spoofed_flood_leaves_state_bounded() {
    let total: u64 = std::env::var("SHIELD_FLOOD_SYNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let config: ShieldConfig = toml::from_str(
        r#"
        [[context]]
        dst = "192.0.2.10"
        protected_tcp_ports = [443]
        "#,
    )
    .unwrap();
    let mut shield = build(&config, 7, &[]).unwrap();
    let template = PacketBuilder::eth()
        .ipv4("1.1.1.1".parse().unwrap(), "192.0.2.10".parse().unwrap())
        .tcp(1, 443)
        .syn()
        .mss(1460)
        .build();
    // Checksums are not recomputed for the patched frames; the shield does not read them.
    let options = ParseOptions {
        verify_ipv4_checksum: false,
        verify_l4_checksum: false,
    };
    let mut random = XorShift(0x5eed);
    let mut emit = EmitBuffer::new();
    let mut frame = template.clone();
    let (mut replies, mut passes, mut rate_drops) = (0u64, 0u64, 0u64);
    // Slot arrays are allocated at build; only the bounded mode timelines may grow.
    let contexts = shield.contexts().count();
    let bound = shield.table_stats().state_bytes
        + contexts * MODE_TIMELINE_CAPACITY * std::mem::size_of::<datapath::shield::ModeChange>();
    // 10 Mpps: one SYN every 100 ns of virtual time.
    for n in 0..total {
        let value = random.next();
        frame[26..30].copy_from_slice(&(value as u32).to_be_bytes());
        frame[34..36].copy_from_slice(&((value >> 32) as u16 | 1).to_be_bytes());
        frame[38..42].copy_from_slice(&((value >> 40) as u32).to_be_bytes());
        let meta = parse_with(&options, LinkType::Ethernet, &frame, frame.len() as u32, 0);
        match shield.process(n * 100, &mut frame, &meta, &mut emit) {
            ControlFlow::Break(Verdict::Reply) => replies += 1,
            ControlFlow::Continue(()) => passes += 1,
            ControlFlow::Break(Verdict::Drop(DropReason::Rate)) => rate_drops += 1,
            other => panic!("SYN {n}: {other:?}"),
        }
        if n % 65_536 == 0 {
            let stats = shield.table_stats();
            assert!(stats.sessions <= stats.sessions_capacity);
            assert!(stats.sources <= stats.sources_capacity);
            assert!(stats.state_bytes <= bound, "state stays bounded");
        }
    }
    let stats = shield.table_stats();
    eprintln!(
        "{total} SYNs: {replies} cookies, {passes} passed before cookies switched on, \
         {rate_drops} dropped by rate; tables {stats:?}"
    );
    assert_eq!(replies + passes + rate_drops, total);
    assert!(
        passes <= 1000,
        "SYNs pass only until the SYN rate trips cookies"
    );
    assert_eq!(stats.sessions as u64, passes);
    assert!(stats.sources <= stats.sources_capacity);
    assert!(stats.state_bytes <= bound);
    let context = shield.contexts().nth(1).unwrap();
    assert_eq!(shield.mode_bits(context) & 1, 1, "SYN cookies are on");
}
