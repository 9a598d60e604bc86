//! `sim diff SCENARIO.toml` and `sim diff --appliance A.toml FILE...`: run the same packets
//! through the simulator (the appliance's pipeline, see `simulate`) and through the Linux
//! kernel (see `inject`), compare each packet's outcome, and report agreement per deciding
//! stage and per feature, every disagreement (ordinal, one-line decode, both outcomes, the
//! deciding rule on each side), the kernel mechanism per feature, and the latency and
//! throughput of both sides on the same packets. Disagreeing packets are written to a pcap.
//!
//! Known, justified differences come from explanation files (precise rules, see `known`):
//! the built-in `known-differences.toml`, the scenario's `<name>.kernel-differences.toml`
//! next to it, and `--explain FILE`; unexplained ones make the command exit 1, and so does,
//! with `--strict`, an entry of the given files that explains nothing. The report counts
//! the packets each entry explained.
//!
//! Outcomes are compared as text (see `outcome`): drops by class (`known::DROP_CLASSES`:
//! the simulator's from its drop reason, the kernel's from the rule that dropped the
//! packet, else the stack's refusal), never drop = drop,
//! forwards by the 5-tuple as it left (after DNAT / reply un-NAT; the destination is masked
//! for directors whose scheduler the kernel only stands in for), answers by kind and the
//! SYN-ACK's option set, proxy SYNs by their options and tuple. Beyond the text, an ICMP
//! error must quote the same bytes on both sides (the offending datagram's header and what
//! follows, as much as the sender quoted: the kernel's quote is given back the injected
//! packet's own ID / flow label first), and a whole datagram that left in IP fragments
//! must leave in the same fragments (offset, length, MF, DF of each, in order). Packets the kernel runner
//! cannot inject are counted, not compared.
//!
//! The kernel's deciding rule of a disagreement (`kernel_rule`) comes from the nft trace:
//! the shield's nft rule (its comment names the context), the flow's iptables-nft rule
//! (its chain is the flow), or, when no rule dropped the packet, the stack (martians,
//! defragmentation, or "after the HOOK hook"); the report lists the packets decided per
//! kernel rule and the LB's IP counters that moved.
//!
//! Not here: closed-loop traffic (see `scenario_input`), QinQ injection.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::backend_diff::{self, BackendChoice, BackendReport};
use super::inject::{InputPacket, KernelPacket, KernelRun, TraceStatus, run_kernel_traced};
pub use super::input_source::{DiffInput, InputSource};
use super::known::{Case, kernel_drop_class, routing_refusal, simulator_drop_class};
pub use super::known::{Explanation, parse_explanations};
use super::outcome::Outcome;
use super::rules::{BackendMatch, BackendRule, FeatureRow, KernelRules};
use super::scenario_input::DEFAULT_MAX_PACKETS;
use super::simulate::{SimPacket, build, simulate};
use crate::record::DiffExtra;
use crate::report::Percentiles;

mod egress;
mod records;
mod render;
mod wire;
use egress::{egress_routes, route_text, tally_routes};
pub use records::PacketDiff;
use records::{open_records, write_packet_records};
pub use render::{render, write_disagreements_pcap};
use wire::{disagreement_texts, same_wire};

/// The explanations shipped with lbsim.
pub const KNOWN_DIFFERENCES: &str = include_str!("known-differences.toml");
/// The class of a kernel drop in a run without trace events that no header or routing
/// check explains: its deciding rule is unknown, so its class is not compared.
pub const UNTRACED_DROP: &str = "untraced";
/// Default gap between injected packets.
pub const DEFAULT_GAP_US: u64 = 100;

/// Arguments of `sim diff`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiffArgs {
    /// A scenario file (its appliance and open-loop traffic), or with `--appliance`,
    /// captures (pcap / pcapng, optionally gzip-compressed).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The appliance file: the inputs are captures.
    #[arg(long, value_name = "APPLIANCE.toml")]
    pub appliance: Option<PathBuf>,
    /// More explanations of known differences (TOML, `[[difference]]` tables).
    #[arg(long, value_name = "FILE")]
    pub explain: Vec<PathBuf>,
    /// Gap between injected packets, in microseconds.
    #[arg(long, default_value_t = DEFAULT_GAP_US)]
    pub gap_us: u64,
    /// Seed of the simulator's secrets (default: the scenario's, or 1).
    #[arg(long)]
    pub seed: Option<u64>,
    /// At most this many packets (per scenario, or in total for captures).
    #[arg(long, default_value_t = DEFAULT_MAX_PACKETS)]
    pub max_packets: usize,
    /// Write the disagreeing packets here (default: `<out>/kernel-disagreements.pcap`).
    #[arg(long, value_name = "FILE.pcap")]
    pub disagreements_pcap: Option<PathBuf>,
    /// Write one JSON record per packet (the `sim run` / `sim replay` keys plus the kernel's
    /// side: `kernel`, `kernel_rule`, `agree`, `explained_by`); `-` for stdout.
    #[arg(long, value_name = "FILE.jsonl")]
    pub packets: Option<PathBuf>,
    /// Report directory (default for scenarios: `reports/<name>`): kernel-diff.txt/.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Fail (exit 1) when an entry of the given explanation files (`--explain`, the
    /// scenario's own) explains no packet; without it, a warning.
    #[arg(long)]
    pub strict: bool,
    /// Which kernel answers: `guest` (user-mode Linux 6.1 with IPVS: directors are real
    /// IPVS services), `host` (this machine's kernel: nft stand-ins for directors), or
    /// `auto` (the guest when the appliance has directors and the guest can start here).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub kernel_backend: BackendChoice,
}

/// Read explanation files.
pub fn load_explanations(paths: &[PathBuf]) -> anyhow::Result<Vec<Explanation>> {
    let mut all = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        all.extend(parse_explanations(&text).with_context(|| path.display().to_string())?);
    }
    Ok(all)
}

/// The explanation file of a scenario: `<dir>/<stem>.kernel-differences.toml`.
pub fn scenario_explanation_path(scenario: &Path) -> PathBuf {
    let stem = scenario
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    scenario.with_file_name(format!("{stem}.kernel-differences.toml"))
}

/// Agreement of a group of packets.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Agreement {
    /// Packets compared.
    pub compared: u64,
    /// Packets whose outcomes agree.
    pub agreed: u64,
    /// Disagreements explained by an explanation file.
    pub explained: u64,
}

impl Agreement {
    /// Agreement in percent.
    pub fn percent(&self) -> f64 {
        100.0 * self.agreed as f64 / self.compared.max(1) as f64
    }
}

/// One packet whose outcomes differ.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Disagreement {
    /// 0-based ordinal over all inputs.
    pub ordinal: usize,
    /// One-line decode of the packet as it arrived.
    pub decode: String,
    /// The simulator's outcome.
    pub simulator: String,
    /// The kernel's outcome.
    pub kernel: String,
    /// The simulator's deciding rule (flow#rule, director → backend, or stage).
    pub simulator_rule: String,
    /// What decided on the kernel side: the nft / iptables-nft rule from the trace
    /// (`nft netdev lbsim_shield ingress handle 7: ip saddr @deny_default counter drop`),
    /// the stack's refusal, or the mechanism.
    pub kernel_rule: String,
    /// The name of the known difference that explains it, when one does.
    pub explained_by: Option<String>,
}

/// Latency and throughput of both sides on the same packets.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timing {
    /// Simulator: wall-clock cost of `Pipeline::process` per packet.
    pub simulator_cost_ns: Option<Percentiles>,
    /// Simulator packets per second of datapath time (sum of the costs).
    pub simulator_pps: f64,
    /// Kernel: injection-to-egress time of the frame each packet caused (user-space
    /// AF_PACKET timestamps on both ends, so it includes two socket crossings).
    pub kernel_latency_ns: Option<Percentiles>,
    /// Kernel packets per second of injection wall time (bounded by the pacing gap).
    pub kernel_pps: f64,
    /// The pacing gap, µs.
    pub gap_us: u64,
}

/// The result of a diff.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffReport {
    /// What was diffed (scenario or captures).
    pub subject: String,
    /// Per-feature kernel mechanisms (and features with no kernel counterpart).
    pub features: Vec<FeatureRow>,
    /// Agreement per simulator stage.
    pub stages: BTreeMap<String, Agreement>,
    /// Agreement per feature (director, SYN cookies, lists, flows, invalid checks).
    pub by_feature: BTreeMap<String, Agreement>,
    /// Packets not injected, by reason.
    pub not_injected: BTreeMap<String, u64>,
    /// Inputs left out (closed-loop sources, caps).
    pub notes: Vec<String>,
    /// Every disagreement, in packet order.
    pub disagreements: Vec<Disagreement>,
    /// Latency and throughput of both sides.
    pub timing: Timing,
    /// Whether kernel rules were traced per packet.
    pub kernel_trace: TraceStatus,
    /// Per deciding kernel rule, the packets it decided (all injected packets).
    pub kernel_rule_hits: BTreeMap<String, u64>,
    /// Injected packets the trace has nothing about (events lost).
    pub kernel_untraced: u64,
    /// Which kernel answered which feature, and the directors compared with IPVS.
    pub backend: BackendReport,
    /// IPv4 / ICMP counters of the LB namespace that moved during the run.
    pub kernel_counters: BTreeMap<String, u64>,
    /// Per known difference (by name), the packets it explained (0: unused here).
    pub explained_per_entry: BTreeMap<String, u64>,
    /// Every packet's simulator decision and kernel side, in order (`--packets`; not in
    /// kernel-diff.json).
    #[serde(skip)]
    pub packets: Vec<PacketDiff>,
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

/// The director rule that decided a packet: by its virtual service (the destination of a
/// request, the source of an un-NATed reply), else by its real server.
fn director_rule<'r>(sim: &SimPacket, rules: &'r KernelRules) -> Option<&'r BackendRule> {
    let backend = sim.decision.backend?;
    let socket = |addr: Option<std::net::IpAddr>, port: Option<u16>| {
        addr.zip(port).map(|(a, p)| std::net::SocketAddr::new(a, p))
    };
    let request = socket(sim.input.dst, sim.input.dport);
    let reply = match &sim.outcome {
        Outcome::Forward { frame } => socket(frame.src, frame.sport),
        _ => None,
    };
    [request, reply]
        .into_iter()
        .flatten()
        .find_map(|service| rules.services.get(&service))
        .or_else(|| rules.backend_rule(backend))
}

/// The feature a simulator decision belongs to.
fn feature_of(sim: &SimPacket, rules: &KernelRules) -> String {
    if sim.decision.backend.is_some() {
        return match director_rule(sim, rules) {
            Some(rule) => format!("director {}", rule.director),
            None => "director (no kernel counterpart)".into(),
        };
    }
    match (sim.decision.stage, &sim.outcome) {
        ("shield", Outcome::Answer { .. } | Outcome::Proxy { .. }) => "shield SYN cookies".into(),
        ("shield", Outcome::Drop { reason: Some(r) })
            if r.contains("cookie") || r == "no_session" =>
        {
            "shield SYN cookies".into()
        }
        ("shield", _) => "shield lists".into(),
        ("parse", _) => "invalid-packet checks".into(),
        (stage, _) => stage.to_string(),
    }
}

/// The kernel-side deciding rule or mechanism of a packet: for a drop, the nft rule the
/// trace names first, then (no rule dropped it) the stack's refusals (martians,
/// defragmentation), then the last hook the packet reached; otherwise the director's mechanism or the kind of answer.
fn kernel_rule(sim: &SimPacket, packet: &KernelPacket, rules: &KernelRules) -> String {
    let kernel = &packet.outcome;
    if let (Outcome::Drop { .. }, Some(rule), true) = (kernel, &packet.rule, packet.dropped_by_rule)
    {
        return rule.to_string();
    }
    if let (Some(false), Outcome::Drop { .. }) = (sim.input.ipv4_header_ok, kernel) {
        return "ip_rcv_core: IPv4 header refused (IHL, total length or header checksum)".into();
    }
    if let (Some(refusal), Outcome::Drop { .. }) = (routing_refusal(&sim.input), kernel) {
        return refusal.into();
    }
    if let (true, Outcome::Drop { .. }) = (sim.input.fragment, kernel) {
        return "conntrack defragmentation (nf_defrag_ipv4 holds fragments until the datagram is complete)".into();
    }
    if let (Outcome::Drop { .. }, Some(hook)) = (kernel, &packet.last_hook) {
        return format!(
            "no nft rule dropped it: the kernel stack did, after the {hook} hook (routing, TTL, conntrack; see the IP counters)"
        );
    }
    if let (Outcome::Answer { .. } | Outcome::Proxy { .. }, Some(rule)) = (kernel, &packet.rule)
        && rule.text.to_lowercase().contains("synproxy")
    {
        return format!("nft synproxy: {rule}");
    }
    if let Some(rule) = director_rule(sim, rules) {
        return rule.mechanism.clone();
    }
    if let (Outcome::Forward { frame: ours }, Outcome::Forward { frame: theirs }) =
        (&sim.outcome, kernel)
    {
        let only_sport = ours.sport != theirs.sport
            && (ours.src, ours.dst, ours.dport) == (theirs.src, theirs.dst, theirs.dport);
        if only_sport {
            return "conntrack clash resolution (nf_nat remapped the source port)".into();
        }
    }
    match kernel {
        Outcome::Answer { frame } if frame.icmp == Some((3, 0)) && frame.proto == "icmp" => {
            "IPv4 routing: no route (ip_error: net unreachable)".into()
        }
        Outcome::Answer { frame } if frame.icmp == Some((1, 0)) && frame.proto == "icmpv6" => {
            "IPv6 routing: no route (ip6_pkt_discard)".into()
        }
        Outcome::Answer { frame } if frame.icmp.is_some() && frame.proto == "icmpv6" => {
            "IPv6 forwarding (ICMPv6 error)".into()
        }
        Outcome::Answer { frame } if frame.icmp.is_some() => "IPv4 forwarding (ICMP error)".into(),
        Outcome::Answer { .. } | Outcome::Proxy { .. } => "nft synproxy".into(),
        Outcome::Drop { .. } => "a drop in nft shield / synproxy / iptables flows / routing".into(),
        _ => {
            let family = if sim.input.src.is_some_and(|a| a.is_ipv6()) {
                "IPv6 forwarding (nft/ip6tables accept)"
            } else {
                "IPv4 forwarding (nft/iptables accept)"
            };
            match &packet.rule {
                Some(rule) => format!("{family}, last accepted by {rule}"),
                None => family.into(),
            }
        }
    }
}

fn masked(text: &str) -> &str {
    text.rsplit_once(" > ").map_or(text, |(head, _)| head)
}

/// Do two outcomes agree? See the module documentation. A kernel drop's reason is its
/// drop class (see `known::kernel_drop_class`); drops agree when the simulator's reason is
/// of the same class.
pub fn agrees(sim: &Outcome, kernel: &Outcome, matching: Option<BackendMatch>) -> bool {
    if sim.kind() != kernel.kind() {
        return false;
    }
    let (sim_text, kernel_text) = (sim.text(), kernel.text());
    match (sim, kernel) {
        (Outcome::Drop { reason }, Outcome::Drop { reason: class }) => {
            class.as_deref() == Some(UNTRACED_DROP)
                || Some(simulator_drop_class(reason.as_deref())) == class.as_deref()
        }
        (Outcome::Forward { .. } | Outcome::Proxy { .. }, _)
            if matching == Some(BackendMatch::StandIn) =>
        {
            masked(&sim_text) == masked(&kernel_text) && same_wire(sim, kernel)
        }
        _ => sim_text == kernel_text && same_wire(sim, kernel),
    }
}

/// A stand-in scheduler's backend is not compared, but a request it DNATed must go, on
/// each side, to a real server of that director, at its port (the virtual port for a
/// port-less real): a wrong DNAT address or port is a disagreement.
fn stand_in_destinations_ok(sim: &SimPacket, kernel: &Outcome, rules: &KernelRules) -> bool {
    let (Outcome::Forward { frame: ours }, Outcome::Forward { frame: theirs }, Some(backend)) =
        (&sim.outcome, kernel, sim.decision.backend)
    else {
        return true;
    };
    if (ours.dst, ours.dport) == (sim.input.dst, sim.input.dport) {
        return true; // not a DNATed request: a reply, or direct routing
    }
    let virtual_port = sim.input.dport.unwrap_or(0);
    let at_port = |real: SocketAddr| match real.port() {
        0 => SocketAddr::new(real.ip(), virtual_port),
        _ => real,
    };
    let destination = |frame: &super::outcome::FrameSummary| {
        frame
            .dst
            .zip(frame.dport)
            .map(|(a, p)| SocketAddr::new(a, p))
    };
    let director = rules.backend_rule(backend).map(|r| r.director.as_str());
    let a_real = |to: SocketAddr| {
        let exact = rules.backends.get(&to).map(|r| r.director.as_str());
        let portless = rules
            .backends
            .get(&SocketAddr::new(to.ip(), 0))
            .filter(|_| to.port() == virtual_port)
            .map(|r| r.director.as_str());
        exact.or(portless).is_some_and(|d| Some(d) == director)
    };
    destination(ours) == Some(at_port(backend)) && destination(theirs).is_some_and(a_real)
}

/// Compare simulator records with kernel outcomes, packet by packet; counts the packets
/// each explanation explained (the first that matches) in `explained_per_entry`.
pub fn compare(
    sim: &[SimPacket],
    kernel: &KernelRun,
    rules: &KernelRules,
    explanations: &[Explanation],
) -> DiffReport {
    let mut report = DiffReport {
        explained_per_entry: explanations.iter().map(|e| (e.name.clone(), 0)).collect(),
        ..DiffReport::default()
    };
    // Without nft trace events (the guest kernel has none) a drop no header or routing check
    // explains cannot be given a class: it is `untraced`, and agrees with any drop.
    let traced = kernel.trace == TraceStatus::On;
    for (sim, kernel) in sim.iter().zip(&kernel.packets) {
        if let Outcome::NotInjected { why } = &kernel.outcome {
            *report.not_injected.entry(why.clone()).or_default() += 1;
            let extra = DiffExtra {
                simulator: sim.outcome.text(),
                kernel: kernel.outcome.text(),
                kernel_rule: String::new(),
                agree: None,
                explained_by: None,
            };
            report.packets.push(PacketDiff::new(sim, extra));
            continue;
        }
        let kernel_outcome = match &kernel.outcome {
            Outcome::Drop { .. } => Outcome::Drop {
                reason: Some(match kernel_drop_class(&sim.input, kernel) {
                    "stack" if !traced => UNTRACED_DROP.to_string(),
                    class => class.to_string(),
                }),
            },
            other => other.clone(),
        };
        let matching = sim
            .decision
            .backend
            .and_then(|b| rules.backend_rule(b))
            .map(|r| r.matching);
        let routes = egress_routes(sim, kernel, rules);
        let agreed = agrees(&sim.outcome, &kernel_outcome, matching)
            && (matching != Some(BackendMatch::StandIn)
                || stand_in_destinations_ok(sim, &kernel_outcome, rules))
            && routes.is_none_or(|(ours, theirs)| ours == theirs);
        let feature = feature_of(sim, rules);
        let kernel_rule = kernel_rule(sim, kernel, rules);
        let case = Case {
            input: &sim.input,
            simulator: &sim.outcome,
            kernel: &kernel_outcome,
            mechanism: &kernel_rule,
            cookie_auto: sim
                .input
                .dst
                .is_some_and(|d| rules.cookie_auto.contains(&d)),
            director: sim.decision.backend.is_some(),
        };
        let explained_by = (!agreed)
            .then(|| explanations.iter().find(|e| e.matches(&case)))
            .flatten()
            .map(|e| e.name.clone());
        if let Some(name) = &explained_by {
            *report.explained_per_entry.entry(name.clone()).or_default() += 1;
        }
        for entry in [
            report
                .stages
                .entry(sim.decision.stage.to_string())
                .or_default(),
            report.by_feature.entry(feature).or_default(),
        ] {
            entry.compared += 1;
            entry.agreed += u64::from(agreed);
            entry.explained += u64::from(explained_by.is_some());
        }
        let extra = DiffExtra {
            simulator: sim.outcome.text(),
            kernel: kernel_outcome.text(),
            kernel_rule: kernel_rule.clone(),
            agree: Some(agreed),
            explained_by: explained_by.clone(),
        };
        report.packets.push(PacketDiff::new(sim, extra));
        tally_routes(&mut report, routes);
        if !agreed {
            let (ours, theirs) = disagreement_texts(&sim.outcome, &kernel_outcome);
            report.disagreements.push(Disagreement {
                ordinal: sim.ordinal,
                decode: sim.input.decode(),
                simulator: format!(
                    "{}: {ours}{}",
                    sim.decision.stage,
                    route_text(routes.map(|r| r.0))
                ),
                kernel: theirs + &route_text(routes.map(|r| r.1)),
                simulator_rule: sim.deciding_rule(),
                kernel_rule,
                explained_by,
            });
        }
    }
    report.timing = timing(sim, kernel);
    report.kernel_trace = kernel.trace.clone();
    report.kernel_rule_hits = kernel.rule_hits.clone();
    report.kernel_untraced = kernel.untraced;
    report.kernel_counters = kernel.counters.clone();
    report
}

fn timing(sim: &[SimPacket], kernel: &KernelRun) -> Timing {
    let costs: Vec<u64> = sim.iter().map(|p| p.cost_ns).collect();
    let total: u64 = costs.iter().sum();
    Timing {
        simulator_pps: sim.len() as f64 / (total.max(1) as f64 / 1e9),
        simulator_cost_ns: Percentiles::of(costs),
        kernel_latency_ns: Percentiles::of(
            kernel.packets.iter().filter_map(|p| p.latency_ns).collect(),
        ),
        kernel_pps: kernel.injected as f64 / kernel.inject_sec.max(1e-9),
        gap_us: 0,
    }
}

/// Both sides' per-packet records of one input, kept so that they can be compared again
/// (with other explanations) without running the kernel again.
#[derive(Debug, Clone)]
pub struct Sides {
    /// The simulator's records.
    pub sim: Vec<SimPacket>,
    /// The kernel's run.
    pub kernel: KernelRun,
    /// The kernel rules (mechanisms, backend matching).
    pub rules: KernelRules,
}

impl Sides {
    /// Compare the two sides with these explanations (the built-in ones are not added).
    pub fn compare(
        &self,
        input: &DiffInput,
        explanations: &[Explanation],
        gap: Duration,
    ) -> DiffReport {
        let mut report = compare(&self.sim, &self.kernel, &self.rules, explanations);
        report.subject = input.subject.clone();
        report.features = self.rules.features.clone();
        report.notes = input.notes.clone();
        report.timing.gap_us = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
        report
    }
}

/// Run both sides of an input.
pub fn run_sides(input: &DiffInput, gap: Duration) -> anyhow::Result<Sides> {
    let (mut pipeline, rules) = build(&input.appliance, &input.base_dir, input.seed)?;
    let sim = simulate(&mut pipeline, &input.packets);
    let kernel = run_kernel_traced(&input.packets, &rules, gap)?;
    Ok(Sides { sim, kernel, rules })
}

/// The built-in known differences.
pub fn built_in_explanations() -> Vec<Explanation> {
    parse_explanations(KNOWN_DIFFERENCES).expect("known-differences.toml is valid (tested)")
}

/// Run both sides on the host kernel and compare. `explanations` add to the built-in
/// ones.
pub fn run_input(
    input: &DiffInput,
    explanations: &[Explanation],
    gap: Duration,
) -> anyhow::Result<DiffReport> {
    run_input_on(input, explanations, gap, BackendChoice::Host)
}

/// [`run_input`] on a chosen kernel backend (see `backend_diff`).
pub fn run_input_on(
    input: &DiffInput,
    explanations: &[Explanation],
    gap: Duration,
    choice: BackendChoice,
) -> anyhow::Result<DiffReport> {
    // The guest backend leaves packets the kernel's routing refuses out of both sides.
    let refused = |sim: &SimPacket| routing_refusal(&sim.input).is_some();
    let kernel = backend_diff::run_kernel_side(input, gap, choice, &refused)?;
    let mut all = built_in_explanations();
    all.extend_from_slice(explanations);
    let mut report = compare(&kernel.sim, &kernel.run, &kernel.rules, &all);
    report.subject = input.subject.clone();
    report.features = kernel.rules.features.clone();
    report.features.extend(kernel.host_features.iter().cloned());
    report.backend = backend_diff::report(&kernel);
    report.notes = input.notes.clone();
    report.timing.gap_us = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Captures through an appliance (the form `sim check --kernel` uses).
pub fn run_diff(
    appliance: &Path,
    files: &[PathBuf],
    extra_explanations: &[Explanation],
    gap: Duration,
    seed: u64,
) -> anyhow::Result<DiffReport> {
    let input = DiffInput::captures(appliance, files, seed, super::inject::MAX_PACKETS_PER_RUN)?;
    run_input(&input, extra_explanations, gap)
}

/// Run `sim diff`.
pub fn run(args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let mut explanation_files = args.explain.clone();
    let (input, default_out) = match &args.appliance {
        Some(appliance) => (
            DiffInput::captures(
                appliance,
                &args.inputs,
                args.seed.unwrap_or(1),
                args.max_packets,
            )?,
            None,
        ),
        None => {
            let [scenario] = args.inputs.as_slice() else {
                anyhow::bail!("give one scenario file, or --appliance with captures");
            };
            let own = scenario_explanation_path(scenario);
            if own.exists() {
                explanation_files.push(own);
            }
            let input = DiffInput::scenario(scenario, args.seed, args.max_packets)?;
            let name = scenario
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (input, Some(PathBuf::from("reports").join(name)))
        }
    };
    let explanations = load_explanations(&explanation_files)?;
    let records = args.packets.as_deref().map(open_records).transpose()?;
    let gap = Duration::from_micros(args.gap_us);
    let report = run_input_on(&input, &explanations, gap, args.kernel_backend)?;
    let out_dir = args.out.clone().or(default_out);
    let text = render(&report);
    if let Some(dir) = &out_dir {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("kernel-diff.txt"), &text)?;
        std::fs::write(
            dir.join("kernel-diff.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
    }
    let pcap = args
        .disagreements_pcap
        .clone()
        .or_else(|| out_dir.map(|d| d.join("kernel-disagreements.pcap")));
    if let Some(pcap) = &pcap {
        write_disagreements_pcap(pcap, &report, &input.packets)?;
    }
    let records_on_stdout = args.packets.as_deref() == Some(Path::new("-"));
    if let Some(out) = records {
        write_packet_records(out, &report)?;
    }
    if records_on_stdout {
        // stdout carries the records: the report stays in the report directory.
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{text}");
    }
    let unused = unused_entries(&report, &explanations);
    for name in &unused {
        let level = if args.strict { "error" } else { "warning" };
        eprintln!("{level}: known difference `{name}` explains no packet of this run");
    }
    if args.strict && !unused.is_empty() {
        return Ok(ExitCode::from(1));
    }
    Ok(exit_code(&report))
}

/// The entries of `explanations` that explained no packet of the report.
pub fn unused_entries(report: &DiffReport, explanations: &[Explanation]) -> Vec<String> {
    explanations
        .iter()
        .filter(|e| {
            report
                .explained_per_entry
                .get(&e.name)
                .copied()
                .unwrap_or(0)
                == 0
        })
        .map(|e| e.name.clone())
        .collect()
}

/// Exit status of a diff: 1 when a disagreement is unexplained.
pub fn exit_code(report: &DiffReport) -> ExitCode {
    if report.unexplained() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `sim run SCENARIO --kernel`: diff the scenario's open-loop traffic after the run,
/// writing the report next to the run's (`out`, default `reports/<name>`).
pub fn run_after_simulation(
    scenario: &Path,
    seed: Option<u64>,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let args = DiffArgs {
        inputs: vec![scenario.to_path_buf()],
        appliance: None,
        explain: Vec::new(),
        gap_us: DEFAULT_GAP_US,
        seed,
        max_packets: DEFAULT_MAX_PACKETS,
        disagreements_pcap: None,
        packets: None,
        out: out.map(Path::to_path_buf),
        json: false,
        strict: false,
        kernel_backend: BackendChoice::Auto,
    };
    run(&args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::outcome::FrameSummary;
    use datapath::packet::LinkType;
    use datapath::packet::builder::PacketBuilder;
    use std::net::Ipv4Addr;

    /// A forwarded TCP SYN to `dst` (also used by `wire`'s tests).
    pub(super) fn forward(dst: [u8; 4]) -> Outcome {
        let frame = PacketBuilder::eth()
            .ipv4(Ipv4Addr::new(10, 9, 9, 9), Ipv4Addr::from(dst))
            .tcp(1000, 25)
            .syn()
            .build();
        Outcome::Forward {
            frame: FrameSummary::of(LinkType::Ethernet, &frame),
        }
    }

    #[test]
    fn the_built_in_explanations_parse() {
        let explanations = parse_explanations(KNOWN_DIFFERENCES).expect("valid TOML");
        assert!(explanations.len() >= 3);
    }

    #[test]
    fn forwards_agree_on_the_rewritten_tuple_unless_the_scheduler_is_a_stand_in() {
        let (a, b) = (forward([10, 0, 2, 1]), forward([10, 0, 2, 2]));
        assert!(agrees(&a, &a, Some(BackendMatch::Exact)));
        assert!(!agrees(&a, &b, Some(BackendMatch::Exact)));
        assert!(!agrees(&a, &b, Some(BackendMatch::Jhash)));
        assert!(agrees(&a, &b, Some(BackendMatch::StandIn)));
        let drop = Outcome::Drop { reason: None };
        assert!(!agrees(&a, &drop, None));
        let reason = Some("flow_deny".to_string());
        let sim_drop = Outcome::Drop { reason };
        let class = |c: &str| Outcome::Drop {
            reason: Some(c.to_string()),
        };
        assert!(agrees(&sim_drop, &class("flow-deny"), None));
        assert!(!agrees(&sim_drop, &class("shield-list"), None));
        assert!(!agrees(&sim_drop, &drop, None));
    }
}
