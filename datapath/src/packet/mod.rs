//! The packet model: link types, VLAN tags, and the compact [`PacketMeta`] that every later
//! stage reads.
//!
//! A frame is parsed once, by [`parse`], into a `PacketMeta`: addresses, ports, flags, and
//! the byte offsets of the L3/L4 headers so that stages that rewrite packets (NAT, SYN
//! proxy) can find them without parsing again. The parser reads header fields directly from
//! the bytes after one length check per header (the layouts are those of `smoltcp::wire`);
//! 802.1Q/802.1ad tag views are in [`vlan`]. It never panics on any bytes: a
//! packet that cannot be understood gets an [`InvalidReason`].
//!
//! Only the *outermost* IP header is described (tunnels are not entered).

pub mod builder;
pub mod checksum;
pub mod flow;
pub mod fragments;
mod invalid;
mod link;
mod parse;
pub mod rewrite;
pub mod tcp_options;
pub mod vlan;

pub use invalid::InvalidReason;
pub use link::LinkType;
pub use parse::{ParseOptions, parse, parse_into, parse_with};

use std::net::IpAddr;

/// At most this many VLAN tags are kept; more make the packet invalid.
pub const MAX_VLAN_TAGS: usize = 4;

/// IP protocol numbers used by the pipeline.
pub mod ip_proto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// TCP flag bits, as in the header's flags byte (FIN = 1 … CWR = 128).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// An interface number: index into the scenario's / appliance's interface list.
/// Captures replayed without a topology arrive on interface 0.
pub type IfaceId = u16;

/// Which network layer the frame carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum L3 {
    /// Nothing could be read (the packet is invalid before L3).
    #[default]
    None,
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// A non-IP EtherType (ARP, LLDP, MPLS, …): valid, just not IP.
    Other(u16),
}

/// Fragmentation of the outermost IP datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragInfo {
    /// The packet is a fragment (offset > 0 or more-fragments set; IPv6: has a fragment header).
    pub is_fragment: bool,
    /// Fragment offset in bytes.
    pub offset: u32,
    /// More-fragments flag.
    pub more: bool,
    /// Datagram identification (IPv4 16-bit ID, IPv6 32-bit ID).
    pub id: u32,
}

/// TCP options the pipeline cares about (SYN cookies, SYN proxy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpOptions {
    /// Maximum segment size.
    pub mss: Option<u16>,
    /// Window scale shift.
    pub window_scale: Option<u8>,
    /// SACK permitted.
    pub sack_permitted: bool,
    /// Timestamps (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
}

/// The TCP header fields beyond ports and flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpInfo {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Raw window field.
    pub window: u16,
    /// Parsed options.
    pub options: TcpOptions,
}

/// Everything the pipeline needs to know about one packet, extracted once.
///
/// Offsets are relative to the start of the frame as handed to [`parse`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Ingress interface.
    pub iface: IfaceId,
    /// VLAN ids, outermost first; `vlan_len` of them are valid.
    pub vlan_ids: [u16; MAX_VLAN_TAGS],
    /// Number of VLAN tags.
    pub vlan_len: u8,
    /// Network layer.
    pub l3: L3,
    /// Source address of the outermost IP header.
    pub src: Option<IpAddr>,
    /// Destination address of the outermost IP header.
    pub dst: Option<IpAddr>,
    /// Transport protocol number (after IPv6 extension headers); `None` without IP.
    pub proto: Option<u8>,
    /// TCP/UDP source port (absent on non-first fragments).
    pub sport: Option<u16>,
    /// TCP/UDP destination port.
    pub dport: Option<u16>,
    /// TCP flags byte (FIN = 1 … CWR = 128); 0 when not TCP.
    pub tcp_flags: u8,
    /// TCP header details when the packet has a TCP header.
    pub tcp: Option<TcpInfo>,
    /// ICMP / ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// ICMP / ICMPv6 code.
    pub icmp_code: Option<u8>,
    /// IPv4 TTL or IPv6 hop limit (0 without IP).
    pub ttl: u8,
    /// Frame length on the wire (the capture's original length).
    pub wire_len: u32,
    /// Bytes actually present (captured length).
    pub cap_len: u32,
    /// IP datagram length from the header (IPv4 total length; IPv6 40 + payload length).
    pub ip_len: u32,
    /// Offset of the IP header in the frame.
    pub l3_offset: u16,
    /// Offset of the transport header in the frame (0 when there is none).
    pub l4_offset: u16,
    /// Offset of the transport payload (0 when there is none).
    pub payload_offset: u16,
    /// Transport payload length according to the IP header.
    pub payload_len: u32,
    /// Fragment information.
    pub frag: FragInfo,
    /// Why the packet is invalid, if it is.
    pub invalid: Option<InvalidReason>,
}

impl PacketMeta {
    /// VLAN ids, outermost first.
    pub fn vlans(&self) -> &[u16] {
        &self.vlan_ids[..usize::from(self.vlan_len)]
    }

    /// Innermost VLAN id (the one an interface's VLAN sub-interface would see).
    pub fn inner_vlan(&self) -> Option<u16> {
        self.vlans().last().copied()
    }

    /// True for a TCP packet with exactly the given flag bits among SYN/ACK/RST/FIN.
    pub fn is_tcp(&self) -> bool {
        self.proto == Some(ip_proto::TCP) && self.tcp.is_some()
    }

    /// A TCP SYN without ACK (a new connection attempt).
    pub fn is_syn(&self) -> bool {
        self.is_tcp() && self.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
    }

    /// Protocol as reports name it: `tcp`, `udp`, `icmp`, `icmpv6`, or the number.
    pub fn proto_name(&self) -> Option<std::borrow::Cow<'static, str>> {
        self.proto.map(proto_name)
    }
}

/// Protocol number to the report name: `tcp`, `udp`, `icmp`, `icmpv6`, or the number.
pub fn proto_name(proto: u8) -> std::borrow::Cow<'static, str> {
    match proto {
        ip_proto::TCP => "tcp".into(),
        ip_proto::UDP => "udp".into(),
        ip_proto::ICMP => "icmp".into(),
        ip_proto::ICMPV6 => "icmpv6".into(),
        other => other.to_string().into(),
    }
}
