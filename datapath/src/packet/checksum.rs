//! RFC 1071 Internet checksum, fast: native-endian 32-bit words accumulated in a u64, folded
//! once at the end. Because one's-complement addition commutes with byte swapping, the
//! folded native-endian sum can be verified (`== 0xffff`) or written (`to_ne_bytes`) without
//! converting byte order.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Unfolded one's-complement sum of `data` (zero-padded to a multiple of 4 bytes).
#[inline]
pub fn partial(data: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        sum += u64::from(u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        sum += u64::from(u32::from_ne_bytes(last));
    }
    sum
}

/// Fold an unfolded sum to 16 bits (native byte order).
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// True when data that includes its checksum field sums to all ones.
#[inline]
pub fn is_valid(sum: u64) -> bool {
    fold(sum) == 0xffff
}

/// The checksum field value for data summing to `sum` (with the field zeroed), as the two
/// bytes to store in the packet.
#[inline]
pub fn field_bytes(sum: u64) -> [u8; 2] {
    (!fold(sum)).to_ne_bytes()
}

/// IPv4 pseudo-header sum for TCP/UDP.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, length: u32) -> u64 {
    let len = (length as u16).to_be_bytes();
    u64::from(u32::from_ne_bytes(src.octets()))
        + u64::from(u32::from_ne_bytes(dst.octets()))
        + u64::from(u32::from_ne_bytes([0, proto, len[0], len[1]]))
}

/// IPv6 pseudo-header sum for TCP/UDP/ICMPv6.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, length: u32) -> u64 {
    partial(&src.octets())
        + partial(&dst.octets())
        + u64::from(u32::from_ne_bytes(length.to_be_bytes()))
        + u64::from(u32::from_ne_bytes([0, 0, 0, proto]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpProtocol, checksum as reference};

    // smoltcp returns the folded sum converted to network order: `ours.to_be()`.

    #[test]
    fn agrees_with_smoltcp_on_odd_and_even_lengths() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1003).collect();
        for len in [0, 1, 2, 3, 4, 5, 19, 20, 64, 1003] {
            assert_eq!(
                fold(partial(&data[..len])).to_be(),
                reference::data(&data[..len]),
                "length {len}"
            );
        }
    }

    #[test]
    fn pseudo_headers_agree_with_smoltcp() {
        let (s4, d4) = (Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(192, 0, 2, 200));
        let theirs = reference::pseudo_header_v4(&s4, &d4, IpProtocol::Tcp, 1234);
        assert_eq!(fold(pseudo_header_v4(s4, d4, 6, 1234)).to_be(), theirs);
        let (s6, d6): (Ipv6Addr, Ipv6Addr) =
            ("2001:db8::1".parse().unwrap(), "fe80::2".parse().unwrap());
        let theirs = reference::pseudo_header_v6(&s6, &d6, IpProtocol::Udp, 60_000);
        assert_eq!(fold(pseudo_header_v6(s6, d6, 17, 60_000)).to_be(), theirs);
    }

    #[test]
    fn field_bytes_make_the_data_valid() {
        let mut data = vec![
            0x45, 0, 0, 20, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let field = field_bytes(partial(&data));
        data[10..12].copy_from_slice(&field);
        assert!(is_valid(partial(&data)));
        assert_eq!(reference::data(&data), !0);
    }
}
