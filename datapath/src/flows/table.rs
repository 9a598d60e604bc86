//! [`FlowTable`]: a validated, immutable flow table built from a parsed [`FlowFile`] and
//! the caller's context (interface names, director marks), and the evaluator over it.
//!
//! - [`FlowTable::classify`] — the data-plane path, through the bitset [`super::index`].
//! - [`FlowTable::classify_counted`] — the same, counting hits in a caller-owned
//!   [`FlowCounters`] (the table stays immutable and can be shared across threads).
//! - [`FlowTable::trace`] — the straightforward interpreter: every rule tried, in order,
//!   with the condition that failed. It is the reference the property tests hold
//!   `classify` to, and what `sim flows eval --explain` prints.
//!
//! Non-IP packets (and packets without addresses) are never classified: `None`.

use std::collections::BTreeMap;

use super::ast::{Condition, FlowDef, FlowFile, Policy, RuleKind, Span, Test};
use super::error::{FlowError, FlowErrorKind};
use super::index::{RuleBits, Segments};
use super::rule::packet_family;
pub use super::rule::{Rule, StepOutcome};
use super::rule_index::RuleIndex;
use super::{DIRECTOR_MARK_BASE, MAX_FLOWS, MAX_RULES, TABLE_MARK_BASE};
use crate::packet::{IfaceId, PacketMeta};

/// What the caller knows beyond the file.
#[derive(Clone, Debug, Default)]
pub struct TableConfig {
    /// Interface names by index ([`PacketMeta::iface`] is an index into it). When given,
    /// every `iface` name of the file must be in it. When `None`, `iface <name>` is bound
    /// to no interface: `iface X` never holds and `not iface X` always holds.
    pub iface_names: Option<Vec<String>>,
    /// Director name → firewall mark (the directors' `fwmark`). When given, every director
    /// of the file must be in it, and marks must be in `1..TABLE_MARK_BASE`. When `None`,
    /// directors get marks `DIRECTOR_MARK_BASE`, `+1`, … in order of first appearance.
    pub director_marks: Option<BTreeMap<String, u32>>,
}

/// What a flow does to the packets it claims, resolved to the kernel's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowAction {
    /// Accept (`permit`).
    Accept,
    /// Drop (`deny`).
    Drop,
    /// Set this firewall mark and accept (`director`, `table`).
    Mark(u32),
    /// Disabled flow: its matches send the packet on to the next flow (`skip`).
    Skip,
}

/// One validated flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Its name.
    pub name: String,
    /// The policy as written.
    pub policy: Policy,
    /// The policy resolved.
    pub action: FlowAction,
    /// Index of its first rule in [`FlowTable::rules`].
    pub first_rule: usize,
    /// Number of rules.
    pub rule_count: usize,
    /// Line of the `flow` header.
    pub line: u32,
}

/// Which flow and rule decided a packet, and what to do with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowVerdict {
    /// Index of the flow in [`FlowTable::flows`].
    pub flow: usize,
    /// 1-based rule number within the flow.
    pub rule: u32,
    /// What to do (never [`FlowAction::Skip`]).
    pub action: FlowAction,
}

/// Hit counters, owned by the caller and sized by [`FlowTable::counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Packets each flow claimed (by flow index).
    pub flow_hits: Vec<u64>,
    /// Packets each rule decided (by global rule index): a `match` whose conditions held
    /// (also in `skip` flows) or an `ignore` whose conditions held — as iptables counts
    /// the rules of the compiled chains.
    pub rule_hits: Vec<u64>,
    /// IP packets no flow claimed.
    pub unclassified: u64,
    /// Packets that were not IP (never classified).
    pub not_ip: u64,
}

/// One rule tried by [`FlowTable::trace`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceStep {
    /// Global rule index.
    pub rule: usize,
    /// What happened.
    pub outcome: StepOutcome,
}

/// Every rule tried for one packet, and the verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowTrace {
    /// Rules tried, in order.
    pub steps: Vec<TraceStep>,
    /// The verdict (`None`: unclassified).
    pub verdict: Option<FlowVerdict>,
}

/// A validated, immutable flow table with its classification index.
#[derive(Clone, Debug)]
pub struct FlowTable {
    flows: Vec<Flow>,
    rules: Vec<Rule>,
    iface_names: Option<Vec<String>>,
    director_marks: BTreeMap<String, u32>,
    index: RuleIndex,
    segments: Segments,
}

/// Collects resolution errors while a table is built.
struct Builder<'a> {
    config: &'a TableConfig,
    errors: Vec<FlowError>,
    director_marks: BTreeMap<String, u32>,
}

impl Builder<'_> {
    fn action(&mut self, flow: &FlowDef) -> FlowAction {
        match &flow.policy {
            Policy::Permit => FlowAction::Accept,
            Policy::Deny => FlowAction::Drop,
            Policy::Skip => FlowAction::Skip,
            Policy::Table(id) => FlowAction::Mark(TABLE_MARK_BASE | id),
            Policy::Director(name) => FlowAction::Mark(self.director_mark(name, flow.policy_span)),
        }
    }

    fn director_mark(&mut self, name: &str, span: Span) -> u32 {
        if let Some(mark) = self.director_marks.get(name) {
            return *mark;
        }
        let mark = match &self.config.director_marks {
            None => DIRECTOR_MARK_BASE + u32::try_from(self.director_marks.len()).unwrap_or(0),
            Some(marks) => match marks.get(name) {
                Some(mark) if (1..TABLE_MARK_BASE).contains(mark) => *mark,
                Some(mark) => {
                    self.errors.push(FlowError::new(
                        FlowErrorKind::BadMark,
                        span,
                        format!(
                            "director `{name}` has mark {mark:#x}: expected 0x1..={:#x} (marks from {TABLE_MARK_BASE:#x} up route tables)",
                            TABLE_MARK_BASE - 1
                        ),
                    ));
                    0
                }
                None => {
                    let known: Vec<&str> = marks.keys().map(String::as_str).collect();
                    self.errors.push(
                        FlowError::new(
                            FlowErrorKind::UndefinedDirector,
                            span,
                            format!("director `{name}` is not defined"),
                        )
                        .with_note(format!("defined directors: {}", known.join(", "))),
                    );
                    0
                }
            },
        };
        self.director_marks.insert(name.to_owned(), mark);
        mark
    }

    fn iface(&mut self, condition: &Condition) -> Option<IfaceId> {
        let Test::Iface(name) = &condition.test else {
            return None;
        };
        let names = self.config.iface_names.as_ref()?;
        let position = names.iter().position(|known| known == name);
        if position.is_none() {
            self.errors.push(
                FlowError::new(
                    FlowErrorKind::UnknownInterface,
                    condition.value_span,
                    format!("unknown interface `{name}`"),
                )
                .with_note(format!("known interfaces: {}", names.join(", "))),
            );
        }
        position.and_then(|index| IfaceId::try_from(index).ok())
    }
}

/// The `table <id>` policies of `file` naming none of the `defined` routing tables (nor
/// main, 254), each at its id (the appliance's own check: the kernel's `ip rule … lookup <id>` of an empty
/// table would silently fall through to main).
pub fn undefined_tables(file: &FlowFile, defined: &[u32]) -> Vec<FlowError> {
    file.flows
        .iter()
        .filter_map(|flow| match flow.policy {
            Policy::Table(id) if id != crate::ip::route::MAIN_TABLE && !defined.contains(&id) => {
                let known: Vec<String> = defined.iter().map(u32::to_string).collect();
                let note = if known.is_empty() {
                    "the appliance declares no routing table ([[ip.table]])".to_owned()
                } else {
                    format!("declared tables ([[ip.table]]): {}", known.join(", "))
                };
                Some(
                    FlowError::new(
                        FlowErrorKind::UndefinedTable,
                        flow.policy_span,
                        format!("routing table {id} is not defined"),
                    )
                    .with_note(note),
                )
            }
            _ => None,
        })
        .collect()
}

fn capacity_errors(file: &FlowFile) -> Vec<FlowError> {
    let mut errors = Vec::new();
    if let Some(flow) = file.flows.get(MAX_FLOWS) {
        errors.push(FlowError::new(
            FlowErrorKind::TooLarge,
            flow.name_span,
            format!("too many flows: a table holds at most {MAX_FLOWS}"),
        ));
    }
    if let Some(rule) = file.flows.iter().flat_map(|f| &f.rules).nth(MAX_RULES) {
        errors.push(FlowError::new(
            FlowErrorKind::TooLarge,
            rule.span,
            format!("too many rules: a table holds at most {MAX_RULES}"),
        ));
    }
    errors
}

impl FlowTable {
    /// Validate a parsed file against the caller's context and build the table.
    /// `Err` holds every error found (unknown interfaces, undefined directors, bad marks,
    /// capacity), in source order.
    pub fn build(file: &FlowFile, config: &TableConfig) -> Result<Self, Vec<FlowError>> {
        let mut builder = Builder {
            config,
            errors: capacity_errors(file),
            director_marks: BTreeMap::new(),
        };
        if !builder.errors.is_empty() {
            return Err(builder.errors);
        }
        let mut flows = Vec::with_capacity(file.flows.len());
        let mut rules = Vec::new();
        for (flow_index, definition) in file.flows.iter().enumerate() {
            let action = builder.action(definition);
            flows.push(Flow {
                name: definition.name.clone(),
                policy: definition.policy.clone(),
                action,
                first_rule: rules.len(),
                rule_count: definition.rules.len(),
                line: definition.name_span.line,
            });
            for (position, rule) in definition.rules.iter().enumerate() {
                let iface = rule.conditions.iter().find_map(|c| builder.iface(c));
                rules.push(Rule {
                    flow: flow_index,
                    number: u32::try_from(position + 1).unwrap_or(u32::MAX),
                    kind: rule.kind,
                    family: rule.family(),
                    conditions: rule.conditions.clone(),
                    iface,
                    line: rule.span.line,
                });
            }
        }
        if !builder.errors.is_empty() {
            builder.errors.sort_by_key(|error| error.span);
            return Err(builder.errors);
        }
        let index = RuleIndex::build(&rules);
        let segments = segments(&flows, &rules);
        Ok(Self {
            flows,
            rules,
            iface_names: config.iface_names.clone(),
            director_marks: builder.director_marks,
            index,
            segments,
        })
    }

    /// Parse and build in one step, reporting parse *and* build errors together.
    pub fn from_source(source: &str, config: &TableConfig) -> Result<Self, Vec<FlowError>> {
        let (file, mut errors) = super::parse::parse_lenient(source);
        match Self::build(&file, config) {
            Ok(table) if errors.is_empty() => Ok(table),
            Ok(_) => Err(errors),
            Err(build_errors) => {
                errors.extend(build_errors);
                errors.sort_by_key(|error| error.span);
                Err(errors)
            }
        }
    }

    /// Flows, in evaluation order.
    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    /// All rules, flow after flow (a flow's rules are `first_rule..first_rule + rule_count`).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules of one flow.
    pub fn flow_rules(&self, flow: usize) -> &[Rule] {
        let flow = &self.flows[flow];
        &self.rules[flow.first_rule..flow.first_rule + flow.rule_count]
    }

    /// The interface list the table was built with.
    pub fn iface_names(&self) -> Option<&[String]> {
        self.iface_names.as_deref()
    }

    /// Director name → mark, for the directors the file uses.
    pub fn director_marks(&self) -> &BTreeMap<String, u32> {
        &self.director_marks
    }

    /// Routing table id → mark, for the `table` policies of the file (ascending ids).
    pub fn table_marks(&self) -> BTreeMap<u32, u32> {
        self.flows
            .iter()
            .filter_map(|flow| match flow.policy {
                Policy::Table(id) => Some((id, TABLE_MARK_BASE | id)),
                _ => None,
            })
            .collect()
    }

    /// Zeroed counters sized for this table.
    pub fn counters(&self) -> FlowCounters {
        FlowCounters {
            flow_hits: vec![0; self.flows.len()],
            rule_hits: vec![0; self.rules.len()],
            unclassified: 0,
            not_ip: 0,
        }
    }
}

/// Flows as segments of rules for the walk: a held `match` of a flow that is not `skip`
/// ends evaluation; any other first-held rule sends the packet to the next flow.
fn segments(flows: &[Flow], rules: &[Rule]) -> Segments {
    let bits: Vec<RuleBits> = rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let flow = &flows[rule.flow];
            RuleBits {
                starts_segment: index == flow.first_rule,
                ends: rule.kind == RuleKind::Match && flow.action != FlowAction::Skip,
                segment_end: flow.first_rule + flow.rule_count,
            }
        })
        .collect();
    Segments::build(&bits)
}

impl FlowTable {
    /// Classify a packet: which flow claims it, by which rule, with what action.
    /// `None`: no flow claims it (or it is not IP) — it goes on unclassified.
    pub fn classify(&self, meta: &PacketMeta) -> Option<FlowVerdict> {
        self.walk(meta, None)
    }

    /// [`Self::classify`], counting in `counters` (which must come from
    /// [`Self::counters`] of this table; panics otherwise).
    pub fn classify_counted(
        &self,
        meta: &PacketMeta,
        counters: &mut FlowCounters,
    ) -> Option<FlowVerdict> {
        assert_eq!(
            counters.rule_hits.len(),
            self.rules.len(),
            "FlowCounters belong to another FlowTable"
        );
        if packet_family(meta).is_none() {
            counters.not_ip += 1;
            return None;
        }
        let verdict = self.walk(meta, Some(&mut counters.rule_hits));
        match verdict {
            Some(verdict) => counters.flow_hits[verdict.flow] += 1,
            None => counters.unclassified += 1,
        }
        verdict
    }

    /// Find the rule that decides the packet among those whose conditions all hold;
    /// with `hits`, count every rule that decided something (a held `match` or `ignore`
    /// first in its flow).
    fn walk(&self, meta: &PacketMeta, hits: Option<&mut [u64]>) -> Option<FlowVerdict> {
        let (sets, candidates) = self.index.lookup(meta)?;
        let rule_index = self.segments.first_ending_rule(sets, candidates, hits)?;
        let rule = &self.rules[rule_index];
        Some(FlowVerdict {
            flow: rule.flow,
            rule: rule.number,
            action: self.flows[rule.flow].action,
        })
    }

    /// Try every rule in order, the straightforward way, recording each step.
    pub fn trace(&self, meta: &PacketMeta) -> FlowTrace {
        let mut trace = FlowTrace::default();
        if packet_family(meta).is_none() {
            return trace;
        }
        for (flow_index, flow) in self.flows.iter().enumerate() {
            for (offset, rule) in self.flow_rules(flow_index).iter().enumerate() {
                let outcome = rule.try_packet(meta);
                trace.steps.push(TraceStep {
                    rule: flow.first_rule + offset,
                    outcome,
                });
                if outcome != StepOutcome::Held {
                    continue;
                }
                if rule.kind == RuleKind::Match && flow.action != FlowAction::Skip {
                    trace.verdict = Some(FlowVerdict {
                        flow: flow_index,
                        rule: rule.number,
                        action: flow.action,
                    });
                    return trace;
                }
                break;
            }
        }
        trace
    }
}
