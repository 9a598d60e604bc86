//! The two hash functions IPVS schedulers use, reproduced bit for bit.
//!
//! - [`hash_32`]: the kernel's multiplicative `hash_32(val, bits)` (`include/linux/hash.h`,
//!   golden-ratio constant `0x61C88647`), used by `sh`, `dh`, `lblc` and `lblcr`.
//! - [`hsiphash`]: the kernel's `hsiphash()` as built on 64-bit machines, where
//!   "HalfSipHash-1-3" is in fact SipHash-1-3 on 64-bit words with the result truncated to
//!   32 bits (`lib/siphash.c`). Used by `mh` with the fixed keys of `ip_vs_mh.c`.
//!
//! This module does not fold IPv6 addresses; see [`fold_address`] for that.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher13;

/// The kernel's `GOLDEN_RATIO_32`.
pub const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// `hash_32(value, bits)`: multiply by the golden ratio, keep the top `bits` bits.
pub fn hash_32(value: u32, bits: u32) -> u32 {
    debug_assert!((1..=32).contains(&bits));
    value.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// A 64-bit `hsiphash_key_t`: two 64-bit words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HsiphashKey(pub [u64; 2]);

/// `hsiphash(data, key)` as the kernel computes it on 64-bit builds.
pub fn hsiphash(data: &[u8], key: &HsiphashKey) -> u32 {
    let mut hasher = SipHasher13::new_with_keys(key.0[0], key.0[1]);
    hasher.write(data);
    hasher.finish() as u32
}

/// An address as IPVS hashes it: IPv4 in host order; IPv6 as the XOR of its four 32-bit
/// words, each read in network order (the kernel XORs the big-endian words and then applies
/// `ntohl`, which gives the same value).
pub fn fold_address(address: IpAddr) -> u32 {
    match address {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let octets = v6.octets();
            octets
                .chunks_exact(4)
                .map(|word| u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
                .fold(0, |folded, word| folded ^ word)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First 16 of `test_vectors_hsiphash` (64-bit build) from the kernel's
    /// `lib/siphash_kunit.c`: vector n hashes the bytes 0..n under key 00 01 .. 0f.
    const KERNEL_VECTORS: [u32; 16] = [
        0x050f_c4dc,
        0x7d57_ca93,
        0x4dc7_d44d,
        0xe7dd_f7fb,
        0x88d3_8328,
        0x4953_3b67,
        0xc59f_22a7,
        0x9bb1_1140,
        0x8d29_9a8e,
        0x6c06_3de4,
        0x92ff_097f,
        0xf94d_c352,
        0x57b4_d9a2,
        0x1229_ffa7,
        0xc0f9_5d34,
        0x2a51_9956,
    ];

    #[test]
    fn hsiphash_matches_kernel_vectors() {
        let key = HsiphashKey([0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908]);
        let input: Vec<u8> = (0u8..16).collect();
        for (length, expected) in KERNEL_VECTORS.iter().enumerate() {
            assert_eq!(
                hsiphash(&input[..length], &key),
                *expected,
                "length {length}"
            );
        }
    }

    #[test]
    fn hash_32_is_golden_ratio_multiply() {
        assert_eq!(hash_32(0, 8), 0);
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(hash_32(1, 32), GOLDEN_RATIO_32);
        assert_eq!(
            hash_32(0x0a00_0001, 8),
            (0x0a00_0001u32.wrapping_mul(0x61C8_8647)) >> 24
        );
    }

    #[test]
    fn ipv6_fold_xors_words() {
        let address: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(fold_address(address), 0x2001_0db8 ^ 1);
    }
}
