//! Run one case: load its appliance, build the pipeline, replay its captures through
//! [`crate::cli::replay::replay_files`] (the one replay loop), and turn the summary, the
//! appliance report and the per-packet records into actual results shaped like the
//! expectations.
//!
//! Not here: comparing with the expectations ([`super::compare`]).

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use datapath::packet::ParseOptions;
use serde::Deserialize;

use super::case::{Case, Expected, encode_verdicts};
use crate::appliance::{ApplianceConfig, ApplianceReport, build_pipeline};
use crate::cli::replay::{ReplaySummary, replay_files};

/// Per-packet verdicts are kept in a case only up to this many runs (longer lists would
/// make the case file large; the counters still check the capture).
pub const MAX_VERDICT_RUNS: usize = 64;

/// One packet as the check saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketLine {
    /// `#index proto src:sport > dst:dport flags` (with the file name when several).
    pub decoded: String,
    /// `stage verdict[ reason][ flow=name#rule][ backend=addr]`.
    pub label: String,
}

/// What a case produced.
#[derive(Debug, Clone, Default)]
pub struct Actual {
    /// Results in the expectations' shape (`verdicts` always filled, even when long).
    pub results: Expected,
    /// Every packet, in replay order.
    pub packets: Vec<PacketLine>,
}

/// Run a case.
pub fn execute(case: &Case) -> Actual {
    let file = &case.file;
    let options = ParseOptions {
        verify_l4_checksum: !file.no_l4_checksum,
        ..Default::default()
    };
    let mut pipeline = match load_pipeline(case) {
        Ok(pipeline) => pipeline,
        Err(error) => return Actual::error(case, &format!("{error:#}")),
    };
    let captures: Vec<PathBuf> = file.captures.iter().map(|c| case.dir.join(c)).collect();
    let mut sink = RecordSink::default();
    let outcome = match replay_files(&captures, &options, Some(&mut pipeline), Some(&mut sink), 0) {
        Ok(outcome) => outcome,
        Err(error) => return Actual::error(case, &error.to_string()),
    };
    let mut actual = Actual {
        results: results_of(&outcome.summary),
        packets: sink.lines,
    };
    let errors: Vec<&str> = outcome.summary.errors().collect();
    if !errors.is_empty() {
        actual.results.error = Some(relative_to_case(case, &errors.join("\n")));
    }
    if sink.bad_records > 0 {
        actual.results.error = Some(format!("{} unreadable packet records", sink.bad_records));
    }
    if let Some(broken) = outcome_imbalance(&pipeline, actual.packets.len()) {
        actual.results.error = Some(broken);
    }
    let labels: Vec<&str> = actual.packets.iter().map(|p| p.label.as_str()).collect();
    actual.results.verdicts = Some(encode_verdicts(&labels));
    actual
}

/// The "every packet ends in exactly one counted outcome" invariant: as many per-packet
/// records as packets the pipeline processed, and as many decisions as packets. `None` when
/// it holds; otherwise what broke (the case then fails with it).
fn outcome_imbalance(pipeline: &datapath::pipeline::Pipeline, records: usize) -> Option<String> {
    let counters = pipeline.counters();
    let decided: u64 = counters.rows().iter().map(|row| row.count).sum();
    let records = records as u64;
    (decided != counters.packets || records != counters.packets).then(|| {
        format!(
            "invariant broken: {} packets processed, {decided} decisions counted, {records} packet records",
            counters.packets
        )
    })
}

impl Actual {
    fn error(case: &Case, text: &str) -> Self {
        Self {
            results: Expected {
                error: Some(relative_to_case(case, text)),
                verdicts: Some(Vec::new()),
                ..Expected::default()
            },
            packets: Vec::new(),
        }
    }
}

fn load_pipeline(case: &Case) -> anyhow::Result<datapath::pipeline::Pipeline> {
    let file = &case.file;
    let (mut config, base) = match &file.appliance {
        Some(path) => {
            let path = case.dir.join(path);
            let config = ApplianceConfig::load(&path)?;
            (
                config,
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            )
        }
        None => (ApplianceConfig::default(), case.dir.clone()),
    };
    config.no_l4_checksum |= file.no_l4_checksum;
    build_pipeline(&config, &base, file.seed, &[])
}

/// Error texts name files relative to the case file, so they read the same whatever the
/// working directory.
fn relative_to_case(case: &Case, text: &str) -> String {
    let prefix = format!("{}/", case.dir.display());
    if prefix == "/" {
        return text.to_string();
    }
    text.replace(&prefix, "")
}

fn results_of(summary: &ReplaySummary) -> Expected {
    let mut results = Expected {
        packets: summary.packets,
        ..Expected::default()
    };
    for row in summary.pipeline.iter().flatten() {
        let mut key = format!("{} {}", row.stage.name(), row.verdict);
        if let Some(reason) = &row.reason {
            key = format!("{key} {reason}");
        }
        *results.decisions.entry(key).or_default() += row.count;
    }
    if let Some(report) = &summary.appliance {
        add_report(&mut results, report);
    }
    results
}

fn add_report(results: &mut Expected, report: &ApplianceReport) {
    for flow in &report.flows {
        results.flows.insert(flow.name.clone(), flow.hits);
    }
    if !report.flows.is_empty() {
        results
            .flows
            .insert("(unclassified)".to_string(), report.unclassified);
    }
    for service in &report.directors {
        for real in &service.reals {
            let key = format!("{} {}", service.name, real.address);
            results
                .backends
                .insert(format!("{key} conns"), real.connections);
            results
                .backends
                .insert(format!("{key} packets_in"), real.packets_in);
        }
    }
    for context in &report.shield {
        for (counter, value) in &context.counters {
            results
                .shield
                .insert(format!("{} {counter}", context.name), *value);
        }
    }
}

/// The fields of a replay record the check reads.
#[derive(Debug, Deserialize)]
struct Record {
    file: Option<String>,
    index: u64,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    proto: Option<serde_json::Value>,
    sport: Option<u16>,
    dport: Option<u16>,
    tcp_flags: Option<u8>,
    icmp_type: Option<u8>,
    invalid: Option<String>,
    stage: Option<String>,
    verdict: Option<String>,
    reason: Option<String>,
    flow: Option<String>,
    rule: Option<u16>,
    backend: Option<SocketAddr>,
}

/// Receives replay's JSON lines and keeps one [`PacketLine`] per packet.
#[derive(Debug, Default)]
struct RecordSink {
    pending: Vec<u8>,
    lines: Vec<PacketLine>,
    bad_records: u64,
}

impl Write for RecordSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // Replay writes a record in small pieces and ends it with a lone newline.
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&rest[..end]);
            match serde_json::from_slice::<Record>(&self.pending) {
                Ok(record) => self.lines.push(PacketLine {
                    decoded: decode(&record),
                    label: label(&record),
                }),
                Err(_) => self.bad_records += 1,
            }
            self.pending.clear();
            rest = &rest[end + 1..];
        }
        self.pending.extend_from_slice(rest);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn label(record: &Record) -> String {
    let mut label = format!(
        "{} {}",
        record.stage.as_deref().unwrap_or("-"),
        record.verdict.as_deref().unwrap_or("-")
    );
    if let Some(reason) = &record.reason {
        label = format!("{label} {reason}");
    }
    if let Some(flow) = &record.flow {
        label = format!("{label} flow={flow}");
        if let Some(rule) = record.rule {
            label = format!("{label}#{rule}");
        }
    }
    if let Some(backend) = record.backend {
        label = format!("{label} backend={backend}");
    }
    label
}

/// `#index proto src:sport > dst:dport flags`, tcpdump-like.
fn decode(record: &Record) -> String {
    let mut out = match &record.file {
        Some(file) => {
            let name = Path::new(file)
                .file_name()
                .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
            format!("{name}#{}", record.index)
        }
        None => format!("#{}", record.index),
    };
    let proto = match &record.proto {
        Some(serde_json::Value::String(name)) => name.clone(),
        Some(other) => format!("proto-{other}"),
        None => "non-ip".to_string(),
    };
    out = format!("{out} {proto}");
    if let (Some(src), Some(dst)) = (record.src, record.dst) {
        out = format!(
            "{out} {} > {}",
            endpoint(src, record.sport),
            endpoint(dst, record.dport)
        );
    }
    if let Some(flags) = record.tcp_flags {
        out = format!("{out} [{}]", tcp_flag_letters(flags));
    }
    if let Some(icmp_type) = record.icmp_type {
        out = format!("{out} type {icmp_type}");
    }
    if let Some(invalid) = &record.invalid {
        out = format!("{out} invalid={invalid}");
    }
    out
}

fn endpoint(address: IpAddr, port: Option<u16>) -> String {
    match (address, port) {
        (_, None) => address.to_string(),
        (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
    }
}

/// TCP flags as tcpdump prints them: `S`, `S.`, `F.`, `P.`, `R`, … (`.` is ACK).
pub fn tcp_flag_letters(flags: u8) -> String {
    const LETTERS: [(u8, char); 8] = [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'W'),
        (0x10, '.'),
    ];
    let text: String = LETTERS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, letter)| *letter)
        .collect();
    if text.is_empty() {
        "none".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_outcome_invariant_catches_a_missing_record() {
        use datapath::packet::LinkType;
        use datapath::packet::builder::PacketBuilder;
        use std::net::Ipv4Addr;
        let mut pipeline = datapath::pipeline::Pipeline::default();
        for port in [1, 0] {
            let frame = PacketBuilder::eth()
                .ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2))
                .tcp(port, 80)
                .syn()
                .build();
            let len = frame.len() as u32;
            pipeline.process(0, 0, LinkType::Ethernet, frame, len);
        }
        assert_eq!(outcome_imbalance(&pipeline, 2), None);
        let broken = outcome_imbalance(&pipeline, 1).expect("one record short");
        assert!(broken.contains("2 packets processed, 2 decisions counted, 1 packet records"));
    }

    #[test]
    fn flags_read_like_tcpdump() {
        assert_eq!(tcp_flag_letters(0x02), "S");
        assert_eq!(tcp_flag_letters(0x12), "S.");
        assert_eq!(tcp_flag_letters(0x18), "P.");
        assert_eq!(tcp_flag_letters(0x11), "F.");
        assert_eq!(tcp_flag_letters(0), "none");
    }

    #[test]
    fn records_become_lines() {
        let mut sink = RecordSink::default();
        let json = br#"{"index":3,"ts_ns":0,"iface":0,"len":60,"vlan":[],"src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","sport":1234,"dport":80,"tcp_flags":2,"icmp_type":null,"ttl":64,"invalid":null,"stage":"flows","verdict":"drop","reason":"flow_deny","flow":"rest","rule":1}"#;
        sink.write_all(&json[..40]).unwrap();
        sink.write_all(&json[40..]).unwrap();
        sink.write_all(b"\n").unwrap();
        assert_eq!(
            sink.lines,
            [PacketLine {
                decoded: "#3 tcp 10.0.0.1:1234 > 10.0.0.2:80 [S]".into(),
                label: "flows drop flow_deny flow=rest#1".into(),
            }]
        );
    }
}
