//! `sim flows`: check, compile and evaluate flowmgr files.
//!
//! - `sim flows check FILE` — lint; exit 1 with every error rendered rustc-style.
//! - `sim flows compile FILE --to iptables|ip6tables|nft|ip-rules` — print the rules.
//! - `sim flows eval FILE --packet 'PROTO SRC[:PORT] > DST[:PORT] [iface NAME] [type N]'`
//!   — which flow, policy and rule decide each packet; `--explain` prints every rule
//!   tried; `--json` one JSON object per packet (`flow`, `policy`, `rule`, `mark`, …);
//!   `--appliance FILE` adds the route each packet takes through that appliance's routing
//!   tables (`route: table 100 #0 default via 10.0.9.1 dev dmz`), its mark applied.
//!
//! `--iface NAME` (repeatable) gives the interface list (index order) and makes unknown
//! `iface` names errors; `--director NAME[=MARK]` (repeatable) gives the defined directors
//! and their marks and makes unknown directors errors. Reading captures (`--pcap`) is not
//! here yet. This module does no evaluation of its own: it drives [`datapath::flows`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use datapath::flows::{
    Family, FlowAction, FlowFile, FlowTable, StepOutcome, TableConfig, Test, compile,
};
use datapath::packet::{L3, PacketMeta, ip_proto};

use crate::diagnostics::render_errors;

/// Arguments of `sim flows`.
#[derive(clap::Args, Debug)]
pub struct FlowsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: FlowsCommand,
}

/// The `sim flows` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum FlowsCommand {
    /// Check a flowmgr file; exit 1 with every error rendered.
    #[command(after_help = "Examples:
  sim flows check scenarios/flows/game.flowmgr
  sim flows check my.flowmgr --iface eth0 --iface eth1 --director web=80")]
    Check {
        /// The flowmgr file.
        file: PathBuf,
        /// Caller context (interfaces, directors).
        #[command(flatten)]
        context: ContextArgs,
    },
    /// Compile a flowmgr file to kernel rules.
    #[command(after_help = "Examples:
  sim flows compile scenarios/flows/game.flowmgr --to nft
  sim flows compile scenarios/flows/game.flowmgr --to iptables | iptables-restore --test")]
    Compile {
        /// The flowmgr file.
        file: PathBuf,
        /// Output language.
        #[arg(long, value_enum)]
        to: Target,
        /// Caller context (interfaces, directors).
        #[command(flatten)]
        context: ContextArgs,
    },
    /// Say which flow, policy and rule decide each packet.
    #[command(after_help = "Examples:
  sim flows eval scenarios/flows/game.flowmgr --packet 'tcp 198.51.100.7:40000 > 10.10.10.10:25565'
  sim flows eval scenarios/flows/game.flowmgr --packet 'icmp 192.168.0.1 > 10.10.10.10 type 8' --explain
  sim flows eval scenarios/flows/game.flowmgr --pcap pcaps/gen/synflood-game.pcap --json | head")]
    Eval {
        /// The flowmgr file.
        file: PathBuf,
        /// A packet: 'PROTO SRC[:PORT] > DST[:PORT] [iface NAME] [type N]' (repeatable).
        #[arg(long = "packet", required_unless_present = "pcap")]
        packets: Vec<String>,
        /// Evaluate every packet of a capture (pcap, pcapng, gzip) instead.
        #[arg(long, value_name = "CAPTURE", conflicts_with = "packets")]
        pcap: Option<PathBuf>,
        /// Show every rule tried, like a packet trace.
        #[arg(long)]
        explain: bool,
        /// One JSON object per packet.
        #[arg(long)]
        json: bool,
        /// Also name the route each packet takes through this appliance file's routing
        /// tables (`[[ip.table]]`, main from `[interfaces]`), its fwmark applied.
        #[arg(long, value_name = "FILE", conflicts_with = "pcap")]
        appliance: Option<PathBuf>,
        /// Caller context (interfaces, directors).
        #[command(flatten)]
        context: ContextArgs,
    },
}

/// What the caller knows beyond the file.
#[derive(clap::Args, Debug, Default)]
pub struct ContextArgs {
    /// Interface names in index order (repeatable); unknown `iface` names become errors.
    #[arg(long = "iface", value_name = "NAME")]
    pub ifaces: Vec<String>,
    /// Defined directors, `NAME` or `NAME=MARK` (repeatable); others become errors.
    #[arg(long = "director", value_name = "NAME[=MARK]")]
    pub directors: Vec<String>,
}

/// Output languages of `sim flows compile`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `iptables-restore` input (IPv4, mangle table).
    Iptables,
    /// `ip6tables-restore` input (IPv6, mangle table).
    Ip6tables,
    /// An `nft -f` ruleset (inet family).
    Nft,
    /// The `ip rule` commands for `table <id>` policies.
    IpRules,
}

/// Run `sim flows`.
pub fn run(args: &FlowsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        FlowsCommand::Check { file, context } => check(file, context),
        FlowsCommand::Compile { file, to, context } => compile_file(file, *to, context),
        FlowsCommand::Eval {
            file,
            packets,
            pcap,
            explain,
            json,
            appliance,
            context,
        } => match pcap {
            Some(capture) => eval_capture(file, capture, *explain, *json, context),
            None => {
                let routes = appliance
                    .as_deref()
                    .map(|path| Routes::load(path, context))
                    .transpose()?;
                eval(file, packets, *explain, *json, context, routes.as_ref())
            }
        },
    }
}

/// The flowmgr source: the file, or the flows of an iptables-save file or nft ruleset
/// (converted as `sim import` does; its mark flows name the `--director NAME=MARK`s).
fn read(file: &Path, context: &ContextArgs) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let marks = table_config(context, None)?
        .director_marks
        .unwrap_or_default();
    let name = file.display().to_string();
    match crate::appliance::confio::firewall_flows(&name, &text, &marks)? {
        Some((flows, warnings)) => {
            eprint!("{warnings}");
            Ok(flows)
        }
        None => Ok(text),
    }
}

fn table_config(
    context: &ContextArgs,
    iface_names: Option<Vec<String>>,
) -> anyhow::Result<TableConfig> {
    let director_marks = if context.directors.is_empty() {
        None
    } else {
        let mut marks = BTreeMap::new();
        let mut next_mark = datapath::flows::DIRECTOR_MARK_BASE;
        for spec in &context.directors {
            let (name, mark) = match spec.split_once('=') {
                Some((name, mark)) => (name, parse_mark(mark)?),
                None => (spec.as_str(), next_mark),
            };
            next_mark = next_mark.max(mark.saturating_add(1));
            marks.insert(name.to_owned(), mark);
        }
        Some(marks)
    };
    let iface_names = if context.ifaces.is_empty() {
        iface_names
    } else {
        Some(context.ifaces.clone())
    };
    Ok(TableConfig {
        iface_names,
        director_marks,
    })
}

fn parse_mark(text: &str) -> anyhow::Result<u32> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.with_context(|| format!("bad director mark `{text}`: expected a number"))
}

/// Build the table, or render the errors to stderr and say so.
fn load(file: &Path, source: &str, config: &TableConfig) -> Result<FlowTable, ExitCode> {
    FlowTable::from_source(source, config).map_err(|errors| {
        eprint!(
            "{}",
            render_errors(&file.display().to_string(), source, &errors)
        );
        ExitCode::from(1)
    })
}

fn check(file: &Path, context: &ContextArgs) -> anyhow::Result<ExitCode> {
    let source = read(file, context)?;
    let config = table_config(context, None)?;
    match load(file, &source, &config) {
        Ok(table) => {
            println!(
                "{}: ok, {} flows, {} rules",
                file.display(),
                table.flows().len(),
                table.rules().len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

fn compile_file(file: &Path, target: Target, context: &ContextArgs) -> anyhow::Result<ExitCode> {
    let source = read(file, context)?;
    let config = table_config(context, None)?;
    let table = match load(file, &source, &config) {
        Ok(table) => table,
        Err(code) => return Ok(code),
    };
    let text = match target {
        Target::Iptables => compile::iptables(&table, Family::V4),
        Target::Ip6tables => compile::iptables(&table, Family::V6),
        Target::Nft => compile::nft(&table),
        Target::IpRules => compile::ip_rules(&table)
            .iter()
            .map(|line| format!("{line}\n"))
            .collect(),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// A packet given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketSpec {
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Source port (TCP/UDP; absent = like a non-first fragment).
    pub sport: Option<u16>,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: Option<u16>,
    /// Ingress interface name.
    pub iface: Option<String>,
    /// ICMP type.
    pub icmp_type: Option<u8>,
}

fn parse_protocol(text: &str) -> anyhow::Result<u8> {
    Ok(match text {
        "tcp" => ip_proto::TCP,
        "udp" => ip_proto::UDP,
        "icmp" => ip_proto::ICMP,
        "icmpv6" => ip_proto::ICMPV6,
        number => number.parse().with_context(|| {
            format!("unknown protocol `{number}`: expected tcp, udp, icmp, icmpv6 or 0..=255")
        })?,
    })
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_endpoint(text: &str) -> anyhow::Result<(IpAddr, Option<u16>)> {
    let port = |port: &str| -> anyhow::Result<u16> {
        port.parse()
            .with_context(|| format!("bad port `{port}` in `{text}`: expected 0..=65535"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (address, tail) = rest
            .split_once(']')
            .with_context(|| format!("missing `]` in `{text}`"))?;
        let address = address
            .parse()
            .with_context(|| format!("bad address `{address}`"))?;
        return match tail.strip_prefix(':') {
            Some(number) => Ok((address, Some(port(number)?))),
            None if tail.is_empty() => Ok((address, None)),
            None => bail!("unexpected `{tail}` after `]` in `{text}`"),
        };
    }
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok((address, None));
    }
    let (address, number) = text
        .rsplit_once(':')
        .with_context(|| format!("bad address `{text}`: expected an IPv4 or IPv6 address"))?;
    let address = address.parse().with_context(|| {
        format!("bad address `{address}`: expected IPv4, or IPv6 as [addr]:port")
    })?;
    Ok((address, Some(port(number)?)))
}

impl PacketSpec {
    /// Parse `PROTO SRC[:PORT] > DST[:PORT] [iface NAME] [type N]`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [proto, src, ">", dst, rest @ ..] = words.as_slice() else {
            bail!(
                "bad packet `{text}`: expected 'PROTO SRC[:PORT] > DST[:PORT] [iface NAME] [type N]'"
            );
        };
        let proto = parse_protocol(proto)?;
        let (src, sport) = parse_endpoint(src)?;
        let (dst, dport) = parse_endpoint(dst)?;
        if src.is_ipv4() != dst.is_ipv4() {
            bail!("bad packet `{text}`: source and destination are of different families");
        }
        let mut spec = Self {
            proto,
            src,
            sport,
            dst,
            dport,
            iface: None,
            icmp_type: None,
        };
        let mut words = rest.iter();
        while let Some(word) = words.next() {
            let value = words
                .next()
                .with_context(|| format!("expected a value after `{word}` in `{text}`"))?;
            match *word {
                "iface" => spec.iface = Some((*value).to_owned()),
                "type" => {
                    spec.icmp_type = Some(
                        value
                            .parse()
                            .with_context(|| format!("bad ICMP type `{value}`"))?,
                    );
                }
                other => {
                    bail!("unexpected `{other}` in `{text}`: expected `iface NAME` or `type N`")
                }
            }
        }
        Ok(spec)
    }

    /// The packet as the datapath sees it, on interface `iface`.
    pub fn meta(&self, iface: u16) -> PacketMeta {
        let has_ports = matches!(self.proto, ip_proto::TCP | ip_proto::UDP);
        PacketMeta {
            iface,
            l3: if self.src.is_ipv4() {
                L3::Ipv4
            } else {
                L3::Ipv6
            },
            src: Some(self.src),
            dst: Some(self.dst),
            proto: Some(self.proto),
            sport: self.sport.filter(|_| has_ports),
            dport: self.dport.filter(|_| has_ports),
            icmp_type: self.icmp_type,
            ..PacketMeta::default()
        }
    }
}

/// The interface list for `eval`: the caller's, else the file's names, then the packets'.
/// Packets without `iface` arrive on index `names.len()`, which no name is bound to.
fn eval_ifaces(file: &FlowFile, specs: &[PacketSpec], context: &ContextArgs) -> Vec<String> {
    if !context.ifaces.is_empty() {
        return context.ifaces.clone();
    }
    let mut names: Vec<String> = Vec::new();
    let conditions = file
        .flows
        .iter()
        .flat_map(|flow| &flow.rules)
        .flat_map(|rule| &rule.conditions);
    let file_names = conditions.filter_map(|condition| match &condition.test {
        Test::Iface(name) => Some(name.clone()),
        _ => None,
    });
    let packet_names = specs.iter().filter_map(|spec| spec.iface.clone());
    for name in file_names.chain(packet_names) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The routing tables of `--appliance` and its interface names.
struct Routes {
    routing: datapath::ip::route::Routing,
    names: Vec<String>,
}

impl Routes {
    fn load(path: &Path, context: &ContextArgs) -> anyhow::Result<Self> {
        let config = crate::appliance::ApplianceConfig::load(path)?;
        let names: Vec<String> = if context.ifaces.is_empty() {
            config.interfaces.keys().cloned().collect()
        } else {
            context.ifaces.clone()
        };
        let given: Vec<&str> = context.ifaces.iter().map(String::as_str).collect();
        let ip = crate::appliance::ip_config(&config, &given)?;
        let routing = datapath::ip::IpLayer::new(ip).routing().clone();
        Ok(Self { routing, names })
    }

    /// `route: table 100 #0 default via 10.0.9.1 dev dmz` (or no route), and the JSON.
    fn describe(&self, meta: &PacketMeta, mark: Option<u32>) -> (String, serde_json::Value) {
        let Some(dst) = meta.dst else {
            return ("no route (not IP)".into(), serde_json::Value::Null);
        };
        match self.routing.lookup(dst, mark) {
            Some((used, route)) => {
                let name = self
                    .names
                    .get(usize::from(route.iface))
                    .map_or_else(|| format!("#{}", route.iface), Clone::clone);
                let text = route.describe(&name);
                let json = serde_json::json!({
                    "table": used.table,
                    "route": used.route,
                    "via": route.gateway,
                    "dev": name,
                    "text": text,
                });
                (format!("table {} #{} {text}", used.table, used.route), json)
            }
            None => ("no route".into(), serde_json::Value::Null),
        }
    }
}

fn eval(
    file: &Path,
    packets: &[String],
    explain: bool,
    json: bool,
    context: &ContextArgs,
    routes: Option<&Routes>,
) -> anyhow::Result<ExitCode> {
    let source = read(file, context)?;
    let specs = packets
        .iter()
        .map(|text| PacketSpec::parse(text))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let parsed = match datapath::flows::parse(&source) {
        Ok(parsed) => parsed,
        Err(errors) => {
            eprint!(
                "{}",
                render_errors(&file.display().to_string(), &source, &errors)
            );
            return Ok(ExitCode::from(1));
        }
    };
    let names = eval_ifaces(&parsed, &specs, context);
    let config = table_config(context, Some(names.clone()))?;
    let table = match load(file, &source, &config) {
        Ok(table) => table,
        Err(code) => return Ok(code),
    };
    for (text, spec) in packets.iter().zip(&specs) {
        let iface = match &spec.iface {
            None => names.len(),
            Some(name) => names
                .iter()
                .position(|known| known == name)
                .with_context(|| format!("packet `{text}`: unknown interface `{name}`"))?,
        };
        let meta = spec.meta(u16::try_from(iface).context("too many interfaces")?);
        let trace = table.trace(&meta);
        if table.classify(&meta) != trace.verdict {
            bail!("internal error: classify and trace disagree on `{text}`");
        }
        let route = routes.map(|r| r.describe(&meta, mark(trace.verdict.as_ref())));
        if json {
            let mut line = json_line(&table, text, &trace, explain);
            if let Some((_, value)) = route {
                line["route"] = value;
            }
            println!("{line}");
        } else {
            let report = text_report(&table, text, &trace, explain);
            match route {
                Some((route, _)) => println!("{}; route: {route}", report.trim_end()),
                None => print!("{report}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `eval --pcap`: every packet of a capture, labelled `#INDEX proto src > dst`.
fn eval_capture(
    file: &Path,
    capture: &Path,
    explain: bool,
    json: bool,
    context: &ContextArgs,
) -> anyhow::Result<ExitCode> {
    let source = read(file, context)?;
    let names = (!context.ifaces.is_empty()).then(|| context.ifaces.clone());
    let config = table_config(context, names)?;
    let table = match load(file, &source, &config) {
        Ok(table) => table,
        Err(code) => return Ok(code),
    };
    let mut reader = crate::capture::CaptureReader::open(capture)?;
    let mut meta = PacketMeta::default();
    loop {
        let packet = match reader.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => return Ok(ExitCode::SUCCESS),
            Err(error) => {
                eprintln!("error: {error}");
                return Ok(ExitCode::from(1));
            }
        };
        let index = packet.index;
        // Capture interfaces carry no names: packets arrive on an unnamed interface.
        let iface = u16::try_from(context.ifaces.len()).unwrap_or(u16::MAX);
        let options = datapath::packet::ParseOptions::default();
        datapath::packet::parse_into(
            &options,
            packet.link,
            packet.data,
            packet.orig_len,
            iface,
            &mut meta,
        );
        let text = format!("#{index} {}", describe_meta(&meta));
        let trace = table.trace(&meta);
        if json {
            println!("{}", json_line(&table, &text, &trace, explain));
        } else {
            print!("{}", text_report(&table, &text, &trace, explain));
        }
    }
}

/// `proto src[:port] > dst[:port]`, as `--packet` spells packets.
fn describe_meta(meta: &PacketMeta) -> String {
    let (Some(src), Some(dst)) = (meta.src, meta.dst) else {
        return "non-IP".to_string();
    };
    let proto = meta.proto.map_or("?".into(), datapath::packet::proto_name);
    let end = |addr: IpAddr, port: Option<u16>| match (addr, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    };
    let mut text = format!(
        "{proto} {} > {}",
        end(src, meta.sport),
        end(dst, meta.dport)
    );
    if let Some(icmp_type) = meta.icmp_type {
        text.push_str(&format!(" type {icmp_type}"));
    }
    text
}

fn policy_name(table: &FlowTable, verdict: Option<&datapath::flows::FlowVerdict>) -> String {
    verdict.map_or_else(
        || "unclassified".to_owned(),
        |verdict| table.flows()[verdict.flow].policy.to_string(),
    )
}

fn mark(verdict: Option<&datapath::flows::FlowVerdict>) -> Option<u32> {
    match verdict?.action {
        FlowAction::Mark(mark) => Some(mark),
        _ => None,
    }
}

fn step_result(table: &FlowTable, rule_index: usize, outcome: StepOutcome) -> String {
    let rule = &table.rules()[rule_index];
    let flow = &table.flows()[rule.flow];
    match outcome {
        StepOutcome::Held => match (rule.kind, flow.action) {
            (datapath::flows::RuleKind::Ignore, _) => "held: ignored, next flow".to_owned(),
            (_, FlowAction::Skip) => "held: flow is skip, next flow".to_owned(),
            _ => format!("held: {}", flow.policy),
        },
        StepOutcome::Failed(index) => format!("no: `{}` does not hold", rule.conditions[index]),
        StepOutcome::WrongFamily => format!(
            "no: rule is for {} only",
            rule.family.map_or("IP", Family::name)
        ),
    }
}

fn text_report(
    table: &FlowTable,
    text: &str,
    trace: &datapath::flows::FlowTrace,
    explain: bool,
) -> String {
    let mut out = String::new();
    let verdict = trace.verdict.as_ref();
    let decision = match verdict {
        Some(verdict) => format!(
            "flow {}, rule {}, {}",
            table.flows()[verdict.flow].name,
            verdict.rule,
            policy_name(table, Some(verdict))
        ),
        None => "unclassified (no flow claims it)".to_owned(),
    };
    if !explain {
        let _ = writeln!(out, "{text}: {decision}");
        return out;
    }
    let _ = writeln!(out, "packet: {text}");
    let mut current_flow = None;
    for step in &trace.steps {
        let rule = &table.rules()[step.rule];
        if current_flow != Some(rule.flow) {
            let flow = &table.flows()[rule.flow];
            let _ = writeln!(out, "  flow {} ({})", flow.name, flow.policy);
            current_flow = Some(rule.flow);
        }
        let written = datapath::flows::RuleDef {
            kind: rule.kind,
            span: datapath::flows::Span::default(),
            conditions: rule.conditions.clone(),
        };
        let result = step_result(table, step.rule, step.outcome);
        let _ = writeln!(out, "    rule {} `{written}`: {result}", rule.number);
    }
    let _ = writeln!(out, "  => {decision}");
    out
}

fn json_line(
    table: &FlowTable,
    text: &str,
    trace: &datapath::flows::FlowTrace,
    explain: bool,
) -> serde_json::Value {
    let verdict = trace.verdict.as_ref();
    let mut object = serde_json::json!({
        "packet": text,
        "flow": verdict.map(|v| table.flows()[v.flow].name.clone()),
        "policy": policy_name(table, verdict),
        "rule": verdict.map(|v| v.rule),
        "mark": mark(verdict),
    });
    if explain {
        let steps: Vec<serde_json::Value> = trace
            .steps
            .iter()
            .map(|step| {
                let rule = &table.rules()[step.rule];
                serde_json::json!({
                    "flow": table.flows()[rule.flow].name,
                    "rule": rule.number,
                    "result": step_result(table, step.rule, step.outcome),
                })
            })
            .collect();
        object["trace"] = serde_json::Value::Array(steps);
    }
    object
}
