//! RFC 1071 Internet checksum, fast: native-endian 64-bit words accumulated with end-around
//! carry (a u128 accumulator, so each word costs an add and an add-with-carry), folded once
//! at the end. Because one's-complement addition commutes with byte swapping, the folded
//! native-endian sum can be verified (`== 0xffff`) or written (`to_ne_bytes`) without
//! converting byte order. Any multiple-of-16-bit shift of a word is the same modulo 0xffff,
//! so 64-, 32- and 16-bit words may be mixed as long as each starts at an even offset.
//!
//! The unfolded sums returned here are kept below 2^34 so that callers may add a handful of
//! them (pseudo-header + segment, template + changed words) without overflowing a u64.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Unfolded one's-complement sum of `data` (zero-padded to an even length), below 2^34.
#[inline]
pub fn partial(data: &[u8]) -> u64 {
    let mut wide = 0u128;
    let (words, tail) = data.as_chunks::<8>();
    for word in words {
        wide += u128::from(u64::from_ne_bytes(*word));
    }
    let sum = add_end_around(wide as u64, (wide >> 64) as u64);
    fold_to_32(sum) + tail_sum(tail)
}

/// Sum of the fewer than 8 bytes left after the 64-bit words (they start at an even offset).
#[inline]
fn tail_sum(tail: &[u8]) -> u64 {
    let (quads, rest) = tail.as_chunks::<4>();
    let mut sum = quads
        .first()
        .map_or(0, |quad| u64::from(u32::from_ne_bytes(*quad)));
    let (pairs, odd) = rest.as_chunks::<2>();
    if let Some(pair) = pairs.first() {
        sum += u64::from(u16::from_ne_bytes(*pair));
    }
    if let Some(&last) = odd.first() {
        sum += u64::from(u16::from_ne_bytes([last, 0]));
    }
    sum
}

/// `a + b` with the carry out of bit 63 added back in (one's-complement addition).
#[inline]
fn add_end_around(a: u64, b: u64) -> u64 {
    let (sum, carry) = a.overflowing_add(b);
    sum + u64::from(carry)
}

/// Fold a 64-bit one's-complement sum to 32 bits (end-around carry), keeping its value
/// modulo 0xffff and keeping a non-zero sum non-zero.
#[inline]
fn fold_to_32(sum: u64) -> u64 {
    let (low, carry) = (sum as u32).overflowing_add((sum >> 32) as u32);
    // With a carry out, `low` is at most 2^32 - 2: adding it back cannot overflow.
    u64::from(low + u32::from(carry))
}

/// Unfolded sum of a 20-byte IPv4 header without options, below 2^32.
#[inline]
pub fn ipv4_header(header: &[u8; 20]) -> u64 {
    let (words, _) = header.as_chunks::<4>();
    words
        .iter()
        .map(|word| u64::from(u32::from_ne_bytes(*word)))
        .sum()
}

/// Fold an unfolded sum to 16 bits (native byte order).
#[inline]
pub fn fold(sum: u64) -> u16 {
    let sum = fold_to_32(sum) as u32;
    let (low, carry) = (sum as u16).overflowing_add((sum >> 16) as u16);
    // With a carry out, `low` is at most 2^16 - 2: adding it back cannot overflow.
    low + u16::from(carry)
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
