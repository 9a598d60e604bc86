//! `pcap` source: replay a capture in virtual time — with its own timing scaled by `speed`,
//! at a fixed `pps`, or all at once (`top_speed`) — `loops` times, optionally rewriting
//! addresses (capture address → scenario address, checksums updated incrementally).
//!
//! Frames of other link types are given an Ethernet header (the appliance sees Ethernet);
//! non-IP frames of non-Ethernet captures are skipped and counted. Each receive queue
//! replays the packets whose symmetric flow hash selects it.
//!
//! Not here: reading the file format (that is [`crate::capture::CaptureReader`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use datapath::TimeNs;
use datapath::packet::builder::{DST_MAC, SRC_MAC};
use datapath::packet::{L3, LinkType, PacketMeta, ParseOptions, ip_proto, parse_with};
use datapath::verdict::NS_PER_SEC;

use super::{Actor, ActorStats, Outbox};
use crate::capture::CaptureReader;
use crate::net::world::{HostId, queue_of_symmetric};
use crate::scenario::PcapSpec;

/// Most packets sent in one wake at top speed before yielding to other events.
const TOP_SPEED_BATCH: usize = 1024;

/// How packet times are chosen.
#[derive(Clone, Copy, Debug)]
enum Timing {
    Capture { speed: f64 },
    Fixed { interval_ns: f64 },
    TopSpeed,
}

/// A capture replay, as seen by one receive queue.
pub struct PcapSource {
    path: PathBuf,
    reader: Option<CaptureReader>,
    host: HostId,
    timing: Timing,
    loops_left: u32,
    rewrite: BTreeMap<IpAddr, IpAddr>,
    queue: u16,
    queues: u16,
    /// Virtual time the first loop starts at.
    start_time: TimeNs,
    /// Virtual time the current loop starts at.
    loop_start: TimeNs,
    /// First capture timestamp of the current loop.
    loop_first_ts: Option<u64>,
    /// Time of the last packet (any queue).
    last_time: TimeNs,
    /// Packets read so far (any queue, all loops).
    read: u64,
    pending: Option<(TimeNs, Vec<u8>)>,
    stats: ActorStats,
}

impl PcapSource {
    /// Open the capture (a control-plane error if it cannot be opened).
    pub fn new(
        name: String,
        spec: &PcapSpec,
        path: PathBuf,
        host: HostId,
        (queue, queues): (u16, u16),
    ) -> anyhow::Result<Self> {
        let reader = CaptureReader::open(&path)?;
        let timing = match (spec.speed, spec.pps, spec.top_speed) {
            (_, _, true) => Timing::TopSpeed,
            (_, Some(pps), _) => Timing::Fixed {
                interval_ns: NS_PER_SEC as f64 / pps.0 as f64,
            },
            (speed, None, false) => Timing::Capture {
                speed: speed.unwrap_or(1.0),
            },
        };
        Ok(Self {
            path,
            reader: Some(reader),
            host,
            timing,
            loops_left: spec.loops.max(1),
            start_time: spec.start.0,
            loop_start: spec.start.0,
            loop_first_ts: None,
            rewrite: spec.rewrite.clone(),
            queue,
            queues,
            last_time: spec.start.0,
            read: 0,
            pending: None,
            stats: ActorStats::new(name, "pcap"),
        })
    }

    /// The next packet for this queue, with its time; `None` at the end of the last loop.
    fn next_packet(&mut self) -> Option<(TimeNs, Vec<u8>)> {
        loop {
            let reader = self.reader.as_mut()?;
            let packet = match reader.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => {
                    self.next_loop();
                    continue;
                }
                Err(error) => {
                    self.stats.error.get_or_insert(error.to_string());
                    self.reader = None;
                    return None;
                }
            };
            let (ts_ns, link, orig_len) = (packet.ts_ns, packet.link, packet.orig_len);
            let frame = to_ethernet(link, packet.data, orig_len);
            let time = self.time_of(ts_ns);
            self.last_time = time;
            let Some(mut frame) = frame else {
                self.stats.packets_skipped += 1;
                continue;
            };
            let meta = parse_with(
                &ParseOptions::default(),
                LinkType::Ethernet,
                &frame,
                frame.len() as u32,
                0,
            );
            rewrite_addresses(&mut frame, &meta, &self.rewrite);
            if self.queue_of(&meta) == self.queue {
                return Some((time, frame));
            }
        }
    }

    fn next_loop(&mut self) {
        self.loops_left -= 1;
        self.reader = None;
        if self.loops_left == 0 {
            return;
        }
        match CaptureReader::open(&self.path) {
            Ok(reader) => self.reader = Some(reader),
            Err(error) => {
                self.stats.error.get_or_insert(error.to_string());
            }
        }
        // The next loop starts one microsecond after the last packet of this one.
        self.loop_start = self.last_time + 1_000;
        self.loop_first_ts = None;
    }

    fn time_of(&mut self, ts_ns: u64) -> TimeNs {
        let index = self.read;
        self.read += 1;
        match self.timing {
            Timing::TopSpeed => self.start_time,
            Timing::Fixed { interval_ns } => {
                self.start_time + (index as f64 * interval_ns) as TimeNs
            }
            Timing::Capture { speed } => {
                let first = *self.loop_first_ts.get_or_insert(ts_ns);
                let offset = ts_ns.saturating_sub(first) as f64 / speed;
                (self.loop_start + offset as TimeNs).max(self.last_time)
            }
        }
    }

    fn queue_of(&self, meta: &PacketMeta) -> u16 {
        match (meta.src, meta.dst) {
            (Some(src), Some(dst)) => queue_of_symmetric(
                (src, meta.sport.unwrap_or(0)),
                (dst, meta.dport.unwrap_or(0)),
                meta.proto.unwrap_or(0),
                self.queues,
            ),
            _ => 0,
        }
    }
}

impl Actor for PcapSource {
    fn wake(&mut self, now: TimeNs, out: &mut Outbox) -> Option<TimeNs> {
        let mut sent = 0;
        loop {
            let (time, frame) = match self.pending.take() {
                Some(pending) => pending,
                None => self.next_packet()?,
            };
            if time > now || sent == TOP_SPEED_BATCH {
                self.pending = Some((time, frame));
                return Some(time.max(now));
            }
            sent += 1;
            self.stats.packets_sent += 1;
            out.push((self.host, frame));
        }
    }

    fn deliver(&mut self, _now: TimeNs, _frame: &[u8], _out: &mut Outbox) -> Option<TimeNs> {
        None
    }

    fn stats(&self) -> ActorStats {
        self.stats.clone()
    }
}

/// The frame as Ethernet: Ethernet frames as they are; IP packets of other link types behind
/// a synthetic Ethernet header; `None` for non-IP frames of other link types.
fn to_ethernet(link: LinkType, data: &[u8], orig_len: u32) -> Option<Vec<u8>> {
    if link == LinkType::Ethernet {
        return Some(data.to_vec());
    }
    let meta = parse_with(&ParseOptions::default(), link, data, orig_len, 0);
    let ethertype: u16 = match meta.l3 {
        L3::Ipv4 => 0x0800,
        L3::Ipv6 => 0x86dd,
        _ => return None,
    };
    let payload = data.get(usize::from(meta.l3_offset)..)?;
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    Some(frame)
}

/// One's-complement checksum update for replacing `old` by `new` (RFC 1624, eqn. 3).
fn checksum_adjust(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!checksum);
    for word in old.chunks(2) {
        sum += u32::from(!u16::from_be_bytes([word[0], *word.get(1).unwrap_or(&0)]));
    }
    for word in new.chunks(2) {
        sum += u32::from(u16::from_be_bytes([word[0], *word.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn adjust_field(frame: &mut [u8], at: usize, old: &[u8], new: &[u8]) {
    if let Some(field) = frame.get_mut(at..at + 2) {
        let value = u16::from_be_bytes([field[0], field[1]]);
        field.copy_from_slice(&checksum_adjust(value, old, new).to_be_bytes());
    }
}

/// Rewrite source and destination addresses found in `map`, updating the IPv4 header
/// checksum and the TCP/UDP/ICMPv6 checksum (whose pseudo-header covers the addresses).
pub fn rewrite_addresses(frame: &mut [u8], meta: &PacketMeta, map: &BTreeMap<IpAddr, IpAddr>) {
    if map.is_empty() {
        return;
    }
    let l3 = usize::from(meta.l3_offset);
    let (src_at, dst_at, width) = match meta.l3 {
        L3::Ipv4 => (l3 + 12, l3 + 16, 4),
        L3::Ipv6 => (l3 + 8, l3 + 24, 16),
        _ => return,
    };
    for (at, addr) in [(src_at, meta.src), (dst_at, meta.dst)] {
        let Some(new) = addr.and_then(|a| map.get(&a)) else {
            continue;
        };
        let new_bytes = match (new, meta.l3) {
            (IpAddr::V4(v4), L3::Ipv4) => v4.octets().to_vec(),
            (IpAddr::V6(v6), L3::Ipv6) => v6.octets().to_vec(),
            _ => continue,
        };
        let Some(old_bytes) = frame.get(at..at + width).map(<[u8]>::to_vec) else {
            continue;
        };
        frame[at..at + width].copy_from_slice(&new_bytes);
        if meta.l3 == L3::Ipv4 {
            adjust_field(frame, l3 + 10, &old_bytes, &new_bytes);
        }
        let l4 = usize::from(meta.l4_offset);
        if l4 == 0 || meta.frag.offset != 0 {
            continue;
        }
        let checksum_at = match meta.proto {
            Some(ip_proto::TCP) => l4 + 16,
            Some(ip_proto::UDP) if frame.get(l4 + 6..l4 + 8) != Some(&[0, 0]) => l4 + 6,
            Some(ip_proto::ICMPV6) => l4 + 2,
            _ => continue,
        };
        adjust_field(frame, checksum_at, &old_bytes, &new_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::packet::builder::PacketBuilder;
    use datapath::packet::parse;
    use std::net::Ipv4Addr;

    #[test]
    fn rewriting_keeps_checksums_valid() {
        let (a, b, vip) = (
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(192, 0, 2, 10),
        );
        let map = BTreeMap::from([(IpAddr::V4(b), IpAddr::V4(vip))]);
        for frame in [
            PacketBuilder::eth().ipv4(a, b).tcp(1, 80).syn().build(),
            PacketBuilder::eth()
                .ipv4(a, b)
                .udp(1, 53)
                .payload(b"abc")
                .build(),
        ] {
            let mut frame = frame;
            let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
            rewrite_addresses(&mut frame, &meta, &map);
            let after = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
            assert_eq!((after.invalid, after.dst), (None, Some(IpAddr::V4(vip))));
        }
    }
}
