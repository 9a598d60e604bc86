//! Connection tracking for iptables-style NAT: remembers, per flow, the translated flow so
//! that later packets of the same flow get the same rewrite and replies get the reverse.
//!
//! A bounded table ([`CONNTRACK_CAPACITY`] by default). **Overflow policy: drop new** — a
//! flow that would need a new entry in a full table is not tracked (the caller counts and
//! drops it, like `nf_conntrack: table full, dropping packet`). Entries expire after an idle
//! timeout per protocol, in virtual time (a single ordered timer queue). When a source NAT
//! would make two flows share one reply tuple, the source port is moved up to the next free
//! port, deterministically. This module does not rewrite packets (see [`super`]) and
//! does not model TCP states.
//!
//! Both flow indexes are keyed by packet fields: they hash with keyed SipHash-1-3
//! ([`crate::hash::keyed`], keys from the run's seed); entry ids (ours) use the fast hash.
//! No map is iterated, so hash order never reaches any output.

use std::collections::{BTreeSet, HashMap};

use crate::hash::fast::FastBuild;
use crate::hash::keyed::{DEFAULT_SEED, KeyedState};
pub use crate::packet::flow::FlowKey;
use crate::packet::ip_proto;
use crate::verdict::{NS_PER_SEC, TimeNs};

/// Default capacity (entries; each covers both directions).
pub const CONNTRACK_CAPACITY: usize = 1 << 18;
/// Idle timeout of TCP entries (`nf_conntrack_tcp_timeout_established`, 5 days).
pub const TCP_IDLE_TIMEOUT: TimeNs = 432_000 * NS_PER_SEC;
/// Idle timeout of UDP and other entries (`nf_conntrack_udp_timeout_stream`).
pub const OTHER_IDLE_TIMEOUT: TimeNs = 120 * NS_PER_SEC;
const PORT_SEARCH_LIMIT: u16 = 1024;

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
    entries: HashMap<u32, Entry, FastBuild>,
    by_original: HashMap<FlowKey, u32, KeyedState>,
    by_reply: HashMap<FlowKey, u32, KeyedState>,
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
    /// An empty table holding at most `capacity` entries, keyed from
    /// [`DEFAULT_SEED`].
    pub fn new(capacity: usize) -> Self {
        Self::keyed(capacity, DEFAULT_SEED)
    }

    /// An empty table holding at most `capacity` entries, its flow indexes keyed from
    /// `hash_seed` (the run's seed).
    pub fn keyed(capacity: usize, hash_seed: u64) -> Self {
        Self {
            entries: HashMap::default(),
            by_original: HashMap::with_hasher(KeyedState::new(hash_seed, 0x6374_6f72_6967_696e)),
            by_reply: HashMap::with_hasher(KeyedState::new(hash_seed, 0x6374_7265_706c_7921)),
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

    /// The most entries it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
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

    /// Like [`ConnTrack::lookup`], also saying in which direction the flow is tracked.
    pub fn lookup_directed(
        &mut self,
        now: TimeNs,
        flow: &FlowKey,
    ) -> Option<(Direction, Translation)> {
        let direction = if self.by_original.contains_key(flow) {
            Direction::Original
        } else {
            Direction::Reply
        };
        self.lookup(now, flow).map(|found| (direction, found))
    }

    /// Whether a flow with this reply tuple (`translated.reversed()`) is tracked.
    pub fn reply_taken(&self, translated: &FlowKey) -> bool {
        self.by_reply.contains_key(&translated.reversed())
    }

    /// The translated flow a new NAT entry gets, chosen like the kernel's
    /// `get_unique_tuple`: unchanged when its reply tuple is free; otherwise, when `ports`
    /// allows moving the source port, the next free port of `ports` after the wanted one
    /// (wrapping; the kernel starts from a random offset instead); `None` (counted) when
    /// nothing is free.
    pub fn unique_tuple(&mut self, translated: FlowKey, ports: SourcePorts) -> Option<FlowKey> {
        let (min, max) = match ports {
            SourcePorts::Fixed if self.reply_taken(&translated) => {
                self.counters.port_exhausted += 1;
                return None;
            }
            SourcePorts::Fixed => return Some(translated),
            SourcePorts::Range(min, max) => (min.min(max), min.max(max)),
            SourcePorts::KernelDefault => kernel_default_ports(translated.source.port()),
        };
        let wanted = translated.source.port();
        if (min..=max).contains(&wanted) && !self.reply_taken(&translated) {
            return Some(translated);
        }
        let size = u32::from(max - min) + 1;
        let start = if (min..=max).contains(&wanted) {
            u32::from(wanted - min) + 1
        } else {
            0
        };
        let mut candidate = translated;
        for step in 0..size.min(u32::from(PORT_SEARCH_LIMIT)) {
            let port = min as u32 + (start + step) % size;
            candidate.source.set_port(port as u16);
            if !self.reply_taken(&candidate) {
                return Some(candidate);
            }
        }
        self.counters.port_exhausted += 1;
        None
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

/// Which way a tracked packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The direction of the flow's first packet.
    Original,
    /// The reply direction.
    Reply,
}

/// Which source ports a new NAT entry may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourcePorts {
    /// The ports must not change (destination NAT): a taken reply tuple is refused.
    Fixed,
    /// Any port of this inclusive range (`--to-source addr:min-max`, `--to-ports`).
    Range(u16, u16),
    /// The kernel's default class of the original port: 1-511, 600-1023 or 1024-65535.
    KernelDefault,
}

/// The kernel's default source-port class of `port` (`nf_nat_l4proto_unique_tuple`).
pub fn kernel_default_ports(port: u16) -> (u16, u16) {
    match port {
        0..512 => (1, 511),
        512..1024 => (600, 1023),
        _ => (1024, 65535),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(source: &str, destination: &str) -> FlowKey {
        FlowKey {
            proto: ip_proto::TCP,
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[test]
    fn unique_tuple_keeps_a_free_port_and_moves_a_taken_one_within_its_class() {
        let mut table = ConnTrack::new(8);
        let wanted = flow("10.0.3.1:40000", "10.0.3.2:80");
        let kept = table
            .unique_tuple(wanted, SourcePorts::KernelDefault)
            .unwrap();
        assert_eq!(kept, wanted);
        table.insert(0, flow("198.51.100.1:40000", "10.0.3.2:80"), kept);
        let moved = table
            .unique_tuple(wanted, SourcePorts::KernelDefault)
            .unwrap();
        assert_eq!(moved.source.port(), 40001);
        assert_eq!(table.unique_tuple(wanted, SourcePorts::Fixed), None);
        let low = flow("10.0.3.1:1023", "10.0.3.2:80");
        table.insert(0, flow("198.51.100.2:1023", "10.0.3.2:80"), low);
        let wrapped = table.unique_tuple(low, SourcePorts::KernelDefault).unwrap();
        assert_eq!(wrapped.source.port(), 600);
        let ranged = table
            .unique_tuple(wanted, SourcePorts::Range(20000, 20001))
            .unwrap();
        assert_eq!(ranged.source.port(), 20000);
        assert_eq!(kernel_default_ports(22), (1, 511));
    }
}
