//! A readable packet builder for fixtures, traffic generators and replies:
//! `PacketBuilder::eth().vlan(42).ipv4(src, dst).tcp(1234, 80).syn().build()`.
//!
//! Emits correct IPv4 header and L4 checksums (with the IPv4/IPv6 pseudo-header). Fields
//! that tests want to break (checksums, lengths, flags) can be overridden after `build()`
//! by editing the bytes; offsets come from [`crate::packet::parse`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{IpProtocol, checksum};

use super::{ip_proto, tcp_flags, vlan};

/// Default source MAC of built frames.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Default destination MAC of built frames.
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[derive(Clone, Debug)]
enum L4 {
    None(u8),
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        window: u16,
        options: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
        rest: [u8; 4],
    },
}

/// Builder for Ethernet or raw-IP frames carrying IPv4/IPv6 and TCP/UDP/ICMP.
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    ethernet: bool,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlans: Vec<(u16, u16)>,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    ip_id: u16,
    l4: L4,
    payload: Vec<u8>,
}

impl PacketBuilder {
    /// An Ethernet frame (addresses default to 0.0.0.0 until `ipv4`/`ipv6`).
    pub fn eth() -> Self {
        Self {
            ethernet: true,
            src_mac: SRC_MAC,
            dst_mac: DST_MAC,
            vlans: Vec::new(),
            src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ttl: 64,
            ip_id: 1,
            l4: L4::None(59),
            payload: Vec::new(),
        }
    }

    /// A raw IP packet (LINKTYPE_RAW), no link header.
    pub fn raw_ip() -> Self {
        Self {
            ethernet: false,
            ..Self::eth()
        }
    }

    /// Set the MAC addresses.
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Add an 802.1Q tag (outermost first when called repeatedly).
    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlans.push((vlan::TPID_8021Q, vid));
        self
    }

    /// Add an 802.1ad service tag (use before `vlan` for QinQ).
    pub fn qinq(mut self, vid: u16) -> Self {
        self.vlans.push((vlan::TPID_8021AD, vid));
        self
    }

    /// IPv4 addresses.
    pub fn ipv4(mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        self.src = IpAddr::V4(src);
        self.dst = IpAddr::V4(dst);
        self
    }

    /// IPv6 addresses.
    pub fn ipv6(mut self, src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        self.src = IpAddr::V6(src);
        self.dst = IpAddr::V6(dst);
        self
    }

    /// Any-family addresses (both must be the same family).
    pub fn ip(mut self, src: IpAddr, dst: IpAddr) -> Self {
        self.src = src;
        self.dst = dst;
        self
    }

    /// TTL / hop limit.
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// IPv4 identification.
    pub fn ip_id(mut self, id: u16) -> Self {
        self.ip_id = id;
        self
    }

    /// A TCP segment with ACK set and no options; adjust with `flags`, `syn`, …
    pub fn tcp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = L4::Tcp {
            sport,
            dport,
            flags: tcp_flags::ACK,
            seq: 1,
            ack: 1,
            window: 65_535,
            options: Vec::new(),
        };
        self
    }

    /// A UDP datagram.
    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = L4::Udp { sport, dport };
        self
    }

    /// An ICMP (IPv4) or ICMPv6 (IPv6) message with the 4 "rest of header" bytes zero.
    pub fn icmp(mut self, icmp_type: u8, code: u8) -> Self {
        self.l4 = L4::Icmp {
            icmp_type,
            code,
            rest: [0; 4],
        };
        self
    }

    /// An echo request (ICMP type 8 or ICMPv6 type 128 — decided at build time).
    pub fn echo_request(mut self, id: u16, seq: u16) -> Self {
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        self.l4 = L4::Icmp {
            icmp_type: 8,
            code: 0,
            rest: [a, b, c, d],
        };
        self
    }

    /// Another IP protocol with no header of its own (payload only).
    pub fn proto(mut self, proto: u8) -> Self {
        self.l4 = L4::None(proto);
        self
    }

    /// Replace the TCP flags byte.
    pub fn flags(mut self, value: u8) -> Self {
        if let L4::Tcp { flags, .. } = &mut self.l4 {
            *flags = value;
        }
        self
    }

    /// TCP SYN (and nothing else).
    pub fn syn(self) -> Self {
        self.flags(tcp_flags::SYN)
    }

    /// TCP SYN+ACK.
    pub fn syn_ack(self) -> Self {
        self.flags(tcp_flags::SYN | tcp_flags::ACK)
    }

    /// TCP RST.
    pub fn rst(self) -> Self {
        self.flags(tcp_flags::RST)
    }

    /// TCP sequence and acknowledgement numbers.
    pub fn seq_ack(mut self, seq_number: u32, ack_number: u32) -> Self {
        if let L4::Tcp { seq, ack, .. } = &mut self.l4 {
            *seq = seq_number;
            *ack = ack_number;
        }
        self
    }

    /// TCP window field.
    pub fn window(mut self, value: u16) -> Self {
        if let L4::Tcp { window, .. } = &mut self.l4 {
            *window = value;
        }
        self
    }

    /// Raw TCP option bytes, appended (NOP-padded to a multiple of 4 when built).
    pub fn tcp_option(mut self, bytes: &[u8]) -> Self {
        if let L4::Tcp { options, .. } = &mut self.l4 {
            options.extend_from_slice(bytes);
        }
        self
    }

    /// TCP MSS option.
    pub fn mss(self, mss: u16) -> Self {
        let [a, b] = mss.to_be_bytes();
        self.tcp_option(&[2, 4, a, b])
    }

    /// TCP window-scale option.
    pub fn window_scale(self, shift: u8) -> Self {
        self.tcp_option(&[3, 3, shift])
    }

    /// TCP SACK-permitted option.
    pub fn sack_permitted(self) -> Self {
        self.tcp_option(&[4, 2])
    }

    /// TCP timestamps option.
    pub fn timestamps(self, tsval: u32, tsecr: u32) -> Self {
        let mut option = [8u8, 10, 0, 0, 0, 0, 0, 0, 0, 0];
        option[2..6].copy_from_slice(&tsval.to_be_bytes());
        option[6..10].copy_from_slice(&tsecr.to_be_bytes());
        self.tcp_option(&option)
    }

    /// Transport payload.
    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    /// Emit the frame.
    pub fn build(&self) -> Vec<u8> {
        let l4 = self.transport();
        let mut out = Vec::with_capacity(64 + l4.len());
        if self.ethernet {
            out.extend_from_slice(&self.dst_mac);
            out.extend_from_slice(&self.src_mac);
            for &(tpid, vid) in &self.vlans {
                out.extend_from_slice(&tpid.to_be_bytes());
                out.extend_from_slice(&vid.to_be_bytes());
            }
            let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
            // Wire layout: dst src [TPID TCI]* EtherType.
            out.extend_from_slice(&ethertype.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.ipv4_header(&mut out, s, d, l4.len()),
            (IpAddr::V6(s), IpAddr::V6(d)) => self.ipv6_header(&mut out, s, d, l4.len()),
            _ => panic!("PacketBuilder: source and destination of different families"),
        }
        out.extend_from_slice(&l4);
        out
    }

    fn proto_number(&self) -> u8 {
        match &self.l4 {
            L4::None(p) => *p,
            L4::Tcp { .. } => ip_proto::TCP,
            L4::Udp { .. } => ip_proto::UDP,
            L4::Icmp { .. } if self.src.is_ipv6() => ip_proto::ICMPV6,
            L4::Icmp { .. } => ip_proto::ICMP,
        }
    }

    fn ipv4_header(&self, out: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr, l4_len: usize) {
        let start = out.len();
        let total = u16::try_from(20 + l4_len).expect("IPv4 packet too large");
        out.extend_from_slice(&[0x45, 0]);
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&self.ip_id.to_be_bytes());
        out.extend_from_slice(&[0x40, 0, self.ttl, self.proto_number(), 0, 0]);
        out.extend_from_slice(&src.octets());
        out.extend_from_slice(&dst.octets());
        let sum = !checksum::data(&out[start..start + 20]);
        out[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
    }

    fn ipv6_header(&self, out: &mut Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr, l4_len: usize) {
        let payload = u16::try_from(l4_len).expect("IPv6 payload too large");
        out.extend_from_slice(&[0x60, 0, 0, 0]);
        out.extend_from_slice(&payload.to_be_bytes());
        out.extend_from_slice(&[self.proto_number(), self.ttl]);
        out.extend_from_slice(&src.octets());
        out.extend_from_slice(&dst.octets());
    }

    fn transport(&self) -> Vec<u8> {
        let mut seg = Vec::with_capacity(60 + self.payload.len());
        let checksum_at = match &self.l4 {
            L4::None(_) => None,
            L4::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
                window,
                options,
            } => {
                let mut options = options.clone();
                while options.len() % 4 != 0 {
                    options.push(1); // NOP padding
                }
                let offset = ((20 + options.len()) / 4) as u8;
                seg.extend_from_slice(&sport.to_be_bytes());
                seg.extend_from_slice(&dport.to_be_bytes());
                seg.extend_from_slice(&seq.to_be_bytes());
                seg.extend_from_slice(&ack.to_be_bytes());
                seg.extend_from_slice(&[offset << 4, *flags]);
                seg.extend_from_slice(&window.to_be_bytes());
                seg.extend_from_slice(&[0, 0, 0, 0]);
                seg.extend_from_slice(&options);
                Some(16)
            }
            L4::Udp { sport, dport } => {
                let len = u16::try_from(8 + self.payload.len()).expect("UDP too large");
                seg.extend_from_slice(&sport.to_be_bytes());
                seg.extend_from_slice(&dport.to_be_bytes());
                seg.extend_from_slice(&len.to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
                Some(6)
            }
            L4::Icmp {
                icmp_type,
                code,
                rest,
            } => {
                let icmp_type = match (*icmp_type, self.src.is_ipv6()) {
                    (8, true) => 128,
                    (0, true) => 129,
                    (t, _) => t,
                };
                seg.extend_from_slice(&[icmp_type, *code, 0, 0]);
                seg.extend_from_slice(rest);
                Some(2)
            }
        };
        seg.extend_from_slice(&self.payload);
        if let Some(at) = checksum_at {
            let sum = self.l4_checksum(&seg);
            seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        seg
    }

    fn l4_checksum(&self, segment: &[u8]) -> u16 {
        let proto = self.proto_number();
        let len = segment.len() as u32;
        let pseudo = match (self.src, self.dst) {
            _ if proto == ip_proto::ICMP => 0,
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                checksum::pseudo_header_v4(&s, &d, IpProtocol::from(proto), len)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                checksum::pseudo_header_v6(&s, &d, IpProtocol::from(proto), len)
            }
            _ => 0,
        };
        let sum = !checksum::combine(&[pseudo, checksum::data(segment)]);
        // UDP transmits an all-zero checksum as 0xffff.
        if proto == ip_proto::UDP && sum == 0 {
            0xffff
        } else {
            sum
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{L3, LinkType, parse};

    #[test]
    fn built_frames_parse_back() {
        let frame = PacketBuilder::eth()
            .qinq(100)
            .vlan(42)
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 10))
            .tcp(1234, 80)
            .syn()
            .mss(1460)
            .window_scale(7)
            .sack_permitted()
            .timestamps(5, 0)
            .build();
        let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
        assert_eq!(meta.invalid, None);
        assert_eq!(meta.vlans(), &[100, 42]);
        assert_eq!(meta.l3, L3::Ipv4);
        assert_eq!((meta.sport, meta.dport), (Some(1234), Some(80)));
        assert!(meta.is_syn());
        let options = meta.tcp.unwrap().options;
        assert_eq!(options.mss, Some(1460));
        assert_eq!(options.window_scale, Some(7));
        assert!(options.sack_permitted);
        assert_eq!(options.timestamps, Some((5, 0)));
    }

    #[test]
    fn ipv6_udp_and_icmpv6_checksums_are_valid() {
        let (s, d) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        for frame in [
            PacketBuilder::eth()
                .ipv6(s, d)
                .udp(5353, 53)
                .payload(b"hello")
                .build(),
            PacketBuilder::eth()
                .ipv6(s, d)
                .echo_request(1, 2)
                .payload(b"ping")
                .build(),
        ] {
            let meta = parse(LinkType::Ethernet, &frame, frame.len() as u32, 0);
            assert_eq!(meta.invalid, None, "{meta:?}");
        }
    }
}
