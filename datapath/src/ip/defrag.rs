//! Reassembly before connection tracking (`nf_defrag_ipv4` / `nf_defrag_ipv6` calling
//! `ip_defrag` / `nf_ct_frag6_gather`): fragments are held per datagram (source,
//! destination, protocol, identification) until the datagram is complete and consistent;
//! only then do the later stages see it, and it leaves as the fragments it came in (the
//! kernel refragments a reassembled datagram along the sizes it arrived in).
//!
//! As `ip_frag_queue` / `inet_frag_queue_insert` (RFC 5722 for IPv6, the same since Linux
//! 4.19 for IPv4): a fragment lying entirely inside data already queued is a duplicate
//! (dropped, the queue kept); any other overlap discards the whole datagram; a last
//! fragment (MF clear) that ends before data already queued, or a second last fragment
//! with another end, or data beyond a known end, discards it too. A queue lives
//! `ipfrag_time` from its first fragment, then is dropped silently (no "reassembly time
//! exceeded" for forwarded traffic: `ip_expire` skips it for conntrack's defrag users).
//! New fragments are dropped while the queued bytes exceed `ipfrag_high_thresh` (counted
//! per fragment frame length; the kernel counts skb truesize, a bit more).
//!
//! Deterministic: time is passed in; expired queues are swept when a fragment arrives.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::packet::{PacketMeta, checksum};
use crate::verdict::{NS_PER_SEC, TimeNs};

/// Limits (`net.ipv4.ipfrag_*`, `net.ipv6.ip6frag_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefragLimits {
    /// `ipfrag_high_thresh`, bytes (kernel default 4 MiB).
    pub high_thresh: u64,
    /// `ipfrag_low_thresh`, bytes (kernel default 3 MiB; kept for the kernel runner's
    /// sysctls: since Linux 4.17 it only bounds the eviction worker).
    pub low_thresh: u64,
    /// `ipfrag_time`, ns (kernel default 30 s).
    pub time_ns: TimeNs,
    /// IPv6 (`nf_conntrack_frag6_timeout`), ns (kernel default 60 s).
    pub time_v6_ns: TimeNs,
}

impl Default for DefragLimits {
    fn default() -> Self {
        Self {
            high_thresh: 4 * 1024 * 1024,
            low_thresh: 3 * 1024 * 1024,
            time_ns: 30 * NS_PER_SEC,
            time_v6_ns: 60 * NS_PER_SEC,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u32,
}

#[derive(Debug)]
struct Queue {
    created: TimeNs,
    /// (offset, end, frame), sorted by offset.
    pieces: Vec<(u32, u32, Vec<u8>)>,
    end: Option<u32>,
    bytes: u64,
}

/// What became of a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Gathered {
    /// Queued until the datagram is complete.
    Held,
    /// A duplicate of queued data: dropped, the queue kept.
    Duplicate,
    /// The datagram is discarded (overlap, inconsistent end) or the fragment could not be
    /// queued (memory above `ipfrag_high_thresh`).
    Failed,
    /// The datagram is complete: its fragments' frames in offset order.
    Complete(Vec<Vec<u8>>),
}

/// Counters (`ReasmReqds`, `ReasmOKs`, `ReasmFails`, `ReasmOverlaps`, `ReasmTimeout`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DefragCounters {
    /// Fragments received.
    pub fragments: u64,
    /// Datagrams reassembled.
    pub reassembled: u64,
    /// Datagrams discarded for an overlap.
    pub overlaps: u64,
    /// Datagrams discarded otherwise (inconsistent, memory).
    pub failed: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Datagrams that timed out incomplete.
    pub timeouts: u64,
}

/// The reassembly queues.
#[derive(Debug)]
pub struct Defrag {
    limits: DefragLimits,
    queues: HashMap<Key, Queue>,
    bytes: u64,
    counters: DefragCounters,
}

impl Defrag {
    /// No queues yet.
    pub fn new(limits: DefragLimits) -> Self {
        Self {
            limits,
            queues: HashMap::new(),
            bytes: 0,
            counters: DefragCounters::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> DefragCounters {
        self.counters
    }

    /// Datagrams waiting.
    pub fn pending(&self) -> usize {
        self.queues.len()
    }

    /// Forget queues older than `ipfrag_time`.
    pub fn expire(&mut self, now: TimeNs) {
        let limits = self.limits;
        let before = self.queues.len();
        let mut freed = 0;
        self.queues.retain(|key, q| {
            let time = if key.src.is_ipv4() {
                limits.time_ns
            } else {
                limits.time_v6_ns
            };
            let keep = now.saturating_sub(q.created) < time;
            if !keep {
                freed += q.bytes;
            }
            keep
        });
        self.bytes -= freed;
        self.counters.timeouts += (before - self.queues.len()) as u64;
    }

    /// Take one fragment (`meta` describes `frame`).
    pub fn gather(&mut self, now: TimeNs, meta: &PacketMeta, frame: &[u8]) -> Gathered {
        self.counters.fragments += 1;
        self.expire(now);
        let (Some(src), Some(dst), Some(proto)) = (meta.src, meta.dst, meta.proto) else {
            return Gathered::Failed;
        };
        let key = Key {
            src,
            dst,
            proto,
            id: meta.frag.id,
        };
        let offset = meta.frag.offset;
        let end = offset + crate::packet::fragments::fragment_len(meta);
        if !self.queues.contains_key(&key) && self.bytes > self.limits.high_thresh {
            self.counters.failed += 1;
            return Gathered::Failed;
        }
        let queue = self.queues.entry(key).or_insert_with(|| Queue {
            created: now,
            pieces: Vec::new(),
            end: None,
            bytes: 0,
        });
        match insert(queue, offset, end, meta.frag.more, frame) {
            Ok(true) => {
                self.bytes += frame.len() as u64;
                queue.bytes += frame.len() as u64;
            }
            Ok(false) => {
                self.counters.duplicates += 1;
                return Gathered::Duplicate;
            }
            Err(overlap) => {
                if overlap {
                    self.counters.overlaps += 1;
                } else {
                    self.counters.failed += 1;
                }
                self.discard(&key);
                return Gathered::Failed;
            }
        }
        if !complete(queue) {
            return Gathered::Held;
        }
        let queue = self.queues.remove(&key).expect("queue just filled");
        self.bytes -= queue.bytes;
        self.counters.reassembled += 1;
        Gathered::Complete(queue.pieces.into_iter().map(|(_, _, f)| f).collect())
    }

    /// Discard the datagram a fragment belongs to (an overlap the parser's fragment check
    /// caught before reassembly saw it: the kernel's `ip_frag_queue` would discard it too).
    pub fn discard_datagram(&mut self, meta: &PacketMeta) {
        let (Some(src), Some(dst), Some(proto)) = (meta.src, meta.dst, meta.proto) else {
            return;
        };
        let key = Key {
            src,
            dst,
            proto,
            id: meta.frag.id,
        };
        if self.queues.contains_key(&key) {
            self.counters.overlaps += 1;
            self.discard(&key);
        }
    }

    fn discard(&mut self, key: &Key) {
        if let Some(queue) = self.queues.remove(key) {
            self.bytes -= queue.bytes;
        }
    }
}

/// Queue a piece: `Ok(true)` queued, `Ok(false)` duplicate, `Err(overlap)` the datagram
/// is discarded (`overlap` false: inconsistent end).
fn insert(
    queue: &mut Queue,
    offset: u32,
    end: u32,
    more: bool,
    frame: &[u8],
) -> Result<bool, bool> {
    let known_end = queue.pieces.iter().map(|p| p.1).max().unwrap_or(0);
    if !more {
        if end < known_end || queue.end.is_some_and(|e| e != end) {
            return Err(false);
        }
    } else if queue.end.is_some_and(|e| end > e) {
        return Err(false);
    }
    for &(start, stop, _) in &queue.pieces {
        if end <= start || offset >= stop {
            continue;
        }
        return if offset >= start && end <= stop {
            Ok(false)
        } else {
            Err(true)
        };
    }
    if !more {
        queue.end = Some(end);
    }
    let at = queue.pieces.partition_point(|p| p.0 < offset);
    queue.pieces.insert(at, (offset, end, frame.to_vec()));
    Ok(true)
}

fn complete(queue: &Queue) -> bool {
    let Some(end) = queue.end else { return false };
    let mut covered = 0;
    for &(start, stop, _) in &queue.pieces {
        if start != covered {
            return false;
        }
        covered = stop;
    }
    covered == end
}

/// The datagram a complete set of fragments makes (`frames` in offset order, IP header
/// at `l3`), as `ip_frag_reasm` / `nf_ct_frag6_reasm` leave it for the stages after
/// reassembly: the first fragment's header with the whole length; IPv4 offset and MF
/// cleared, DF kept when the largest fragment had it (`max_df_size`), the header checksum
/// recomputed; IPv6 without its fragment header. `None` for an IPv6 fragment header that
/// does not follow the fixed header.
pub fn reassembled(frames: &[Vec<u8>], l3: usize) -> Option<Vec<u8>> {
    let first = frames.first()?.get(l3..)?;
    let v6 = first.first()? >> 4 == 6;
    let mut data: Vec<u8> = Vec::new();
    let mut largest = (0, false);
    for frame in frames {
        let ip = frame.get(l3..)?;
        let (start, end, offset) = if v6 {
            if ip.get(6) != Some(&44) {
                return None;
            }
            let field = u16::from_be_bytes([*ip.get(42)?, *ip.get(43)?]);
            let end = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            (48, end, usize::from(field & 0xfff8))
        } else {
            let hlen = usize::from(ip[0] & 0x0f) * 4;
            let field = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
            if end_of(ip) > largest.0 {
                largest = (end_of(ip), field & 0x4000 != 0);
            }
            (hlen, end_of(ip), usize::from(field & 0x1fff) * 8)
        };
        let piece = ip.get(start..end)?;
        if data.len() < offset + piece.len() {
            data.resize(offset + piece.len(), 0);
        }
        data[offset..offset + piece.len()].copy_from_slice(piece);
    }
    let mut out = frames[0].get(..l3)?.to_vec();
    if v6 {
        out.extend_from_slice(first.get(..40)?);
        out[l3 + 6] = *first.get(40)?;
        let length = u16::try_from(data.len()).ok()?;
        out[l3 + 4..l3 + 6].copy_from_slice(&length.to_be_bytes());
    } else {
        let hlen = usize::from(first[0] & 0x0f) * 4;
        out.extend_from_slice(first.get(..hlen)?);
        let total = u16::try_from(hlen + data.len()).ok()?;
        out[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        let flags: u16 = if largest.1 { 0x4000 } else { 0 };
        out[l3 + 6..l3 + 8].copy_from_slice(&flags.to_be_bytes());
        out[l3 + 10..l3 + 12].fill(0);
        let sum = checksum::field_bytes(checksum::partial(&out[l3..l3 + hlen]));
        out[l3 + 10..l3 + 12].copy_from_slice(&sum);
    }
    out.extend_from_slice(&data);
    Some(out)
}

/// IPv4 total length, bounded by the bytes there.
fn end_of(ip: &[u8]) -> usize {
    let total = ip
        .get(2..4)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    total.min(ip.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::FragInfo;

    fn piece(id: u32, offset: u32, len: u32, more: bool) -> PacketMeta {
        PacketMeta {
            src: Some("198.51.100.1".parse().unwrap()),
            dst: Some("192.0.2.1".parse().unwrap()),
            proto: Some(17),
            payload_len: len,
            frag: FragInfo {
                is_fragment: true,
                offset,
                more,
                id,
            },
            ..PacketMeta::default()
        }
    }

    fn gather(d: &mut Defrag, now: TimeNs, meta: &PacketMeta) -> Gathered {
        d.gather(now, meta, &[meta.frag.offset as u8; 40])
    }

    #[test]
    fn a_complete_set_is_released_in_offset_order() {
        let mut d = Defrag::new(DefragLimits::default());
        assert_eq!(gather(&mut d, 0, &piece(1, 16, 8, false)), Gathered::Held);
        let Gathered::Complete(frames) = gather(&mut d, 1, &piece(1, 0, 16, true)) else {
            panic!("complete");
        };
        assert_eq!((frames[0][0], frames[1][0]), (0, 16));
        assert_eq!((d.pending(), d.counters().reassembled), (0, 1));
    }

    #[test]
    fn overlaps_discard_the_datagram_and_duplicates_only_themselves() {
        let mut d = Defrag::new(DefragLimits::default());
        assert_eq!(gather(&mut d, 0, &piece(2, 0, 24, true)), Gathered::Held);
        assert_eq!(
            gather(&mut d, 0, &piece(2, 8, 8, true)),
            Gathered::Duplicate
        );
        assert_eq!(d.pending(), 1);
        assert_eq!(
            gather(&mut d, 0, &piece(2, 16, 16, false)),
            Gathered::Failed
        );
        assert_eq!((d.pending(), d.counters().overlaps), (0, 1));
        // An end before data already queued is inconsistent.
        assert_eq!(gather(&mut d, 0, &piece(3, 16, 8, true)), Gathered::Held);
        assert_eq!(gather(&mut d, 0, &piece(3, 0, 8, false)), Gathered::Failed);
    }

    #[test]
    fn queues_time_out_and_memory_is_bounded() {
        let limits = DefragLimits {
            high_thresh: 150,
            ..DefragLimits::default()
        };
        let mut d = Defrag::new(limits);
        for id in 0..4 {
            assert_eq!(gather(&mut d, 0, &piece(id, 0, 8, true)), Gathered::Held);
        }
        assert_eq!(gather(&mut d, 0, &piece(9, 0, 8, true)), Gathered::Failed);
        let later = limits.time_ns;
        assert_eq!(gather(&mut d, later, &piece(9, 0, 8, true)), Gathered::Held);
        assert_eq!(d.counters().timeouts, 4);
        assert_eq!(d.pending(), 1);
    }
}
