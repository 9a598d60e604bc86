//! Events of the queue (packed into its bits), held frames, lanes and in-flight frames.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    Wake(u16),
    /// The first frame of a lane's FIFO arrives.
    Lane(u16),
    /// A frame that arrives out of its lane's order (held back by reordering, or overtaking
    /// after a link change shortened the latency): its slot in [`Held`].
    Frame(u32),
    Timed(u16),
}

/// Bits of a packed event that say which kind it is.
pub(super) const EVENT_KIND_SHIFT: u32 = queue::EVENT_BITS - 2;

impl queue::Packed for Event {
    fn pack(self) -> u32 {
        let (kind, value) = match self {
            Self::Wake(actor) => (0, u32::from(actor)),
            Self::Lane(lane) => (1, u32::from(lane)),
            Self::Frame(slot) => (2, slot),
            Self::Timed(index) => (3, u32::from(index)),
        };
        (kind << EVENT_KIND_SHIFT) | value
    }

    fn unpack(code: u32) -> Self {
        let value = code & ((1 << EVENT_KIND_SHIFT) - 1);
        match code >> EVENT_KIND_SHIFT {
            0 => Self::Wake(value as u16),
            1 => Self::Lane(value as u16),
            2 => Self::Frame(value),
            _ => Self::Timed(value as u16),
        }
    }
}

/// Frames of [`Event::Frame`] events, by slot (freed slots are reused). At most
/// [`IN_FLIGHT_CAPACITY`] frames travel, so slots fit an event's bits.
#[derive(Default)]
pub(super) struct Held {
    slots: Vec<Option<(u16, Vec<u8>)>>,
    free: Vec<u32>,
}

impl Held {
    pub(super) fn hold(&mut self, lane: u16, frame: Vec<u8>) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some((lane, frame));
                slot
            }
            None => {
                self.slots.push(Some((lane, frame)));
                (self.slots.len() - 1) as u32
            }
        }
    }

    pub(super) fn take(&mut self, slot: u32) -> Option<(u16, Vec<u8>)> {
        let held = self.slots.get_mut(slot as usize)?.take();
        self.free.push(slot);
        held
    }
}

/// Which way a frame crosses a host's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    ToAppliance = 0,
    FromAppliance = 1,
}

/// The lane (one direction of one host's link) of `host` in `direction`.
pub(super) fn lane_of(host: HostId, direction: Direction) -> u16 {
    host * 2 + direction as u16
}

/// A frame on its way, in its lane's FIFO: it arrives at `at` and runs under the sequence
/// number reserved when it was sent, exactly where an event of its own would have run.
pub(super) struct InFlight {
    pub(super) at: TimeNs,
    pub(super) seq: u64,
    pub(super) frame: Vec<u8>,
}

/// Where frames to a host's addresses go.
pub(super) enum Receiver {
    Actor(u16),
    Sink,
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue::Packed;

    #[test]
    fn events_pack_and_unpack() {
        let slot_max = (1 << EVENT_KIND_SHIFT) - 1;
        assert!(IN_FLIGHT_CAPACITY <= slot_max as usize + 1);
        for event in [
            Event::Wake(0),
            Event::Wake(u16::MAX),
            Event::Lane(7),
            Event::Frame(0),
            Event::Frame(slot_max),
            Event::Timed(u16::MAX),
        ] {
            assert!(event.pack() < 1 << queue::EVENT_BITS);
            assert_eq!(Event::unpack(event.pack()), event);
        }
    }
}
