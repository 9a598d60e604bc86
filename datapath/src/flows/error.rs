//! Configuration errors of flowmgr files: a kind, a position and a message that says what
//! was expected. Plain data; rendering with the source line (rustc-style) is done at the
//! edge (the `sim` CLI), which also knows the file name.

use std::fmt;

use super::ast::Span;

/// What is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FlowErrorKind {
    /// A line starts with something other than `flow`, `match` or `ignore`.
    UnknownKeyword,
    /// `match`/`ignore` before the first `flow`.
    RuleOutsideFlow,
    /// `flow` without a name.
    MissingFlowName,
    /// A flow name with characters other than letters, digits, `-`, `_` (or starting with `-`).
    BadFlowName,
    /// A flow name longer than 27 characters.
    FlowNameTooLong,
    /// A flow name used twice.
    DuplicateFlowName,
    /// A flow name that iptables reserves (ACCEPT, DROP, PREROUTING, …).
    ReservedFlowName,
    /// A policy keyword that is not permit, deny, director, skip or table.
    UnknownPolicy,
    /// A keyword without its argument (`director`, `table`, `src`, `dstport`, …).
    MissingArgument,
    /// A director name with characters other than letters, digits, `-`, `_`, `.`.
    BadDirectorName,
    /// A routing table id that is not a number in 1..=65535.
    BadTableId,
    /// Tokens after a complete policy.
    UnexpectedToken,
    /// A word in a rule that is not a condition keyword.
    UnknownCondition,
    /// `not` at the end of a rule, or twice.
    DanglingNot,
    /// The same condition keyword twice in one rule.
    DuplicateCondition,
    /// `proto` with something other than tcp, udp, icmp.
    UnknownProtocol,
    /// An address that is neither IPv4 nor IPv6.
    BadAddress,
    /// A prefix length out of range, or a dotted mask that is not contiguous.
    BadMask,
    /// A port that is not a number in 0..=65535.
    PortOutOfRange,
    /// A range `a:b` with `a > b`.
    ReversedPortRange,
    /// `srcport`/`dstport` without `proto tcp` or `proto udp` in the same rule.
    PortWithoutTcpUdp,
    /// `icmptype` without `proto icmp` in the same rule.
    IcmpTypeWithoutIcmp,
    /// An ICMP type that is not a number in 0..=255.
    BadIcmpType,
    /// IPv4 and IPv6 tests in one rule (it could never match).
    MixedAddressFamilies,
    /// An interface name that Linux would not accept (empty, over 15 characters, `/`, `+`, …).
    BadInterfaceName,
    /// An `iface` name absent from the interface list given to the table builder.
    UnknownInterface,
    /// A `director` name absent from the director list given to the table builder.
    UndefinedDirector,
    /// A `table <id>` the appliance declares no routing table for.
    UndefinedTable,
    /// A director mark that is 0 or collides with the routing-table mark range.
    BadMark,
    /// More flows or rules than the table capacity.
    TooLarge,
}

impl FlowErrorKind {
    /// A stable snake_case name (for tests and JSON).
    pub fn name(self) -> &'static str {
        match self {
            Self::UnknownKeyword => "unknown_keyword",
            Self::RuleOutsideFlow => "rule_outside_flow",
            Self::MissingFlowName => "missing_flow_name",
            Self::BadFlowName => "bad_flow_name",
            Self::FlowNameTooLong => "flow_name_too_long",
            Self::DuplicateFlowName => "duplicate_flow_name",
            Self::ReservedFlowName => "reserved_flow_name",
            Self::UnknownPolicy => "unknown_policy",
            Self::MissingArgument => "missing_argument",
            Self::BadDirectorName => "bad_director_name",
            Self::BadTableId => "bad_table_id",
            Self::UnexpectedToken => "unexpected_token",
            Self::UnknownCondition => "unknown_condition",
            Self::DanglingNot => "dangling_not",
            Self::DuplicateCondition => "duplicate_condition",
            Self::UnknownProtocol => "unknown_protocol",
            Self::BadAddress => "bad_address",
            Self::BadMask => "bad_mask",
            Self::PortOutOfRange => "port_out_of_range",
            Self::ReversedPortRange => "reversed_port_range",
            Self::PortWithoutTcpUdp => "port_without_tcp_udp",
            Self::IcmpTypeWithoutIcmp => "icmptype_without_icmp",
            Self::BadIcmpType => "bad_icmp_type",
            Self::MixedAddressFamilies => "mixed_address_families",
            Self::BadInterfaceName => "bad_interface_name",
            Self::UnknownInterface => "unknown_interface",
            Self::UndefinedDirector => "undefined_director",
            Self::UndefinedTable => "undefined_table",
            Self::BadMark => "bad_mark",
            Self::TooLarge => "too_large",
        }
    }
}

/// One error in a flowmgr file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowError {
    /// What is wrong.
    pub kind: FlowErrorKind,
    /// Where (1-based line and column, length of the offending token).
    pub span: Span,
    /// What is wrong and what was expected, in one sentence.
    pub message: String,
    /// An optional hint or pointer to a related place (e.g. the first definition).
    pub note: Option<String>,
}

impl FlowError {
    /// An error without note.
    pub fn new(kind: FlowErrorKind, span: Span, message: impl Into<String>) -> Self {
        Self {
            kind,
            span,
            message: message.into(),
            note: None,
        }
    }

    /// The same error with a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// 1-based line.
    pub fn line(&self) -> u32 {
        self.span.line
    }

    /// 1-based column.
    pub fn column(&self) -> u32 {
        self.span.column
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}:{}: {}",
            self.span.line, self.span.column, self.message
        )
    }
}

impl std::error::Error for FlowError {}
