//! The index of a [`super::FlowTable`]'s rules, per packet dimension: which rules hold
//! for a packet's family+protocol, interface, addresses, ports and ICMP type (one
//! [`RangeIndex`] lookup each), plus the summary of candidate words.
//!
//! Each rule is *keyed* on the dimension it tests most selectively (by the share of the
//! value space its condition covers: a host address before a port range, a port range
//! before a protocol, a negated network last); rules that test nothing are
//! *unconditional*. A rule whose conditions all hold is in its key dimension's bitset, so
//! the words flagged by the summaries of a packet's lookups (or holding an unconditional
//! rule) are the only words the walk has to AND. The choice of keys affects speed only.
//!
//! It does not walk flows; [`super::index::Segments`] does.

use super::ast::{Family, Test};
use super::index::{Membership, RangeIndex, summary, words_for};
use super::rule::{Rule, address_key, packet_family};
use crate::packet::{PacketMeta, ip_proto};

/// Family-and-protocol classes: TCP, UDP, ICMP, anything else.
const PROTOCOL_CLASSES: [Option<u8>; 4] = [
    Some(ip_proto::TCP),
    Some(ip_proto::UDP),
    Some(ip_proto::ICMP),
    None,
];

// A summary names the words of a bitset in one `u64`.
const _: () = assert!(super::MAX_RULES <= 64 * 64, "summaries are one word");

/// Bitsets looked up per packet (family+protocol and the ranges).
pub(crate) const DIMENSIONS: usize = 7;

/// The range dimensions, in [`RuleIndex::ranges`] order.
const IFACE: usize = 0;
const SRC_V4: usize = 1;
const DST_V4: usize = 2;
const SRC_V6: usize = 3;
const DST_V6: usize = 4;
const SPORT: usize = 5;
const DPORT: usize = 6;
const ICMP_TYPE: usize = 7;
const RANGE_DIMENSIONS: usize = 8;

/// Size of each range dimension's value space, in bits.
const DOMAIN_BITS: [i32; RANGE_DIMENSIONS] = [16, 32, 32, 128, 128, 16, 16, 8];
/// The family a range dimension is looked up for (`None`: both).
const DIMENSION_FAMILY: [Option<Family>; RANGE_DIMENSIONS] = [
    None,
    Some(Family::V4),
    Some(Family::V4),
    Some(Family::V6),
    Some(Family::V6),
    None,
    None,
    None,
];

/// The bitsets of the rules that hold, per dimension, for every value.
#[derive(Clone, Debug)]
pub(crate) struct RuleIndex {
    /// Bitsets by `family * 4 + protocol class`.
    protocol: Vec<Vec<u64>>,
    /// Summaries of `protocol` for the rules keyed on family+protocol.
    protocol_summaries: Vec<u64>,
    /// Range dimensions: iface, src/dst v4, src/dst v6, sport, dport, ICMP type.
    ranges: [RangeIndex; RANGE_DIMENSIONS],
    /// Words holding an unconditional rule (bit `w` for word `w`).
    unconditional: u64,
}

fn range(first: u128, last: u128, negated: bool) -> Membership {
    Membership::Range {
        first,
        last,
        negated,
    }
}

/// How `rule` relates to one dimension, given how to read its condition there.
fn membership(rule: &Rule, test: impl Fn(&Test) -> Option<(u128, u128)>) -> Membership {
    rule.conditions
        .iter()
        .find_map(|condition| test(&condition.test).map(|(a, b)| range(a, b, condition.negated)))
        .unwrap_or(Membership::Always)
}

fn prefix_bounds(prefix: &super::Prefix) -> (u128, u128) {
    let first = address_key(prefix.address);
    let host_bits = match prefix.family() {
        Family::V4 => 32 - u32::from(prefix.length),
        Family::V6 => 128 - u32::from(prefix.length),
    };
    let span = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
    let span = if host_bits == 0 { 0 } else { span };
    (first, first | span)
}

fn iface_membership(rule: &Rule) -> Membership {
    match (
        rule.conditions.iter().find(|c| c.test.keyword() == "iface"),
        rule.iface,
    ) {
        (None, _) => Membership::Always,
        (Some(c), Some(index)) => range(index.into(), index.into(), c.negated),
        (Some(c), None) if c.negated => Membership::Always,
        (Some(_), None) => Membership::Never,
    }
}

/// One rule's membership in range dimension `dimension`.
fn range_membership(rule: &Rule, dimension: usize) -> Membership {
    let family = DIMENSION_FAMILY[dimension];
    let source = matches!(dimension, SRC_V4 | SRC_V6);
    match dimension {
        IFACE => iface_membership(rule),
        SRC_V4 | DST_V4 | SRC_V6 | DST_V6 => membership(rule, |test| match test {
            Test::Src(prefix) if source && Some(prefix.family()) == family => {
                Some(prefix_bounds(prefix))
            }
            Test::Dst(prefix) if !source && Some(prefix.family()) == family => {
                Some(prefix_bounds(prefix))
            }
            _ => None,
        }),
        SPORT | DPORT => membership(rule, |test| match test {
            Test::SrcPort(r) if dimension == SPORT => Some((r.first.into(), r.last.into())),
            Test::DstPort(r) if dimension == DPORT => Some((r.first.into(), r.last.into())),
            _ => None,
        }),
        _ => membership(rule, |test| match test {
            Test::IcmpType(value) => Some((u128::from(*value), u128::from(*value))),
            _ => None,
        }),
    }
}

fn protocol_sets(rules: &[Rule]) -> Vec<Vec<u64>> {
    let words = words_for(rules.len());
    let mut sets = Vec::new();
    for family in [Family::V4, Family::V6] {
        for class in PROTOCOL_CLASSES {
            let mut set = vec![0u64; words];
            for (bit, rule) in rules.iter().enumerate() {
                let family_ok = rule.family.is_none_or(|wanted| wanted == family);
                let proto_ok = rule.conditions.iter().all(|c| match c.test {
                    Test::Proto(protocol) => (class == Some(protocol.number())) != c.negated,
                    _ => true,
                });
                if family_ok && proto_ok {
                    set[bit / 64] |= 1 << (bit % 64);
                }
            }
            sets.push(set);
        }
    }
    sets
}

/// The share of traffic a rule's protocol condition lets through, as a key: a protocol
/// is a weak key (most traffic is TCP or UDP), a family alone weaker than any range.
fn protocol_coverage(rule: &Rule) -> Option<f64> {
    match rule.conditions.iter().find(|c| c.test.keyword() == "proto") {
        Some(condition) if condition.negated => Some(2.0 / 3.0),
        Some(_) => Some(1.0 / 3.0),
        None => rule.family.map(|_| 1.0),
    }
}

/// Where each rule is keyed: per range dimension, on family+protocol, or unconditional.
struct Keys {
    ranges: [Vec<u64>; RANGE_DIMENSIONS],
    protocol: Vec<u64>,
    unconditional: Vec<u64>,
}

impl Keys {
    /// Key every rule on its most selective dimension. A range dimension of one family is
    /// only a key for rules of that family (the others never hold for its packets).
    fn choose(rules: &[Rule], memberships: &[Vec<Membership>; RANGE_DIMENSIONS]) -> Self {
        let words = words_for(rules.len());
        let mut keys = Self {
            ranges: std::array::from_fn(|_| vec![0u64; words]),
            protocol: vec![0u64; words],
            unconditional: vec![0u64; words],
        };
        for (bit, rule) in rules.iter().enumerate() {
            let mut best: Option<(f64, Option<usize>)> = None;
            for dimension in 0..RANGE_DIMENSIONS {
                let family = DIMENSION_FAMILY[dimension];
                if family.is_some() && family != rule.family {
                    continue;
                }
                if let Some(share) = memberships[dimension][bit].coverage(DOMAIN_BITS[dimension])
                    && best.is_none_or(|(least, _)| share < least)
                {
                    best = Some((share, Some(dimension)));
                }
            }
            if let Some(share) = protocol_coverage(rule)
                && best.is_none_or(|(least, _)| share < least)
            {
                best = Some((share, None));
            }
            let mask = match best {
                Some((_, Some(dimension))) => &mut keys.ranges[dimension],
                Some((_, None)) => &mut keys.protocol,
                None => &mut keys.unconditional,
            };
            mask[bit / 64] |= 1 << (bit % 64);
        }
        keys
    }
}

impl RuleIndex {
    /// Index `rules` (rule `i` is bit `i`).
    pub(crate) fn build(rules: &[Rule]) -> Self {
        let memberships: [Vec<Membership>; RANGE_DIMENSIONS] = std::array::from_fn(|dimension| {
            rules
                .iter()
                .map(|rule| range_membership(rule, dimension))
                .collect()
        });
        let keys = Keys::choose(rules, &memberships);
        let protocol = protocol_sets(rules);
        let protocol_summaries = protocol
            .iter()
            .map(|set| summary(set, &keys.protocol))
            .collect();
        let all = vec![u64::MAX; words_for(rules.len())];
        Self {
            protocol,
            protocol_summaries,
            ranges: std::array::from_fn(|dimension| {
                RangeIndex::build(&memberships[dimension], &keys.ranges[dimension])
            }),
            unconditional: summary(&all, &keys.unconditional),
        }
    }

    /// The bitsets for a packet and the words that can hold a rule whose conditions all
    /// hold; `None` for a non-IP packet.
    pub(crate) fn lookup(&self, meta: &PacketMeta) -> Option<([&[u64]; DIMENSIONS], u64)> {
        let (family, source, destination) = packet_family(meta)?;
        let class = PROTOCOL_CLASSES
            .iter()
            .position(|class| class.is_some() && *class == meta.proto)
            .unwrap_or(PROTOCOL_CLASSES.len() - 1);
        let (family_offset, src, dst) = match family {
            Family::V4 => (0, SRC_V4, DST_V4),
            Family::V6 => (PROTOCOL_CLASSES.len(), SRC_V6, DST_V6),
        };
        let ranges = [
            self.ranges[IFACE].lookup(Some(meta.iface.into())),
            self.ranges[src].lookup(Some(address_key(source))),
            self.ranges[dst].lookup(Some(address_key(destination))),
            self.ranges[SPORT].lookup(meta.sport.map(u128::from)),
            self.ranges[DPORT].lookup(meta.dport.map(u128::from)),
            self.ranges[ICMP_TYPE].lookup(meta.icmp_type.map(u128::from)),
        ];
        let candidates = ranges.iter().fold(
            self.unconditional | self.protocol_summaries[family_offset + class],
            |mask, lookup| mask | lookup.summary,
        );
        let [iface, src, dst, sport, dport, icmp_type] = ranges.map(|lookup| lookup.set);
        let protocol = self.protocol[family_offset + class].as_slice();
        Some((
            [protocol, iface, src, dst, sport, dport, icmp_type],
            candidates,
        ))
    }
}
