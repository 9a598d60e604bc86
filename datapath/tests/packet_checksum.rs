//! Property tests of the fast RFC 1071 checksum against a plain reference (16-bit
//! big-endian words, end-around carry after every addition) on random data, lengths and
//! start alignments, and of the sums callers combine (pseudo-header + segment).

use std::net::{Ipv4Addr, Ipv6Addr};

use datapath::packet::checksum;
use proptest::prelude::*;

/// RFC 1071 the slow way: the folded one's-complement sum, in network byte order.
fn reference_sum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The fast sum, folded and converted to network byte order.
fn fast_sum(sum: u64) -> u16 {
    u16::from_be(checksum::fold(sum))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

    #[test]
    fn partial_agrees_with_the_reference(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        start in 0usize..9,
    ) {
        let data = &bytes[start.min(bytes.len())..];
        prop_assert_eq!(fast_sum(checksum::partial(data)), reference_sum(data));
    }

    #[test]
    fn all_ones_and_zeros_agree(len in 0usize..200, ones in any::<bool>()) {
        let data = vec![if ones { 0xff } else { 0 }; len];
        prop_assert_eq!(fast_sum(checksum::partial(&data)), reference_sum(&data));
    }

    #[test]
    fn sums_of_even_length_pieces_add_up(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        split in any::<prop::sample::Index>(),
    ) {
        let at = split.index(bytes.len() + 1) & !1;
        let combined = checksum::partial(&bytes[..at]) + checksum::partial(&bytes[at..]);
        prop_assert_eq!(fast_sum(combined), reference_sum(&bytes));
    }

    #[test]
    fn field_bytes_make_any_segment_valid(
        bytes in prop::collection::vec(any::<u8>(), 2..300),
        source in any::<u32>(),
        destination in any::<u128>(),
    ) {
        let mut data = bytes;
        data[0..2].fill(0);
        let (s4, d4) = (Ipv4Addr::from(source), Ipv4Addr::from(source.rotate_left(7)));
        let pseudo = checksum::pseudo_header_v4(s4, d4, 6, data.len() as u32);
        let field = checksum::field_bytes(pseudo + checksum::partial(&data));
        data[0..2].copy_from_slice(&field);
        prop_assert!(checksum::is_valid(pseudo + checksum::partial(&data)));
        let (s6, d6) = (Ipv6Addr::from(destination), Ipv6Addr::from(!destination));
        let pseudo6 = checksum::pseudo_header_v6(s6, d6, 17, data.len() as u32);
        data[0..2].fill(0);
        let field = checksum::field_bytes(pseudo6 + checksum::partial(&data));
        data[0..2].copy_from_slice(&field);
        prop_assert!(checksum::is_valid(pseudo6 + checksum::partial(&data)));
    }

    #[test]
    fn ipv4_header_sum_matches_partial(header in any::<[u8; 20]>()) {
        prop_assert_eq!(
            checksum::fold(checksum::ipv4_header(&header)),
            checksum::fold(checksum::partial(&header))
        );
    }
}

/// The fold as RFC 1071 writes it: add the carries back until none are left.
fn loop_fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

proptest! {
    #[test]
    fn fold_agrees_with_the_carry_loop(sum in any::<u64>()) {
        prop_assert_eq!(checksum::fold(sum), loop_fold(sum));
    }
}

#[test]
fn fold_keeps_the_extremes() {
    for sum in [
        0,
        1,
        0xffff,
        0x1_0000,
        0xffff_ffff,
        1 << 48,
        u64::MAX,
        u64::MAX - 1,
    ] {
        assert_eq!(checksum::fold(sum), loop_fold(sum), "{sum:#x}");
    }
}
