//! Fragment overlap detection: the one invalid-packet check that needs state across packets.
//!
//! Tracks the byte ranges seen per datagram (source, destination, protocol, id) and flags a
//! fragment that partly overlaps data already seen ([`InvalidReason::FragmentOverlap`], the
//! Teardrop / RFC 5722 case). Exact duplicates are counted but are not invalid (networks
//! duplicate packets). It does not reassemble: payload bytes are never kept.
//!
//! Bounded: at most [`FRAGMENT_TRACKER_CAPACITY`] datagrams, each with at most
//! [`MAX_RANGES_PER_DATAGRAM`] ranges, forgotten after [`FRAGMENT_TIMEOUT_NS`] (Linux's
//! `ipfrag_time`). Overflow policy when full after purging expired entries: the new
//! datagram is not tracked (`untracked` counter); its fragments pass unchecked. For QA,
//! [`FragmentTracker::set_report_full`] applies that policy as if the table were full.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use super::{InvalidReason, PacketMeta};
use crate::hash::keyed::{DEFAULT_SEED, KeyedState, write_address};
use crate::verdict::{NS_PER_SEC, TimeNs};

/// Datagrams tracked at once.
pub const FRAGMENT_TRACKER_CAPACITY: usize = 8_192;
/// Ranges remembered per datagram; more fragments than this make the datagram untracked.
pub const MAX_RANGES_PER_DATAGRAM: usize = 64;
/// A datagram is forgotten this long after its last fragment (Linux `ipfrag_time`).
pub const FRAGMENT_TIMEOUT_NS: TimeNs = 30 * NS_PER_SEC;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DatagramKey {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u32,
}

impl Hash for DatagramKey {
    /// Packed (addresses as one integer) for the keyed hash.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        write_address(state, &self.src);
        write_address(state, &self.dst);
        state.write_u8(self.proto);
        state.write_u32(self.id);
    }
}

#[derive(Debug)]
struct Datagram {
    /// Half-open byte ranges, unsorted.
    ranges: Vec<(u32, u32)>,
    /// Total length once the last fragment (MF clear) was seen.
    end: Option<u32>,
    last_seen: TimeNs,
}

/// Counters of the fragment tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FragmentCounters {
    /// Fragments observed.
    pub fragments: u64,
    /// Fragments flagged as overlapping.
    pub overlaps: u64,
    /// Exact duplicate fragments (not invalid).
    pub duplicates: u64,
    /// Datagrams whose fragments all arrived.
    pub completed: u64,
    /// Datagrams forgotten after the timeout.
    pub expired: u64,
    /// Fragments not checked because the table (or a datagram's range list) was full.
    pub untracked: u64,
}

impl FragmentCounters {
    /// Add another tracker's counters.
    pub fn merge(&mut self, other: &Self) {
        self.fragments += other.fragments;
        self.overlaps += other.overlaps;
        self.duplicates += other.duplicates;
        self.completed += other.completed;
        self.expired += other.expired;
        self.untracked += other.untracked;
    }
}

/// Bounded per-datagram range tracker. Time is passed in; nothing reads a clock.
/// The datagram index is keyed by packet fields: keyed SipHash-1-3 ([`crate::hash::keyed`]).
#[derive(Debug)]
pub struct FragmentTracker {
    datagrams: HashMap<DatagramKey, Datagram, KeyedState>,
    counters: FragmentCounters,
    report_full: bool,
}

impl Default for FragmentTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl FragmentTracker {
    /// An empty tracker, keyed from [`DEFAULT_SEED`].
    pub fn new() -> Self {
        Self::keyed(DEFAULT_SEED)
    }

    /// An empty tracker, its index keyed from `hash_seed` (the run's seed).
    pub fn keyed(hash_seed: u64) -> Self {
        Self {
            datagrams: HashMap::with_hasher(KeyedState::new(hash_seed, 0x6672_6167_6d65_6e74)),
            counters: FragmentCounters::default(),
            report_full: false,
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> FragmentCounters {
        self.counters
    }

    /// QA: new datagrams are refused as if the table were full (or no longer, with `false`).
    pub fn set_report_full(&mut self, full: bool) {
        self.report_full = full;
    }

    /// Datagrams currently tracked.
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Look at one packet; returns `Some(FragmentOverlap)` when it overlaps earlier data of
    /// its datagram. Non-fragments and already-invalid packets are ignored.
    pub fn observe(&mut self, now: TimeNs, meta: &PacketMeta) -> Option<InvalidReason> {
        let (Some(src), Some(dst), Some(proto)) = (meta.src, meta.dst, meta.proto) else {
            return None;
        };
        if !meta.frag.is_fragment || meta.invalid.is_some() {
            return None;
        }
        self.counters.fragments += 1;
        let key = DatagramKey {
            src,
            dst,
            proto,
            id: meta.frag.id,
        };
        let start = meta.frag.offset;
        let range = (start, start + fragment_len(meta));
        if !self.datagrams.contains_key(&key) && !self.make_room(now) {
            self.counters.untracked += 1;
            return None;
        }
        let datagram = self.datagrams.entry(key).or_insert_with(|| Datagram {
            ranges: Vec::new(),
            end: None,
            last_seen: now,
        });
        datagram.last_seen = now;
        if datagram.ranges.contains(&range) {
            self.counters.duplicates += 1;
            return None;
        }
        if datagram
            .ranges
            .iter()
            .any(|&(a, b)| range.0 < b && a < range.1)
        {
            self.counters.overlaps += 1;
            return Some(InvalidReason::FragmentOverlap);
        }
        if datagram.ranges.len() == MAX_RANGES_PER_DATAGRAM {
            self.counters.untracked += 1;
            return None;
        }
        datagram.ranges.push(range);
        if !meta.frag.more {
            datagram.end = Some(range.1);
        }
        if is_complete(datagram) {
            self.datagrams.remove(&key);
            self.counters.completed += 1;
        }
        None
    }

    /// Free a slot if the table is full, by forgetting expired datagrams.
    fn make_room(&mut self, now: TimeNs) -> bool {
        if self.report_full {
            return false;
        }
        if self.datagrams.len() < FRAGMENT_TRACKER_CAPACITY {
            return true;
        }
        let before = self.datagrams.len();
        self.datagrams
            .retain(|_, d| now.saturating_sub(d.last_seen) < FRAGMENT_TIMEOUT_NS);
        self.counters.expired += (before - self.datagrams.len()) as u64;
        self.datagrams.len() < FRAGMENT_TRACKER_CAPACITY
    }
}

/// The bytes of the datagram this fragment carries: its IP payload after the header (and
/// IPv6 extension headers). Not the transport payload: a first fragment's `payload_len` is
/// its transport header's (a UDP length covers the whole reassembled datagram, and the
/// transport header itself is fragment data).
pub fn fragment_len(meta: &PacketMeta) -> u32 {
    if meta.frag.offset != 0 || meta.l4_offset == 0 {
        return meta.payload_len;
    }
    let headers = u32::from(meta.l4_offset.saturating_sub(meta.l3_offset));
    meta.ip_len.saturating_sub(headers)
}

fn is_complete(datagram: &Datagram) -> bool {
    let Some(end) = datagram.end else {
        return false;
    };
    let covered: u64 = datagram.ranges.iter().map(|&(a, b)| u64::from(b - a)).sum();
    // Ranges never overlap, so full coverage of [0, end) is a matter of total length.
    covered == u64::from(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::FragInfo;

    fn fragment(id: u32, offset: u32, len: u32, more: bool) -> PacketMeta {
        PacketMeta {
            src: Some("192.0.2.1".parse().unwrap()),
            dst: Some("192.0.2.2".parse().unwrap()),
            proto: Some(17),
            payload_len: len,
            // A first fragment as the parser leaves it: IPv4 header at 14, transport at 34.
            l3_offset: if offset == 0 { 14 } else { 0 },
            l4_offset: if offset == 0 { 34 } else { 0 },
            ip_len: 20 + len,
            frag: FragInfo {
                is_fragment: true,
                offset,
                more,
                id,
            },
            ..PacketMeta::default()
        }
    }

    #[test]
    fn in_order_fragments_complete_without_error() {
        let mut t = FragmentTracker::new();
        assert_eq!(t.observe(0, &fragment(7, 0, 1480, true)), None);
        assert_eq!(t.observe(1, &fragment(7, 1480, 1480, true)), None);
        assert_eq!(t.observe(2, &fragment(7, 2960, 100, false)), None);
        assert_eq!((t.len(), t.counters().completed), (0, 1));
    }

    /// A first UDP fragment's UDP length covers the whole datagram (the parser's
    /// `payload_len`); its fragment data is its own IP payload. Seen in a real capture
    /// (stopddos__amp.dns.RRSIG.fragmented, last fragment before the middle one), where the
    /// kernel reassembles and the tracker used to call the later fragments overlapping.
    #[test]
    fn a_first_udp_fragment_covers_its_own_bytes_not_the_udp_length() {
        let mut t = FragmentTracker::new();
        let mut first = fragment(3, 0, 1456, true);
        first.payload_len = 3930 - 8;
        assert_eq!(t.observe(0, &first), None);
        assert_eq!(t.observe(1, &fragment(3, 2912, 1018, false)), None);
        assert_eq!(t.observe(2, &fragment(3, 1456, 1456, true)), None);
        assert_eq!(
            (t.len(), t.counters().completed, t.counters().overlaps),
            (0, 1, 0)
        );
    }

    #[test]
    fn teardrop_overlap_is_flagged_and_duplicates_are_not() {
        let mut t = FragmentTracker::new();
        assert_eq!(t.observe(0, &fragment(9, 0, 36, true)), None);
        assert_eq!(t.observe(0, &fragment(9, 0, 36, true)), None);
        assert_eq!(
            t.observe(0, &fragment(9, 24, 4, false)),
            Some(InvalidReason::FragmentOverlap)
        );
        let c = t.counters();
        assert_eq!((c.duplicates, c.overlaps), (1, 1));
    }

    #[test]
    fn different_datagrams_do_not_interfere() {
        let mut t = FragmentTracker::new();
        assert_eq!(t.observe(0, &fragment(1, 0, 100, true)), None);
        assert_eq!(t.observe(0, &fragment(2, 0, 100, true)), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_full_table_purges_expired_then_stops_tracking() {
        let mut t = FragmentTracker::new();
        for id in 0..FRAGMENT_TRACKER_CAPACITY as u32 {
            t.observe(0, &fragment(id, 0, 8, true));
        }
        assert_eq!(t.len(), FRAGMENT_TRACKER_CAPACITY);
        t.observe(1, &fragment(u32::MAX, 0, 8, true));
        assert_eq!(t.counters().untracked, 1);
        t.observe(FRAGMENT_TIMEOUT_NS, &fragment(u32::MAX, 0, 8, true));
        assert_eq!(t.counters().expired, FRAGMENT_TRACKER_CAPACITY as u64);
        assert_eq!(t.len(), 1);
    }
}
