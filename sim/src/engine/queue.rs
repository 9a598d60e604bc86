//! The event queue: a binary heap ordered by (virtual time, sequence number), so that events
//! at the same instant run in the order they were scheduled — on every machine.
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

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
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
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// Pending events in (time, seq) order.
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    next_seq: u64,
    overflow: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_seq: 0,
            overflow: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedule `event` at `time`; returns false (and counts it) when the queue is full.
    pub fn push(&mut self, time: TimeNs, event: E) -> bool {
        if self.heap.len() >= EVENT_QUEUE_CAPACITY {
            self.overflow += 1;
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { time, seq, event });
        true
    }

    /// The earliest event, if any.
    pub fn pop(&mut self) -> Option<(TimeNs, E)> {
        self.heap.pop().map(|entry| (entry.time, entry.event))
    }

    /// Time of the earliest event.
    pub fn peek_time(&self) -> Option<TimeNs> {
        self.heap.peek().map(|entry| entry.time)
    }

    /// Events dropped because the queue was full.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Events still queued (in no particular order: for counting only).
    pub fn pending(&self) -> impl Iterator<Item = &E> {
        self.heap.iter().map(|entry| &entry.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_time_events_keep_scheduling_order() {
        let mut queue = EventQueue::default();
        queue.push(5, "b");
        queue.push(1, "a");
        queue.push(5, "c");
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, [(1, "a"), (5, "b"), (5, "c")]);
    }
}
