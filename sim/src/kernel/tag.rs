//! The 16-bit tag that identifies an injected packet on the way out, in fields the kernel
//! forwards unchanged: the IPv4 ID (header checksum recomputed, kept wrong if it was
//! wrong) and the IPv6 flow label (20 bits, no checksum covers it; tags use the low 16).
//! Also where a frame's IP header is (after at most one 802.1Q / 802.1ad tag), the tag an
//! ICMP / ICMPv6 error quotes, and the datagram key that makes fragments of one datagram
//! share a tag (the kernel reassembles them before forwarding).
//!
//! Not here: deciding what a frame means (see `inject`).

use datapath::packet::checksum;

const ETHERNET_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const VLAN_TAG_LEN: usize = 4;
const IPV6_HEADER_LEN: usize = 40;
const NEXT_HEADER_FRAGMENT: u8 = 44;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

/// Where a frame's IP header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpAt {
    /// Offset of the IP header in the frame (14, or 18 after one VLAN tag).
    pub offset: usize,
    /// Length of the IPv4 header, or 40 (the IPv6 fixed header).
    pub header_len: usize,
    /// IPv6.
    pub v6: bool,
}

fn ethertype(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
}

/// Where the IP header of an Ethernet frame is; `None` for anything else (no IP,
/// stacked tags, truncated).
pub fn ip_at(frame: &[u8]) -> Option<IpAt> {
    let mut offset = ETHERNET_HEADER_LEN;
    let mut inner = ethertype(frame, 12)?;
    if matches!(inner, ETHERTYPE_VLAN | ETHERTYPE_QINQ) {
        offset += VLAN_TAG_LEN;
        inner = ethertype(frame, 16)?;
    }
    let first = *frame.get(offset)?;
    let (header_len, v6) = match (inner, first >> 4) {
        (ETHERTYPE_IPV4, 4) => (usize::from(first & 0x0f) * 4, false),
        (ETHERTYPE_IPV6, 6) => (IPV6_HEADER_LEN, true),
        _ => return None,
    };
    (header_len >= 20 && frame.len() >= offset + header_len).then_some(IpAt {
        offset,
        header_len,
        v6,
    })
}

/// Why a frame has no IP header [`ip_at`] finds.
pub fn not_ip_reason(frame: &[u8]) -> &'static str {
    match (ethertype(frame, 12), ethertype(frame, 16)) {
        (Some(ETHERTYPE_VLAN | ETHERTYPE_QINQ), Some(ETHERTYPE_VLAN | ETHERTYPE_QINQ)) => {
            "stacked VLAN tags (QinQ): the kernel and the shield read different tags"
        }
        _ => "not Ethernet + IPv4 / IPv6 (ARP, MPLS, truncated, …)",
    }
}

/// The tag of an IP header at `at`: the IPv4 ID, or the IPv6 flow label (0 when the
/// label does not fit 16 bits: never a tag).
pub fn read(frame: &[u8], at: IpAt) -> u16 {
    let ip = &frame[at.offset..];
    if at.v6 {
        let label = u32::from_be_bytes([0, ip[1] & 0x0f, ip[2], ip[3]]);
        u16::try_from(label).unwrap_or(0)
    } else {
        u16::from_be_bytes([ip[4], ip[5]])
    }
}

/// Write `tag` into the IP header at `at` (IPv4: the header checksum is recomputed, and
/// kept wrong if it was wrong).
pub fn write(frame: &mut [u8], at: IpAt, tag: u16) {
    let offset = at.offset;
    if at.v6 {
        frame[offset + 1] &= 0xf0;
        frame[offset + 2..offset + 4].copy_from_slice(&tag.to_be_bytes());
        return;
    }
    let header = offset..offset + at.header_len;
    let was_valid = checksum::is_valid(checksum::partial(&frame[header.clone()]));
    frame[offset + 4..offset + 6].copy_from_slice(&tag.to_be_bytes());
    frame[offset + 10..offset + 12].fill(0);
    let sum = checksum::field_bytes(checksum::partial(&frame[header]));
    let sum = if was_valid {
        sum
    } else {
        [sum[0], sum[1] ^ 0x01]
    };
    frame[offset + 10..offset + 12].copy_from_slice(&sum);
}

/// What a tag overwrites in the IP header at `at`: the IPv4 ID, or the IPv6 flow label
/// (20 bits).
pub fn original(frame: &[u8], at: IpAt) -> u32 {
    let ip = &frame[at.offset..];
    if at.v6 {
        u32::from_be_bytes([0, ip[1] & 0x0f, ip[2], ip[3]])
    } else {
        u32::from(u16::from_be_bytes([ip[4], ip[5]]))
    }
}

/// Undo [`write`] on the IP header an ICMP / ICMPv6 error quotes (`quoted` starts with
/// it): the [`original`] ID / flow label back, the IPv4 header checksum adjusted
/// incrementally (RFC 1624), so that anything else the sender changed in the quoted header
/// (TTL, checksum) stays visible.
pub fn restore(quoted: &mut [u8], original: u32) {
    match quoted.first().map(|b| b >> 4) {
        Some(6) if quoted.len() >= 4 => {
            quoted[1] = (quoted[1] & 0xf0) | ((original >> 16) as u8 & 0x0f);
            quoted[2..4].copy_from_slice(&(original as u16).to_be_bytes());
        }
        Some(4) if quoted.len() >= 12 => {
            let old = u16::from_be_bytes([quoted[4], quoted[5]]);
            let new = original as u16;
            let check = u16::from_be_bytes([quoted[10], quoted[11]]);
            // HC' = ~(~HC + ~m + m')
            let sum = u32::from(!check) + u32::from(!old) + u32::from(new);
            let folded = (sum & 0xffff) + (sum >> 16);
            let folded = (folded & 0xffff) + (folded >> 16);
            quoted[4..6].copy_from_slice(&new.to_be_bytes());
            quoted[10..12].copy_from_slice(&(!(folded as u16)).to_be_bytes());
        }
        _ => {}
    }
}

/// The (tag, protocol) an ICMP or ICMPv6 error quotes (the quoted header's protocol /
/// next header).
pub fn quoted(frame: &[u8]) -> Option<(u16, u8)> {
    let at = ip_at(frame)?;
    let ip = &frame[at.offset..];
    let proto = if at.v6 { ip[6] } else { ip[9] };
    let message = ip.get(at.header_len..)?;
    let is_error = match (at.v6, proto) {
        (false, PROTO_ICMP) => matches!(message.first(), Some(3 | 4 | 5 | 11 | 12)),
        (true, PROTO_ICMPV6) => matches!(message.first(), Some(1..=4)),
        _ => false,
    };
    let inner = message.get(8..)?;
    match (is_error, at.v6) {
        (false, _) => None,
        (true, false) if inner.len() >= 20 && inner[0] >> 4 == 4 => {
            Some((u16::from_be_bytes([inner[4], inner[5]]), inner[9]))
        }
        (true, true) if inner.len() >= IPV6_HEADER_LEN && inner[0] >> 4 == 6 => {
            let label = u32::from_be_bytes([0, inner[1] & 0x0f, inner[2], inner[3]]);
            Some((u16::try_from(label).unwrap_or(0), inner[6]))
        }
        _ => None,
    }
}

/// What fragments of one datagram have in common: (source, destination, protocol, IPv4
/// ID), or (source, destination, fragment identification) of an IPv6 fragment header
/// right after the fixed header; `None` for whole datagrams.
pub fn datagram_key(frame: &[u8]) -> Option<Vec<u8>> {
    let at = ip_at(frame)?;
    let ip = &frame[at.offset..];
    if at.v6 {
        let fragment = ip.get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + 8)?;
        if ip[6] != NEXT_HEADER_FRAGMENT {
            return None;
        }
        let mut key = ip[8..40].to_vec();
        key.extend_from_slice(&fragment[4..8]);
        return Some(key);
    }
    let flags_offset = u16::from_be_bytes([ip[6], ip[7]]);
    if flags_offset & 0x3fff == 0 {
        return None;
    }
    let mut key = ip[12..20].to_vec();
    key.push(ip[9]);
    key.extend_from_slice(&ip[4..6]);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::packet::builder::PacketBuilder;
    use std::net::Ipv4Addr;

    #[test]
    fn an_ipv6_tag_is_the_flow_label_and_a_tagged_ipv4_header_follows_the_vlan_tag() {
        let mut v6 = PacketBuilder::eth()
            .ipv6(
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            )
            .udp(1, 53)
            .build();
        let at = ip_at(&v6).expect("IPv6");
        assert_eq!((at.offset, at.v6), (14, true));
        write(&mut v6, at, 0xbeef);
        assert_eq!(read(&v6, at), 0xbeef);
        assert_eq!(v6[15] & 0x0f, 0);
        let tagged = PacketBuilder::eth()
            .vlan(7)
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .udp(1, 53)
            .build();
        let at = ip_at(&tagged).expect("tagged IPv4");
        assert_eq!((at.offset, at.header_len, at.v6), (18, 20, false));
    }

    #[test]
    fn restoring_a_quoted_header_gives_back_the_original_bytes() {
        let frame = PacketBuilder::eth()
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .ttl(9)
            .udp(1, 53)
            .build();
        let at = ip_at(&frame).expect("IPv4");
        for tag in [0u16, 1, 0x1234, 0xffff] {
            let mut tagged = frame.clone();
            write(&mut tagged, at, tag);
            let mut quoted = tagged[14..].to_vec();
            restore(&mut quoted, original(&frame, at));
            assert_eq!(quoted, frame[14..], "tag {tag:#x}");
        }
        let v6 = PacketBuilder::eth()
            .ipv6(
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            )
            .udp(1, 53)
            .build();
        let mut labelled = v6.clone();
        labelled[15] |= 0x0a;
        let at = ip_at(&labelled).expect("IPv6");
        let mut tagged = labelled.clone();
        write(&mut tagged, at, 0xbeef);
        let mut quoted = tagged[14..].to_vec();
        restore(&mut quoted, original(&labelled, at));
        assert_eq!(quoted, labelled[14..]);
    }

    #[test]
    fn an_icmpv6_error_quotes_the_flow_label() {
        let original = PacketBuilder::eth()
            .ipv6(
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            )
            .udp(1, 53)
            .build();
        let mut quoted_packet = original[14..].to_vec();
        quoted_packet[2..4].copy_from_slice(&0x1234u16.to_be_bytes());
        let error = PacketBuilder::eth()
            .ipv6(
                "2001:db8::9".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            )
            .icmp(3, 0)
            .payload(&quoted_packet)
            .build();
        assert_eq!(quoted(&error), Some((0x1234, 17)));
    }
}
