//! The event queue: a binary heap ordered by (virtual time, sequence number), so that events
//! at the same instant run in the order they were scheduled — on every machine.
//!
//! An entry is one `u128`: the time in the high 64 bits, the sequence number in the next 40,
//! the event packed into the low 24 ([`Packed`]). Comparing two entries is one integer
//! comparison, and an entry moves as one 16-byte value (wider entries, stored field by field
//! and reloaded at once by the heap's sifting, stalled on store forwarding).
//!
//! Two shortcuts keep it cheap under floods without changing the order: an event earlier
//! than everything queued waits in a one-entry front slot instead of the heap (a push
//! immediately followed by its pop costs no sift), and a caller may reserve a sequence number
//! when something is scheduled and push it later under that key ([`EventQueue::push_keyed`]):
//! the engine keeps frames travelling on a link in a per-link FIFO and has only the FIFO's
//! head in the heap, keyed exactly as the frame would have been.
//!
//! Bounded by [`EVENT_QUEUE_CAPACITY`]; an event that does not fit is counted and dropped.
//! Sequence numbers are 40 bits: a shard schedules at most 2^40 events (about 30 hours of
//! a 10-million-events-per-second run).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::marker::PhantomData;

use datapath::TimeNs;

/// Most pending events per shard.
pub const EVENT_QUEUE_CAPACITY: usize = 1 << 22;
/// Bits of an entry that hold the event.
pub const EVENT_BITS: u32 = 24;
/// Bits of an entry that hold the sequence number.
const SEQ_BITS: u32 = 40;

/// An event that packs into [`EVENT_BITS`] bits and back.
pub trait Packed: Copy {
    /// The event as a number below `1 << EVENT_BITS`.
    fn pack(self) -> u32;
    /// The event of a number [`Packed::pack`] made.
    fn unpack(code: u32) -> Self;
}

fn entry(time: TimeNs, seq: u64, code: u32) -> u128 {
    debug_assert!(seq < 1 << SEQ_BITS && code < 1 << EVENT_BITS);
    (u128::from(time) << 64) | (u128::from(seq) << EVENT_BITS) | u128::from(code)
}

fn time_of(entry: u128) -> TimeNs {
    (entry >> 64) as TimeNs
}

/// Pending events in (time, seq) order.
pub struct EventQueue<E> {
    /// Earlier than every entry of `heap` when set.
    front: Option<u128>,
    heap: BinaryHeap<Reverse<u128>>,
    next_seq: u64,
    overflow: u64,
    events: PhantomData<E>,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            front: None,
            heap: BinaryHeap::new(),
            next_seq: 0,
            overflow: 0,
            events: PhantomData,
        }
    }
}

impl<E: Packed> EventQueue<E> {
    /// Schedule `event` at `time`; returns false (and counts it) when the queue is full.
    pub fn push(&mut self, time: TimeNs, event: E) -> bool {
        let seq = self.reserve_seq();
        self.push_keyed(time, seq, event)
    }

    /// The sequence number the next scheduled event gets (taken: later pushes get higher).
    pub fn reserve_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Schedule `event` at `time` under a sequence number from [`Self::reserve_seq`]; it runs
    /// where it would have had it been pushed when the number was reserved.
    pub fn push_keyed(&mut self, time: TimeNs, seq: u64, event: E) -> bool {
        if self.len() >= EVENT_QUEUE_CAPACITY {
            self.overflow += 1;
            return false;
        }
        let new = entry(time, seq, event.pack());
        let earliest = self.heap.peek().is_none_or(|top| new < top.0);
        match self.front {
            None if earliest => self.front = Some(new),
            Some(front) if new < front => {
                self.front = Some(new);
                self.heap.push(Reverse(front));
            }
            _ => self.heap.push(Reverse(new)),
        }
        true
    }

    /// The earliest event, if any.
    pub fn pop(&mut self) -> Option<(TimeNs, E)> {
        let entry = self.front.take().or_else(|| self.heap.pop().map(|e| e.0))?;
        let code = (entry & ((1 << EVENT_BITS) - 1)) as u32;
        Some((time_of(entry), E::unpack(code)))
    }

    /// Time of the earliest event.
    pub fn peek_time(&self) -> Option<TimeNs> {
        self.front
            .or_else(|| self.heap.peek().map(|e| e.0))
            .map(time_of)
    }

    /// Events queued.
    pub fn len(&self) -> usize {
        self.heap.len() + usize::from(self.front.is_some())
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events dropped because the queue was full.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Events still queued (in no particular order: for counting only).
    pub fn pending(&self) -> impl Iterator<Item = E> + '_ {
        self.front
            .iter()
            .copied()
            .chain(self.heap.iter().map(|e| e.0))
            .map(|entry| E::unpack((entry & ((1 << EVENT_BITS) - 1)) as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{Rng, SeedableRng};

    impl Packed for u32 {
        fn pack(self) -> u32 {
            self
        }
        fn unpack(code: u32) -> Self {
            code
        }
    }

    #[test]
    fn same_time_events_keep_scheduling_order() {
        let mut queue = EventQueue::default();
        queue.push(5, 2u32);
        queue.push(1, 1);
        queue.push(5, 3);
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, [(1, 1), (5, 2), (5, 3)]);
    }

    #[test]
    fn reserved_keys_run_where_they_were_reserved() {
        let mut queue = EventQueue::default();
        let early = queue.reserve_seq();
        queue.push(5, 2u32);
        queue.push_keyed(5, early, 1);
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, [(5, 1), (5, 2)]);
    }

    #[test]
    fn pops_in_key_order_whatever_the_interleaving() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut queue = EventQueue::default();
        let mut model = std::collections::BTreeMap::new();
        for step in 0..20_000u32 {
            if rng.next_u32() % 3 != 0 {
                // Times far apart too: the time is the entry's high half.
                let time = u64::from(rng.next_u32() % 64) << (rng.next_u32() % 2 * 40);
                let seq = queue.next_seq;
                queue.push(time, step);
                model.insert((time, seq), step);
            } else {
                let expected = model.pop_first().map(|((time, _), step)| (time, step));
                assert_eq!(queue.pop(), expected);
            }
            assert_eq!(queue.len(), model.len());
            assert_eq!(queue.peek_time(), model.keys().next().map(|k| k.0));
        }
    }
}
