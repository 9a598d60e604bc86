//! The event queue: a binary heap ordered by (virtual time, sequence number), so that events
//! at the same instant run in the order they were scheduled — on every machine.
//!
//! Two shortcuts keep it cheap under floods without changing the order: an event earlier
//! than everything queued waits in a one-entry front slot instead of the heap (a push
//! immediately followed by its pop costs no sift), and a caller may reserve a sequence number
//! when something is scheduled and push it later under that key ([`EventQueue::push_keyed`]):
//! the engine keeps frames travelling on a link in a per-link FIFO and has only the FIFO's
//! head in the heap, keyed exactly as the frame would have been.
//!
//! Bounded by [`EVENT_QUEUE_CAPACITY`]; an event that does not fit is counted and dropped.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use datapath::TimeNs;

/// Most pending events per shard.
pub const EVENT_QUEUE_CAPACITY: usize = 1 << 22;

struct Entry<E> {
    time: TimeNs,
    seq: u64,
    event: E,
}

impl<E> Entry<E> {
    fn key(&self) -> (TimeNs, u64) {
        (self.time, self.seq)
    }
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, the earliest event must come out first.
        other.key().cmp(&self.key())
    }
}

/// Pending events in (time, seq) order.
pub struct EventQueue<E> {
    /// Earlier than every entry of `heap` when set.
    front: Option<Entry<E>>,
    heap: BinaryHeap<Entry<E>>,
    next_seq: u64,
    overflow: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            front: None,
            heap: BinaryHeap::new(),
            next_seq: 0,
            overflow: 0,
        }
    }
}

impl<E> EventQueue<E> {
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
        let entry = Entry { time, seq, event };
        let earliest = self.heap.peek().is_none_or(|top| entry.key() < top.key());
        match &self.front {
            None if earliest => self.front = Some(entry),
            Some(front) if entry.key() < front.key() => {
                if let Some(old) = self.front.replace(entry) {
                    self.heap.push(old);
                }
            }
            _ => self.heap.push(entry),
        }
        true
    }

    /// The earliest event, if any.
    pub fn pop(&mut self) -> Option<(TimeNs, E)> {
        let entry = self.front.take().or_else(|| self.heap.pop())?;
        Some((entry.time, entry.event))
    }

    /// Time of the earliest event.
    pub fn peek_time(&self) -> Option<TimeNs> {
        self.front
            .as_ref()
            .or_else(|| self.heap.peek())
            .map(|entry| entry.time)
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
    pub fn pending(&self) -> impl Iterator<Item = &E> {
        self.front
            .iter()
            .chain(self.heap.iter())
            .map(|entry| &entry.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{Rng, SeedableRng};

    #[test]
    fn same_time_events_keep_scheduling_order() {
        let mut queue = EventQueue::default();
        queue.push(5, "b");
        queue.push(1, "a");
        queue.push(5, "c");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, [(1, "a"), (5, "b"), (5, "c")]);
    }

    #[test]
    fn reserved_keys_run_where_they_were_reserved() {
        let mut queue = EventQueue::default();
        let early = queue.reserve_seq();
        queue.push(5, "second");
        queue.push_keyed(5, early, "first");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, [(5, "first"), (5, "second")]);
    }

    #[test]
    fn pops_in_key_order_whatever_the_interleaving() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut queue = EventQueue::default();
        let mut model = std::collections::BTreeMap::new();
        for step in 0..20_000u64 {
            if rng.next_u32() % 3 != 0 {
                let time = u64::from(rng.next_u32() % 64);
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
