//! The parsed form of a flowmgr file: flows, rules and conditions with their source
//! positions. Values here are already checked one by one (names, ports, prefixes); what
//! needs the whole file or the caller's context (interfaces, directors) is checked when a
//! [`super::FlowTable`] is built. This module holds data only: no parsing, no evaluation.

use std::fmt;
use std::net::IpAddr;

/// A position in the source: 1-based line and column (in characters) and a length in
/// characters (at least 1), for pointing at the offending token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// Length of the token in characters (at least 1).
    pub length: u32,
}

/// A whole flowmgr file: its flows in evaluation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFile {
    /// Flows, in file (= evaluation) order.
    pub flows: Vec<FlowDef>,
}

/// One `flow <name> [<policy>]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowDef {
    /// The flow's name (letters, digits, `-`, `_`; at most 27 characters).
    pub name: String,
    /// Where the name is.
    pub name_span: Span,
    /// The policy (`skip` when the file gives none).
    pub policy: Policy,
    /// Where the policy's argument (director name, table id) or keyword is.
    pub policy_span: Span,
    /// Rules, in order.
    pub rules: Vec<RuleDef>,
}

/// What a flow does with the packets it claims.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Policy {
    /// `permit`: accept.
    Permit,
    /// `deny`: drop.
    Deny,
    /// `director <name>`: hand to that LVS director (set its firewall mark).
    Director(String),
    /// `skip`: the flow is disabled; evaluation goes on with the next flow (the default).
    Skip,
    /// `table <id>`: route with that routing table (set its mark).
    Table(u32),
}

impl fmt::Display for Policy {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Permit => formatter.write_str("permit"),
            Self::Deny => formatter.write_str("deny"),
            Self::Director(name) => write!(formatter, "director {name}"),
            Self::Skip => formatter.write_str("skip"),
            Self::Table(id) => write!(formatter, "table {id}"),
        }
    }
}

/// `match` or `ignore`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// `match`: when the conditions hold, the flow's policy applies.
    Match,
    /// `ignore`: when the conditions hold, the packet is not part of this flow.
    Ignore,
}

impl RuleKind {
    /// The keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Self::Match => "match",
            Self::Ignore => "ignore",
        }
    }
}

/// One `match`/`ignore` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleDef {
    /// `match` or `ignore`.
    pub kind: RuleKind,
    /// Where the keyword is.
    pub span: Span,
    /// Conditions, in the order written; all must hold.
    pub conditions: Vec<Condition>,
}

impl fmt::Display for RuleDef {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.kind.keyword())?;
        for condition in &self.conditions {
            write!(formatter, " {condition}")?;
        }
        Ok(())
    }
}

/// One condition, possibly negated with `not`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// `not` was written before it.
    pub negated: bool,
    /// What is tested.
    pub test: Test,
    /// Where the keyword (or its `not`) is.
    pub span: Span,
    /// Where the value (address, port, name, …) is.
    pub value_span: Span,
}

impl fmt::Display for Condition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negated {
            formatter.write_str("not ")?;
        }
        write!(formatter, "{}", self.test)
    }
}

/// The tests a condition can make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Test {
    /// `iface <name>`: the ingress interface.
    Iface(String),
    /// `proto tcp|udp|icmp`.
    Proto(Protocol),
    /// `src <ip>[/<mask>]`.
    Src(Prefix),
    /// `dst <ip>[/<mask>]`.
    Dst(Prefix),
    /// `srcport <port>[:<port>]`.
    SrcPort(PortRange),
    /// `dstport <port>[:<port>]`.
    DstPort(PortRange),
    /// `icmptype <type>`.
    IcmpType(u8),
}

impl Test {
    /// The keyword that introduces the test.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::Iface(_) => "iface",
            Self::Proto(_) => "proto",
            Self::Src(_) => "src",
            Self::Dst(_) => "dst",
            Self::SrcPort(_) => "srcport",
            Self::DstPort(_) => "dstport",
            Self::IcmpType(_) => "icmptype",
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keyword = self.keyword();
        match self {
            Self::Iface(name) => write!(formatter, "{keyword} {name}"),
            Self::Proto(protocol) => write!(formatter, "{keyword} {}", protocol.name()),
            Self::Src(prefix) | Self::Dst(prefix) => write!(formatter, "{keyword} {prefix}"),
            Self::SrcPort(range) | Self::DstPort(range) => write!(formatter, "{keyword} {range}"),
            Self::IcmpType(icmp_type) => write!(formatter, "{keyword} {icmp_type}"),
        }
    }
}

/// The protocols the language names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP for IPv4 (1). ICMPv6 (58) is a different protocol and is not matched.
    Icmp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => crate::packet::ip_proto::TCP,
            Self::Udp => crate::packet::ip_proto::UDP,
            Self::Icmp => crate::packet::ip_proto::ICMP,
        }
    }

    /// The keyword: `tcp`, `udp` or `icmp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
        }
    }
}

/// An address with a prefix length; host bits are cleared when it is parsed (as iptables
/// does with `-s 192.168.0.1/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The network address (host bits zero).
    pub address: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub length: u8,
}

impl Prefix {
    /// The address family.
    pub fn family(&self) -> Family {
        match self.address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Whether `address` is inside (an address of the other family never is).
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.address, address) {
            (IpAddr::V4(network), IpAddr::V4(candidate)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.length))
                    .unwrap_or(0);
                u32::from(candidate) & mask == u32::from(network)
            }
            (IpAddr::V6(network), IpAddr::V6(candidate)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.length))
                    .unwrap_or(0);
                u128::from(candidate) & mask == u128::from(network)
            }
            _ => false,
        }
    }

    /// Whether it is a single host (/32 or /128).
    pub fn is_host(&self) -> bool {
        match self.address {
            IpAddr::V4(_) => self.length == 32,
            IpAddr::V6(_) => self.length == 128,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(formatter, "{}", self.address)
        } else {
            write!(formatter, "{}/{}", self.address, self.length)
        }
    }
}

/// IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// `IPv4` or `IPv6`.
    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

/// An inclusive port range (`first == last` for a single port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (>= first).
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is inside.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(formatter, "{}", self.first)
        } else {
            write!(formatter, "{}:{}", self.first, self.last)
        }
    }
}

impl RuleDef {
    /// The address family the rule is restricted to: from its `src`/`dst` prefixes, and
    /// IPv4 when it tests `icmptype` (ICMP is IPv4's). `None`: both families. A parsed
    /// file never mixes families within one rule.
    pub fn family(&self) -> Option<Family> {
        self.conditions
            .iter()
            .find_map(|condition| match &condition.test {
                Test::Src(prefix) | Test::Dst(prefix) => Some(prefix.family()),
                Test::IcmpType(_) => Some(Family::V4),
                _ => None,
            })
    }

    /// The first condition of the given kind, by keyword.
    pub fn condition(&self, keyword: &str) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|condition| condition.test.keyword() == keyword)
    }
}
