//! Links between hosts and the appliance: one-way latency, serialization at a bandwidth with
//! a bounded transmit queue (tail drop), and random loss in parts per million. Each direction
//! is its own [`Pipe`] with its own random stream.
//!
//! Not here: routing (which link a frame takes is decided by the engine).

use datapath::TimeNs;
use datapath::verdict::NS_PER_SEC;
use rand_chacha::ChaCha8Rng;
use rand_core::Rng;

use crate::scenario::LinkSpec;

/// Longest a frame may wait in a link's transmit queue before it is tail-dropped.
pub const LINK_QUEUE_LIMIT_NS: TimeNs = 100_000_000;

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

/// One direction of a link.
#[derive(Debug, Clone)]
pub struct Pipe {
    latency_ns: TimeNs,
    bits_per_sec: Option<u64>,
    loss_ppm: u32,
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
    }

    /// Current parameters: (latency, bandwidth per share, loss).
    pub fn parameters(&self) -> (TimeNs, Option<u64>, u32) {
        (self.latency_ns, self.bits_per_sec, self.loss_ppm)
    }

    /// True when frames cross instantly and are never lost.
    pub fn is_ideal(&self) -> bool {
        self.latency_ns == 0 && self.bits_per_sec.is_none() && self.loss_ppm == 0
    }

    /// Send a frame of `len` bytes at `now`.
    pub fn send(&mut self, now: TimeNs, len: usize) -> Transit {
        if self.loss_ppm > 0
            && crate::engine::rng::below(self.rng.next_u64(), 1_000_000) < u64::from(self.loss_ppm)
        {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Bandwidth, DurationNs};

    #[test]
    fn bandwidth_serializes_and_latency_adds() {
        let spec = LinkSpec {
            latency: DurationNs(1_000),
            bandwidth: Some(Bandwidth(8_000_000)), // 1 byte per µs
            loss_ppm: 0,
        };
        let mut pipe = Pipe::new(&spec, 1, crate::engine::rng::stream(1, "t"));
        assert_eq!(pipe.send(0, 76), Transit::Arrives(100_000 + 1_000));
        assert_eq!(pipe.send(0, 76), Transit::Arrives(200_000 + 1_000));
        let lossy = LinkSpec {
            loss_ppm: 1_000_000,
            ..spec
        };
        let mut pipe = Pipe::new(&lossy, 1, crate::engine::rng::stream(1, "t"));
        assert_eq!(pipe.send(0, 60), Transit::Lost);
    }
}
