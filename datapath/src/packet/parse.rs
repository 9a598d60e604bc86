//! Frame → [`PacketMeta`], in one pass, never panicking on any bytes.
//!
//! Walks link header, VLAN tags, the outermost IP header (IPv4 options, IPv6 extension
//! headers) and the transport header, recording offsets and fields, and stops at the first
//! malformation with a named [`InvalidReason`]. Lengths are checked once per header, then
//! fields are read straight from the bytes (big-endian loads at fixed offsets, no views), and
//! the pseudo-header's address part is summed while the IP header is read, so the hot path
//! (Ethernet / IPv4 without options / TCP or UDP) touches each header byte about once.
//!
//! "Complete" means the capture holds the whole IP datagram (not cut by a snap length): only
//! then can an IP length that runs past the frame be called invalid, and only then are L4
//! checksums verified (never on fragments, whose checksum covers the reassembled datagram).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::vlan::{TAG_LEN, is_vlan_tpid};
use super::{
    FragInfo, IfaceId, InvalidReason, L3, LinkType, MAX_VLAN_TAGS, PacketMeta, TcpInfo, TcpOptions,
    ip_proto, tcp_flags,
};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_MPLS_UNICAST: u16 = 0x8847;
const ETHERTYPE_MPLS_MULTICAST: u16 = 0x8848;
const MPLS_LABEL_LEN: usize = 4;
/// Labels walked before giving up on finding IP under an MPLS stack.
const MAX_MPLS_LABELS: usize = 8;
/// RFC 4385 pseudowire control word (first nibble 0).
const PW_CONTROL_WORD_LEN: usize = 4;
const ETHERNET_LEN: usize = 14;
/// The VLAN id bits of a tag's TCI.
const VID_MASK: u16 = 0x0fff;
const SLL_HEADER_LEN: usize = 16;
const SLL2_HEADER_LEN: usize = 20;
const NULL_HEADER_LEN: usize = 4;
const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_MIN_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const ICMP_HEADER_LEN: usize = 8;
const MAX_IP_DATAGRAM: u32 = 65_535;

/// Parser switches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseOptions {
    /// Verify the IPv4 header checksum.
    pub verify_ipv4_checksum: bool,
    /// Verify TCP/UDP/ICMP checksums on complete, unfragmented datagrams. Turn off for
    /// captures taken on a sender with checksum offload.
    pub verify_l4_checksum: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            verify_ipv4_checksum: true,
            verify_l4_checksum: true,
        }
    }
}

/// Parse a frame with default options. `wire_len` is the frame's original length (the
/// capture's `orig_len`); pass `frame.len()` when the frame is whole.
pub fn parse(link: LinkType, frame: &[u8], wire_len: u32, iface: IfaceId) -> PacketMeta {
    parse_with(&ParseOptions::default(), link, frame, wire_len, iface)
}

/// Parse a frame with explicit options.
pub fn parse_with(
    options: &ParseOptions,
    link: LinkType,
    frame: &[u8],
    wire_len: u32,
    iface: IfaceId,
) -> PacketMeta {
    let mut meta = PacketMeta::default();
    parse_into(options, link, frame, wire_len, iface, &mut meta);
    meta
}

/// Parse a frame into a caller-owned `PacketMeta` (overwritten whole), avoiding the copy of
/// a returned value on the hot path.
pub fn parse_into(
    options: &ParseOptions,
    link: LinkType,
    frame: &[u8],
    wire_len: u32,
    iface: IfaceId,
    meta: &mut PacketMeta,
) {
    let cap_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    *meta = PacketMeta {
        iface,
        wire_len: wire_len.max(cap_len),
        cap_len,
        ..PacketMeta::default()
    };
    let mut parser = Parser {
        options,
        frame,
        meta,
        snapped: wire_len > cap_len,
        address_sum: 0,
    };
    if let Err(reason) = parser.run(link) {
        parser.meta.invalid = Some(reason);
    }
}

type Step<T = ()> = Result<T, InvalidReason>;

struct Parser<'a> {
    options: &'a ParseOptions,
    frame: &'a [u8],
    meta: &'a mut PacketMeta,
    /// The capture cut the frame short (snap length).
    snapped: bool,
    /// One's-complement sum of the outermost IP header's source and destination addresses
    /// (the address part of the TCP/UDP/ICMPv6 pseudo-header), set by `ipv4` / `ipv6`.
    address_sum: u64,
}

impl<'a> Parser<'a> {
    fn run(&mut self, link: LinkType) -> Step {
        let (offset, ethertype) = match link {
            LinkType::Ethernet => self.ethernet()?,
            LinkType::LinuxSll => self.fixed_header(SLL_HEADER_LEN, 14)?,
            LinkType::LinuxSll2 => self.fixed_header(SLL2_HEADER_LEN, 0)?,
            LinkType::Null => self.null_header(false)?,
            LinkType::Loop => self.null_header(true)?,
            LinkType::RawIp => (0, self.version_ethertype(0)?),
            LinkType::Ipv4 => (0, ETHERTYPE_IPV4),
            LinkType::Ipv6 => (0, ETHERTYPE_IPV6),
            LinkType::Unsupported(_) => return Err(InvalidReason::UnsupportedLink),
        };
        if ethertype == ETHERTYPE_IPV4 {
            // The common case, without the VLAN loop and the EtherType dispatch.
            return self.ipv4(offset);
        }
        let (offset, ethertype) = self.vlan_tags(offset, ethertype)?;
        self.network(offset, ethertype)
    }

    fn bytes_from(&self, offset: usize) -> &'a [u8] {
        let frame: &'a [u8] = self.frame;
        frame.get(offset..).unwrap_or(&[])
    }

    fn ethernet(&mut self) -> Step<(usize, u16)> {
        if self.frame.len() < ETHERNET_LEN {
            return Err(InvalidReason::TruncatedLink);
        }
        Ok((ETHERNET_LEN, be16(self.frame, 12)))
    }

    /// SLL and SLL2: fixed-size header with the protocol at `proto_at`.
    fn fixed_header(&mut self, len: usize, proto_at: usize) -> Step<(usize, u16)> {
        if self.frame.len() < len {
            return Err(InvalidReason::TruncatedLink);
        }
        Ok((len, be16(self.frame, proto_at)))
    }

    /// BSD NULL (host byte order family) and OpenBSD LOOP (network byte order).
    fn null_header(&mut self, network_order: bool) -> Step<(usize, u16)> {
        let Some(raw) = self.frame.get(..NULL_HEADER_LEN) else {
            return Err(InvalidReason::TruncatedLink);
        };
        let raw: [u8; 4] = [raw[0], raw[1], raw[2], raw[3]];
        let family = if network_order {
            u32::from_be_bytes(raw)
        } else {
            // Host order of the capturing machine: a family number fits in the low 16 bits.
            let le = u32::from_le_bytes(raw);
            if le > 0xffff {
                u32::from_be_bytes(raw)
            } else {
                le
            }
        };
        let ethertype = match family {
            2 => ETHERTYPE_IPV4,
            10 | 24 | 28 | 30 => ETHERTYPE_IPV6,
            other => u16::try_from(other).unwrap_or(u16::MAX),
        };
        Ok((NULL_HEADER_LEN, ethertype))
    }

    /// Raw IP link types: the version nibble picks the protocol.
    fn version_ethertype(&self, offset: usize) -> Step<u16> {
        match self.bytes_from(offset).first().map(|b| b >> 4) {
            Some(4) => Ok(ETHERTYPE_IPV4),
            Some(6) => Ok(ETHERTYPE_IPV6),
            Some(_) => Err(InvalidReason::WrongIpVersion),
            None => Err(InvalidReason::TruncatedIpv4),
        }
    }

    fn vlan_tags(&mut self, mut offset: usize, mut ethertype: u16) -> Step<(usize, u16)> {
        while is_vlan_tpid(ethertype) {
            let Some(tag) = self.frame.get(offset..offset + TAG_LEN) else {
                return Err(InvalidReason::TruncatedVlan);
            };
            let depth = usize::from(self.meta.vlan_len);
            if depth == MAX_VLAN_TAGS {
                return Err(InvalidReason::TooManyVlanTags);
            }
            self.meta.vlan_ids[depth] = be16(tag, 0) & VID_MASK;
            self.meta.vlan_len += 1;
            ethertype = be16(tag, 2);
            offset += TAG_LEN;
        }
        Ok((offset, ethertype))
    }

    fn network(&mut self, offset: usize, ethertype: u16) -> Step {
        match ethertype {
            ETHERTYPE_IPV4 => self.ipv4(offset),
            ETHERTYPE_IPV6 => self.ipv6(offset),
            ETHERTYPE_MPLS_UNICAST | ETHERTYPE_MPLS_MULTICAST => self.mpls(offset, ethertype),
            other => {
                self.meta.l3 = L3::Other(other);
                Ok(())
            }
        }
    }

    /// Walk an MPLS label stack to its bottom; IP underneath is recognised by its version
    /// nibble (as routers and Wireshark do). Anything else under the stack (pseudowires) is
    /// reported as non-IP with the MPLS EtherType.
    fn mpls(&mut self, mut offset: usize, ethertype: u16) -> Step {
        for _ in 0..MAX_MPLS_LABELS {
            let Some(label) = self.frame.get(offset..offset + MPLS_LABEL_LEN) else {
                return Err(InvalidReason::TruncatedMpls);
            };
            offset += MPLS_LABEL_LEN;
            let bottom_of_stack = label[2] & 1 != 0;
            if bottom_of_stack {
                return match self.frame.get(offset).map(|b| b >> 4) {
                    Some(4) => self.ipv4(offset),
                    Some(6) => self.ipv6(offset),
                    Some(0) if self.frame.len() >= offset + PW_CONTROL_WORD_LEN + ETHERNET_LEN => {
                        self.ethernet_pseudowire(offset + PW_CONTROL_WORD_LEN)
                    }
                    _ => {
                        self.meta.l3 = L3::Other(ethertype);
                        Ok(())
                    }
                };
            }
        }
        self.meta.l3 = L3::Other(ethertype);
        Ok(())
    }

    /// Ethernet over MPLS (RFC 4448) after its control word: the inner frame's VLAN tags and
    /// IP header are the ones the packet is classified by. No MPLS is walked inside it.
    fn ethernet_pseudowire(&mut self, offset: usize) -> Step {
        let ethertype = be16(self.frame, offset + 12);
        let (offset, ethertype) = self.vlan_tags(offset + ETHERNET_LEN, ethertype)?;
        match ethertype {
            ETHERTYPE_IPV4 => self.ipv4(offset),
            ETHERTYPE_IPV6 => self.ipv6(offset),
            other => {
                self.meta.l3 = L3::Other(other);
                Ok(())
            }
        }
    }

    fn ipv4(&mut self, offset: usize) -> Step {
        self.meta.l3 = L3::Ipv4;
        self.meta.l3_offset = offset_u16(offset);
        let bytes = self.bytes_from(offset);
        let Some(&first) = bytes.first() else {
            return Err(InvalidReason::TruncatedIpv4);
        };
        if first >> 4 != 4 {
            return Err(InvalidReason::WrongIpVersion);
        }
        if bytes.len() < IPV4_MIN_HEADER_LEN {
            return Err(InvalidReason::TruncatedIpv4);
        }
        let header_len = usize::from(first & 0x0f) * 4;
        let total_len = usize::from(be16(bytes, 2));
        let (address_words, _) = bytes[12..20].as_chunks::<4>();
        let (src, dst) = (address_words[0], address_words[1]);
        self.meta.src = Some(IpAddr::V4(Ipv4Addr::from(src)));
        self.meta.dst = Some(IpAddr::V4(Ipv4Addr::from(dst)));
        self.meta.proto = Some(bytes[9]);
        self.meta.ttl = bytes[8];
        self.meta.ip_len = total_len as u32;
        if header_len < IPV4_MIN_HEADER_LEN {
            return Err(InvalidReason::BadIpv4HeaderLength);
        }
        if bytes.len() < header_len {
            return Err(InvalidReason::TruncatedIpv4);
        }
        if total_len < header_len {
            return Err(InvalidReason::Ipv4TotalLengthTooShort);
        }
        let complete = self.check_datagram_fits(bytes.len(), total_len)?;
        if self.options.verify_ipv4_checksum && !ipv4_header_checksum_ok(&bytes[..header_len]) {
            return Err(InvalidReason::BadIpv4Checksum);
        }
        if header_len > IPV4_MIN_HEADER_LEN {
            check_ipv4_options(&bytes[IPV4_MIN_HEADER_LEN..header_len])?;
        }
        self.address_sum = u64::from(u32::from_ne_bytes(src)) + u64::from(u32::from_ne_bytes(dst));
        let fragment_word = be16(bytes, 6);
        let frag_offset = u32::from(fragment_word & 0x1fff) * 8;
        let more = fragment_word & 0x2000 != 0;
        let payload_len = (total_len - header_len) as u32;
        self.meta.frag = FragInfo {
            is_fragment: more || frag_offset != 0,
            offset: frag_offset,
            more,
            id: u32::from(be16(bytes, 4)),
        };
        if self.meta.frag.is_fragment && frag_offset + payload_len > MAX_IP_DATAGRAM {
            return Err(InvalidReason::FragmentOversize);
        }
        let l4 = offset + header_len;
        let end = offset + total_len.min(bytes.len());
        self.transport(l4, end, payload_len, complete)
    }

    /// Check that the IP datagram's claimed length fits the frame; returns whether the
    /// whole datagram was captured.
    fn check_datagram_fits(&self, available: usize, ip_len: usize) -> Step<bool> {
        if ip_len <= available {
            Ok(true)
        } else if self.snapped {
            Ok(false)
        } else {
            Err(InvalidReason::IpLengthBeyondFrame)
        }
    }

    fn ipv6(&mut self, offset: usize) -> Step {
        self.meta.l3 = L3::Ipv6;
        self.meta.l3_offset = offset_u16(offset);
        let bytes = self.bytes_from(offset);
        let Some(&first) = bytes.first() else {
            return Err(InvalidReason::TruncatedIpv6);
        };
        if first >> 4 != 6 {
            return Err(InvalidReason::WrongIpVersion);
        }
        if bytes.len() < IPV6_HEADER_LEN {
            return Err(InvalidReason::TruncatedIpv6);
        }
        let (addresses, _) = bytes[8..IPV6_HEADER_LEN].as_chunks::<16>();
        self.address_sum = checksum::partial(&bytes[8..IPV6_HEADER_LEN]);
        self.meta.src = Some(IpAddr::V6(Ipv6Addr::from(addresses[0])));
        self.meta.dst = Some(IpAddr::V6(Ipv6Addr::from(addresses[1])));
        self.meta.ttl = bytes[7];
        let total_len = IPV6_HEADER_LEN + usize::from(be16(bytes, 4));
        self.meta.ip_len = total_len as u32;
        let next_header = bytes[6];
        self.meta.proto = Some(next_header);
        let complete = self.check_datagram_fits(bytes.len(), total_len)?;
        let end = offset + total_len.min(bytes.len());
        let (l4, proto) = self.ipv6_extensions(offset, end, next_header)?;
        self.meta.proto = Some(proto);
        if self.meta.frag.is_fragment {
            let frag_payload = (offset + total_len).saturating_sub(l4) as u32;
            if self.meta.frag.offset + frag_payload > MAX_IP_DATAGRAM {
                return Err(InvalidReason::FragmentOversize);
            }
        }
        let payload_len = (offset + total_len).saturating_sub(l4) as u32;
        self.transport(l4, end, payload_len, complete)
    }

    /// Walk hop-by-hop, routing, fragment, destination-options and AH headers. Returns the
    /// offset of the upper-layer header and its protocol number.
    fn ipv6_extensions(&mut self, offset: usize, end: usize, first: u8) -> Step<(usize, u8)> {
        let datagram_end = offset + self.meta.ip_len as usize;
        let mut next = first;
        let mut at = offset + IPV6_HEADER_LEN;
        loop {
            let len = match next {
                0 | 43 | 60 => ext_len(self.frame, at, end, |b| (usize::from(b) + 1) * 8)?,
                51 => ext_len(self.frame, at, end, |b| (usize::from(b) + 2) * 4)?,
                44 => {
                    if at + 8 > datagram_end {
                        return Err(InvalidReason::FragmentOversize);
                    }
                    if at + 8 > end {
                        return Err(InvalidReason::TruncatedIpv6Extension);
                    }
                    self.ipv6_fragment(at);
                    8
                }
                _ => return Ok((at, next)),
            };
            if at + len > datagram_end {
                return Err(InvalidReason::TruncatedIpv6Extension);
            }
            if next == 43 {
                self.ipv6_routing_final_destination(offset, at, len);
            }
            next = self.frame[at];
            at += len;
            if self.meta.frag.is_fragment && self.meta.frag.offset != 0 {
                // Non-first fragment: the rest is fragment data, not headers.
                return Ok((at, next));
            }
        }
    }

    /// RFC 8200 8.1: with a Routing header whose Segments Left is not zero, the
    /// upper-layer checksum's pseudo-header carries the final destination: the last
    /// address of a type 0 or type 2 header, Segment List[0] of a segment routing header.
    fn ipv6_routing_final_destination(&mut self, offset: usize, at: usize, len: usize) {
        let (Some(&kind), Some(&left)) = (self.frame.get(at + 2), self.frame.get(at + 3)) else {
            return;
        };
        let final_at = match kind {
            0 | 2 if left > 0 && len >= 24 => at + len - 16,
            4 if left > 0 && len >= 24 => at + 8,
            _ => return,
        };
        let (Some(src), Some(dst)) = (
            self.frame.get(offset + 8..offset + 24),
            self.frame.get(final_at..final_at + 16),
        ) else {
            return;
        };
        self.address_sum = checksum::partial(src) + checksum::partial(dst);
    }

    fn ipv6_fragment(&mut self, at: usize) {
        let word = be16(self.frame, at + 2);
        let id = u32::from_be_bytes([
            self.frame[at + 4],
            self.frame[at + 5],
            self.frame[at + 6],
            self.frame[at + 7],
        ]);
        let offset = u32::from(word & 0xfff8);
        let more = word & 1 != 0;
        // An "atomic fragment" (offset 0, M clear) is still a fragment header: RFC 6946 says
        // it is processed as a whole datagram, so it is not flagged as a fragment.
        self.meta.frag = FragInfo {
            is_fragment: offset != 0 || more,
            offset,
            more,
            id,
        };
    }

    /// Transport header at `l4`; captured bytes end at `end`; `payload_len` is the L4
    /// length according to the IP header; `complete` whether the datagram was captured whole.
    #[inline]
    fn transport(&mut self, l4: usize, end: usize, payload_len: u32, complete: bool) -> Step {
        self.meta.l4_offset = offset_u16(l4);
        self.meta.payload_len = payload_len;
        if self.meta.frag.offset != 0 {
            self.meta.l4_offset = 0;
            return Ok(());
        }
        let frame: &'a [u8] = self.frame;
        let segment = frame.get(l4..end).unwrap_or(&[]);
        let verify = complete && !self.meta.frag.is_fragment && self.options.verify_l4_checksum;
        let proto = self.meta.proto.unwrap_or(0);
        match proto {
            ip_proto::TCP => self.tcp(l4, segment, payload_len, verify),
            ip_proto::UDP => self.udp(l4, segment, payload_len, verify),
            ip_proto::ICMP | ip_proto::ICMPV6 => self.icmp(l4, segment, payload_len, verify),
            _ => {
                self.meta.payload_offset = offset_u16(l4);
                Ok(())
            }
        }
    }

    fn tcp(&mut self, l4: usize, segment: &[u8], segment_len: u32, verify: bool) -> Step {
        if segment.len() < TCP_MIN_HEADER_LEN {
            return Err(self.short_first_fragment(InvalidReason::TruncatedTcp));
        }
        let (sport, dport) = (be16(segment, 0), be16(segment, 2));
        self.meta.sport = Some(sport);
        self.meta.dport = Some(dport);
        let flags = segment[13];
        self.meta.tcp_flags = flags;
        let data_offset = usize::from(segment[12] >> 4) * 4;
        let limit = if self.meta.frag.is_fragment {
            MAX_IP_DATAGRAM
        } else {
            segment_len
        };
        if data_offset < TCP_MIN_HEADER_LEN || data_offset as u32 > limit {
            return Err(InvalidReason::BadTcpDataOffset);
        }
        if segment.len() < data_offset {
            return Err(self.short_first_fragment(InvalidReason::TruncatedTcp));
        }
        // Options are parsed straight into the description (which has no TCP header when
        // they are malformed).
        let info = self.meta.tcp.insert(TcpInfo {
            seq: be32(segment, 4),
            ack: be32(segment, 8),
            window: be16(segment, 14),
            options: TcpOptions::default(),
        });
        if data_offset > TCP_MIN_HEADER_LEN
            && let Err(reason) =
                parse_tcp_options(&segment[TCP_MIN_HEADER_LEN..data_offset], &mut info.options)
        {
            self.meta.tcp = None;
            return Err(reason);
        }
        self.meta.payload_offset = offset_u16(l4 + data_offset);
        self.meta.payload_len = segment_len.saturating_sub(data_offset as u32);
        if verify && !self.l4_checksum_ok(ip_proto::TCP, &segment[..segment_len as usize]) {
            return Err(InvalidReason::BadTcpChecksum);
        }
        check_tcp_flags(flags)?;
        check_ports(sport, dport)
    }

    fn udp(&mut self, l4: usize, segment: &[u8], ip_payload_len: u32, verify: bool) -> Step {
        if segment.len() < UDP_HEADER_LEN {
            return Err(self.short_first_fragment(InvalidReason::TruncatedUdp));
        }
        let (sport, dport) = (be16(segment, 0), be16(segment, 2));
        self.meta.sport = Some(sport);
        self.meta.dport = Some(dport);
        self.meta.payload_offset = offset_u16(l4 + UDP_HEADER_LEN);
        let udp_len = u32::from(be16(segment, 4));
        // In a first fragment the UDP length covers the reassembled datagram.
        let limit = if self.meta.frag.is_fragment {
            MAX_IP_DATAGRAM
        } else {
            ip_payload_len
        };
        if udp_len < UDP_HEADER_LEN as u32 || udp_len > limit {
            return Err(InvalidReason::BadUdpLength);
        }
        self.meta.payload_len = udp_len - UDP_HEADER_LEN as u32;
        let zero_allowed = self.meta.l3 == L3::Ipv4;
        let skip = be16(segment, 6) == 0 && zero_allowed;
        if verify && !skip && !self.l4_checksum_ok(ip_proto::UDP, &segment[..udp_len as usize]) {
            return Err(InvalidReason::BadUdpChecksum);
        }
        check_ports(sport, dport)
    }

    fn icmp(&mut self, l4: usize, segment: &[u8], message_len: u32, verify: bool) -> Step {
        if let [icmp_type, icmp_code, ..] = *segment {
            self.meta.icmp_type = Some(icmp_type);
            self.meta.icmp_code = Some(icmp_code);
        }
        if message_len < ICMP_HEADER_LEN as u32 || segment.len() < ICMP_HEADER_LEN {
            return Err(InvalidReason::TruncatedIcmp);
        }
        self.meta.payload_offset = offset_u16(l4 + ICMP_HEADER_LEN);
        self.meta.payload_len = message_len - ICMP_HEADER_LEN as u32;
        if verify {
            let message = &segment[..message_len as usize];
            let ok = match self.meta.proto {
                Some(ip_proto::ICMPV6) => self.l4_checksum_ok(ip_proto::ICMPV6, message),
                _ => checksum::is_valid(checksum::partial(message)),
            };
            if !ok {
                return Err(InvalidReason::BadIcmpChecksum);
            }
        }
        Ok(())
    }

    /// A first fragment too short for its transport header is a tiny fragment; otherwise
    /// the header is simply truncated.
    fn short_first_fragment(&self, truncated: InvalidReason) -> InvalidReason {
        if self.meta.frag.is_fragment && !self.snapped {
            InvalidReason::FragmentTiny
        } else {
            truncated
        }
    }

    /// Verify a TCP/UDP/ICMPv6 checksum including the pseudo-header (built from the
    /// address sum `ipv4` / `ipv6` recorded; a segment never exceeds 65535 bytes here, so
    /// the IPv4 and IPv6 pseudo-header layouts sum alike).
    fn l4_checksum_ok(&self, proto: u8, segment: &[u8]) -> bool {
        let len = (segment.len() as u16).to_be_bytes();
        let pseudo = self.address_sum + u64::from(u32::from_ne_bytes([0, proto, len[0], len[1]]));
        checksum::is_valid(pseudo + checksum::partial(segment))
    }
}

/// The IPv4 header (options included) sums to all ones.
#[inline(always)]
fn ipv4_header_checksum_ok(header: &[u8]) -> bool {
    let sum = match header.first_chunk::<IPV4_MIN_HEADER_LEN>() {
        Some(fixed) if header.len() == IPV4_MIN_HEADER_LEN => checksum::ipv4_header(fixed),
        _ => checksum::partial(header),
    };
    checksum::is_valid(sum)
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Offsets fit in u16 because captured length is capped at 262144 only for the frame; an
/// offset beyond 65535 cannot occur before the L4 header of a sane packet, so saturate.
fn offset_u16(offset: usize) -> u16 {
    u16::try_from(offset).unwrap_or(u16::MAX)
}

/// Length of the IPv6 extension header at `at` (its length byte is at `at + 1`).
fn ext_len(frame: &[u8], at: usize, end: usize, len_of: impl Fn(u8) -> usize) -> Step<usize> {
    if at + 2 > end {
        return Err(InvalidReason::TruncatedIpv6Extension);
    }
    let len = len_of(frame[at + 1]);
    if at + len > end {
        return Err(InvalidReason::TruncatedIpv6Extension);
    }
    Ok(len)
}

fn check_ipv4_options(mut options: &[u8]) -> Step {
    while let [kind, rest @ ..] = options {
        match kind {
            0 => return Ok(()),
            1 => options = rest,
            _ => {
                let Some(&len) = rest.first() else {
                    return Err(InvalidReason::BadIpv4Options);
                };
                let len = usize::from(len);
                if len < 2 || len > options.len() {
                    return Err(InvalidReason::BadIpv4Options);
                }
                options = &options[len..];
            }
        }
    }
    Ok(())
}

/// Read the TCP option list into `options` (left at its defaults for absent options). The
/// options the pipeline reads must have their exact lengths; any other option is skipped
/// by its length byte. A known option with a wrong length, a length below 2 or past the
/// list, or a kind without a length byte is malformed.
fn parse_tcp_options(bytes: &[u8], options: &mut TcpOptions) -> Step {
    use super::tcp_options::kind::{MSS, SACK_PERMITTED, TIMESTAMPS, WINDOW_SCALE};
    for option in super::tcp_options::walk(bytes, 0..bytes.len()) {
        let option = option.map_err(|_| InvalidReason::BadTcpOptions)?;
        match (option.kind, &bytes[option.data()]) {
            (MSS, &[high, low]) => options.mss = Some(u16::from_be_bytes([high, low])),
            (WINDOW_SCALE, &[shift]) => options.window_scale = Some(shift),
            (SACK_PERMITTED, []) => options.sack_permitted = true,
            (TIMESTAMPS, &[a, b, c, d, e, f, g, h]) => {
                let tsval = u32::from_be_bytes([a, b, c, d]);
                let tsecr = u32::from_be_bytes([e, f, g, h]);
                options.timestamps = Some((tsval, tsecr));
            }
            (MSS | WINDOW_SCALE | SACK_PERMITTED | TIMESTAMPS, _) => {
                return Err(InvalidReason::BadTcpOptions);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Flag combinations no legitimate stack sends.
fn check_tcp_flags(flags: u8) -> Step {
    use tcp_flags::{ACK, FIN, RST, SYN};
    if flags == 0 {
        Err(InvalidReason::TcpNoFlags)
    } else if flags & (SYN | FIN) == SYN | FIN {
        Err(InvalidReason::TcpSynFin)
    } else if flags & (SYN | RST) == SYN | RST {
        Err(InvalidReason::TcpSynRst)
    } else if flags & (FIN | ACK) == FIN {
        Err(InvalidReason::TcpFinWithoutAck)
    } else {
        Ok(())
    }
}

fn check_ports(sport: u16, dport: u16) -> Step {
    if sport == 0 || dport == 0 {
        Err(InvalidReason::PortZero)
    } else {
        Ok(())
    }
}
