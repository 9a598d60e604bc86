//! Connection tracking for iptables-style NAT: remembers, per flow, the translated flow so
//! that later packets of the same flow get the same rewrite and replies get the reverse.
//!
//! A bounded table ([`CONNTRACK_CAPACITY`] by default). **Overflow policy: drop new** — a
//! flow that would need a new entry in a full table is not tracked (the caller counts and
//! drops it, like `nf_conntrack: table full, dropping packet`). Entries expire after an idle
//! timeout per protocol, in virtual time (a single ordered timer queue). When a source NAT
//! would make two flows share one reply tuple, the source port is moved up to the next free
//! port, deterministically. This module does not rewrite packets (see [`crate::nat`]) and
//! does not model TCP states.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use crate::packet::{PacketMeta, ip_proto};
use crate::verdict::{NS_PER_SEC, TimeNs};

/// Default capacity (entries; each covers both directions).
pub const CONNTRACK_CAPACITY: usize = 1 << 18;
/// Idle timeout of TCP entries (`nf_conntrack_tcp_timeout_established`, 5 days).
pub const TCP_IDLE_TIMEOUT: TimeNs = 432_000 * NS_PER_SEC;
/// Idle timeout of UDP and other entries (`nf_conntrack_udp_timeout_stream`).
pub const OTHER_IDLE_TIMEOUT: TimeNs = 120 * NS_PER_SEC;
const PORT_SEARCH_LIMIT: u16 = 1024;

/// A flow as seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// IP protocol.
    pub proto: u8,
    /// Source address and port (port 0 without ports).
    pub source: SocketAddr,
    /// Destination address and port.
    pub destination: SocketAddr,
}

impl FlowKey {
    /// The flow of a parsed TCP/UDP packet.
    pub fn from_meta(meta: &PacketMeta) -> Option<Self> {
        let proto = meta.proto?;
        if proto != ip_proto::TCP && proto != ip_proto::UDP {
            return None;
        }
        Some(Self {
            proto,
            source: SocketAddr::new(meta.src?, meta.sport?),
            destination: SocketAddr::new(meta.dst?, meta.dport?),
        })
    }

    /// The same flow seen from the other end.
    pub fn reversed(&self) -> Self {
        Self {
            proto: self.proto,
            source: self.destination,
            destination: self.source,
        }
    }
}

/// What a tracked packet becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The rewritten flow.
    pub to: FlowKey,
}

#[derive(Clone, Debug)]
struct Entry {
    original: FlowKey,
    translated: FlowKey,
    expires: TimeNs,
}

/// Counters of the tracking table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnTrackCounters {
    /// Entries created.
    pub created: u64,
    /// Entries expired.
    pub expired: u64,
    /// New flows refused because the table was full.
    pub overflows: u64,
    /// New flows refused because no free source port was found.
    pub port_exhausted: u64,
}

/// The bounded tracking table.
#[derive(Clone, Debug)]
pub struct ConnTrack {
    entries: HashMap<u32, Entry>,
    by_original: HashMap<FlowKey, u32>,
    by_reply: HashMap<FlowKey, u32>,
    timers: BTreeSet<(TimeNs, u32)>,
    next_id: u32,
    capacity: usize,
    report_full: bool,
    /// Counters.
    pub counters: ConnTrackCounters,
}

fn idle_timeout(proto: u8) -> TimeNs {
    if proto == ip_proto::TCP {
        TCP_IDLE_TIMEOUT
    } else {
        OTHER_IDLE_TIMEOUT
    }
}

impl ConnTrack {
    /// An empty table holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            by_original: HashMap::new(),
            by_reply: HashMap::new(),
            timers: BTreeSet::new(),
            next_id: 0,
            capacity,
            report_full: false,
            counters: ConnTrackCounters::default(),
        }
    }

    /// QA: refuse new flows as if the table were full (drop new, `overflows` counted), or
    /// stop doing so.
    pub fn set_report_full(&mut self, full: bool) {
        self.report_full = full;
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No live entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Expire every entry idle past its timeout at `now`.
    pub fn expire(&mut self, now: TimeNs) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(entry) = self.entries.get(&id) else {
                continue;
            };
            if entry.expires > now {
                self.timers.insert((entry.expires, id));
                continue;
            }
            let entry = self.entries.remove(&id).expect("entry present");
            self.by_original.remove(&entry.original);
            self.by_reply.remove(&entry.translated.reversed());
            self.counters.expired += 1;
        }
    }

    /// The translation of a packet of a tracked flow (either direction); refreshes it.
    pub fn lookup(&mut self, now: TimeNs, flow: &FlowKey) -> Option<Translation> {
        self.expire(now);
        if let Some(&id) = self.by_original.get(flow) {
            let entry = self.entries.get_mut(&id)?;
            entry.expires = now + idle_timeout(flow.proto);
            return Some(Translation {
                to: entry.translated,
            });
        }
        let &id = self.by_reply.get(flow)?;
        let entry = self.entries.get_mut(&id)?;
        entry.expires = now + idle_timeout(flow.proto);
        Some(Translation {
            to: entry.original.reversed(),
        })
    }

    /// Track a new flow translated to `translated`; the source port moves up when the reply
    /// tuple is taken. Returns the final translated flow, or `None` (counted) when the table
    /// is full or no port is free.
    pub fn insert(
        &mut self,
        now: TimeNs,
        original: FlowKey,
        translated: FlowKey,
    ) -> Option<FlowKey> {
        self.expire(now);
        if self.report_full || self.entries.len() >= self.capacity {
            self.counters.overflows += 1;
            return None;
        }
        let mut candidate = translated;
        let mut tries = 0;
        while self.by_reply.contains_key(&candidate.reversed()) {
            tries += 1;
            if tries > PORT_SEARCH_LIMIT {
                self.counters.port_exhausted += 1;
                return None;
            }
            let port = candidate.source.port().checked_add(1).unwrap_or(1024);
            candidate.source.set_port(port);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let expires = now + idle_timeout(original.proto);
        self.entries.insert(
            id,
            Entry {
                original,
                translated: candidate,
                expires,
            },
        );
        self.by_original.insert(original, id);
        self.by_reply.insert(candidate.reversed(), id);
        self.timers.insert((expires, id));
        self.counters.created += 1;
        Some(candidate)
    }
}
