//! # flows — the flow manager
//!
//! The appliance classifies every packet that passed the shield with an ordered list of
//! *flows* written in the flowmgr language:
//!
//! ```text
//! flow <name> [permit | deny | director <name> | skip | table <id>]
//!    match|ignore [[not] iface <name>] [[not] proto tcp|udp|icmp]
//!                 [[not] src <ip>[/<mask>]] [[not] dst <ip>[/<mask>]]
//!                 [[not] srcport <port>[:<port>]] [[not] dstport <port>[:<port>]]
//!                 [[not] icmptype <type>]
//! ```
//!
//! Flows are tried in order; in a flow, rules in order. A `match` whose conditions all
//! hold applies the flow's policy at once (for `skip`, the default, evaluation goes on with
//! the next flow); an `ignore` whose conditions hold sends the packet to the next flow; a
//! flow whose rules run out does not claim the packet. Unclaimed packets go on unclassified.
//!
//! ## Pipeline
//! - [`parse`] (control plane): text → [`FlowFile`], reporting *all* errors with line and
//!   column ([`FlowError`]).
//! - [`FlowTable::build`] / [`FlowTable::from_source`]: resolve interfaces and directors
//!   against a [`TableConfig`] into an immutable [`FlowTable`] with a bitset index.
//! - [`FlowTable::classify`] (data plane) → [`FlowVerdict`]; counting in a caller-owned
//!   [`FlowCounters`]; [`FlowTable::trace`] tries every rule (the reference interpreter).
//! - [`compile`]: `iptables-restore` input (mangle, one chain per flow) and an `nft` ruleset.
//!
//! ## Decisions where the appliance's text leaves room (the kernel wins)
//! - **Families.** `src`/`dst` take IPv4 or IPv6 networks. A rule with IPv4 (IPv6)
//!   addresses only ever matches IPv4 (IPv6) packets, *also* under `not` — as in nftables
//!   (`ip saddr != …` implies IPv4) and in iptables/ip6tables (separate tables). A rule
//!   without addresses matches both families. Mixing both in one rule is an error.
//! - **ICMP.** `proto icmp` is IP protocol 1 only; ICMPv6 (58) is another protocol (as
//!   `-p icmp` and `meta l4proto icmp`). `icmptype` is ICMP's, so it makes the rule IPv4.
//! - **Ports and ICMP types on fragments.** A packet without ports (non-first fragment) or
//!   without ICMP type never satisfies `srcport`/`dstport`/`icmptype`, negated or not —
//!   the kernel's tcp/udp/icmp matches and nft's transport payload do the same.
//! - **Addresses** with host bits (`192.168.0.1/24`) are reduced to the network, like
//!   iptables. Dotted masks must be contiguous.
//! - **Names** become iptables chain names as written, so they may not start with `-` nor
//!   be one of iptables' own words (ACCEPT, DROP, PREROUTING, …).
//! - **Non-IP packets** are never classified.
//!
//! ## Marks
//! Directors: the caller's map (the directors' `fwmark`), else `DIRECTOR_MARK_BASE` (1),
//! 2, 3, … in order of first appearance in the file. Routing tables: `TABLE_MARK_BASE |
//! id` (0x10000 + id), with `ip rule add fwmark <mark> lookup <id>` (see
//! [`compile::ip_rules`]).

mod ast;
pub mod compile;
mod error;
mod index;
mod parse;
mod rule;
mod rule_index;
mod table;
#[cfg(test)]
mod wide_tests;

pub use ast::{
    Condition, Family, FlowDef, FlowFile, Policy, PortRange, Prefix, Protocol, RuleDef, RuleKind,
    Span, Test,
};
pub use error::{FlowError, FlowErrorKind};
pub use parse::parse;
pub use table::{
    Flow, FlowAction, FlowCounters, FlowTable, FlowTrace, FlowVerdict, Rule, StepOutcome,
    TableConfig, TraceStep, undefined_tables,
};

/// Longest flow name, in characters (the appliance's limit; iptables chain names allow 28).
pub const FLOW_NAME_MAX_CHARS: usize = 27;
/// Longest interface name (Linux `IFNAMSIZ` - 1).
pub const IFACE_NAME_MAX_CHARS: usize = 15;
/// Capacity: flows per table.
pub const MAX_FLOWS: usize = 4096;
/// Capacity: rules per table (the index holds a bitset of this many bits per interval).
pub const MAX_RULES: usize = 4096;
/// First mark of the default director scheme.
pub const DIRECTOR_MARK_BASE: u32 = 1;
/// Routing tables (`table <id>`): ids and marks, defined with the tables (`ip::route`).
pub use crate::ip::route::{TABLE_ID_MAX, TABLE_MARK_BASE};

impl FlowFile {
    /// Parse a flowmgr file (same as [`parse`]).
    pub fn parse(source: &str) -> Result<Self, Vec<FlowError>> {
        parse(source)
    }
}
