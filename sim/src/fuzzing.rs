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

mod scenario;

pub use scenario::{MAX_FUZZ_DURATION_NS, mutate as mutate_scenario, scenario};

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
            let _ = crate::diagnostics::render_errors("fuzz.flowmgr", source, &errors);
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

/// The whole pipeline on arbitrary frames with arbitrary valid tables: no panic, and every
/// packet ends in exactly one counted outcome.
///
/// Input: a [`PIPELINE_HEADER`]-byte header that selects the tables (see [`TableChoice`]),
/// then frames, each `[len_hi, len_lo, iface_and_time, frame...]`: bit 0 of the third byte
/// is the interface, the other seven pick how far virtual time moves before the frame (so
/// timers, expiry and mode windows are reached). Pipelines are built once per table choice
/// and cloned per input from a bounded cache, so an input costs its frames, not a build.
pub fn pipeline(data: &[u8]) {
    let Some((header, mut rest)) = data.split_first_chunk::<PIPELINE_HEADER>() else {
        return;
    };
    let choice = TableChoice::from_header(*header);
    let mut pipeline = cached_pipeline(&choice);
    let mut packets = 0u64;
    let mut now = 0u64;
    while let [len_hi, len_lo, iface_and_time, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*len_hi, *len_lo])).min(tail.len());
        let (frame, after) = tail.split_at(len);
        now = now
            .saturating_add(time_step(*iface_and_time))
            .min(MAX_FUZZ_TIME);
        pipeline.process(
            now,
            u16::from(iface_and_time & 1),
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

/// Bytes at the start of a `pipeline` input that choose the tables.
pub const PIPELINE_HEADER: usize = 3;
/// Virtual time never passes this (146 years): time arithmetic stays far from `u64::MAX`.
const MAX_FUZZ_TIME: u64 = 1 << 62;
/// Built pipelines kept at once; the cache is emptied when full.
const PIPELINE_CACHE_CAPACITY: usize = 256;

/// How far virtual time moves before a frame: 0..63 ms in 1 ms steps, then powers of two
/// from about a second up to years.
fn time_step(iface_and_time: u8) -> u64 {
    let step = u64::from(iface_and_time >> 1);
    if step < 64 {
        step * 1_000_000
    } else {
        1 << (step - 64 + 30).min(62)
    }
}

const SCHEDULERS: [&str; 13] = [
    "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "mh", "lblc", "lblcr", "fo", "ovf",
];
const FORWARDS: [&str; 3] = ["nat", "dr", "tun"];
const SETTINGS: [&str; 3] = ["off", "on", "auto"];

/// The tables a `pipeline` input asks for (decoded from its header).
///
/// Byte 0: scheduler (low nibble, mod 13), persistence (bit 4), forwarding (bits 5–7, mod 3).
/// Byte 1: SYN cookies (bits 0–1, mod 3), surge (bit 2), unmatched drop (bit 3), no L4
/// checksum check (bit 4), no IPv4 checksum check (bit 5), TTL filter (bit 6).
/// Byte 2: when bit 7 is set, a table reports full (`[qa] full_after`): bits 0–2 pick it
/// (mod 6), bits 3–6 after how many packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableChoice {
    scheduler: &'static str,
    persistent: bool,
    forward: &'static str,
    syn_cookies: &'static str,
    surge: bool,
    unmatched_drop: bool,
    ttl_filter: bool,
    verify_l4_checksum: bool,
    verify_ipv4_checksum: bool,
    full_after: Option<(datapath::pipeline::QaTable, u64)>,
}

impl TableChoice {
    /// Decode a header.
    pub fn from_header([tables, shield, qa]: [u8; PIPELINE_HEADER]) -> Self {
        let tables_qa = datapath::pipeline::QaTable::ALL;
        Self {
            scheduler: SCHEDULERS[usize::from(tables & 0x0f) % SCHEDULERS.len()],
            persistent: tables & 0x10 != 0,
            forward: FORWARDS[usize::from(tables >> 5) % FORWARDS.len()],
            syn_cookies: SETTINGS[usize::from(shield & 3) % SETTINGS.len()],
            surge: shield & 0x04 != 0,
            unmatched_drop: shield & 0x08 != 0,
            verify_l4_checksum: shield & 0x10 == 0,
            verify_ipv4_checksum: shield & 0x20 == 0,
            ttl_filter: shield & 0x40 != 0,
            full_after: (qa & 0x80 != 0).then(|| {
                let table = tables_qa[usize::from(qa & 7) % tables_qa.len()];
                (table, u64::from((qa >> 3) & 0x0f))
            }),
        }
    }

    /// What the cached, built part depends on (parse options and QA are applied per input).
    fn build_key(&self) -> Self {
        Self {
            verify_l4_checksum: true,
            verify_ipv4_checksum: true,
            full_after: None,
            ..*self
        }
    }
}

/// The stages of a built pipeline, kept pristine and cloned per input.
#[derive(Clone)]
struct BuiltStages {
    shield: datapath::shield::Shield,
    flows: FlowTable,
    directors: Directors,
}

thread_local! {
    static PIPELINE_CACHE: std::cell::RefCell<std::collections::HashMap<TableChoice, BuiltStages>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// A fresh pipeline for `choice`: its stages are built on first use and cloned after.
fn cached_pipeline(choice: &TableChoice) -> Pipeline {
    let key = choice.build_key();
    let stages = PIPELINE_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(stages) = cache.get(&key) {
            return stages.clone();
        }
        if cache.len() >= PIPELINE_CACHE_CAPACITY {
            cache.clear();
        }
        let stages = build_stages(&key);
        cache.insert(key, stages.clone());
        stages
    });
    let options = datapath::packet::ParseOptions {
        verify_l4_checksum: choice.verify_l4_checksum,
        verify_ipv4_checksum: choice.verify_ipv4_checksum,
    };
    let mut pipeline = Pipeline::new(options)
        .with_shield(stages.shield)
        .with_flows(stages.flows)
        .with_directors(stages.directors);
    if let Some((table, packets)) = choice.full_after {
        pipeline.report_full_after(table, packets);
    }
    pipeline
}

fn build_stages(choice: &TableChoice) -> BuiltStages {
    let on_off = |on: bool| if on { "on" } else { "off" };
    let shield_text = format!(
        "syn_cookies = \"{}\"\nsurge = \"{}\"\nunmatched_drop = \"{}\"\nttl_filter = \"{}\"\n{SHIELD}",
        choice.syn_cookies,
        on_off(choice.surge),
        on_off(choice.unmatched_drop),
        on_off(choice.ttl_filter),
    );
    let shield: ShieldConfig = toml::from_str(&shield_text).expect("valid shield");
    #[derive(serde::Deserialize)]
    struct DirectorFile {
        director: Vec<DirectorConfig>,
    }
    let persistence = if choice.persistent {
        "persistence = \"60s\"\n"
    } else {
        ""
    };
    let directors_text = DIRECTORS
        .replace("SCHEDULER", choice.scheduler)
        .replace("FORWARD", choice.forward)
        .replace("PERSISTENCE\n", persistence);
    let directors: DirectorFile = toml::from_str(&directors_text).expect("valid directors");
    let mut specs =
        datapath::director::config::build_all(&directors.director).expect("valid directors");
    for spec in &mut specs {
        spec.maglev_table_size = SMALL_MAGLEV_TABLE;
    }
    let table_config = TableConfig {
        iface_names: Some(vec!["outside".into(), "inside".into()]),
        director_marks: Some(
            [("web".to_string(), 80), ("dns".to_string(), 53)]
                .into_iter()
                .collect(),
        ),
    };
    BuiltStages {
        shield: datapath::shield::build(&shield, 1, &["outside", "inside"]).expect("shield"),
        flows: FlowTable::from_source(FLOWS, &table_config).expect("flows"),
        directors: Directors::from_specs(specs, small_director_tables()),
    }
}

/// A small prime Maglev table: cloning it per input stays cheap.
const SMALL_MAGLEV_TABLE: usize = 251;

/// Small tables: the fuzzer reaches the overflow policies (table full, eviction) within a
/// few packets, and cloning them per input is cheap.
fn small_director_tables() -> DirectorOptions {
    DirectorOptions {
        connection_capacity: 64,
        template_capacity: 16,
        ..DirectorOptions::default()
    }
}

const SHIELD: &str = r#"
session_table_capacity = 16
source_table_capacity = 16
deny = ["203.0.113.0/24", "2001:db8:bad::/48"]
[thresholds]
syn_rate_on = 4
source_syn_rate_max = 2
[[context]]
dst = "192.0.2.10"
protected_tcp_ports = [80, 443]
allow_src = ["198.51.100.0/24"]
allow_udp_ports = [53]
"#;

const FLOWS: &str = "flow web director web\n  match proto tcp dst 192.0.2.10 dstport 80:443\n\
flow dns director dns\n  match proto udp dstport 53\n\
flow ssh permit\n  ignore not src 198.51.100.0/24\n  match proto tcp dstport 22\n\
flow ping permit\n  match proto icmp icmptype 8\n\
flow rest deny\n  match iface outside\n";

const DIRECTORS: &str = r#"
[[director]]
name = "web"
fwmark = 80
scheduler = "SCHEDULER"
PERSISTENCE
forward = "FORWARD"
real = [{ addr = "10.0.1.2:0", weight = 2 }, { addr = "10.0.1.3:0", weight = 1 }]

[[director]]
name = "dns"
fwmark = 53
scheduler = "SCHEDULER"
PERSISTENCE
forward = "nat"
real = [{ addr = "10.0.2.2:53", weight = 1, upper_threshold = 3 }, { addr = "10.0.2.3:53" }]
"#;

/// Importers (`sim import`): never panic; an error names a line of the input; what is
/// imported renders to an appliance TOML that reads back to the same directors and NAT
/// rules, and to flows that the flowmgr compiler accepts.
fn import(format: crate::appliance::confio::Format, data: &[u8]) {
    use crate::appliance::confio::{self, Imported, toml_out};
    let text = String::from_utf8_lossy(data);
    let mut imported = Imported::default();
    if let Err(error) = confio::import_text("fuzz", &text, format, &mut imported) {
        assert!(
            error.line >= 1 && error.line <= text.lines().count().max(1),
            "{error}"
        );
        return;
    }
    confio::finish(&mut imported);
    for warning in &imported.warnings {
        assert!(warning.line <= text.lines().count(), "{warning}");
    }
    let rendered = toml_out::render(&imported, None);
    let back: crate::appliance::ApplianceConfig =
        toml::from_str(&rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    assert_eq!(back.director, imported.config.director, "{rendered}");
    assert_eq!(back.nat, imported.config.nat, "{rendered}");
    assert_eq!(
        back.health_check, imported.config.health_check,
        "{rendered}"
    );
    if let Some(flows) = imported.flows() {
        let config = TableConfig {
            iface_names: None,
            director_marks: Some(crate::appliance::director_marks(&imported.config.director)),
        };
        if let Err(errors) = FlowTable::from_source(&flows, &config) {
            panic!("{errors:?}\n{flows}");
        }
    }
}

/// Fuzz target `import_keepalived`: keepalived.conf text.
pub fn import_keepalived(data: &[u8]) {
    import(crate::appliance::confio::Format::Keepalived, data);
}

/// Fuzz target `import_ipvsadm`: ipvsadm-save dumps and scripts.
pub fn import_ipvsadm(data: &[u8]) {
    import(crate::appliance::confio::Format::Ipvsadm, data);
}

/// Fuzz target `import_iptables`: iptables-save files.
pub fn import_iptables(data: &[u8]) {
    import(crate::appliance::confio::Format::Iptables, data);
}

/// Fuzz target `import_ldirectord`: ldirectord.cf files.
pub fn import_ldirectord(data: &[u8]) {
    import(crate::appliance::confio::Format::Ldirectord, data);
}

/// Fuzz target `import_nft`: nft rulesets, text or JSON.
pub fn import_nft(data: &[u8]) {
    import(crate::appliance::confio::Format::Nft, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table choice a header can make builds (a panic here would be a fuzz finding
    /// about the harness, not the code under test), and runs a frame through it.
    #[test]
    fn every_table_choice_builds() {
        let frame = datapath::packet::builder::PacketBuilder::eth()
            .ipv4([198, 51, 100, 7].into(), [192, 0, 2, 10].into())
            .tcp(40000, 80)
            .syn()
            .build();
        for tables in 0..=255u8 {
            for shield in [0u8, 1, 2, 0x4f, 0x7f] {
                let mut input = vec![tables, shield, 0x80 | tables];
                input.extend((frame.len() as u16).to_be_bytes());
                input.push(tables & 0x7f);
                input.extend(&frame);
                pipeline(&input);
            }
        }
    }

    /// Found by the `config` target (fuzz/regressions/config/crash-8fc3…): a number with
    /// more digits than u128 holds after scaling overflowed instead of being "too large".
    #[test]
    fn huge_durations_rates_and_bandwidths_are_errors() {
        use crate::scenario::units::{parse_bandwidth, parse_duration, parse_rate};
        let huge = "4000000000000000000000000000000000000";
        let error = parse_duration(&format!("{huge}s")).unwrap_err();
        assert!(error.contains("is too large"), "{error}");
        assert!(parse_duration(&format!("{huge}{huge}h")).is_err());
        assert!(
            parse_rate(&format!("{huge}G/s"))
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_bandwidth(&format!("{huge}Gbit/s")).is_err());
    }

    #[test]
    fn time_steps_grow_and_stay_bounded() {
        assert_eq!(time_step(0), 0);
        assert_eq!(time_step(2), 1_000_000);
        assert_eq!(time_step(128), 1 << 30);
        assert_eq!(time_step(255), 1 << 62);
    }
}
