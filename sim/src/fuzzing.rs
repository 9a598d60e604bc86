//! The bodies of the fuzz targets, shared by `fuzz/` (libFuzzer, run with cargo-fuzz) and by
//! the ordinary `#[test]` that replays every seed and every past crash on stable Rust.
//!
//! Each function takes arbitrary bytes, must never panic on them, and asserts the invariants
//! its parser promises (offsets inside the frame, errors naming the packet that failed,
//! every packet ending in exactly one counted outcome).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use datapath::director::config::DirectorConfig;
use datapath::director::{DirectorOptions, Directors};
use datapath::flows::{FlowTable, TableConfig};
use datapath::packet::{LinkType, parse};
use datapath::pipeline::Pipeline;
use datapath::shield::ShieldConfig;

use crate::capture::CaptureReader;

const LINKS: [u32; 10] = [0, 1, 12, 101, 108, 113, 228, 229, 276, 147];

/// Packet parsing: the first byte picks the link type (and whether the frame is snapped).
pub fn parse_frame(data: &[u8]) {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let link = LinkType::from_linktype(LINKS[usize::from(selector) % LINKS.len()]);
    let snapped = selector & 0x80 != 0;
    let wire_len = frame.len() as u32 + if snapped { 100 } else { 0 };
    let meta = parse(link, frame, wire_len, 0);
    assert!(usize::from(meta.l3_offset) <= frame.len());
    assert!(usize::from(meta.l4_offset) <= frame.len());
    assert!(meta.vlans().len() <= datapath::packet::MAX_VLAN_TAGS);
}

/// Capture ingest (pcap, pcapng, gzip): every packet before an error is returned, and the
/// error names the packet index it stopped at.
pub fn read_capture(data: &[u8]) {
    let source = Box::new(Cursor::new(data.to_vec()));
    let Ok(mut reader) = CaptureReader::from_reader(PathBuf::from("fuzz.pcap"), source) else {
        return;
    };
    let mut count = 0u64;
    loop {
        match reader.next_packet() {
            Ok(Some(packet)) => {
                assert_eq!(packet.index, count);
                assert!(packet.data.len() <= crate::capture::MAX_CAPLEN as usize);
                let _ = parse(packet.link, packet.data, packet.orig_len, 0);
                count += 1;
            }
            Ok(None) => return,
            Err(error) => {
                assert_eq!(error.packet_index.unwrap_or(count), count, "{error}");
                return;
            }
        }
    }
}

/// The flowmgr parser and compilers: any text either fails with located errors or builds a
/// table whose compiled rules and classification do not panic.
pub fn flowmgr(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let config = TableConfig {
        iface_names: Some(vec!["eth0".into(), "eth1".into()]),
        director_marks: None,
    };
    match FlowTable::from_source(source, &config) {
        Err(errors) => {
            assert!(!errors.is_empty());
            let _ = crate::flows_cli::render_errors("fuzz.flowmgr", source, &errors);
        }
        Ok(table) => {
            let _ = datapath::flows::compile::nft(&table);
            let _ = datapath::flows::compile::iptables(&table, datapath::flows::Family::V4);
            let frame = datapath::packet::builder::PacketBuilder::eth()
                .ipv4([192, 168, 0, 7].into(), [192, 168, 0, 1].into())
                .tcp(40000, 22)
                .syn()
                .build();
            let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 1);
            assert_eq!(table.classify(&meta), table.trace(&meta).verdict);
        }
    }
}

/// The scenario and appliance TOML loaders: bad input is an error with a location, never a
/// panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = toml::from_str::<crate::appliance::ApplianceConfig>(text);
    if let Err(error) = crate::scenario::parse(Path::new("fuzz.toml"), text) {
        assert!(error.line >= 1 && error.column >= 1, "{error}");
    }
}

/// The whole pipeline on arbitrary frames (length-prefixed in the input) with fixed, valid
/// tables: no panic, and every packet ends in exactly one counted outcome.
pub fn pipeline(data: &[u8]) {
    let mut pipeline = fuzz_pipeline();
    let mut rest = data;
    let mut packets = 0u64;
    let mut now = 0u64;
    while let [len_hi, len_lo, iface, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*len_hi, *len_lo])).min(tail.len());
        let (frame, after) = tail.split_at(len);
        now += 1_000_000;
        pipeline.process(
            now,
            u16::from(iface & 1),
            LinkType::Ethernet,
            frame.to_vec(),
            len as u32,
        );
        packets += 1;
        rest = after;
    }
    let counters = pipeline.counters();
    assert_eq!(counters.packets, packets);
    let counted: u64 = counters.rows().iter().map(|row| row.count).sum();
    assert_eq!(counted, packets, "every packet has exactly one outcome");
}

fn fuzz_pipeline() -> Pipeline {
    let shield: ShieldConfig = toml::from_str(SHIELD).expect("valid shield");
    #[derive(serde::Deserialize)]
    struct DirectorFile {
        director: Vec<DirectorConfig>,
    }
    let directors: DirectorFile = toml::from_str(DIRECTORS).expect("valid directors");
    let table_config = TableConfig {
        iface_names: Some(vec!["outside".into(), "inside".into()]),
        director_marks: Some([("web".to_string(), 80)].into_iter().collect()),
    };
    Pipeline::default()
        .with_shield(datapath::shield::build(&shield, 1, &["outside", "inside"]).expect("shield"))
        .with_flows(FlowTable::from_source(FLOWS, &table_config).expect("flows"))
        .with_directors(
            Directors::build(&directors.director, small_director_tables()).expect("directors"),
        )
}

/// Small tables: building them per input stays cheap, and the fuzzer reaches the overflow
/// policies (table full, eviction) within a few packets.
fn small_director_tables() -> DirectorOptions {
    DirectorOptions {
        connection_capacity: 64,
        template_capacity: 16,
        ..DirectorOptions::default()
    }
}

const SHIELD: &str = r#"
syn_cookies = "auto"
session_table_capacity = 16
source_table_capacity = 16
deny = ["203.0.113.0/24", "2001:db8:bad::/48"]
[[context]]
dst = "192.0.2.10"
protected_tcp_ports = [80, 443]
allow_src = ["198.51.100.0/24"]
allow_udp_ports = [53]
"#;

const FLOWS: &str = "flow web director web\n  match proto tcp dst 192.0.2.10 dstport 80:443\n\
flow ssh permit\n  ignore not src 198.51.100.0/24\n  match proto tcp dstport 22\n\
flow ping permit\n  match proto icmp icmptype 8\n\
flow rest deny\n  match iface outside\n";

const DIRECTORS: &str = r#"
[[director]]
name = "web"
fwmark = 80
scheduler = "mh"
persistence = "60s"
forward = "nat"
real = [{ addr = "10.0.1.2:0", weight = 2 }, { addr = "10.0.1.3:0", weight = 1 }]
"#;
