//! `iptables-save` / `iptables-restore` files in; the appliance's flows (compiled by
//! `datapath::flows::compile`) and `[[nat]]` rules out.
//!
//! Read, per table:
//! - mangle PREROUTING: `-j MARK --set-mark|--set-xmark N` (with `-p`, `-s`, `-d`, `-i`,
//!   `--sport`/`--dport`, `-m multiport --sports/--dports`, `--icmp-type`, `!`) become
//!   flows that mark for the director with mark N; `ACCEPT` / `DROP` become `permit` /
//!   `deny` flows. Unconditional jumps to user chains (the shape `sim flows compile` and
//!   flowmgr install: one chain per flow) become one flow per chain, its `RETURN` rules the
//!   flow's `ignore` lines (a chain of `RETURN`s only: a `skip` flow). Consecutive rules with
//!   the same effect become one flow. Flows are first-match: a `MARK` without `ACCEPT` is
//!   read as if it ended the chain (the usual case: mark rules that do not overlap).
//! - nat: PREROUTING `DNAT --to-destination`, POSTROUTING `SNAT --to-source` and
//!   `-o IFACE MASQUERADE [--to-ports]` become `[[nat]]` rules.
//! - filter INPUT/FORWARD: `ACCEPT`, `DROP`, `REJECT` and the chains' `DROP` policy become
//!   flows: drops before any accept of their chain go first (a drop wins over a mark), the
//!   rest after the mark flows, with a warning where the order changes a verdict.
//!
//! Everything else (other chains and tables, `-m state`, `-g`, unknown options) is a
//! located warning naming the rule.

use std::net::IpAddr;

use datapath::nat::NatAction;
use datapath::nat::config::{NatKind, NatRuleConfig, Target};
use ipnet::IpNet;

use super::{FlowPolicy, FlowRule, Imported, located};
use crate::diagnostics::LocatedError as ConfigError;

/// One rule of an iptables-save file, parsed.
#[derive(Debug, Default, Clone)]
struct Rule {
    line: usize,
    text: String,
    chain: String,
    /// flowmgr conditions common to every expansion.
    conds: Vec<String>,
    /// Port alternatives (`multiport`): each expands into its own match line.
    sports: Vec<String>,
    dports: Vec<String>,
    proto: Option<String>,
    src: Option<(bool, String)>,
    dst: Option<(bool, String)>,
    out: Option<String>,
    target: String,
    mark: Option<u32>,
    to: Option<String>,
    /// Why the rule cannot be translated exactly (first reason).
    unmappable: Option<String>,
}

impl Rule {
    fn unmappable(&mut self, why: String) {
        self.unmappable.get_or_insert(why);
    }

    /// Flowmgr lines (`match …` or `ignore …`), one per port alternative.
    fn lines(&self, keyword: &str) -> Vec<String> {
        let sports = if self.sports.is_empty() {
            vec![String::new()]
        } else {
            self.sports.clone()
        };
        let dports = if self.dports.is_empty() {
            vec![String::new()]
        } else {
            self.dports.clone()
        };
        let mut lines = Vec::new();
        for s in &sports {
            for d in &dports {
                let parts: Vec<&str> = self
                    .conds
                    .iter()
                    .map(String::as_str)
                    .chain([s.as_str(), d.as_str()])
                    .filter(|p| !p.is_empty())
                    .collect();
                lines.push(
                    std::iter::once(keyword)
                        .chain(parts)
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
        }
        lines
    }
}

/// Import an iptables-save file.
pub fn import(file: &str, text: &str, into: &mut Imported) -> Result<(), ConfigError> {
    let mut table = String::new();
    let mut statements = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if let Some(name) = content.strip_prefix('*') {
            table = name.trim().to_string();
        } else if content == "COMMIT" {
            continue;
        } else if content.starts_with(':')
            || content.starts_with("-A ")
            || content.starts_with("-I ")
            || content.starts_with("--append ")
        {
            if table.is_empty() && !content.starts_with(':') {
                return Err(located(file, line, "a rule before any `*table` line"));
            }
            statements.push(Statement {
                table: table.clone(),
                line,
                statement: content.to_string(),
                origin: content.to_string(),
            });
        } else {
            return Err(located(
                file,
                line,
                format!(
                    "`{content}` is not an iptables-save line (`*table`, `:CHAIN`, `-A`, `COMMIT`)"
                ),
            ));
        }
    }
    import_statements(file, &statements, into)
}

/// One iptables-save statement (`:CHAIN POLICY` or `-A CHAIN …`) of a table, possibly
/// translated from another syntax (nft): `origin` is the text warnings quote.
#[derive(Debug, Clone)]
pub struct Statement {
    /// `filter`, `nat`, `mangle`, ...
    pub table: String,
    /// 1-based line in the file.
    pub line: usize,
    /// The iptables-save statement.
    pub statement: String,
    /// The source text it came from.
    pub origin: String,
}

/// Import iptables-save statements (chain declarations and rules, in order).
pub fn import_statements(
    file: &str,
    statements: &[Statement],
    into: &mut Imported,
) -> Result<(), ConfigError> {
    let mut state = State::default();
    for s in statements {
        if let Some(chain) = s.statement.strip_prefix(':') {
            declare_chain(file, (s.line, &s.origin), &s.table, chain, &mut state, into);
        } else {
            let mut rule = parse_rule(file, s.line, &s.statement)?;
            rule.text = s.origin.clone();
            state.rules.push((s.table.clone(), rule));
        }
    }
    translate(file, state, into);
    Ok(())
}

#[derive(Default)]
struct State {
    rules: Vec<(String, Rule)>,
    /// (table, chain) of user chains.
    user_chains: Vec<(String, String)>,
    /// (chain, line) of filter chains with a DROP policy.
    drop_policies: Vec<(String, usize, String)>,
}

fn declare_chain(
    file: &str,
    (line, origin): (usize, &str),
    table: &str,
    decl: &str,
    state: &mut State,
    into: &mut Imported,
) {
    let mut parts = decl.split_whitespace();
    let name = parts.next().unwrap_or("").to_string();
    let policy = parts.next().unwrap_or("-");
    match policy {
        "-" => state.user_chains.push((table.to_string(), name)),
        "DROP" if table == "filter" && (name == "INPUT" || name == "FORWARD") => {
            state.drop_policies.push((name, line, origin.to_string()));
        }
        "ACCEPT" => {}
        other => into.warn(
            file,
            line,
            origin,
            format!("chain policy {other} of {table} {name} is not modelled"),
        ),
    }
}

fn parse_rule(file: &str, line: usize, content: &str) -> Result<Rule, ConfigError> {
    let tokens = super::words(content);
    let mut rule = Rule {
        line,
        text: content.to_string(),
        chain: tokens.get(1).unwrap_or(&"").to_string(),
        ..Default::default()
    };
    let mut i = 2;
    let mut negate = false;
    while i < tokens.len() {
        let option = tokens[i];
        let arg = tokens.get(i + 1).map(|s| s.trim_matches('"').to_string());
        let need = || {
            arg.clone()
                .ok_or_else(|| located(file, line, format!("`{option}` needs a value")))
        };
        let mut used = 1;
        match option {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-p" | "--protocol" => {
                let p = need()?;
                if !matches!(p.as_str(), "tcp" | "udp" | "icmp") {
                    rule.unmappable(format!(
                        "protocol `{}{p}` has no flow form",
                        if negate { "! " } else { "" }
                    ));
                }
                rule.conds.push(cond(negate, "proto", &p));
                rule.proto = Some(p);
                used = 2;
            }
            "-s" | "--source" | "-d" | "--destination" => {
                let net = need()?;
                let key = if option.starts_with("-s") || option == "--source" {
                    "src"
                } else {
                    "dst"
                };
                if net.parse::<IpNet>().is_err() && net.parse::<IpAddr>().is_err() {
                    return Err(located(
                        file,
                        line,
                        format!("`{net}` is not an address or network"),
                    ));
                }
                rule.conds.push(cond(negate, key, &net));
                let value = Some((negate, net));
                if key == "src" {
                    rule.src = value
                } else {
                    rule.dst = value
                }
                used = 2;
            }
            "-i" | "--in-interface" => {
                rule.conds.push(cond(negate, "iface", &need()?));
                used = 2;
            }
            "-o" | "--out-interface" => {
                rule.out = Some(need()?);
                if negate {
                    rule.unmappable("`! -o` has no NAT form".into());
                }
                used = 2;
            }
            "-m" | "--match" => {
                let module = need()?;
                if negate {
                    rule.unmappable(format!("`! -m {module}` has no flow form"));
                } else if !matches!(
                    module.as_str(),
                    "tcp" | "udp" | "icmp" | "multiport" | "comment"
                ) {
                    rule.unmappable(format!(
                        "match module `{module}` is not modelled by the appliance"
                    ));
                }
                used = 2;
            }
            "--sport" | "--source-port" | "--dport" | "--destination-port" => {
                let key = if option.contains('s')
                    && !option.contains("dest")
                    && !option.starts_with("--d")
                {
                    "srcport"
                } else {
                    "dstport"
                };
                rule.conds.push(cond(negate, key, &need()?));
                used = 2;
            }
            "--sports" | "--source-ports" | "--dports" | "--destination-ports" | "--ports" => {
                let list: Vec<String> = need()?.split(',').map(str::to_string).collect();
                if negate || option == "--ports" {
                    rule.unmappable(format!(
                        "`{}{option}` (a negated or two-way port list) has no flow form",
                        if negate { "! " } else { "" }
                    ));
                }
                let key = if option.starts_with("--s") {
                    "srcport"
                } else {
                    "dstport"
                };
                let expanded = list.iter().map(|p| format!("{key} {p}")).collect();
                if key == "srcport" {
                    rule.sports = expanded
                } else {
                    rule.dports = expanded
                }
                used = 2;
            }
            "--icmp-type" => {
                let t = need()?;
                if t.parse::<u8>().is_err() {
                    rule.unmappable(format!("ICMP type `{t}`: only numeric types map"));
                }
                rule.conds.push(cond(negate, "icmptype", &t));
                used = 2;
            }
            "--comment" => used = 2,
            "-j" | "--jump" => {
                rule.target = need()?;
                used = 2;
            }
            "-g" | "--goto" => {
                rule.unmappable("`-g` (goto) is not translated".into());
                rule.target = need()?;
                used = 2;
            }
            "--set-mark" | "--set-xmark" => {
                let text = need()?;
                let (value, mask) = text.split_once('/').unwrap_or((&text, "0xffffffff"));
                rule.mark = Some(
                    parse_u32(value)
                        .ok_or_else(|| located(file, line, format!("`{text}` is not a mark")))?,
                );
                if parse_u32(mask) != Some(u32::MAX) {
                    rule.unmappable(format!("mark mask `{mask}`: only whole-mark sets map"));
                }
                used = 2;
            }
            "--to-destination" | "--to-source" | "--to-ports" | "--to" => {
                rule.to = Some(need()?);
                used = 2;
            }
            "-c" | "--set-counters" => used = 3,
            other => {
                rule.unmappable(format!("option `{other}` has no appliance form"));
                if arg.as_deref().is_some_and(|a| !a.starts_with('-')) {
                    used = 2;
                }
            }
        }
        negate = false;
        i += used;
    }
    if rule.target.is_empty() {
        rule.unmappable("a rule without `-j` only counts packets".into());
    }
    if let Some(why) = flowmgr_rejects(&rule) {
        rule.unmappable(why);
    }
    Ok(rule)
}

/// Why the flowmgr parser would refuse the rule's conditions (a value flowmgr cannot
/// hold, e.g. an interface name with a wildcard), if it would.
fn flowmgr_rejects(rule: &Rule) -> Option<String> {
    for line in rule.lines("match") {
        if line.contains('#') {
            return Some("`#` in a value (a comment in flowmgr)".into());
        }
        if let Err(errors) = datapath::flows::parse(&format!("flow x permit\n   {line}\n")) {
            return errors
                .first()
                .map(|e| format!("no flow form ({})", e.message));
        }
    }
    None
}

fn cond(negate: bool, key: &str, value: &str) -> String {
    let value = value.replace(['[', ']'], "");
    if negate {
        format!("not {key} {value}")
    } else {
        format!("{key} {value}")
    }
}

fn parse_u32(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Turn the parsed rules into flows and `[[nat]]` rules.
fn translate(file: &str, state: State, into: &mut Imported) {
    let mut mangle = FlowBuilder::new(file);
    let mut early_drops = FlowBuilder::new(file);
    let mut late_filter = FlowBuilder::new(file);
    let user = |t: &str, c: &str| state.user_chains.iter().any(|(tt, cc)| tt == t && cc == c);
    let mut filter_accepted: Vec<String> = Vec::new();
    for (table, rule) in &state.rules {
        let mut rule = rule.clone();
        if table == "mangle" && user(table, &rule.chain) {
            continue; // read with the jump to its chain
        }
        if let Some(why) = rule.unmappable.take() {
            into.warn(
                file,
                rule.line,
                &rule.text,
                format!("{why}: rule not translated"),
            );
            continue;
        }
        match (table.as_str(), rule.chain.as_str()) {
            ("mangle", "PREROUTING") if user(table, &rule.target) => {
                if !rule.conds.is_empty() || !rule.dports.is_empty() || !rule.sports.is_empty() {
                    into.warn(
                        file,
                        rule.line,
                        &rule.text,
                        "a conditional jump to a chain is not translated",
                    );
                    continue;
                }
                let chain: Vec<&Rule> = state
                    .rules
                    .iter()
                    .filter(|(t, r)| t == "mangle" && r.chain == rule.target)
                    .map(|(_, r)| r)
                    .collect();
                mangle.chain(&rule.target, &chain, into);
            }
            ("mangle", "PREROUTING") => mangle.direct(&rule, into),
            ("mangle", chain) if user(table, chain) => {}
            ("nat", _) => nat(file, &rule, into),
            ("filter", "INPUT" | "FORWARD") => {
                let accepted = filter_accepted.contains(&rule.chain);
                match rule.target.as_str() {
                    "ACCEPT" => {
                        filter_accepted.push(rule.chain.clone());
                        late_filter.direct(&rule, into);
                    }
                    "DROP" | "REJECT" if !accepted => {
                        rule.target = "DROP".into();
                        early_drops.direct(&rule, into);
                    }
                    "DROP" | "REJECT" => {
                        rule.target = "DROP".into();
                        late_filter.late_drop(&rule, into);
                    }
                    other => into.warn(
                        file,
                        rule.line,
                        &rule.text,
                        format!("filter target `{other}` is not translated"),
                    ),
                }
            }
            (t, c) => into.warn(
                file,
                rule.line,
                &rule.text,
                format!("{t} {c} is not part of the appliance's datapath: rule not translated"),
            ),
        }
    }
    for (chain, line, text) in &state.drop_policies {
        late_filter.policy_drop(chain, *line, text, into);
    }
    let marks_exist = !mangle.flows.is_empty();
    if marks_exist {
        for (line, text) in late_filter.late_drops.clone() {
            into.warn(file, line, &text, "a drop after an accept is placed after the mark flows: a packet a mark flow takes is not dropped by it here");
        }
    }
    into.flow_rules.extend(early_drops.flows);
    into.flow_rules.extend(mangle.flows);
    into.flow_rules.extend(late_filter.flows);
}

/// Builds flows from rules, merging consecutive rules with the same effect.
struct FlowBuilder<'a> {
    file: &'a str,
    flows: Vec<FlowRule>,
    late_drops: Vec<(usize, String)>,
    open: bool,
}

impl<'a> FlowBuilder<'a> {
    fn new(file: &'a str) -> Self {
        Self {
            file,
            flows: Vec::new(),
            late_drops: Vec::new(),
            open: false,
        }
    }

    fn policy(&self, rule: &Rule, into: &mut Imported) -> Option<FlowPolicy> {
        match rule.target.as_str() {
            "MARK" => rule.mark.map(FlowPolicy::Mark),
            "ACCEPT" => Some(FlowPolicy::Permit),
            "DROP" | "REJECT" => Some(FlowPolicy::Deny),
            other => {
                into.warn(
                    self.file,
                    rule.line,
                    &rule.text,
                    format!("target `{other}` has no flow form: rule not translated"),
                );
                None
            }
        }
    }

    fn direct(&mut self, rule: &Rule, into: &mut Imported) {
        let Some(policy) = self.policy(rule, into) else {
            return;
        };
        match self.flows.last_mut() {
            Some(last) if self.open && last.policy == policy => {
                last.lines.extend(rule.lines("match"))
            }
            _ => {
                let kind = match policy {
                    FlowPolicy::Mark(_) => "mark",
                    FlowPolicy::Permit => "accept",
                    FlowPolicy::Deny => "drop",
                    FlowPolicy::Skip => "skip",
                };
                self.flows.push(FlowRule {
                    name: format!("{kind}-L{}", rule.line),
                    policy,
                    lines: rule.lines("match"),
                    origin: format!("{}:{}", self.file, rule.line),
                });
                self.open = true;
            }
        }
    }

    fn late_drop(&mut self, rule: &Rule, into: &mut Imported) {
        self.late_drops.push((rule.line, rule.text.clone()));
        self.direct(rule, into);
    }

    fn policy_drop(&mut self, chain: &str, line: usize, text: &str, into: &mut Imported) {
        if !self.flows.is_empty() || !into.flow_rules.is_empty() {
            into.warn(self.file, line, text, "the DROP policy becomes a last `deny` flow: marked packets no rule accepts go to their director here");
        }
        self.open = false;
        self.flows.push(FlowRule {
            name: format!("{}-policy", chain.to_ascii_lowercase()),
            policy: FlowPolicy::Deny,
            lines: vec!["match".into()],
            origin: format!("{}:{line}", self.file),
        });
    }

    /// One flowmgr-style chain: `RETURN` rules are ignores, the others matches.
    fn chain(&mut self, name: &str, rules: &[&Rule], into: &mut Imported) {
        self.open = false;
        let all_return = rules.iter().all(|r| r.target == "RETURN");
        let mut current: Option<FlowRule> = None;
        let mut part = 0;
        let mut ignores: Vec<String> = Vec::new();
        let mut skip_next_accept = false;
        for rule in rules {
            if let Some(why) = &rule.unmappable {
                into.warn(
                    self.file,
                    rule.line,
                    &rule.text,
                    format!("{why}: rule not translated"),
                );
                continue;
            }
            if rule.target == "RETURN" && !all_return {
                ignores.extend(rule.lines("ignore"));
                if let Some(flow) = current.as_mut() {
                    flow.lines.extend(rule.lines("ignore"));
                }
                continue;
            }
            if rule.target == "ACCEPT" && std::mem::take(&mut skip_next_accept) {
                continue;
            }
            let policy = if rule.target == "RETURN" {
                Some(FlowPolicy::Skip)
            } else {
                self.policy(rule, into)
            };
            let Some(policy) = policy else { continue };
            skip_next_accept = matches!(policy, FlowPolicy::Mark(_));
            if current.as_ref().is_some_and(|f| f.policy != policy) {
                self.flows.extend(current.take());
                part += 1;
            }
            let flow = current.get_or_insert_with(|| FlowRule {
                name: flow_name(name, part),
                policy,
                lines: ignores.clone(),
                origin: format!("{}:{}", self.file, rule.line),
            });
            flow.lines.extend(rule.lines("match"));
        }
        self.flows.extend(current);
    }
}

fn flow_name(chain: &str, index: usize) -> String {
    let clean: String = chain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(20)
        .collect();
    let clean = match clean.trim_start_matches('-') {
        "" => "chain",
        clean => clean,
    };
    if index == 0 {
        clean.to_string()
    } else {
        format!("{clean}-{index}")
    }
}

fn nat(file: &str, rule: &Rule, into: &mut Imported) {
    let result = nat_rule(rule);
    match result {
        Ok(nat) => {
            into.config.nat.push(nat);
            into.nat_origins
                .push((file.to_string(), rule.line, rule.text.clone()));
        }
        Err(why) => into.warn(
            file,
            rule.line,
            &rule.text,
            format!("{why}: rule not translated"),
        ),
    }
}

fn nat_rule(rule: &Rule) -> Result<NatRuleConfig, String> {
    let kind = match (rule.chain.as_str(), rule.target.as_str()) {
        ("PREROUTING", "DNAT") => NatKind::Dnat,
        ("POSTROUTING", "SNAT") => NatKind::Snat,
        ("POSTROUTING", "MASQUERADE") => NatKind::Masquerade,
        (chain, target) => {
            return Err(format!(
                "nat {chain} `{target}` is not one of DNAT (PREROUTING), SNAT, MASQUERADE (POSTROUTING)"
            ));
        }
    };
    if kind == NatKind::Dnat && rule.out.is_some() {
        // iptables refuses it too ("Can't use -o with PREROUTING").
        return Err("`-o` in PREROUTING: DNAT happens before routing (no output interface)".into());
    }
    let conds: Vec<&String> = rule
        .conds
        .iter()
        .filter(|c| {
            !["proto ", "src ", "dst ", "dstport "]
                .iter()
                .any(|k| c.starts_with(k))
        })
        .collect();
    if let Some(extra) = conds.first() {
        return Err(format!("`{extra}` has no [[nat]] form"));
    }
    if rule.src.as_ref().is_some_and(|s| s.0)
        || rule.dst.as_ref().is_some_and(|d| d.0)
        || rule.conds.iter().any(|c| c.starts_with("not "))
    {
        return Err("a negated match has no [[nat]] form".into());
    }
    let proto = match rule.proto.as_deref() {
        None => None,
        Some("tcp") => Some(datapath::packet::ip_proto::TCP),
        Some("udp") => Some(datapath::packet::ip_proto::UDP),
        Some(p) => return Err(format!("protocol `{p}`: NAT rules translate tcp or udp")),
    };
    let port = match (
        &rule.dports[..],
        rule.conds.iter().find_map(|c| c.strip_prefix("dstport ")),
    ) {
        ([], None) => None,
        ([], Some(p)) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("`--dport {p}`: [[nat]] takes one port"))?,
        ),
        _ => return Err("a port list has no [[nat]] form".into()),
    };
    if !rule.sports.is_empty() || rule.conds.iter().any(|c| c.starts_with("srcport")) {
        return Err("a source port match has no [[nat]] form".into());
    }
    let net = |t: &Option<(bool, String)>| -> Result<Option<IpNet>, String> {
        t.as_ref()
            .map(|(_, s)| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("`{s}` is not a network"))
            })
            .transpose()
    };
    let dst = net(&rule.dst)?.map(|network| Target { network, port });
    if port.is_some() && dst.is_none_or(|d| d.network.prefix_len() != d.network.max_prefix_len()) {
        return Err("a port match needs one destination address in [[nat]]".into());
    }
    let to = rule.to.clone().unwrap_or_default();
    let action = match kind {
        NatKind::Dnat => {
            let target = super::ipvsadm::socket(&to)
                .ok_or_else(|| format!("`--to-destination {to}`: one address[:port] maps"))?;
            NatAction::Dnat {
                address: target.ip(),
                port: (target.port() != 0).then_some(target.port()),
            }
        }
        NatKind::Snat => snat_to(&to)?,
        NatKind::Masquerade => NatAction::Masquerade { ports: ports(&to)? },
    };
    if kind == NatKind::Masquerade && rule.out.is_none() {
        return Err("MASQUERADE without `-o IFACE`".into());
    }
    let action_port = match action {
        NatAction::Dnat { port, .. } => port.is_some(),
        NatAction::Snat { ports, .. } | NatAction::Masquerade { ports } => ports.is_some(),
    };
    if proto.is_none() && (port.is_some() || action_port) {
        // iptables refuses it too ("Need TCP, UDP, SCTP or DCCP with port specification"),
        // and nft ("transport protocol mapping is only valid after transport protocol match").
        return Err("a port needs `-p tcp` or `-p udp`".into());
    }
    Ok(NatRuleConfig {
        kind,
        proto,
        src: net(&rule.src)?,
        dst,
        out: rule.out.clone(),
        action,
    })
}

fn ports(text: &str) -> Result<Option<(u16, u16)>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    match (a.parse::<u16>(), b.parse::<u16>()) {
        (Ok(a), Ok(b)) if a > 0 && a <= b => Ok(Some((a, b))),
        _ => Err(format!("`{text}` is not a port range")),
    }
}

fn snat_to(to: &str) -> Result<NatAction, String> {
    if let Ok(address) = to.parse::<IpAddr>() {
        return Ok(NatAction::Snat {
            address,
            ports: None,
        });
    }
    let (address, range) = to
        .rsplit_once(':')
        .ok_or_else(|| format!("`--to-source {to}`: one address[:ports] maps"))?;
    let address = address
        .trim_matches(['[', ']'])
        .parse()
        .map_err(|_| format!("`{to}`: not an address"))?;
    Ok(NatAction::Snat {
        address,
        ports: ports(range)?,
    })
}
