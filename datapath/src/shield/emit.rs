//! The frames the shield sends itself — cookie SYN-ACKs, RSTs, the SYN proxy's SYN and
//! ACKs — and the in-place rewriting of proxied segments.
//!
//! A reply reuses the link header of the frame it answers (VLAN tags kept, Ethernet MACs
//! swapped when it goes back where the frame came from) and gets fresh IPv4/IPv6 and TCP
//! headers with checksums from `smoltcp::wire::checksum`. Frames land in a reusable
//! [`EmitBuffer`], so a steady stream of replies does not allocate. Nothing here decides
//! *whether* to answer.

use std::net::IpAddr;

use smoltcp::wire::{IpProtocol, checksum};

use crate::packet::{IfaceId, PacketMeta, ip_proto};

/// Which way an emitted frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Toward {
    /// Back to the client (out of the interface the client's frames arrive on).
    Client,
    /// On to the protected server (the way passed client frames go).
    Server,
}

/// One frame the shield emits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmittedFrame {
    /// Interface to send it out of.
    pub iface: IfaceId,
    /// Direction.
    pub toward: Toward,
    /// The frame bytes, link header included.
    pub bytes: Vec<u8>,
}

/// A reusable list of emitted frames: [`EmitBuffer::clear`] keeps the allocations.
#[derive(Clone, Debug, Default)]
pub struct EmitBuffer {
    frames: Vec<EmittedFrame>,
    len: usize,
}

impl EmitBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the frames (keeping their storage).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The frames emitted since the last `clear`.
    pub fn frames(&self) -> &[EmittedFrame] {
        &self.frames[..self.len]
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True without frames.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn next(&mut self, iface: IfaceId, toward: Toward) -> &mut Vec<u8> {
        if self.len == self.frames.len() {
            self.frames.push(EmittedFrame {
                iface,
                toward,
                bytes: Vec::with_capacity(128),
            });
        }
        let frame = &mut self.frames[self.len];
        self.len += 1;
        frame.iface = iface;
        frame.toward = toward;
        frame.bytes.clear();
        &mut frame.bytes
    }
}

/// The link header to put in front of an emitted frame.
#[derive(Clone, Copy, Debug)]
pub struct LinkHeader<'a> {
    /// Bytes of the header as received (up to the IP header), EtherType included.
    pub bytes: &'a [u8],
    /// Swap the two Ethernet MACs (replies going back where the frame came from).
    pub swap_macs: bool,
    /// The header is Ethernet (MACs can be swapped and the EtherType set).
    pub ethernet: bool,
}

/// TCP options of an emitted segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentOptions {
    /// MSS option.
    pub mss: Option<u16>,
    /// Window-scale option.
    pub window_scale: Option<u8>,
    /// SACK-permitted option.
    pub sack_permitted: bool,
    /// Timestamps option (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
}

/// A TCP segment to emit (no payload).
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags byte.
    pub flags: u8,
    /// Window field.
    pub window: u16,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// Options.
    pub options: SegmentOptions,
}

/// Write `link` + IP + TCP for `segment` into `out`.
pub fn write_segment(out: &mut Vec<u8>, link: LinkHeader<'_>, segment: &Segment) {
    out.extend_from_slice(link.bytes);
    if link.ethernet && link.bytes.len() >= 14 {
        if link.swap_macs {
            let (dst, src) = out.split_at_mut(6);
            dst.swap_with_slice(&mut src[..6]);
        }
        let ethertype: u16 = if segment.src.is_ipv4() {
            0x0800
        } else {
            0x86dd
        };
        let at = out.len() - 2;
        out[at..].copy_from_slice(&ethertype.to_be_bytes());
    }
    let tcp = tcp_header(segment);
    match (segment.src, segment.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let start = out.len();
            let total = (20 + tcp.len()) as u16;
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, segment.ttl, ip_proto::TCP, 0, 0]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            let sum = !checksum::data(&out[start..start + 20]);
            out[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
            out.extend_from_slice(&[ip_proto::TCP, segment.ttl]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        _ => return,
    }
    let start = out.len();
    out.extend_from_slice(&tcp);
    let sum = tcp_checksum(segment.src, segment.dst, &out[start..]);
    out[start + 16..start + 18].copy_from_slice(&sum.to_be_bytes());
}

fn tcp_header(segment: &Segment) -> smallbuf::Header {
    let mut header = smallbuf::Header::default();
    header.extend(&segment.sport.to_be_bytes());
    header.extend(&segment.dport.to_be_bytes());
    header.extend(&segment.seq.to_be_bytes());
    header.extend(&segment.ack.to_be_bytes());
    header.extend(&[0, segment.flags]);
    header.extend(&segment.window.to_be_bytes());
    header.extend(&[0, 0, 0, 0]);
    let options = segment.options;
    if let Some(mss) = options.mss {
        header.extend(&[2, 4]);
        header.extend(&mss.to_be_bytes());
    }
    match (options.timestamps, options.sack_permitted) {
        (Some((tsval, tsecr)), sack) => {
            header.extend(if sack { &[4, 2, 8, 10] } else { &[1, 1, 8, 10] });
            header.extend(&tsval.to_be_bytes());
            header.extend(&tsecr.to_be_bytes());
        }
        (None, true) => header.extend(&[1, 1, 4, 2]),
        (None, false) => {}
    }
    if let Some(shift) = options.window_scale {
        header.extend(&[1, 3, 3, shift]);
    }
    let words = (header.len() / 4) as u8;
    header.bytes[12] = words << 4;
    header
}

/// A fixed-size buffer for a TCP header with options (no heap).
mod smallbuf {
    /// Up to 60 bytes of TCP header.
    pub struct Header {
        pub bytes: [u8; 60],
        len: usize,
    }

    impl Default for Header {
        fn default() -> Self {
            Self {
                bytes: [0; 60],
                len: 0,
            }
        }
    }

    impl Header {
        pub fn extend(&mut self, data: &[u8]) {
            self.bytes[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
        }

        pub fn len(&self) -> usize {
            self.len
        }
    }

    impl std::ops::Deref for Header {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            &self.bytes[..self.len]
        }
    }
}

/// The TCP checksum of `segment` (its checksum field must be zero).
pub fn tcp_checksum(src: IpAddr, dst: IpAddr, segment: &[u8]) -> u16 {
    let len = segment.len() as u32;
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(&s, &d, IpProtocol::Tcp, len),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_header_v6(&s, &d, IpProtocol::Tcp, len),
        _ => 0,
    };
    !checksum::combine(&[pseudo, checksum::data(segment)])
}

/// The TCP segment of a parsed frame (header + payload, without link padding), if the
/// frame holds all of it.
pub fn tcp_segment_range(meta: &PacketMeta, frame_len: usize) -> Option<std::ops::Range<usize>> {
    let l4 = usize::from(meta.l4_offset);
    let end = usize::from(meta.l3_offset) + meta.ip_len as usize;
    (l4 > 0 && l4 + 20 <= end && end <= frame_len).then_some(l4..end)
}

/// Recompute the TCP checksum of a frame after rewriting it.
pub fn refresh_tcp_checksum(frame: &mut [u8], meta: &PacketMeta) {
    let (Some(range), Some(src), Some(dst)) =
        (tcp_segment_range(meta, frame.len()), meta.src, meta.dst)
    else {
        return;
    };
    let segment = &mut frame[range];
    segment[16..18].fill(0);
    let sum = tcp_checksum(src, dst, segment);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
}

/// Offset (within the frame) of the 8 bytes TSval+TSecr of the timestamps option.
pub fn timestamps_offset(frame: &[u8], meta: &PacketMeta) -> Option<usize> {
    let range = tcp_segment_range(meta, frame.len())?;
    let header = &frame[range.clone()];
    let header_len = usize::from(header[12] >> 4) * 4;
    let options = header.get(20..header_len)?;
    let mut at = 0;
    while at < options.len() {
        match options[at] {
            0 => return None,
            1 => at += 1,
            kind => {
                let len = usize::from(*options.get(at + 1)?);
                if len < 2 || at + len > options.len() {
                    return None;
                }
                if kind == 8 && len == 10 {
                    return Some(range.start + 20 + at + 2);
                }
                at += len;
            }
        }
    }
    None
}
