//! The classification index: one bitset of rules per elementary interval of each packet
//! dimension (family+protocol, interface, source, destination, ports, ICMP type). A packet
//! looks up one bitset per dimension (a binary search each) and the rules whose conditions
//! all hold are the set bits of their AND, in rule order, computed a word at a time while
//! the flows are walked. Cost per packet: 7 binary searches plus at most `rules / 64` word
//! ANDs, instead of evaluating every condition of every rule.
//!
//! This module knows nothing of flows or policies; [`super::table`] walks the bits.

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

/// Bitsets of rules for every elementary interval of one dimension's values.
#[derive(Clone, Debug)]
pub(crate) struct RangeIndex {
    /// Start of each elementary interval, ascending; the first is 0.
    starts: Vec<u128>,
    /// `starts.len()` bitsets of `words` words, one after the other.
    sets: Vec<u64>,
    /// The bitset for a packet without a value in this dimension.
    absent: Vec<u64>,
    /// Words per bitset.
    words: usize,
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
    /// interval boundaries: entering or leaving a range flips the rule's bit.
    pub(crate) fn build(memberships: &[Membership]) -> Self {
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
        Self {
            starts,
            sets,
            absent,
            words,
        }
    }

    /// The rules that hold for `value` (`None`: the packet has no value here).
    pub(crate) fn lookup(&self, value: Option<u128>) -> &[u64] {
        let Some(value) = value else {
            return &self.absent;
        };
        let interval = self.starts.partition_point(|start| *start <= value) - 1;
        &self.sets[interval * self.words..(interval + 1) * self.words]
    }

    /// Number of elementary intervals.
    #[cfg(test)]
    pub(crate) fn intervals(&self) -> usize {
        self.starts.len()
    }
}

/// The first set bit at or after `from` in the AND of `sets`, or `None`.
pub(crate) fn first_common_bit(sets: &[&[u64]], from: usize) -> Option<usize> {
    let words = sets.first().map_or(0, |set| set.len());
    let mut word_index = from / 64;
    let mut mask = u64::MAX.checked_shl((from % 64) as u32).unwrap_or(0);
    while word_index < words {
        let mut word = mask;
        for set in sets {
            word &= set[word_index];
        }
        if word != 0 {
            return Some(word_index * 64 + word.trailing_zeros() as usize);
        }
        word_index += 1;
        mask = u64::MAX;
    }
    None
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
        let index = RangeIndex::build(&[
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
        ]);
        assert_eq!(bits(index.lookup(Some(0))), vec![1, 2]);
        assert_eq!(bits(index.lookup(Some(10))), vec![0, 1, 2]);
        assert_eq!(bits(index.lookup(Some(15))), vec![0, 1]);
        assert_eq!(bits(index.lookup(Some(16))), vec![0, 1, 2]);
        assert_eq!(bits(index.lookup(Some(21))), vec![1, 2]);
        assert_eq!(bits(index.lookup(None)), vec![1]);
        assert_eq!(index.intervals(), 5);
    }

    #[test]
    fn range_to_the_maximum_has_no_end_boundary() {
        let index = RangeIndex::build(&[Membership::Range {
            first: 5,
            last: u128::MAX,
            negated: false,
        }]);
        assert_eq!(bits(index.lookup(Some(u128::MAX))), vec![0]);
        assert_eq!(bits(index.lookup(Some(4))), Vec::<usize>::new());
    }

    #[test]
    fn first_common_bit_skips_below_from() {
        let a = [0b1011u64, 1];
        let b = [0b1110u64, 1];
        assert_eq!(first_common_bit(&[&a, &b], 0), Some(1));
        assert_eq!(first_common_bit(&[&a, &b], 2), Some(3));
        assert_eq!(first_common_bit(&[&a, &b], 4), Some(64));
        assert_eq!(first_common_bit(&[&a, &b], 65), None);
    }
}
