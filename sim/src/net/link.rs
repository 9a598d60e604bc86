//! Links between hosts and the appliance: one-way latency, serialization at a bandwidth with
//! a bounded transmit queue (tail drop), random loss, and the faults duplication, reordering
//! (a frame held back so later ones overtake it) and corruption (one flipped bit of the IP
//! packet), all in parts per million. Each direction is its own [`Pipe`] with its own random
//! stream; a fault's draw is taken only when its probability is non-zero, so a link without
//! faults draws exactly what it drew before faults existed.
//!
//! Not here: routing (which link a frame takes is decided by the engine) and what a fault
//! does downstream (a corrupted frame is processed or delivered like any other).

use datapath::TimeNs;
use datapath::verdict::NS_PER_SEC;
use rand_chacha::ChaCha8Rng;
use rand_core::Rng;

use crate::net::rng::below;
use crate::scenario::{DEFAULT_REORDER_DELAY_NS, LinkSpec};

/// Longest a frame may wait in a link's transmit queue before it is tail-dropped.
pub const LINK_QUEUE_LIMIT_NS: TimeNs = 100_000_000;
/// Bytes of the Ethernet header a corruption never touches (it flips bits of the IP packet,
/// which checksums cover).
const ETHERNET_HEADER_LEN: usize = 14;

/// What a pipe did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transit {
    /// Arrives at this time.
    Arrives(TimeNs),
    /// Lost (random loss).
    Lost,
    /// Dropped at the tail of a full transmit queue.
    QueueFull,
}

/// What a pipe did with a frame, faults included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Arrival (held back by the reorder delay when `reordered`) or loss.
    pub transit: Transit,
    /// A copy arrives right after the frame.
    pub duplicated: bool,
    /// The frame was held back.
    pub reordered: bool,
    /// One bit of the frame was flipped.
    pub corrupted: bool,
}

/// Fault probabilities of a pipe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Duplication, ppm.
    pub duplicate_ppm: u32,
    /// Reordering, ppm.
    pub reorder_ppm: u32,
    /// Extra delay of a reordered frame.
    pub reorder_delay_ns: TimeNs,
    /// Corruption, ppm.
    pub corrupt_ppm: u32,
}

impl Faults {
    /// The faults `spec` asks for.
    pub fn of(spec: &LinkSpec) -> Self {
        Self {
            duplicate_ppm: spec.duplicate_ppm,
            reorder_ppm: spec.reorder_ppm,
            reorder_delay_ns: spec.reorder_delay.map_or(DEFAULT_REORDER_DELAY_NS, |d| d.0),
            corrupt_ppm: spec.corrupt_ppm,
        }
    }
}

/// One direction of a link.
#[derive(Debug, Clone)]
pub struct Pipe {
    latency_ns: TimeNs,
    bits_per_sec: Option<u64>,
    loss_ppm: u32,
    faults: Faults,
    /// No bandwidth limit, loss or faults: the pipe only delays.
    plain: bool,
    busy_until: TimeNs,
    rng: ChaCha8Rng,
}

impl Pipe {
    /// A pipe as `spec` describes, its bandwidth divided by `share` (receive queues).
    pub fn new(spec: &LinkSpec, share: u16, rng: ChaCha8Rng) -> Self {
        let mut pipe = Self {
            latency_ns: 0,
            bits_per_sec: None,
            loss_ppm: 0,
            faults: Faults::of(spec),
            plain: false,
            busy_until: 0,
            rng,
        };
        pipe.apply(
            spec.latency.0,
            spec.bandwidth.map(|b| b.0),
            spec.loss_ppm,
            share,
        );
        pipe
    }

    /// Change the pipe's parameters (timed link events).
    pub fn apply(
        &mut self,
        latency_ns: TimeNs,
        bits_per_sec: Option<u64>,
        loss_ppm: u32,
        share: u16,
    ) {
        self.latency_ns = latency_ns;
        self.bits_per_sec = bits_per_sec.map(|b| (b / u64::from(share.max(1))).max(1));
        self.loss_ppm = loss_ppm;
        self.plain = self.is_plain();
    }

    /// Change the fault probabilities (timed link events).
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
        self.plain = self.is_plain();
    }

    fn is_plain(&self) -> bool {
        self.bits_per_sec.is_none()
            && self.loss_ppm == 0
            && self.faults.duplicate_ppm == 0
            && self.faults.reorder_ppm == 0
            && self.faults.corrupt_ppm == 0
    }

    /// Current parameters: (latency, bandwidth per share, loss).
    pub fn parameters(&self) -> (TimeNs, Option<u64>, u32) {
        (self.latency_ns, self.bits_per_sec, self.loss_ppm)
    }

    /// Current fault probabilities.
    pub fn faults(&self) -> Faults {
        self.faults
    }

    /// The latency, when it is all the pipe does to a frame (no bandwidth limit, no loss,
    /// no faults): then a frame's arrival needs no draw and depends on nothing else.
    pub fn fixed_latency(&self) -> Option<TimeNs> {
        self.plain.then_some(self.latency_ns)
    }

    fn happens(&mut self, ppm: u32) -> bool {
        ppm > 0 && below(self.rng.next_u64(), 1_000_000) < u64::from(ppm)
    }

    /// Send a frame of `len` bytes at `now` (loss, bandwidth and latency; no faults).
    pub fn send(&mut self, now: TimeNs, len: usize) -> Transit {
        if self.happens(self.loss_ppm) {
            return Transit::Lost;
        }
        let Some(bits_per_sec) = self.bits_per_sec else {
            return Transit::Arrives(now + self.latency_ns);
        };
        let start = self.busy_until.max(now);
        if start - now > LINK_QUEUE_LIMIT_NS {
            return Transit::QueueFull;
        }
        let bits = (len as u128 + 24) * 8; // preamble, SFD, FCS and inter-frame gap
        let serialization = (bits * u128::from(NS_PER_SEC)).div_ceil(u128::from(bits_per_sec));
        self.busy_until = start + serialization as TimeNs;
        Transit::Arrives(self.busy_until + self.latency_ns)
    }

    /// Send `frame` at `now`: [`Self::send`], then the faults (in the order reorder,
    /// duplicate, corrupt). A corrupted frame has one bit of its IP packet flipped in place.
    pub fn send_frame(&mut self, now: TimeNs, frame: &mut [u8]) -> Sent {
        if self.plain {
            // What the general path gives such a pipe, without its checks.
            return Sent {
                transit: Transit::Arrives(now + self.latency_ns),
                duplicated: false,
                reordered: false,
                corrupted: false,
            };
        }
        let mut sent = Sent {
            transit: self.send(now, frame.len()),
            duplicated: false,
            reordered: false,
            corrupted: false,
        };
        let Transit::Arrives(at) = sent.transit else {
            return sent;
        };
        let faults = self.faults;
        if self.happens(faults.reorder_ppm) {
            sent.reordered = true;
            sent.transit = Transit::Arrives(at + faults.reorder_delay_ns);
        }
        sent.duplicated = self.happens(faults.duplicate_ppm);
        if self.happens(faults.corrupt_ppm) && !frame.is_empty() {
            let skip = if frame.len() > ETHERNET_HEADER_LEN {
                ETHERNET_HEADER_LEN
            } else {
                0
            };
            let bits = ((frame.len() - skip) * 8) as u64;
            let bit = below(self.rng.next_u64(), bits) as usize;
            frame[skip + bit / 8] ^= 1 << (bit % 8);
            sent.corrupted = true;
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Bandwidth, DurationNs};

    fn spec(latency: TimeNs) -> LinkSpec {
        LinkSpec {
            latency: DurationNs(latency),
            ..LinkSpec::default()
        }
    }

    #[test]
    fn bandwidth_serializes_and_latency_adds() {
        let spec = LinkSpec {
            bandwidth: Some(Bandwidth(8_000_000)), // 1 byte per µs
            ..spec(1_000)
        };
        let mut pipe = Pipe::new(&spec, 1, crate::net::rng::stream(1, "t"));
        assert_eq!(pipe.send(0, 76), Transit::Arrives(100_000 + 1_000));
        assert_eq!(pipe.send(0, 76), Transit::Arrives(200_000 + 1_000));
        let lossy = LinkSpec {
            loss_ppm: 1_000_000,
            ..spec
        };
        let mut pipe = Pipe::new(&lossy, 1, crate::net::rng::stream(1, "t"));
        assert_eq!(pipe.send(0, 60), Transit::Lost);
    }

    #[test]
    fn certain_faults_always_happen_and_corruption_flips_one_ip_bit() {
        let faulty = LinkSpec {
            duplicate_ppm: 1_000_000,
            reorder_ppm: 1_000_000,
            reorder_delay: Some(DurationNs(7)),
            corrupt_ppm: 1_000_000,
            ..spec(10)
        };
        let mut pipe = Pipe::new(&faulty, 1, crate::net::rng::stream(1, "t"));
        let original = vec![0u8; 60];
        let mut frame = original.clone();
        let sent = pipe.send_frame(100, &mut frame);
        assert_eq!(sent.transit, Transit::Arrives(117));
        assert!(sent.duplicated && sent.reordered && sent.corrupted);
        let flipped: u32 = frame
            .iter()
            .zip(&original)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(flipped, 1);
        assert_eq!(
            frame[..ETHERNET_HEADER_LEN],
            original[..ETHERNET_HEADER_LEN]
        );
    }

    #[test]
    fn a_link_without_faults_draws_nothing_for_them() {
        let lossy = LinkSpec {
            loss_ppm: 300_000,
            ..spec(0)
        };
        let mut plain = Pipe::new(&lossy, 1, crate::net::rng::stream(2, "t"));
        let mut framed = Pipe::new(&lossy, 1, crate::net::rng::stream(2, "t"));
        for now in 0..1000 {
            let mut frame = [0u8; 60];
            assert_eq!(
                plain.send(now, 60),
                framed.send_frame(now, &mut frame).transit
            );
        }
    }
}
