//! The connection table's pending expiry checks: a binary min-heap of (time, entry)
//! with the order and the set semantics of the `BTreeSet` it replaces.
//!
//! Timers are only ever added and taken earliest first (`ip_vs_conn_expire` re-arms a
//! timer by adding a new one; a stale timer finds its entry gone or not yet due and does
//! nothing), so a heap does the work of the ordered set at less cost: an insertion of a
//! later time than its parent stops at once, where the set walks its tree nodes. Equal
//! (time, entry) pairs are one timer, as in the set: popping one also drops its copies,
//! which sit next to it in pop order (nothing orders strictly between equal items).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::TimeNs;

/// Pending timers, earliest (time, entry) first.
#[derive(Clone, Debug)]
pub struct Timers<E> {
    heap: BinaryHeap<Reverse<(TimeNs, E)>>,
}

impl<E: Ord + Copy> Default for Timers<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: Ord + Copy> Timers<E> {
    /// No timer.
    pub fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }

    /// Add a timer for `entry` at `at` (one already pending for the same pair stays one).
    #[inline]
    pub fn insert(&mut self, timer: (TimeNs, E)) {
        self.heap.push(Reverse(timer));
    }

    /// The earliest timer.
    #[inline]
    pub fn first(&self) -> Option<(TimeNs, E)> {
        self.heap.peek().map(|t| t.0)
    }

    /// Take the earliest timer, and its copies.
    pub fn pop_first(&mut self) -> Option<(TimeNs, E)> {
        let Reverse(first) = self.heap.pop()?;
        while self.heap.peek().is_some_and(|t| t.0 == first) {
            self.heap.pop();
        }
        Some(first)
    }

    /// Pending timers (copies of one counted once each: an upper bound of the set's
    /// length).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Random insertions (with duplicates) and pops of due timers: the same sequence as
    /// a `BTreeSet`.
    #[test]
    fn pops_in_the_order_of_an_ordered_set() {
        let mut timers = Timers::new();
        let mut set = BTreeSet::new();
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            state >> 33
        };
        let mut now = 0;
        for _ in 0..20_000 {
            for _ in 0..next() % 4 {
                let timer = (now + next() % 50, (next() % 8) as u32);
                timers.insert(timer);
                set.insert(timer);
            }
            now += next() % 10;
            loop {
                let due = set.first().filter(|t| t.0 <= now).copied();
                let popped = timers
                    .first()
                    .filter(|t| t.0 <= now)
                    .and_then(|_| timers.pop_first());
                assert_eq!(popped, due);
                if due.is_none() {
                    break;
                }
                set.pop_first();
            }
            assert_eq!(timers.first(), set.first().copied());
        }
    }
}
