//! Traffic sources and the actor interface the engine drives them (and backends) through.
//!
//! An [`Actor`] is woken at times it asks for and handed frames addressed to it; it answers
//! with frames to send (into its host's link towards the appliance) and the next time it
//! wants to be woken. Sources: [`flood`] (`syn_flood`, `ack_flood`, `udp_flood`,
//! `icmp_flood`), [`pcap`] (capture replay), [`tcp_clients`] (smoltcp clients),
//! [`udp_clients`] (request/response), [`ftp`] (FTP sessions, and the FTP server a backend
//! runs with `ftp = true`).
//!
//! Not here: links, routing and the pipeline (see [`crate::engine`]).

pub mod backend;
pub mod flood;
pub mod ftp;
pub mod ftp_server;
pub mod pcap;
pub mod tcp_clients;
pub mod udp_clients;

use datapath::TimeNs;
use hdrhistogram::Histogram;

use crate::net::world::HostId;

/// Spare frame buffers an [`Outbox`] keeps for reuse.
pub const SPARE_FRAMES: usize = 4096;
/// Largest buffer kept for reuse (bigger ones are freed).
const SPARE_FRAME_BYTES_MAX: usize = 2048;

/// Frames an actor sends — (the host whose link carries it, Ethernet frame) — and spare
/// buffers to build them in: frames the engine is done with come back here, so a flood
/// reuses a few buffers instead of allocating one per packet.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: Vec<(HostId, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

impl Outbox {
    /// Send `frame` over `host`'s link.
    pub fn push(&mut self, (host, frame): (HostId, Vec<u8>)) {
        self.frames.push((host, frame));
    }

    /// An empty buffer to build a frame in (a reused one when there is one).
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Give a frame's buffer back for reuse (up to [`SPARE_FRAMES`] are kept).
    pub fn recycle(&mut self, mut frame: Vec<u8>) {
        if self.spare.len() < SPARE_FRAMES && frame.capacity() <= SPARE_FRAME_BYTES_MAX {
            frame.clear();
            self.spare.push(frame);
        }
    }

    /// Frames waiting to be sent.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when no frame waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Move the waiting frames into `into` (appended). An empty `into` trades places with
    /// the waiting list instead (no copy: frames read right after a bulk copy of their
    /// headers stall on store forwarding); either way both lists keep their capacity.
    pub fn drain_into(&mut self, into: &mut Vec<(HostId, Vec<u8>)>) {
        if into.is_empty() {
            std::mem::swap(&mut self.frames, into);
        } else {
            into.append(&mut self.frames);
        }
    }

    /// The waiting frames (tests).
    pub fn frames(&self) -> &[(HostId, Vec<u8>)] {
        &self.frames
    }
}

/// Something the engine wakes and delivers frames to.
pub trait Actor: Send {
    /// Do what is due at `now`; return when to be woken next.
    fn wake(&mut self, now: TimeNs, out: &mut Outbox) -> Option<TimeNs>;
    /// A frame addressed to the actor arrived at `now`; return when to be woken next.
    fn deliver(&mut self, now: TimeNs, frame: &[u8], out: &mut Outbox) -> Option<TimeNs>;
    /// Statistics so far (final once the run ends).
    fn stats(&self) -> ActorStats;
    /// Called once when the run ends at `end` (connections still open are counted).
    fn finish(&mut self, _end: TimeNs) {}
}

/// Most (time, connect time) samples a TCP client source keeps for plots; more are
/// counted in [`TcpStats::samples_not_kept`].
pub const CONNECT_SAMPLES_CAPACITY: usize = 1 << 18;

/// Highest value the latency histograms record (60 s in ns).
pub const HISTOGRAM_MAX_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3).expect("valid histogram bounds")
}

/// TCP client results.
#[derive(Clone, Debug)]
pub struct TcpStats {
    /// Connections opened.
    pub attempted: u64,
    /// Connections that reached ESTABLISHED.
    pub established: u64,
    /// Connections that read their whole response.
    pub completed: u64,
    /// Connections that timed out.
    pub failed_timeout: u64,
    /// Connections closed or reset before completing.
    pub failed_reset: u64,
    /// Connections still open when the run ended.
    pub unfinished: u64,
    /// Connection setup time (connect → ESTABLISHED).
    pub connect_ns: Histogram<u64>,
    /// Request completion time (connect → last response byte).
    pub complete_ns: Histogram<u64>,
    /// (time established, connection setup time) of each connection, in time order per
    /// shard, for time series plots.
    pub connect_samples: Vec<(TimeNs, u64)>,
    /// Samples beyond [`CONNECT_SAMPLES_CAPACITY`].
    pub samples_not_kept: u64,
}

impl Default for TcpStats {
    fn default() -> Self {
        Self {
            attempted: 0,
            established: 0,
            completed: 0,
            failed_timeout: 0,
            failed_reset: 0,
            unfinished: 0,
            connect_ns: latency_histogram(),
            complete_ns: latency_histogram(),
            connect_samples: Vec::new(),
            samples_not_kept: 0,
        }
    }
}

impl TcpStats {
    /// Keep a connection's setup time, established at `now`, for time series.
    pub fn sample_connect(&mut self, now: TimeNs, connect_ns: u64) {
        if self.connect_samples.len() < CONNECT_SAMPLES_CAPACITY {
            self.connect_samples.push((now, connect_ns));
        } else {
            self.samples_not_kept += 1;
        }
    }

    /// Add another shard's results.
    pub fn merge(&mut self, other: &Self) {
        self.attempted += other.attempted;
        self.established += other.established;
        self.completed += other.completed;
        self.failed_timeout += other.failed_timeout;
        self.failed_reset += other.failed_reset;
        self.unfinished += other.unfinished;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.connect_ns.add(&other.connect_ns);
        let _ = self.complete_ns.add(&other.complete_ns);
        self.connect_samples.extend(&other.connect_samples);
        self.samples_not_kept += other.samples_not_kept;
    }
}

/// UDP client results.
#[derive(Clone, Debug)]
pub struct UdpStats {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered.
    pub answered: u64,
    /// Requests not answered in time.
    pub failed_timeout: u64,
    /// Requests still waiting when the run ended.
    pub unfinished: u64,
    /// Round-trip time.
    pub rtt_ns: Histogram<u64>,
}

impl Default for UdpStats {
    fn default() -> Self {
        Self {
            sent: 0,
            answered: 0,
            failed_timeout: 0,
            unfinished: 0,
            rtt_ns: latency_histogram(),
        }
    }
}

impl UdpStats {
    /// Add another shard's results.
    pub fn merge(&mut self, other: &Self) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.failed_timeout += other.failed_timeout;
        self.unfinished += other.unfinished;
        let _ = self.rtt_ns.add(&other.rtt_ns);
    }
}

/// Backend results.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct BackendStats {
    /// TCP connections accepted.
    pub tcp_accepted: u64,
    /// Responses sent in full.
    pub tcp_served: u64,
    /// SYNs that found no free listening socket (backlog full).
    pub backlog_full: u64,
    /// UDP requests answered.
    pub udp_answered: u64,
    /// Frames dropped because the stack's receive queue was full.
    pub rx_overflow: u64,
}

impl BackendStats {
    /// Add another shard's results.
    pub fn merge(&mut self, other: &Self) {
        self.tcp_accepted += other.tcp_accepted;
        self.tcp_served += other.tcp_served;
        self.backlog_full += other.backlog_full;
        self.udp_answered += other.udp_answered;
        self.rx_overflow += other.rx_overflow;
    }
}

/// What one actor did.
#[derive(Clone, Debug)]
pub struct ActorStats {
    /// Source or backend name.
    pub name: String,
    /// `syn_flood`, `tcp_clients`, `backend`, …
    pub kind: &'static str,
    /// Frames it sent.
    pub packets_sent: u64,
    /// Frames delivered to it.
    pub packets_received: u64,
    /// Frames it could not send (non-IP frames of non-Ethernet captures).
    pub packets_skipped: u64,
    /// Errors (capture read errors), first one kept.
    pub error: Option<String>,
    /// TCP client results.
    pub tcp: Option<TcpStats>,
    /// UDP client results.
    pub udp: Option<UdpStats>,
    /// Backend results.
    pub backend: Option<BackendStats>,
    /// FTP client results.
    pub ftp: Option<ftp::FtpStats>,
}

impl ActorStats {
    /// Empty statistics.
    pub fn new(name: String, kind: &'static str) -> Self {
        Self {
            name,
            kind,
            packets_sent: 0,
            packets_received: 0,
            packets_skipped: 0,
            error: None,
            tcp: None,
            udp: None,
            backend: None,
            ftp: None,
        }
    }

    /// Add another shard's statistics of the same actor.
    pub fn merge(&mut self, other: &Self) {
        self.packets_sent += other.packets_sent;
        self.packets_received += other.packets_received;
        self.packets_skipped += other.packets_skipped;
        if self.error.is_none() {
            self.error.clone_from(&other.error);
        }
        if let (Some(mine), Some(theirs)) = (&mut self.tcp, &other.tcp) {
            mine.merge(theirs);
        }
        if let (Some(mine), Some(theirs)) = (&mut self.udp, &other.udp) {
            mine.merge(theirs);
        }
        if let (Some(mine), Some(theirs)) = (&mut self.backend, &other.backend) {
            mine.merge(theirs);
        }
        if let (Some(mine), Some(theirs)) = (&mut self.ftp, &other.ftp) {
            mine.merge(theirs);
        }
    }
}
