//! The classification index: one bitset of rules per elementary interval of each packet
//! dimension (family+protocol, interface, source, destination, ports, ICMP type). A packet
//! looks up one bitset per dimension (a binary search per range dimension) and the rules
//! whose conditions all hold are the set bits of their AND, in rule order.
//!
//! [`Segments`] walks that AND a word (64 rules) at a time without a step per flow: flows
//! are runs of bits, and the first held rule of every flow in a word is found with a few
//! word operations (a held `ignore` blanks the rest of its flow by a carry through the
//! flow's run). Cost per packet: 6 binary searches plus a handful of operations per word
//! of the AND that can hold a held rule (see [`summary`]), however many flows have an
//! `ignore` that holds. Nothing is cached across packets; nothing is allocated per packet.
//!
//! This module knows flows only as runs of bits and rules only as "ends evaluation or
//! not"; [`super::table`] builds those masks and turns the deciding rule into a verdict.

/// How one rule relates to one dimension.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Membership {
    /// The rule does not test this dimension: it holds for every value (and for "absent").
    Always,
    /// The rule can never hold (an `iface` name bound to no interface).
    Never,
    /// The rule holds for values in `first..=last` (or outside them when `negated`), and
    /// never when the packet has no value (no port on a fragment, no ICMP type).
    Range {
        /// First value.
        first: u128,
        /// Last value.
        last: u128,
        /// `not` was written.
        negated: bool,
    },
}

impl Membership {
    /// The share of a domain of `2^domain_bits` values for which the rule holds, or `None`
    /// when it does not test the dimension. The index keys each rule on its most selective
    /// dimension; this only steers speed, never results.
    pub(crate) fn coverage(&self, domain_bits: i32) -> Option<f64> {
        match *self {
            Self::Always => None,
            Self::Never => Some(0.0),
            Self::Range {
                first,
                last,
                negated,
            } => {
                let share = ((last - first) as f64 + 1.0) / 2f64.powi(domain_bits);
                Some(if negated { 1.0 - share } else { share })
            }
        }
    }
}

/// Bitsets of rules for every elementary interval of one dimension's values.
#[derive(Clone, Debug)]
pub(crate) struct RangeIndex {
    /// Start of each elementary interval, ascending; the first is 0.
    starts: Vec<u128>,
    /// `starts.len()` bitsets of `words` words, one after the other.
    sets: Vec<u64>,
    /// Per interval: bit `w` is set when word `w` of its bitset holds a rule *keyed* on
    /// this dimension (see [`summary`]).
    summaries: Vec<u64>,
    /// The bitset for a packet without a value in this dimension.
    absent: Vec<u64>,
    /// The summary of `absent`.
    absent_summary: u64,
    /// Words per bitset.
    words: usize,
}

/// A bitset looked up for one packet, with its summary of keyed words.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lookup<'a> {
    /// The rules that hold in this dimension.
    pub(crate) set: &'a [u64],
    /// Bit `w`: word `w` of `set` holds a rule keyed on this dimension.
    pub(crate) summary: u64,
}

/// The words of `set` that hold a rule of `keyed`, as a mask (bit `w` for word `w`).
///
/// Every rule is *keyed* on one dimension that it tests (or is unconditional), so a rule
/// whose conditions all hold is in the set of its key dimension: the OR of the summaries
/// of a packet's lookups names every word that can hold a held rule, and the walk skips
/// the others. Tables have at most `64 * 64` rules, so one word of summary is enough.
pub(crate) fn summary(set: &[u64], keyed: &[u64]) -> u64 {
    set.iter()
        .zip(keyed)
        .enumerate()
        .filter(|(_, (word, key))| *word & *key != 0)
        .fold(0, |mask, (index, _)| mask | 1 << index)
}

/// Words needed for `rules` bits.
pub(crate) fn words_for(rules: usize) -> usize {
    rules.div_ceil(64).max(1)
}

fn set_bit(words: &mut [u64], bit: usize) {
    words[bit / 64] |= 1 << (bit % 64);
}

fn toggle_bit(words: &mut [u64], bit: usize) {
    words[bit / 64] ^= 1 << (bit % 64);
}

impl RangeIndex {
    /// Build from one membership per rule (rule `i` is bit `i`), by a sweep over the
    /// interval boundaries: entering or leaving a range flips the rule's bit. `keyed`: the
    /// rules keyed on this dimension, for the summaries.
    pub(crate) fn build(memberships: &[Membership], keyed: &[u64]) -> Self {
        let words = words_for(memberships.len());
        let mut initial = vec![0u64; words];
        let mut absent = vec![0u64; words];
        let mut toggles: Vec<(u128, usize)> = Vec::new();
        for (rule, membership) in memberships.iter().enumerate() {
            match *membership {
                Membership::Always => {
                    set_bit(&mut initial, rule);
                    set_bit(&mut absent, rule);
                }
                Membership::Never => {}
                Membership::Range {
                    first,
                    last,
                    negated,
                } => {
                    if negated {
                        set_bit(&mut initial, rule);
                    }
                    toggles.push((first, rule));
                    if let Some(after) = last.checked_add(1) {
                        toggles.push((after, rule));
                    }
                }
            }
        }
        toggles.sort_unstable();
        let mut starts = vec![0u128];
        let mut sets = initial.clone();
        let mut current = initial;
        for (boundary, rule) in toggles {
            if boundary != *starts.last().unwrap_or(&0) {
                starts.push(boundary);
                sets.extend_from_slice(&current);
            }
            let last_set = sets.len() - words;
            toggle_bit(&mut sets[last_set..], rule);
            toggle_bit(&mut current, rule);
        }
        let summaries = sets.chunks(words).map(|set| summary(set, keyed)).collect();
        Self {
            starts,
            sets,
            summaries,
            absent_summary: summary(&absent, keyed),
            absent,
            words,
        }
    }

    /// The rules that hold for `value` (`None`: the packet has no value here).
    pub(crate) fn lookup(&self, value: Option<u128>) -> Lookup<'_> {
        let Some(value) = value else {
            return Lookup {
                set: &self.absent,
                summary: self.absent_summary,
            };
        };
        let interval = self.starts.partition_point(|start| *start <= value) - 1;
        Lookup {
            set: &self.sets[interval * self.words..(interval + 1) * self.words],
            summary: self.summaries[interval],
        }
    }

    /// Number of elementary intervals.
    #[cfg(test)]
    pub(crate) fn intervals(&self) -> usize {
        self.starts.len()
    }
}

/// Flow boundaries and outcomes as bit masks over the rules (rule `i` is bit `i`), so the
/// walk can settle up to 64 rules — many flows — with a few word operations.
#[derive(Clone, Debug)]
pub(crate) struct Segments {
    /// Bit set: the rule is not the first of its flow (its segment continues).
    continues: Vec<u64>,
    /// Bit set: when this rule is the first held one of its flow, evaluation ends there
    /// (a `match` of a flow that is not `skip`). Other first-held rules send the packet
    /// on to the next flow.
    ends: Vec<u64>,
    /// Per rule: the index after the last rule of its flow.
    segment_end: Vec<u32>,
}

/// What [`Segments::build`] needs to know of one rule.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RuleBits {
    /// It is the first rule of its flow.
    pub(crate) starts_segment: bool,
    /// Held first in its flow, it ends evaluation.
    pub(crate) ends: bool,
    /// The index after the last rule of its flow.
    pub(crate) segment_end: usize,
}

/// Bits `0..count` of a word (`count` may exceed 64).
fn low_bits(count: usize) -> u64 {
    if count >= 64 {
        u64::MAX
    } else {
        (1u64 << count) - 1
    }
}

/// The bits of `continues` from each bit of `starts` up to the end of its run of ones
/// (`starts` must lie within `continues`): adding `starts` carries through the run and
/// clears it.
fn fill_runs(starts: u64, continues: u64) -> u64 {
    (continues & !continues.wrapping_add(starts)) | starts
}

impl Segments {
    /// Build from one entry per rule, in rule order.
    pub(crate) fn build(rules: &[RuleBits]) -> Self {
        let words = words_for(rules.len());
        let mut continues = vec![0u64; words];
        let mut ends = vec![0u64; words];
        let mut segment_end = Vec::with_capacity(rules.len());
        for (bit, rule) in rules.iter().enumerate() {
            if !rule.starts_segment {
                set_bit(&mut continues, bit);
            }
            if rule.ends {
                set_bit(&mut ends, bit);
            }
            segment_end.push(u32::try_from(rule.segment_end).unwrap_or(u32::MAX));
        }
        Self {
            continues,
            ends,
            segment_end,
        }
    }

    /// Walk the AND of `sets` (the rules whose conditions all hold) segment by segment:
    /// the first held rule of each segment decides it. Only the words flagged in
    /// `candidates` (bit `w` for word `w`) are read: the others must hold no held rule.
    /// Returns the first deciding rule that ends evaluation, or `None`. With `hits`, every
    /// deciding rule (those that sent the packet on, and the final one) is counted there.
    pub(crate) fn first_ending_rule<const SETS: usize>(
        &self,
        sets: [&[u64]; SETS],
        mut candidates: u64,
        mut hits: Option<&mut [u64]>,
    ) -> Option<usize> {
        let words = self.ends.len();
        let sets = sets.map(|set| &set[..words]);
        let mut blocked_until = 0usize;
        while candidates != 0 {
            let word_index = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            if word_index >= words {
                break;
            }
            let held = sets
                .iter()
                .fold(u64::MAX, |word, set| word & set[word_index]);
            if held == 0 {
                continue;
            }
            let base = word_index * 64;
            let ends = self.ends[word_index];
            let passing = held & !ends;
            let continues = self.continues[word_index];
            let blocked = low_bits(blocked_until.saturating_sub(base))
                | fill_runs((passing << 1) & continues, continues);
            let first_held = held & !blocked;
            let ending = first_held & ends;
            let decided = if ending == 0 {
                first_held
            } else {
                first_held & (ending ^ (ending - 1))
            };
            if let Some(hits) = hits.as_deref_mut() {
                count_bits(hits, base, decided);
            }
            if ending != 0 {
                return Some(base + ending.trailing_zeros() as usize);
            }
            if first_held != 0 {
                let last = base + 63 - first_held.leading_zeros() as usize;
                blocked_until = blocked_until.max(self.segment_end[last] as usize);
            }
        }
        None
    }
}

/// Add one to `hits[base + bit]` for every set bit of `bits`.
fn count_bits(hits: &mut [u64], base: usize, mut bits: u64) {
    while bits != 0 {
        hits[base + bits.trailing_zeros() as usize] += 1;
        bits &= bits - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(set: &[u64]) -> Vec<usize> {
        (0..set.len() * 64)
            .filter(|bit| set[bit / 64] >> (bit % 64) & 1 == 1)
            .collect()
    }

    #[test]
    fn sweep_builds_each_interval() {
        let index = RangeIndex::build(
            &[
                Membership::Range {
                    first: 10,
                    last: 20,
                    negated: false,
                },
                Membership::Always,
                Membership::Range {
                    first: 15,
                    last: 15,
                    negated: true,
                },
                Membership::Never,
            ],
            &[0b0101],
        );
        assert_eq!(bits(index.lookup(Some(0)).set), vec![1, 2]);
        assert_eq!(bits(index.lookup(Some(10)).set), vec![0, 1, 2]);
        assert_eq!(bits(index.lookup(Some(15)).set), vec![0, 1]);
        assert_eq!(bits(index.lookup(Some(16)).set), vec![0, 1, 2]);
        assert_eq!(bits(index.lookup(Some(21)).set), vec![1, 2]);
        assert_eq!(bits(index.lookup(None).set), vec![1]);
        assert_eq!(index.intervals(), 5);
        assert_eq!(
            index.lookup(Some(0)).summary,
            1,
            "rule 2 is keyed and holds"
        );
        assert_eq!(
            index.lookup(None).summary,
            0,
            "only rule 1 holds, not keyed"
        );
    }

    #[test]
    fn range_to_the_maximum_has_no_end_boundary() {
        let index = RangeIndex::build(
            &[Membership::Range {
                first: 5,
                last: u128::MAX,
                negated: false,
            }],
            &[1],
        );
        assert_eq!(bits(index.lookup(Some(u128::MAX)).set), vec![0]);
        assert_eq!(bits(index.lookup(Some(4)).set), Vec::<usize>::new());
        assert_eq!(index.lookup(Some(4)).summary, 0);
    }

    #[test]
    fn summary_flags_words_with_keyed_rules() {
        assert_eq!(summary(&[0b11, 0, 0b100, 1], &[0b10, 1, 0b11, 1]), 0b1001);
    }

    #[test]
    fn fill_runs_reaches_the_end_of_each_run() {
        let continues = 0b0111_0110u64;
        assert_eq!(fill_runs(0b0000_0010, continues), 0b0000_0110);
        assert_eq!(fill_runs(0b0010_0100, continues), 0b0110_0100);
        assert_eq!(fill_runs(0b0110_0000, continues), 0b0110_0000);
        assert_eq!(fill_runs(1 << 63, u64::MAX), 1 << 63);
    }
}
