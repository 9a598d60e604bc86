//! `sim diff --appliance A.toml FILE...`: run the same packets through the simulator (the
//! pipeline `sim replay --appliance` runs) and through the Linux kernel (see `inject`),
//! compare each packet's outcome, and report agreement per deciding stage plus every
//! disagreement (ordinal, one-line decode, both outcomes, the deciding flow rule). Known,
//! justified differences come from an explanation file (the built-in
//! `known-differences.toml` plus `--explain FILE`); unexplained ones make the command exit 1.
//!
//! Outcomes are compared by kind (drop / forward / answer); for forwarded packets the
//! rewritten destination too, when the deciding director is one whose kernel counterpart
//! is exact (rr). Packets the kernel runner cannot inject are counted, not compared.
//!
//! Not here: scenario files (captures and appliance files only), pcap output of the
//! disagreeing packets, latency of the simulator per packet.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use datapath::packet::ParseOptions;
use serde::{Deserialize, Serialize};

use super::inject::{KernelFate, KernelRun, read_packets, run_kernel};
use super::rules::{FeatureRow, KernelRules};
use crate::appliance::{ApplianceConfig, build_pipeline};

/// The explanations shipped with lbsim.
pub const KNOWN_DIFFERENCES: &str = include_str!("known-differences.toml");

/// Arguments of `sim diff`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiffArgs {
    /// The appliance file (flows, shield, directors).
    #[arg(long, value_name = "APPLIANCE.toml")]
    pub appliance: PathBuf,
    /// Captures (pcap / pcapng, optionally gzip-compressed).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// More explanations of known differences (TOML, `[[difference]]` tables).
    #[arg(long, value_name = "FILE")]
    pub explain: Vec<PathBuf>,
    /// Gap between injected packets, in microseconds.
    #[arg(long, default_value_t = 100)]
    pub gap_us: u64,
    /// Seed of the simulator's secrets.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One known difference: outcome-text prefixes on each side, and why.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Explanation {
    /// Prefix of the simulator's outcome text.
    pub simulator: String,
    /// Prefix of the kernel's outcome text.
    pub kernel: String,
    /// The justification.
    pub why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplanationFile {
    #[serde(default)]
    difference: Vec<Explanation>,
}

/// Parse an explanation file's text.
pub fn parse_explanations(text: &str) -> anyhow::Result<Vec<Explanation>> {
    Ok(toml::from_str::<ExplanationFile>(text)?.difference)
}

/// The simulator's record of one packet (the keys of `sim replay --packets`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct SimPacket {
    /// Index within its file.
    pub index: u64,
    /// Source address.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// Protocol name or number.
    pub proto: Option<serde_json::Value>,
    /// Source port.
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// TCP flags.
    pub tcp_flags: Option<u8>,
    /// Deciding stage.
    pub stage: Option<String>,
    /// Verdict.
    pub verdict: Option<String>,
    /// Drop reason.
    pub reason: Option<String>,
    /// Deciding flow.
    pub flow: Option<String>,
    /// Rule within the flow.
    pub rule: Option<u16>,
    /// Real server.
    pub backend: Option<SocketAddr>,
}

impl SimPacket {
    /// One-line decode: `tcp 10.0.0.1:1234 > 192.168.0.1:22 [S]`.
    pub fn decode(&self) -> String {
        let proto = match &self.proto {
            Some(serde_json::Value::String(name)) => name.clone(),
            Some(other) => other.to_string(),
            None => "?".into(),
        };
        let endpoint = |addr: Option<IpAddr>, port: Option<u16>| match (addr, port) {
            (Some(addr), Some(port)) => SocketAddr::new(addr, port).to_string(),
            (Some(addr), None) => addr.to_string(),
            (None, _) => "?".into(),
        };
        let mut line = format!(
            "{proto} {} > {}",
            endpoint(self.src, self.sport),
            endpoint(self.dst, self.dport)
        );
        if let Some(flags) = self.tcp_flags {
            let names: String = [(2, 'S'), (16, '.'), (1, 'F'), (4, 'R'), (8, 'P')]
                .iter()
                .filter(|(bit, _)| flags & bit != 0)
                .map(|(_, c)| c)
                .collect();
            let _ = write!(line, " [{names}]");
        }
        line
    }

    /// The simulator's outcome as text: `drop <reason>`, `forward`, `forward to A:P`,
    /// `reply`.
    pub fn outcome(&self) -> String {
        match (self.verdict.as_deref(), self.backend) {
            (Some("drop"), _) => format!("drop {}", self.reason.as_deref().unwrap_or("?")),
            (Some("reply"), _) => "reply".into(),
            (Some("pass" | "forward"), Some(backend)) => {
                let port = if backend.port() == 0 {
                    self.dport.unwrap_or(0)
                } else {
                    backend.port()
                };
                format!("forward to {}", SocketAddr::new(backend.ip(), port))
            }
            (Some("pass" | "forward"), None) => "forward".into(),
            (other, _) => format!("unknown verdict {other:?}"),
        }
    }
}

/// The kernel outcome as text, in the simulator's words (`forward to A:P` only when the
/// destination was rewritten).
pub fn kernel_outcome(fate: &KernelFate, sim: &SimPacket) -> String {
    match fate {
        KernelFate::Dropped => "drop".into(),
        KernelFate::Answered {
            icmp_type,
            icmp_code,
        } => format!("answer icmp {icmp_type}/{icmp_code}"),
        KernelFate::NotInjected { why } => format!("not injected: {why}"),
        KernelFate::Forwarded { dst, dport, .. } => {
            if Some(*dst) == sim.dst && *dport == sim.dport {
                "forward".into()
            } else {
                format!("forward to {}", SocketAddr::new(*dst, dport.unwrap_or(0)))
            }
        }
    }
}

fn kind(outcome: &str) -> &str {
    outcome.split(' ').next().unwrap_or("")
}

/// Do two outcome texts agree? Kinds must match (`reply` = `answer`); forwards must match
/// their destination too unless the backend is chosen by an inexact stand-in.
fn agrees(sim: &str, kernel: &str, compare_backend: bool) -> bool {
    match (kind(sim), kind(kernel)) {
        ("drop", "drop") => true,
        ("reply", "answer") => true,
        ("forward", "forward") => !compare_backend || sim == kernel,
        _ => false,
    }
}

/// Agreement of the packets one stage decided (on the simulator side).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StageAgreement {
    /// Packets compared.
    pub compared: u64,
    /// Packets whose outcomes agree.
    pub agreed: u64,
    /// Disagreements explained by the explanation file.
    pub explained: u64,
}

/// One packet whose outcomes differ.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Disagreement {
    /// 0-based ordinal over all files.
    pub ordinal: usize,
    /// One-line decode.
    pub decode: String,
    /// The simulator's outcome (with its deciding stage).
    pub simulator: String,
    /// The kernel's outcome.
    pub kernel: String,
    /// The simulator's deciding flow rule (`flow#rule`).
    pub rule: Option<String>,
    /// The explanation, when known.
    pub explained_by: Option<String>,
}

/// The result of a diff.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffReport {
    /// Per-feature kernel mechanisms.
    pub features: Vec<FeatureRow>,
    /// Agreement per simulator stage.
    pub stages: BTreeMap<String, StageAgreement>,
    /// Packets not injected, by reason.
    pub not_injected: BTreeMap<String, u64>,
    /// Every disagreement, in packet order.
    pub disagreements: Vec<Disagreement>,
    /// Kernel injection-to-egress latency percentiles (p50, p90, p99, max), ns.
    pub kernel_latency_ns: Option<[u64; 4]>,
    /// Kernel packets per second of injection wall time.
    pub kernel_pps: f64,
}

impl DiffReport {
    /// Disagreements without an explanation.
    pub fn unexplained(&self) -> usize {
        self.disagreements
            .iter()
            .filter(|d| d.explained_by.is_none())
            .count()
    }

    /// Packets compared and agreeing, over all stages.
    pub fn totals(&self) -> (u64, u64) {
        self.stages
            .values()
            .fold((0, 0), |(c, a), s| (c + s.compared, a + s.agreed))
    }
}

/// Compare simulator records with kernel outcomes, packet by packet.
pub fn compare(
    sim: &[SimPacket],
    kernel: &KernelRun,
    exact_backends: &BTreeSet<SocketAddr>,
    explanations: &[Explanation],
) -> DiffReport {
    let mut report = DiffReport::default();
    for (ordinal, (sim, kernel)) in sim.iter().zip(&kernel.packets).enumerate() {
        if let KernelFate::NotInjected { why } = &kernel.fate {
            *report.not_injected.entry(why.clone()).or_default() += 1;
            continue;
        }
        let stage = sim.stage.clone().unwrap_or_else(|| "none".into());
        let (sim_text, kernel_text) = (sim.outcome(), kernel_outcome(&kernel.fate, sim));
        let exact = sim.backend.is_none_or(|b| exact_backends.contains(&b));
        let entry = report.stages.entry(stage.clone()).or_default();
        entry.compared += 1;
        if agrees(&sim_text, &kernel_text, exact) {
            entry.agreed += 1;
            continue;
        }
        let explained_by = explanations
            .iter()
            .find(|e| sim_text.starts_with(&e.simulator) && kernel_text.starts_with(&e.kernel))
            .map(|e| e.why.clone());
        entry.explained += u64::from(explained_by.is_some());
        report.disagreements.push(Disagreement {
            ordinal,
            decode: sim.decode(),
            simulator: format!("{stage}: {sim_text}"),
            kernel: kernel_text,
            rule: sim
                .flow
                .as_ref()
                .map(|f| format!("{f}#{}", sim.rule.unwrap_or(0))),
            explained_by,
        });
    }
    report.kernel_latency_ns = latency_percentiles(kernel);
    let injected = kernel.packets.len() as u64 - report.not_injected.values().sum::<u64>();
    report.kernel_pps = injected as f64 / kernel.inject_sec.max(1e-9);
    report
}

fn latency_percentiles(kernel: &KernelRun) -> Option<[u64; 4]> {
    let mut latencies: Vec<u64> = kernel
        .packets
        .iter()
        .filter_map(|p| match p.fate {
            KernelFate::Forwarded { latency_ns, .. } => Some(latency_ns),
            _ => None,
        })
        .collect();
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Some([at(0.5), at(0.9), at(0.99), at(1.0)])
}

/// Run the simulator over `files` with the appliance, returning one record per packet
/// (through `sim::replay::replay_files`) and the kernel rules compiled from the same tables.
pub fn simulate(
    appliance: &Path,
    files: &[PathBuf],
    seed: u64,
) -> anyhow::Result<(Vec<SimPacket>, KernelRules, BTreeSet<SocketAddr>)> {
    let config = ApplianceConfig::load(appliance)?;
    let base = appliance.parent().unwrap_or(Path::new("."));
    let mut pipeline = build_pipeline(&config, base, seed, &[])?;
    let rules = KernelRules::compile(
        config.shield.as_ref(),
        pipeline.flows().map(|stage| &stage.table),
        &config.director,
    )?;
    let options = ParseOptions {
        verify_l4_checksum: !config.no_l4_checksum,
        ..Default::default()
    };
    let mut records = Vec::new();
    crate::replay::replay_files(files, &options, Some(&mut pipeline), Some(&mut records), 0)?;
    let packets = records
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<Vec<SimPacket>, _>>()
        .context("reading the simulator's records")?;
    let exact: BTreeSet<SocketAddr> = config
        .director
        .iter()
        .filter(|d| rules.comparable_directors.contains(&d.name))
        .flat_map(|d| d.real.iter().filter_map(|r| r.addr.parse().ok()))
        .collect();
    Ok((packets, rules, exact))
}

/// Run both sides and compare. `extra_explanations` add to the built-in ones.
pub fn run_diff(
    appliance: &Path,
    files: &[PathBuf],
    extra_explanations: &[Explanation],
    gap: Duration,
    seed: u64,
) -> anyhow::Result<DiffReport> {
    let (sim, rules, exact) = simulate(appliance, files, seed)?;
    let packets = read_packets(files)?;
    anyhow::ensure!(
        packets.len() == sim.len(),
        "simulator read {} packets, kernel runner {}",
        sim.len(),
        packets.len()
    );
    let kernel = run_kernel(packets, &rules, gap)?;
    let mut explanations = parse_explanations(KNOWN_DIFFERENCES)?;
    explanations.extend_from_slice(extra_explanations);
    let mut report = compare(&sim, &kernel, &exact, &explanations);
    report.features = rules.features;
    Ok(report)
}

/// Human-readable report.
pub fn render(report: &DiffReport) -> String {
    let mut out = String::from("kernel mechanisms:\n");
    for f in &report.features {
        let compared = if f.compared { "" } else { " [not compared]" };
        let _ = writeln!(out, "  {}: {}{compared}", f.feature, f.mechanism);
    }
    out.push_str("agreement per simulator stage:\n");
    for (stage, s) in &report.stages {
        let percent = 100.0 * s.agreed as f64 / s.compared.max(1) as f64;
        let _ = writeln!(
            out,
            "  {stage:<9} {}/{} = {percent:.1}% ({} explained)",
            s.agreed, s.compared, s.explained
        );
    }
    let (compared, agreed) = report.totals();
    let _ = writeln!(
        out,
        "  total     {agreed}/{compared} = {:.1}%",
        100.0 * agreed as f64 / compared.max(1) as f64
    );
    for (why, count) in &report.not_injected {
        let _ = writeln!(out, "not injected: {count} ({why})");
    }
    let mut explained: BTreeMap<&str, (u64, &Disagreement)> = BTreeMap::new();
    for d in &report.disagreements {
        match d.explained_by.as_deref() {
            Some(why) => explained.entry(why).or_insert((0, d)).0 += 1,
            None => {
                let _ = writeln!(out, "UNEXPLAINED {}", disagreement_line(d));
            }
        }
    }
    for (why, (count, first)) in &explained {
        let _ = writeln!(
            out,
            "explained ({count}): {why}\n  first: {}",
            disagreement_line(first)
        );
    }
    if let Some([p50, p90, p99, max]) = report.kernel_latency_ns {
        let _ = writeln!(
            out,
            "kernel injection-to-egress latency (wall clock): p50 {p50} ns, p90 {p90} ns, p99 {p99} ns, max {max} ns"
        );
    }
    let _ = writeln!(
        out,
        "kernel injection rate: {:.0} packets/s (paced)",
        report.kernel_pps
    );
    out
}

fn disagreement_line(d: &Disagreement) -> String {
    let rule = d
        .rule
        .as_deref()
        .map(|r| format!(" rule {r}"))
        .unwrap_or_default();
    format!(
        "#{} {}: simulator {}{rule}; kernel {}",
        d.ordinal, d.decode, d.simulator, d.kernel
    )
}

/// Run `sim diff`.
pub fn run(args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let mut extra = Vec::new();
    for path in &args.explain {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        extra.extend(parse_explanations(&text).with_context(|| path.display().to_string())?);
    }
    let gap = Duration::from_micros(args.gap_us);
    let report = run_diff(&args.appliance, &args.files, &extra, gap, args.seed)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.unexplained() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_explanations_parse() {
        let explanations = parse_explanations(KNOWN_DIFFERENCES).expect("valid TOML");
        assert!(explanations.len() >= 3);
    }

    #[test]
    fn outcomes_agree_by_kind_and_by_destination_when_exact() {
        assert!(agrees("drop flow_deny", "drop", true));
        assert!(agrees(
            "forward to 10.0.1.2:80",
            "forward to 10.0.1.2:80",
            true
        ));
        assert!(!agrees(
            "forward to 10.0.1.2:80",
            "forward to 10.0.1.3:80",
            true
        ));
        assert!(agrees(
            "forward to 10.0.1.2:80",
            "forward to 10.0.1.3:80",
            false
        ));
        assert!(!agrees("forward", "drop", false));
        assert!(agrees("reply", "answer icmp 3/3", true));
    }
}
