//! One validated rule of a flow table and how it is tried on a packet, condition by
//! condition (the interpreter [`super::table::FlowTable::trace`] uses; the index of
//! [`super::rule_index`] is built from the same rules), with the packet-address helpers both
//! share.

use std::net::IpAddr;

use super::ast::{Condition, Family, RuleKind, Test};
use crate::packet::{IfaceId, PacketMeta};

/// One validated rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Index of its flow.
    pub flow: usize,
    /// 1-based position within the flow.
    pub number: u32,
    /// `match` or `ignore`.
    pub kind: RuleKind,
    /// The family it is restricted to (see [`super::RuleDef::family`]).
    pub family: Option<Family>,
    /// Conditions, as written.
    pub conditions: Vec<Condition>,
    /// Interface index of its `iface` condition, when the name is bound to one.
    pub iface: Option<IfaceId>,
    /// Line of the rule.
    pub line: u32,
}

/// Outcome of trying one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// All conditions held: the rule decided (match → policy, ignore → next flow).
    Held,
    /// The condition at this index (into [`Rule::conditions`]) did not hold.
    Failed(usize),
    /// The rule is for the other address family.
    WrongFamily,
}

/// The family and addresses of an IP packet (`None`: not IP, or mixed families).
pub(super) fn packet_family(meta: &PacketMeta) -> Option<(Family, IpAddr, IpAddr)> {
    match (meta.src?, meta.dst?) {
        (source @ IpAddr::V4(_), destination @ IpAddr::V4(_)) => {
            Some((Family::V4, source, destination))
        }
        (source @ IpAddr::V6(_), destination @ IpAddr::V6(_)) => {
            Some((Family::V6, source, destination))
        }
        _ => None,
    }
}

/// An address as an index key (IPv4 addresses are the low 32 bits).
pub(super) fn address_key(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Rule {
    /// Whether condition `condition` (an index into `conditions`) holds for an IP packet.
    pub fn condition_holds(&self, condition: usize, meta: &PacketMeta) -> bool {
        let Some(condition) = self.conditions.get(condition) else {
            return false;
        };
        let negated = condition.negated;
        match &condition.test {
            Test::Iface(_) => (self.iface == Some(meta.iface)) != negated,
            Test::Proto(protocol) => (meta.proto == Some(protocol.number())) != negated,
            Test::Src(prefix) => meta.src.is_some_and(|a| prefix.contains(a) != negated),
            Test::Dst(prefix) => meta.dst.is_some_and(|a| prefix.contains(a) != negated),
            Test::SrcPort(range) => meta.sport.is_some_and(|p| range.contains(p) != negated),
            Test::DstPort(range) => meta.dport.is_some_and(|p| range.contains(p) != negated),
            Test::IcmpType(icmp_type) => {
                meta.icmp_type.is_some_and(|t| (t == *icmp_type) != negated)
            }
        }
    }

    /// Try the rule on a packet, condition by condition.
    pub fn try_packet(&self, meta: &PacketMeta) -> StepOutcome {
        let family = packet_family(meta).map(|(family, _, _)| family);
        if family.is_none() || self.family.is_some_and(|wanted| Some(wanted) != family) {
            return StepOutcome::WrongFamily;
        }
        match (0..self.conditions.len()).find(|index| !self.condition_holds(*index, meta)) {
            Some(index) => StepOutcome::Failed(index),
            None => StepOutcome::Held,
        }
    }
}
