//! `sim replay FILE...`: parse every packet of one or more captures and summarise them the
//! way tcpreplay does at the end of a run (packets, bytes, time span, per-protocol counts,
//! invalid packets by reason, top flows), optionally writing one JSON record per packet.
//!
//! The summary ([`ReplaySummary`]) is deterministic: it never contains wall-clock figures.
//! The measured parse rate is printed separately (to stderr) by the command.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use datapath::packet::{InvalidReason, L3, LinkType, PacketMeta, ParseOptions, parse_into};
use serde::Serialize;

use crate::appliance::{ApplianceConfig, build_pipeline};
use crate::capture::{CaptureError, CaptureReader, Format};
use crate::record::{Decision, NoExtra, PacketRecord, ProtoField, Record};
use datapath::pipeline::{DecisionRow, Pipeline};

/// Distinct flows tracked for the top-flows table; beyond it packets count as untracked.
pub const FLOW_TABLE_CAPACITY: usize = 1 << 20;

/// Arguments of `sim replay`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Capture files (pcap, pcapng, optionally gzip-compressed; detected by content).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write one JSON object per packet to this file (`-` for stdout).
    #[arg(long, value_name = "OUT.jsonl")]
    pub packets: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Rows in the top-flows table.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Do not verify TCP/UDP/ICMP checksums (captures taken with checksum offload).
    #[arg(long)]
    pub no_l4_checksum: bool,
    /// Run every packet through the pipeline this appliance file describes; records gain
    /// `stage`, `verdict`, `reason`, `flow`, `backend`, and the summary per-stage counters.
    #[arg(long, value_name = "APPLIANCE.toml")]
    pub appliance: Option<PathBuf>,
    /// Seed for the pipeline's secrets (SYN cookies), with --appliance.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Packet counts by protocol.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ProtoCounts {
    /// TCP.
    pub tcp: u64,
    /// UDP.
    pub udp: u64,
    /// ICMP.
    pub icmp: u64,
    /// ICMPv6.
    pub icmpv6: u64,
    /// Other IP protocols, by number.
    pub other_ip: BTreeMap<u8, u64>,
    /// Not IP (ARP, LLDP, …), by EtherType.
    pub non_ip: BTreeMap<String, u64>,
    /// Invalid before an IP header was found.
    pub unknown: u64,
}

/// One row of the top-flows table (unidirectional 5-tuple).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FlowRow {
    /// Protocol.
    pub proto: ProtoField,
    /// Source address.
    pub src: IpAddr,
    /// Source port (0 when none).
    pub sport: u16,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port (0 when none).
    pub dport: u16,
    /// Packets.
    pub packets: u64,
    /// Wire bytes.
    pub bytes: u64,
}

/// What was read from one file.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct FileSummary {
    /// The path as given.
    pub name: String,
    /// `pcap`, `pcapng`, `pcap.gz`, `pcapng.gz`, or `unreadable`.
    pub format: String,
    /// Packets read from this file.
    pub packets: u64,
    /// First timestamp (ns since epoch).
    pub first_ts_ns: Option<u64>,
    /// Last timestamp (ns since epoch).
    pub last_ts_ns: Option<u64>,
    /// The error that stopped reading, after all earlier packets were counted.
    pub error: Option<String>,
}

/// Summary of one or more capture files.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Each file, in the order given.
    pub files: Vec<FileSummary>,
    /// Link types seen, by pcap LINKTYPE number, with packet counts.
    pub link_types: BTreeMap<u32, u64>,
    /// Packets read.
    pub packets: u64,
    /// Wire bytes.
    pub bytes: u64,
    /// Captured bytes.
    pub captured_bytes: u64,
    /// Packets whose capture was cut by the snap length.
    pub snapped: u64,
    /// Per-protocol counts.
    pub protocols: ProtoCounts,
    /// IPv4 packets.
    pub ipv4: u64,
    /// IPv6 packets.
    pub ipv6: u64,
    /// Packets with at least one VLAN tag.
    pub vlan_tagged: u64,
    /// IP fragments.
    pub fragments: u64,
    /// Invalid packets.
    pub invalid: u64,
    /// Invalid packets by reason (only reasons that occurred).
    pub invalid_by_reason: BTreeMap<InvalidReason, u64>,
    /// Packets of flows beyond [`FLOW_TABLE_CAPACITY`].
    pub untracked_flow_packets: u64,
    /// Distinct flows.
    pub flows: u64,
    /// Top flows by packets.
    pub top_flows: Vec<FlowRow>,
    /// Pipeline decisions per stage, verdict and reason (with `--appliance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<Vec<DecisionRow>>,
    /// What the appliance's stages saw (with `--appliance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appliance: Option<crate::appliance::ApplianceReport>,
}

impl ReplaySummary {
    /// Errors that stopped reading files.
    pub fn errors(&self) -> impl Iterator<Item = &str> {
        self.files.iter().filter_map(|f| f.error.as_deref())
    }
}

type FlowKey = (u8, IpAddr, u16, IpAddr, u16);

/// Accumulates a [`ReplaySummary`] packet by packet.
#[derive(Debug, Default)]
pub struct SummaryBuilder {
    summary: ReplaySummary,
    flows: HashMap<FlowKey, (u64, u64)>,
}

impl SummaryBuilder {
    /// Count one parsed packet.
    pub fn add(&mut self, ts_ns: u64, link: LinkType, meta: &PacketMeta) {
        let s = &mut self.summary;
        s.packets += 1;
        s.bytes += u64::from(meta.wire_len);
        s.captured_bytes += u64::from(meta.cap_len);
        s.snapped += u64::from(meta.cap_len < meta.wire_len);
        *s.link_types.entry(link.linktype()).or_default() += 1;
        if let Some(file) = s.files.last_mut() {
            file.packets += 1;
            file.first_ts_ns = Some(file.first_ts_ns.map_or(ts_ns, |t| t.min(ts_ns)));
            file.last_ts_ns = Some(file.last_ts_ns.map_or(ts_ns, |t| t.max(ts_ns)));
        }
        s.vlan_tagged += u64::from(meta.vlan_len > 0);
        s.fragments += u64::from(meta.frag.is_fragment);
        if let Some(reason) = meta.invalid {
            s.invalid += 1;
            *s.invalid_by_reason.entry(reason).or_default() += 1;
        }
        self.count_protocol(meta);
        self.count_flow(meta);
    }

    fn count_protocol(&mut self, meta: &PacketMeta) {
        let p = &mut self.summary.protocols;
        match meta.l3 {
            L3::Ipv4 => self.summary.ipv4 += 1,
            L3::Ipv6 => self.summary.ipv6 += 1,
            L3::Other(ethertype) => {
                *p.non_ip.entry(format!("0x{ethertype:04x}")).or_default() += 1;
                return;
            }
            L3::None => {
                p.unknown += 1;
                return;
            }
        }
        match meta.proto.map(ProtoField::from_number) {
            Some(ProtoField::Name("tcp")) => p.tcp += 1,
            Some(ProtoField::Name("udp")) => p.udp += 1,
            Some(ProtoField::Name("icmp")) => p.icmp += 1,
            Some(ProtoField::Name("icmpv6")) => p.icmpv6 += 1,
            Some(ProtoField::Number(n)) => *p.other_ip.entry(n).or_default() += 1,
            _ => p.unknown += 1,
        }
    }

    fn count_flow(&mut self, meta: &PacketMeta) {
        let (Some(src), Some(dst), Some(proto)) = (meta.src, meta.dst, meta.proto) else {
            return;
        };
        let key = (
            proto,
            src,
            meta.sport.unwrap_or(0),
            dst,
            meta.dport.unwrap_or(0),
        );
        let table_full = self.flows.len() >= FLOW_TABLE_CAPACITY;
        match self.flows.get_mut(&key) {
            Some(entry) => {
                entry.0 += 1;
                entry.1 += u64::from(meta.wire_len);
            }
            None if table_full => self.summary.untracked_flow_packets += 1,
            None => {
                self.flows.insert(key, (1, u64::from(meta.wire_len)));
            }
        }
    }

    /// Record a file that was read (or failed part-way).
    pub fn add_file(&mut self, name: &str, format: Option<Format>, gzip: bool) {
        let format = match (format, gzip) {
            (Some(Format::Pcap), false) => "pcap",
            (Some(Format::Pcap), true) => "pcap.gz",
            (Some(Format::PcapNg), false) => "pcapng",
            (Some(Format::PcapNg), true) => "pcapng.gz",
            (None, _) => "unreadable",
        };
        let name = name.to_string();
        let format = format.to_string();
        self.summary.files.push(FileSummary {
            name,
            format,
            ..FileSummary::default()
        });
    }

    /// Record the error that stopped the current file.
    pub fn add_error(&mut self, error: &CaptureError) {
        if let Some(file) = self.summary.files.last_mut() {
            file.error = Some(error.to_string());
        }
    }

    /// Finish with the `top` largest flows (ties broken by the flow key, so the order is
    /// deterministic).
    pub fn finish(mut self, top: usize) -> ReplaySummary {
        self.summary.flows = self.flows.len() as u64;
        let mut rows: Vec<_> = self.flows.into_iter().collect();
        rows.sort_unstable_by(|(ka, a), (kb, b)| {
            b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(ka.cmp(kb))
        });
        self.summary.top_flows = rows
            .into_iter()
            .take(top)
            .map(
                |((proto, src, sport, dst, dport), (packets, bytes))| FlowRow {
                    proto: ProtoField::from_number(proto),
                    src,
                    sport,
                    dst,
                    dport,
                    packets,
                    bytes,
                },
            )
            .collect();
        self.summary
    }
}

/// Result of replaying captures: the summary plus how fast parsing went.
#[derive(Debug)]
pub struct ReplayOutcome {
    /// Deterministic summary.
    pub summary: ReplaySummary,
    /// Wall-clock seconds spent reading and parsing (measurement only).
    pub elapsed_sec: f64,
}

/// Replay captures: parse every packet (through `pipeline` when given), optionally writing
/// records to `records`.
pub fn replay_files<W: Write>(
    files: &[PathBuf],
    options: &ParseOptions,
    mut pipeline: Option<&mut Pipeline>,
    mut records: Option<&mut W>,
    top: usize,
) -> io::Result<ReplayOutcome> {
    let started = Instant::now();
    let mut run = ReplayRun {
        options,
        clock: VirtualClock::default(),
        builder: SummaryBuilder::default(),
    };
    let name_files = files.len() > 1;
    for path in files {
        let name = path.display().to_string();
        let file_label = name_files.then_some(name.as_str());
        run.replay_one(
            path,
            &name,
            file_label,
            pipeline.as_deref_mut(),
            records.as_deref_mut(),
        )?;
    }
    let elapsed_sec = started.elapsed().as_secs_f64();
    let mut summary = run.builder.finish(top);
    summary.pipeline = pipeline.as_ref().map(|p| p.counters().rows());
    summary.appliance = pipeline.map(|p| crate::appliance::report(p));
    Ok(ReplayOutcome {
        summary,
        elapsed_sec,
    })
}

/// Capture timestamps turned into the pipeline's virtual time: nanoseconds since the first
/// packet, never going backwards (captures may be slightly out of order).
#[derive(Debug, Default)]
struct VirtualClock {
    first_ts_ns: Option<u64>,
    now: u64,
}

impl VirtualClock {
    fn at(&mut self, ts_ns: u64) -> u64 {
        let first = *self.first_ts_ns.get_or_insert(ts_ns);
        self.now = self.now.max(ts_ns.saturating_sub(first));
        self.now
    }
}

struct ReplayRun<'o> {
    options: &'o ParseOptions,
    clock: VirtualClock,
    builder: SummaryBuilder,
}

impl ReplayRun<'_> {
    fn replay_one<W: Write>(
        &mut self,
        path: &Path,
        name: &str,
        file_label: Option<&str>,
        mut pipeline: Option<&mut Pipeline>,
        mut records: Option<&mut W>,
    ) -> io::Result<()> {
        let mut reader = match CaptureReader::open(path) {
            Ok(reader) => reader,
            Err(error) => {
                self.builder.add_file(name, None, false);
                self.builder.add_error(&error);
                return Ok(());
            }
        };
        self.builder
            .add_file(name, Some(reader.format()), reader.is_gzip());
        let mut meta = PacketMeta::default();
        let mut buffers = FramePool::default();
        if let Some(pipeline) = pipeline.as_deref_mut() {
            pipeline.keep_spare_frames(true);
        }
        loop {
            let packet = match reader.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(error) => {
                    self.builder.add_error(&error);
                    return Ok(());
                }
            };
            let (index, ts_ns, link) = (packet.index, packet.ts_ns, packet.link);
            let outcome = match pipeline.as_deref_mut() {
                Some(pipeline) => {
                    let now = self.clock.at(ts_ns);
                    let iface = u16::try_from(packet.interface).unwrap_or(u16::MAX);
                    let frame = buffers.copy_of(packet.data);
                    Some(pipeline.process(now, iface, link, frame, packet.orig_len))
                }
                None => {
                    parse_into(
                        self.options,
                        link,
                        packet.data,
                        packet.orig_len,
                        0,
                        &mut meta,
                    );
                    None
                }
            };
            let meta = pipeline.as_deref().map_or(&meta, |p| p.last_meta());
            self.builder.add(ts_ns, link, meta);
            if let Some(out) = records.as_deref_mut() {
                let packet = PacketRecord::new(file_label, index, ts_ns, meta);
                let flows = pipeline
                    .as_deref()
                    .and_then(|p| p.flows())
                    .map(|s| &s.table);
                Record {
                    packet,
                    decision: outcome.as_ref().map(|o| Decision::of(o, flows)),
                    extra: NoExtra {},
                }
                .write_jsonl(out)?;
            }
            if let Some(pipeline) = pipeline.as_deref_mut() {
                buffers.recycle(pipeline);
            }
        }
    }
}

/// Frame buffers of replayed packets, reused: what the pipeline emitted (nothing reads it
/// after the packet's record) and the buffer of a frame it consumed come back here, so
/// reading a capture allocates no buffer per packet.
#[derive(Default)]
struct FramePool {
    free: Vec<Vec<u8>>,
    emitted: Vec<datapath::pipeline::EmittedFrame>,
}

impl FramePool {
    /// Buffers kept at most (a packet emits one or two frames).
    const KEEP: usize = 8;

    /// An owned copy of `data` in a reused buffer when there is one.
    fn copy_of(&mut self, data: &[u8]) -> Vec<u8> {
        let mut frame = self.free.pop().unwrap_or_default();
        frame.clear();
        frame.extend_from_slice(data);
        frame
    }

    /// Take back the buffers of what `pipeline` emitted or consumed for the last packet.
    fn recycle(&mut self, pipeline: &mut Pipeline) {
        if let Some(spare) = pipeline.take_spare_frame() {
            self.free.push(spare);
        }
        pipeline.drain_emitted_into(&mut self.emitted);
        for sent in self.emitted.drain(..) {
            if self.free.len() < Self::KEEP {
                self.free.push(sent.frame);
            }
        }
        self.free.truncate(Self::KEEP);
    }
}

/// Run `sim replay`.
pub fn run(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    // A capture that cannot be opened at all is an I/O error (exit 2), not a damaged one.
    for file in &args.files {
        let opened = std::fs::File::open(file)
            .with_context(|| format!("cannot open capture {}", file.display()))?;
        if opened.metadata().is_ok_and(|m| m.is_dir()) {
            anyhow::bail!("cannot read capture {}: it is a directory", file.display());
        }
    }
    let options = ParseOptions {
        verify_l4_checksum: !args.no_l4_checksum,
        ..Default::default()
    };
    let mut sink: Option<Box<dyn Write>> = match &args.packets {
        None => None,
        Some(path) if path.as_os_str() == "-" => Some(Box::new(BufWriter::new(io::stdout()))),
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("creating {}", path.display()))?;
            Some(Box::new(BufWriter::with_capacity(1 << 20, file)))
        }
    };
    let mut pipeline = match &args.appliance {
        Some(path) => {
            let config = ApplianceConfig::load(path)?;
            let base = path.parent().unwrap_or(Path::new("."));
            let mut config = config;
            config.no_l4_checksum |= args.no_l4_checksum;
            Some(build_pipeline(&config, base, args.seed, &[])?)
        }
        None => None,
    };
    let outcome = replay_files(
        &args.files,
        &options,
        pipeline.as_mut(),
        sink.as_mut(),
        args.top,
    )?;
    if let Some(out) = sink.as_mut() {
        out.flush()?;
    }
    let summary = &outcome.summary;
    let writing_records_to_stdout = args.packets.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if !writing_records_to_stdout {
        if args.json {
            println!("{}", serde_json::to_string_pretty(summary)?);
        } else {
            print!("{}", render_summary(summary));
        }
    }
    let mpps = summary.packets as f64 / outcome.elapsed_sec.max(1e-9) / 1e6;
    eprintln!(
        "measured: {} packets in {:.3} s wall clock = {:.2} Mpps (read + parse{})",
        summary.packets,
        outcome.elapsed_sec,
        mpps,
        if args.packets.is_some() {
            " + records"
        } else {
            ""
        }
    );
    for error in summary.errors() {
        eprintln!("error: {error}");
    }
    let failed = summary.errors().next().is_some();
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Human-readable summary, tcpreplay style.
pub fn render_summary(s: &ReplaySummary) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    for file in &s.files {
        let span_ns = match (file.first_ts_ns, file.last_ts_ns) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        };
        line(format!(
            "File:       {} ({}): {} packets over {}.{:06} s of capture time",
            file.name,
            file.format,
            file.packets,
            span_ns / 1_000_000_000,
            (span_ns % 1_000_000_000) / 1_000
        ));
    }
    let links: Vec<String> = s
        .link_types
        .iter()
        .map(|(l, n)| format!("{} ({l}) {n}", LinkType::from_linktype(*l).name()))
        .collect();
    let links = if links.is_empty() {
        "-".to_string()
    } else {
        links.join(", ")
    };
    line(format!("Link types: {links}"));
    line(format!(
        "Actual:     {} packets ({} bytes on the wire, {} captured)",
        s.packets, s.bytes, s.captured_bytes
    ));
    line(format!(
        "Network:    {} IPv4, {} IPv6, {} VLAN-tagged, {} fragments, {} snapped",
        s.ipv4, s.ipv6, s.vlan_tagged, s.fragments, s.snapped
    ));
    line(format!("Protocols:  {}", render_protocols(&s.protocols)));
    line(format!("Invalid:    {} packets", s.invalid));
    for (reason, count) in &s.invalid_by_reason {
        line(format!("  {:<30} {count}", reason.name()));
    }
    if let Some(rows) = &s.pipeline {
        line("Pipeline:   stage    verdict  reason".to_string());
        for row in rows {
            let reason = row.reason.as_deref().unwrap_or("-");
            let stage = row.stage.name();
            line(format!(
                "  {stage:<17} {:<8} {reason:<30} {}",
                row.verdict, row.count
            ));
        }
    }
    if let Some(report) = &s.appliance {
        out_push(&mut line, &crate::appliance::render_report(report));
    }
    line(format!(
        "Flows:      {} distinct (unidirectional 5-tuples)",
        s.flows
    ));
    if s.untracked_flow_packets > 0 {
        line(format!(
            "  untracked (table full): {} packets",
            s.untracked_flow_packets
        ));
    }
    for row in &s.top_flows {
        line(format!(
            "  {:>8} pkts {:>10} bytes  {}",
            row.packets,
            row.bytes,
            flow_label(row)
        ));
    }
    for error in s.errors() {
        line(format!("Error:      {error}"));
    }
    out
}

/// Feed multi-line text to a line sink, one line at a time.
fn out_push(line: &mut impl FnMut(String), text: &str) {
    for l in text.lines() {
        line(l.to_string());
    }
}

fn render_protocols(p: &ProtoCounts) -> String {
    let mut parts = vec![
        format!("tcp {}", p.tcp),
        format!("udp {}", p.udp),
        format!("icmp {}", p.icmp),
        format!("icmpv6 {}", p.icmpv6),
    ];
    parts.extend(p.other_ip.iter().map(|(n, c)| format!("ip-proto-{n} {c}")));
    parts.extend(p.non_ip.iter().map(|(t, c)| format!("ethertype-{t} {c}")));
    if p.unknown > 0 {
        parts.push(format!("unparsed {}", p.unknown));
    }
    parts.join(", ")
}

fn flow_label(row: &FlowRow) -> String {
    let proto = match row.proto {
        ProtoField::Name(n) => n.to_string(),
        ProtoField::Number(n) => n.to_string(),
    };
    let endpoint = |addr: IpAddr, port: u16| match (addr, port) {
        (_, 0) => addr.to_string(),
        (IpAddr::V4(a), p) => format!("{a}:{p}"),
        (IpAddr::V6(a), p) => format!("[{a}]:{p}"),
    };
    format!(
        "{proto} {} > {}",
        endpoint(row.src, row.sport),
        endpoint(row.dst, row.dport)
    )
}
