//! Why a packet is invalid: one named reason per case, stable snake_case names.
//!
//! The parser stops at the first problem it finds, walking outward-in (link, VLAN, IP,
//! extension headers, L4), so a packet carries at most one reason.

use serde::Serialize;

/// The reason a packet is classified invalid. Names are stable: they appear in reports,
/// per-packet records and snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InvalidReason {
    /// The capture's link type is not one the parser understands.
    UnsupportedLink,
    /// The link-layer header (Ethernet, SLL, SLL2, NULL) is cut short.
    TruncatedLink,
    /// An 802.1Q / 802.1ad tag is cut short.
    TruncatedVlan,
    /// More VLAN tags than [`crate::packet::MAX_VLAN_TAGS`].
    TooManyVlanTags,
    /// An MPLS label stack is cut short.
    TruncatedMpls,
    /// The IPv4 header is cut short (fewer than 20 bytes, or fewer than IHL×4).
    TruncatedIpv4,
    /// The IPv6 fixed header is cut short.
    TruncatedIpv6,
    /// An IPv6 extension header is cut short.
    TruncatedIpv6Extension,
    /// The TCP header is cut short.
    TruncatedTcp,
    /// The UDP header is cut short.
    TruncatedUdp,
    /// The ICMP / ICMPv6 header is cut short.
    TruncatedIcmp,
    /// The link layer says IPv4 (or IPv6) but the version nibble says otherwise.
    WrongIpVersion,
    /// IPv4 IHL below 5.
    BadIpv4HeaderLength,
    /// IPv4 total length smaller than the header length.
    Ipv4TotalLengthTooShort,
    /// IP total/payload length beyond the bytes on the wire (the frame was complete).
    IpLengthBeyondFrame,
    /// IPv4 header checksum is wrong.
    BadIpv4Checksum,
    /// IPv4 option list malformed (bad option length).
    BadIpv4Options,
    /// TCP checksum wrong (checked only when the capture holds the whole segment).
    BadTcpChecksum,
    /// UDP checksum wrong (checked only when the capture holds the whole datagram).
    BadUdpChecksum,
    /// ICMP / ICMPv6 checksum wrong (checked only on whole messages).
    BadIcmpChecksum,
    /// UDP length field below 8 or beyond the IP payload.
    BadUdpLength,
    /// TCP data offset below 5 or beyond the segment.
    BadTcpDataOffset,
    /// TCP option list malformed (bad option length).
    BadTcpOptions,
    /// TCP with no flag at all (null scan).
    TcpNoFlags,
    /// TCP SYN together with FIN.
    TcpSynFin,
    /// TCP SYN together with RST.
    TcpSynRst,
    /// TCP FIN without ACK (FIN / Xmas scans).
    TcpFinWithoutAck,
    /// TCP or UDP source or destination port 0.
    PortZero,
    /// Fragment would end beyond 65535 bytes (ping of death) or has a negative length.
    FragmentOversize,
    /// A fragment overlaps data already seen for the same datagram.
    FragmentOverlap,
    /// A first fragment too short to hold the transport header (RFC 1858 tiny fragment).
    FragmentTiny,
}

impl InvalidReason {
    /// Every reason, in declaration order (for fixed-size counter arrays and reports).
    pub const ALL: [InvalidReason; 31] = [
        Self::UnsupportedLink,
        Self::TruncatedLink,
        Self::TruncatedVlan,
        Self::TooManyVlanTags,
        Self::TruncatedMpls,
        Self::TruncatedIpv4,
        Self::TruncatedIpv6,
        Self::TruncatedIpv6Extension,
        Self::TruncatedTcp,
        Self::TruncatedUdp,
        Self::TruncatedIcmp,
        Self::WrongIpVersion,
        Self::BadIpv4HeaderLength,
        Self::Ipv4TotalLengthTooShort,
        Self::IpLengthBeyondFrame,
        Self::BadIpv4Checksum,
        Self::BadIpv4Options,
        Self::BadTcpChecksum,
        Self::BadUdpChecksum,
        Self::BadIcmpChecksum,
        Self::BadUdpLength,
        Self::BadTcpDataOffset,
        Self::BadTcpOptions,
        Self::TcpNoFlags,
        Self::TcpSynFin,
        Self::TcpSynRst,
        Self::TcpFinWithoutAck,
        Self::PortZero,
        Self::FragmentOversize,
        Self::FragmentOverlap,
        Self::FragmentTiny,
    ];

    /// Number of reasons (size of a counter array indexed by [`InvalidReason::index`]).
    pub const COUNT: usize = Self::ALL.len();

    /// Dense index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name, as in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::UnsupportedLink => "unsupported_link",
            Self::TruncatedLink => "truncated_link",
            Self::TruncatedVlan => "truncated_vlan",
            Self::TooManyVlanTags => "too_many_vlan_tags",
            Self::TruncatedMpls => "truncated_mpls",
            Self::TruncatedIpv4 => "truncated_ipv4",
            Self::TruncatedIpv6 => "truncated_ipv6",
            Self::TruncatedIpv6Extension => "truncated_ipv6_extension",
            Self::TruncatedTcp => "truncated_tcp",
            Self::TruncatedUdp => "truncated_udp",
            Self::TruncatedIcmp => "truncated_icmp",
            Self::WrongIpVersion => "wrong_ip_version",
            Self::BadIpv4HeaderLength => "bad_ipv4_header_length",
            Self::Ipv4TotalLengthTooShort => "ipv4_total_length_too_short",
            Self::IpLengthBeyondFrame => "ip_length_beyond_frame",
            Self::BadIpv4Checksum => "bad_ipv4_checksum",
            Self::BadIpv4Options => "bad_ipv4_options",
            Self::BadTcpChecksum => "bad_tcp_checksum",
            Self::BadUdpChecksum => "bad_udp_checksum",
            Self::BadIcmpChecksum => "bad_icmp_checksum",
            Self::BadUdpLength => "bad_udp_length",
            Self::BadTcpDataOffset => "bad_tcp_data_offset",
            Self::BadTcpOptions => "bad_tcp_options",
            Self::TcpNoFlags => "tcp_no_flags",
            Self::TcpSynFin => "tcp_syn_fin",
            Self::TcpSynRst => "tcp_syn_rst",
            Self::TcpFinWithoutAck => "tcp_fin_without_ack",
            Self::PortZero => "port_zero",
            Self::FragmentOversize => "fragment_oversize",
            Self::FragmentOverlap => "fragment_overlap",
            Self::FragmentTiny => "fragment_tiny",
        }
    }
}

impl std::fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_declaration_order_and_names_are_unique() {
        for (i, r) in InvalidReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r} out of order");
        }
        let mut names: Vec<_> = InvalidReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), InvalidReason::COUNT);
    }

    #[test]
    fn serde_name_matches_name() {
        for r in InvalidReason::ALL {
            assert_eq!(serde_json_name(r), r.name());
        }
    }

    fn serde_json_name(r: InvalidReason) -> String {
        // serde's rename_all must agree with `name()`; compare through Debug-free path.
        let s = format!("{:?}", r);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}
