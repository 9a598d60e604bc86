//! The frames the shield sends itself — cookie SYN-ACKs, RSTs, the SYN proxy's SYN and
//! ACKs — and the in-place rewriting of proxied segments.
//!
//! A reply reuses the link header of the frame it answers (VLAN tags kept, Ethernet MACs
//! swapped when it goes back where the frame came from) and gets fresh IPv4/IPv6 and TCP
//! headers with checksums from [`crate::packet::checksum`] (which its tests hold equal to
//! `smoltcp::wire::checksum`). Frames land in a reusable [`EmitBuffer`], so a steady stream
//! of replies does not allocate. Nothing here decides *whether* to answer.

use std::net::IpAddr;

use crate::packet::tcp_options::{self, SACK_BLOCK_LEN, TIMESTAMPS_LEN, TcpOption, kind};
use crate::packet::{IfaceId, PacketMeta, checksum, ip_proto};

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
    #[inline]
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

    #[inline]
    pub(crate) fn next(&mut self, iface: IfaceId, toward: Toward) -> &mut Vec<u8> {
        if self.len >= self.frames.len() {
            self.grow();
        }
        let frame = &mut self.frames[self.len];
        self.len += 1;
        frame.iface = iface;
        frame.toward = toward;
        frame.bytes.clear();
        &mut frame.bytes
    }
}

impl EmitBuffer {
    /// One more (empty) frame slot; off the hot path.
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        self.frames.push(EmittedFrame {
            iface: 0,
            toward: Toward::Client,
            bytes: Vec::with_capacity(LINK_MAX + HEADERS_MAX),
        });
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

/// Longest link header assembled on the stack (longer ones are appended piecewise).
const LINK_MAX: usize = 64;
/// Longest IP (IPv6, 40) + TCP (with options, 60) header.
const HEADERS_MAX: usize = 100;

/// Write `link` + IP + TCP for `segment` into `out`. The frame is assembled on the stack
/// and appended in one go; checksums use the native-endian sums of
/// [`crate::packet::checksum`].
pub fn write_segment(out: &mut Vec<u8>, link: LinkHeader<'_>, segment: &Segment) {
    let mut buffer = [0u8; LINK_MAX + HEADERS_MAX];
    let link_len = link.bytes.len();
    if link_len > LINK_MAX {
        let start = out.len();
        out.extend_from_slice(link.bytes);
        fix_link(&mut out[start..], link, segment.src.is_ipv4());
        let len = write_headers(&mut buffer, segment);
        out.extend_from_slice(&buffer[..len]);
        return;
    }
    buffer[..link_len].copy_from_slice(link.bytes);
    fix_link(&mut buffer[..link_len], link, segment.src.is_ipv4());
    let len = write_headers(&mut buffer[link_len..], segment);
    out.extend_from_slice(&buffer[..link_len + len]);
}

/// The fields of a cookie SYN-ACK that change from packet to packet; everything else
/// (flags, window 0, TTL 64, the MSS and window-scale values) is the instance's
/// [`SynAckTemplates`]. Which options are present follows nft synproxy
/// (`nf_synproxy_core.c`: `synproxy_options_size` / `synproxy_build_options`): MSS only when
/// the client's SYN had one; SACK-permitted and window scale only with timestamps.
#[derive(Clone, Copy, Debug)]
pub struct SynAckFields {
    /// Source address (the protected server's).
    pub src: IpAddr,
    /// Destination address (the client's).
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number (the cookie).
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// MSS option (the client's SYN carried one).
    pub mss: bool,
    /// Timestamps option (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
    /// SACK-permitted option.
    pub sack_permitted: bool,
    /// Window-scale option.
    pub window_scale: bool,
}

impl SynAckFields {
    /// Index of the template layout: bit 0 timestamps, 1 SACK-permitted, 2 window scale,
    /// 3 MSS, 4 IPv6.
    #[inline]
    fn layout(&self, v6: bool) -> usize {
        usize::from(self.timestamps.is_some())
            | usize::from(self.sack_permitted) << 1
            | usize::from(self.window_scale) << 2
            | usize::from(self.mss) << 3
            | usize::from(v6) << 4
    }
}

/// Number of cookie SYN-ACK layouts: every combination of timestamps, SACK-permitted,
/// window scale and MSS ([`SynAckFields::layout`]), for both families.
const SYN_ACK_LAYOUTS: usize = 32;

/// One prebuilt SYN-ACK layout: IP + TCP headers with every changing field zero, and the
/// checksum sums of the constant fields.
#[derive(Clone, Copy, Debug)]
struct HeaderTemplate {
    bytes: [u8; HEADERS_MAX],
    len: u8,
    ip_len: u8,
    /// Offset of TSval within the TCP header (0 without timestamps).
    tsval_at: u8,
    ip_sum: u64,
    tcp_sum: u64,
}

/// The cookie SYN-ACKs of one instance, prebuilt when the tables are built (MSS and window
/// scale are the instance's): a reply copies the link header and a template, then patches
/// addresses, ports, sequence numbers and timestamps and adds their words to the template's
/// checksum sums. [`write_segment`] of the same segment gives the same bytes.
#[derive(Clone, Debug)]
pub struct SynAckTemplates {
    layouts: [HeaderTemplate; SYN_ACK_LAYOUTS],
}

impl SynAckTemplates {
    /// Templates for SYN-ACKs advertising `mss` and (when sent) window scale `wscale`.
    pub fn new(mss: u16, wscale: u8) -> Self {
        let layouts = std::array::from_fn(|index| {
            let zero = if index & 16 != 0 {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            };
            let segment = Segment {
                src: zero,
                dst: zero,
                sport: 0,
                dport: 0,
                seq: 0,
                ack: 0,
                flags: crate::packet::tcp_flags::SYN | crate::packet::tcp_flags::ACK,
                window: 0,
                ttl: 64,
                options: SegmentOptions {
                    mss: (index & 8 != 0).then_some(mss),
                    window_scale: (index & 4 != 0).then_some(wscale),
                    sack_permitted: index & 2 != 0,
                    timestamps: (index & 1 != 0).then_some((0, 0)),
                },
            };
            Self::template(&segment)
        });
        Self { layouts }
    }

    fn template(segment: &Segment) -> HeaderTemplate {
        let mut bytes = [0u8; HEADERS_MAX];
        let len = write_headers(&mut bytes, segment);
        let ip_len = if segment.src.is_ipv4() { 20 } else { 40 };
        if ip_len == 20 {
            bytes[10..12].fill(0);
        }
        bytes[ip_len + 16..ip_len + 18].fill(0);
        let tcp_len = (len - ip_len) as u32;
        let pseudo = u64::from(u32::from_ne_bytes([0, ip_proto::TCP, 0, 0]))
            + u64::from(u32::from_ne_bytes(tcp_len.to_be_bytes()));
        let tsval_at = if segment.options.timestamps.is_some() {
            // MSS (4) when present, then `NOP NOP 8 10` or `4 2 8 10`.
            20 + if segment.options.mss.is_some() { 4 } else { 0 } + 4
        } else {
            0
        };
        HeaderTemplate {
            bytes,
            len: len as u8,
            ip_len: ip_len as u8,
            tsval_at,
            ip_sum: checksum::partial(&bytes[..ip_len]),
            tcp_sum: pseudo + checksum::partial(&bytes[ip_len..len]),
        }
    }

    /// Append the SYN-ACK with `fields` behind `link` to `out`; nothing when the two
    /// addresses' families differ.
    #[inline]
    pub fn write(&self, out: &mut Vec<u8>, link: LinkHeader<'_>, fields: &SynAckFields) {
        let v4 = match (fields.src, fields.dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => true,
            (IpAddr::V6(_), IpAddr::V6(_)) => false,
            _ => return,
        };
        let template = &self.layouts[fields.layout(!v4)];
        let start = out.len();
        extend_link(out, link.bytes);
        fix_link(&mut out[start..], link, v4);
        let ip_at = out.len();
        // The whole template array (a fixed-size copy the compiler inlines), cut to the
        // layout's length once patched.
        out.extend_from_slice(&template.bytes);
        let end = ip_at + usize::from(template.len);
        let (ip, tcp) = out[ip_at..end].split_at_mut(usize::from(template.ip_len));
        let address_sum = match (fields.src, fields.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                ip[12..16].copy_from_slice(&src.octets());
                ip[16..20].copy_from_slice(&dst.octets());
                let sum = checksum::partial(&ip[12..20]);
                ip[10..12].copy_from_slice(&checksum::field_bytes(template.ip_sum + sum));
                sum
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                ip[8..24].copy_from_slice(&src.octets());
                ip[24..40].copy_from_slice(&dst.octets());
                checksum::partial(&ip[8..40])
            }
            _ => 0,
        };
        Self::patch_tcp(tcp, template, template.tcp_sum + address_sum, fields);
        out.truncate(end);
    }

    /// Write ports, sequence numbers and timestamps into a TCP header copied from
    /// `template`, and its checksum (`sum`: the constant fields and pseudo header).
    #[inline]
    fn patch_tcp(tcp: &mut [u8], template: &HeaderTemplate, mut sum: u64, fields: &SynAckFields) {
        let ports = u32::from(fields.sport) << 16 | u32::from(fields.dport);
        let mut put = |at: usize, word: u32| {
            tcp[at..at + 4].copy_from_slice(&word.to_be_bytes());
            sum += u64::from(word.to_be());
        };
        put(0, ports);
        put(4, fields.seq);
        put(8, fields.ack);
        if let Some((tsval, tsecr)) = fields.timestamps {
            let at = usize::from(template.tsval_at);
            put(at, tsval);
            put(at + 4, tsecr);
        }
        tcp[16..18].copy_from_slice(&checksum::field_bytes(sum));
    }
}

/// Append a link header to `out`, with fixed-size copies for the usual lengths (Ethernet,
/// Ethernet + one VLAN tag).
#[inline]
fn extend_link(out: &mut Vec<u8>, bytes: &[u8]) {
    if let Ok(ethernet) = <&[u8; 14]>::try_from(bytes) {
        out.extend_from_slice(ethernet);
    } else if let Ok(tagged) = <&[u8; 18]>::try_from(bytes) {
        out.extend_from_slice(tagged);
    } else {
        out.extend_from_slice(bytes);
    }
}

/// Swap the MACs (when asked) and set the EtherType of an Ethernet link header.
#[inline]
fn fix_link(header: &mut [u8], link: LinkHeader<'_>, ipv4: bool) {
    if !link.ethernet || header.len() < 14 {
        return;
    }
    if link.swap_macs {
        let mut macs = [0u8; 12];
        macs.copy_from_slice(&header[..12]);
        header[..6].copy_from_slice(&macs[6..]);
        header[6..12].copy_from_slice(&macs[..6]);
    }
    let ethertype: u16 = if ipv4 { 0x0800 } else { 0x86dd };
    let at = header.len() - 2;
    header[at..].copy_from_slice(&ethertype.to_be_bytes());
}

/// Write the IP and TCP headers (checksums included) at the start of `out` (at least
/// [`HEADERS_MAX`] bytes, zeroed); their length, or 0 when the addresses' families differ.
#[inline]
fn write_headers(out: &mut [u8], segment: &Segment) -> usize {
    let ip_len = match (segment.src, segment.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => 20,
        (IpAddr::V6(_), IpAddr::V6(_)) => 40,
        _ => return 0,
    };
    let (ip, tcp) = out.split_at_mut(ip_len);
    let tcp_len = write_tcp(tcp, segment);
    match (segment.src, segment.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let [total_high, total_low] = ((20 + tcp_len) as u16).to_be_bytes();
            ip[..12].copy_from_slice(&[
                0x45,
                0,
                total_high,
                total_low,
                0,
                0,
                0x40,
                0,
                segment.ttl,
                ip_proto::TCP,
                0,
                0,
            ]);
            ip[12..16].copy_from_slice(&src.octets());
            ip[16..20].copy_from_slice(&dst.octets());
            let sum = checksum::field_bytes(checksum::partial(&ip[..20]));
            ip[10..12].copy_from_slice(&sum);
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let [len_high, len_low] = (tcp_len as u16).to_be_bytes();
            ip[..8].copy_from_slice(&[
                0x60,
                0,
                0,
                0,
                len_high,
                len_low,
                ip_proto::TCP,
                segment.ttl,
            ]);
            ip[8..24].copy_from_slice(&src.octets());
            ip[24..40].copy_from_slice(&dst.octets());
        }
        _ => return 0,
    }
    let sum = tcp_checksum(segment.src, segment.dst, &tcp[..tcp_len]);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    ip_len + tcp_len
}

/// Write the TCP header with options (checksum zero) at the start of `out` (at least 60
/// bytes, zeroed); its length.
#[inline]
fn write_tcp(out: &mut [u8], segment: &Segment) -> usize {
    let [sport_high, sport_low] = segment.sport.to_be_bytes();
    let [dport_high, dport_low] = segment.dport.to_be_bytes();
    out[..4].copy_from_slice(&[sport_high, sport_low, dport_high, dport_low]);
    out[4..8].copy_from_slice(&segment.seq.to_be_bytes());
    out[8..12].copy_from_slice(&segment.ack.to_be_bytes());
    out[13] = segment.flags;
    out[14..16].copy_from_slice(&segment.window.to_be_bytes());
    let options = segment.options;
    let mut len = 20;
    if let Some(mss) = options.mss {
        let [high, low] = mss.to_be_bytes();
        out[len..len + 4].copy_from_slice(&[2, 4, high, low]);
        len += 4;
    }
    match (options.timestamps, options.sack_permitted) {
        (Some((tsval, tsecr)), sack) => {
            out[len..len + 4].copy_from_slice(if sack { &[4, 2, 8, 10] } else { &[1, 1, 8, 10] });
            out[len + 4..len + 8].copy_from_slice(&tsval.to_be_bytes());
            out[len + 8..len + 12].copy_from_slice(&tsecr.to_be_bytes());
            len += 12;
        }
        (None, true) => {
            out[len..len + 4].copy_from_slice(&[1, 1, 4, 2]);
            len += 4;
        }
        (None, false) => {}
    }
    if let Some(shift) = options.window_scale {
        out[len..len + 4].copy_from_slice(&[1, 3, 3, shift]);
        len += 4;
    }
    out[12] = ((len / 4) as u8) << 4;
    len
}

/// The TCP checksum of `segment` (its checksum field must be zero), as a number in
/// network byte order (store it with `to_be_bytes`).
pub fn tcp_checksum(src: IpAddr, dst: IpAddr, segment: &[u8]) -> u16 {
    let len = segment.len() as u32;
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_header_v4(s, d, ip_proto::TCP, len),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_header_v6(s, d, ip_proto::TCP, len),
        _ => 0,
    };
    u16::from_be_bytes(checksum::field_bytes(pseudo + checksum::partial(segment)))
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
    find_tcp_option(frame, meta, kind::TIMESTAMPS)
        .filter(|option| option.len == TIMESTAMPS_LEN)
        .map(|option| option.tsval().start)
}

/// The first TCP option of `kind` of the segment (positions within the frame), if its
/// options hold one that fits before the list ends or turns malformed.
pub fn find_tcp_option(frame: &[u8], meta: &PacketMeta, kind: u8) -> Option<TcpOption> {
    let range = tcp_segment_range(meta, frame.len())?;
    let header_len = usize::from(frame[range.start + 12] >> 4) * 4;
    if header_len < 20 || header_len > range.len() {
        return None;
    }
    tcp_options::find(frame, range.start + 20..range.start + header_len, kind)
}

/// Apply `shift` to both edges of every block of the SACK option (if any) of a frame; the
/// checksum is left to the caller. Returns the number of blocks rewritten.
pub fn shift_sack_blocks(frame: &mut [u8], meta: &PacketMeta, shift: impl Fn(u32) -> u32) -> usize {
    let Some(sack) = find_tcp_option(frame, meta, kind::SACK) else {
        return 0;
    };
    for edge in sack.sack_edges() {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(&frame[edge.clone()]);
        frame[edge].copy_from_slice(&shift(u32::from_be_bytes(bytes)).to_be_bytes());
    }
    (sack.len - 2) / SACK_BLOCK_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::tcp_flags;

    /// The template path writes exactly what the generic writer writes, for every layout
    /// (with and without MSS, timestamps, SACK-permitted, window scale), both families, with
    /// and without a VLAN-tagged link header.
    #[test]
    fn syn_ack_templates_match_write_segment() {
        let templates = SynAckTemplates::new(1440, 9);
        let addresses: [(IpAddr, IpAddr); 2] = [
            (
                "192.0.2.10".parse().unwrap(),
                "198.51.100.7".parse().unwrap(),
            ),
            (
                "2001:db8::10".parse().unwrap(),
                "2001:db8:1::7".parse().unwrap(),
            ),
        ];
        let plain = [2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 0x08, 0x00];
        let tagged = [
            2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 0x81, 0x00, 0, 42, 0x08, 0x00,
        ];
        let timestamps = [None, Some((0xfedc_ba98, 0x0123_4567))];
        let mut seed = 0x9e37_79b9_u32;
        for (src, dst) in addresses {
            for link_bytes in [&plain[..], &tagged[..]] {
                for timestamps in timestamps {
                    for options in 0..8u8 {
                        seed = seed.wrapping_mul(0x0019_660d).wrapping_add(0x3c6e_f35f);
                        let fields = SynAckFields {
                            src,
                            dst,
                            sport: seed as u16,
                            dport: (seed >> 16) as u16,
                            seq: seed.rotate_left(7),
                            ack: !seed,
                            mss: options & 4 != 0,
                            timestamps,
                            sack_permitted: options & 1 != 0,
                            window_scale: options & 2 != 0,
                        };
                        let segment = Segment {
                            src,
                            dst,
                            sport: fields.sport,
                            dport: fields.dport,
                            seq: fields.seq,
                            ack: fields.ack,
                            flags: tcp_flags::SYN | tcp_flags::ACK,
                            window: 0,
                            ttl: 64,
                            options: SegmentOptions {
                                mss: fields.mss.then_some(1440),
                                window_scale: fields.window_scale.then_some(9),
                                sack_permitted: fields.sack_permitted,
                                timestamps,
                            },
                        };
                        let link = LinkHeader {
                            bytes: link_bytes,
                            swap_macs: true,
                            ethernet: true,
                        };
                        let (mut expected, mut got) = (Vec::new(), vec![0xaa]);
                        write_segment(&mut expected, link, &segment);
                        templates.write(&mut got, link, &fields);
                        assert_eq!(&got[1..], &expected[..], "{fields:?}");
                    }
                }
            }
        }
    }
}
