//! Keyed hashes for tables whose keys come from packets, both under a 128-bit key derived
//! from the run's seed:
//!
//! - [`keyed_hash`]: SipHash-1-3 of a key's `Hash` bytes, gathered into a small buffer and
//!   hashed in one pass with [`siphash13`] (the same value as the streaming `siphasher`
//!   `SipHasher13`, the fallback for keys longer than the buffer). The shield's bounded
//!   tables place entries with it (its value decides evictions, so it is fixed).
//! - [`KeyedState`]: the `BuildHasher` of packet-keyed `HashMap`s (director connections and
//!   templates, conntrack, fragments, lblc caches): a keyed folded multiply ([`FoldHasher`],
//!   the construction of `foldhash`/`ahash`'s fallback: each word is XORed into the state,
//!   which is multiplied to 128 bits by a secret 64-bit key and folded). An attacker who
//!   does not know the key cannot choose colliding keys (the keys that collide under an
//!   unkeyed FxHash do not collide here: `benches/hashflood.rs`), at a few instructions per
//!   word, where SipHash-1-3 costs ~14 per round and 3 more rounds to finish: measured by
//!   `scripts/callgrind-check` on the `established` workload, SipHash-1-3 here cost +276
//!   instructions per packet (+15%), this hash −7 (the unkeyed FxHash it replaced: 1789).
//!   It is not a cryptographic PRF; the value never reaches any output (the maps are
//!   never iterated in hash order).
//!
//! Keys are derived from a seed ([`KeyedState::new`]): the scenario's seed in a run, so runs
//! stay deterministic; [`DEFAULT_SEED`] when no seed is given (`sim replay` / `sim check`
//! without `--seed`, tests, benches).

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use siphasher::sip::SipHasher13;

use super::siphash::siphash13;

/// The seed of keyed tables built without one: `0x6c62_7369_6d2d_6b79` ("lbsim-ky").
pub const DEFAULT_SEED: u64 = 0x6c62_7369_6d2d_6b79;

/// Bytes of a key's `Hash` output hashed in one pass; longer keys use the streaming hasher.
const KEY_BYTES_MAX: usize = 64;

/// Collects the bytes a `Hash` implementation writes (little-endian integers, as
/// `siphasher` reads them), so they can be hashed in one pass; hashes them on `finish`.
#[derive(Clone, Debug)]
pub struct KeyedHasher {
    keys: (u64, u64),
    bytes: [u8; KEY_BYTES_MAX],
    len: usize,
    overflow: bool,
}

impl KeyedHasher {
    /// An empty hasher under `keys`.
    #[inline(always)]
    pub fn new(keys: (u64, u64)) -> Self {
        Self {
            keys,
            bytes: [0; KEY_BYTES_MAX],
            len: 0,
            overflow: false,
        }
    }

    #[inline(always)]
    fn push<const N: usize>(&mut self, bytes: [u8; N]) {
        match self.bytes.get_mut(self.len..self.len + N) {
            Some(room) => {
                room.copy_from_slice(&bytes);
                self.len += N;
            }
            None => self.overflow = true,
        }
    }
}

impl Hasher for KeyedHasher {
    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) {
        match self.bytes.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.overflow = true,
        }
    }

    #[inline(always)]
    fn write_u8(&mut self, value: u8) {
        self.push(value.to_le_bytes());
    }

    #[inline(always)]
    fn write_u16(&mut self, value: u16) {
        self.push(value.to_le_bytes());
    }

    #[inline(always)]
    fn write_u32(&mut self, value: u32) {
        self.push(value.to_le_bytes());
    }

    #[inline(always)]
    fn write_u64(&mut self, value: u64) {
        self.push(value.to_le_bytes());
    }

    #[inline(always)]
    fn write_u128(&mut self, value: u128) {
        self.push(value.to_le_bytes());
    }

    #[inline(always)]
    fn write_usize(&mut self, value: usize) {
        self.push(value.to_le_bytes());
    }

    /// SipHash-1-3 of the bytes written (an overflowing key is rehashed by the caller:
    /// see [`keyed_hash`]; a `HashMap` never gets here with one, see [`KeyedState`]).
    #[inline(always)]
    fn finish(&self) -> u64 {
        siphash13(self.keys, &self.bytes[..self.len])
    }
}

/// SipHash-1-3 of `key`'s `Hash` bytes under `keys`: the value of `siphasher`'s
/// `SipHasher13::new_with_keys(keys.0, keys.1)` fed the same key.
#[inline]
pub fn keyed_hash<K: Hash + ?Sized>(keys: (u64, u64), key: &K) -> u64 {
    let mut collected = KeyedHasher::new(keys);
    key.hash(&mut collected);
    if collected.overflow {
        let mut hasher = SipHasher13::new_with_keys(keys.0, keys.1);
        key.hash(&mut hasher);
        return hasher.finish();
    }
    collected.finish()
}

/// The two SipHash keys of a table: `seed` mixed with the table's `domain` constant (so
/// two tables of one run do not share keys) by two rounds of SplitMix64.
pub fn keys_from_seed(seed: u64, domain: u64) -> (u64, u64) {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let k0 = splitmix(seed ^ domain);
    (k0, splitmix(k0))
}

/// `BuildHasher` of the keyed [`FoldHasher`] for `HashMap`s keyed by packet fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyedState {
    keys: (u64, u64),
}

impl KeyedState {
    /// Keys derived from `seed` and the table's `domain` ([`keys_from_seed`]).
    pub fn new(seed: u64, domain: u64) -> Self {
        Self {
            keys: keys_from_seed(seed, domain),
        }
    }
}

impl BuildHasher for KeyedState {
    type Hasher = FoldHasher;

    #[inline(always)]
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher {
            accumulator: self.keys.0,
            multiplier: self.keys.1,
        }
    }
}

/// The product of `a` and `b` to 128 bits, its halves XORed.
#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Keyed folded-multiply hasher (see the module doc): per word, `state = fold((state ^
/// word) × key1)`, starting from `key0`; the finish multiplies once more by a constant
/// and rotates, so both the low bits (bucket) and the high bits (tag) of a `HashMap`
/// depend on every input bit.
#[derive(Clone, Copy, Debug)]
pub struct FoldHasher {
    accumulator: u64,
    multiplier: u64,
}

impl FoldHasher {
    #[inline(always)]
    fn mix(&mut self, word: u64) {
        self.accumulator = folded_multiply(self.accumulator ^ word, self.multiplier);
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let (words, tail) = bytes.as_chunks::<8>();
        for word in words {
            self.mix(u64::from_le_bytes(*word));
        }
        let mut last = (bytes.len() as u64) << 56;
        for (index, &byte) in tail.iter().enumerate() {
            last |= u64::from(byte) << (8 * index);
        }
        self.mix(last);
    }

    #[inline(always)]
    fn write_u8(&mut self, value: u8) {
        self.mix(u64::from(value));
    }

    #[inline(always)]
    fn write_u16(&mut self, value: u16) {
        self.mix(u64::from(value));
    }

    #[inline(always)]
    fn write_u32(&mut self, value: u32) {
        self.mix(u64::from(value));
    }

    #[inline(always)]
    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    #[inline(always)]
    fn write_u128(&mut self, value: u128) {
        self.mix(value as u64);
        self.mix((value >> 64) as u64);
    }

    #[inline(always)]
    fn write_usize(&mut self, value: usize) {
        self.mix(value as u64);
    }

    #[inline(always)]
    fn finish(&self) -> u64 {
        folded_multiply(self.accumulator, 0x2d35_8dcc_aa6c_78a5).rotate_left(26)
    }
}

/// Feed a socket address to a hasher packed: an IPv4 address and its port as one `u64`,
/// an IPv6 address as one `u128` then the port (the derived `Hash` of `SocketAddr` writes
/// discriminants, flow info and scope too, which costs hashing work for nothing).
#[inline(always)]
pub fn write_socket<H: Hasher>(state: &mut H, address: &SocketAddr) {
    match address.ip() {
        IpAddr::V4(v4) => {
            state.write_u64(u64::from(u32::from(v4)) << 16 | u64::from(address.port()))
        }
        IpAddr::V6(v6) => {
            state.write_u128(u128::from(v6));
            state.write_u16(address.port());
        }
    }
}

/// Feed an address to a hasher packed (see [`write_socket`]).
#[inline(always)]
pub fn write_address<H: Hasher>(state: &mut H, address: &IpAddr) {
    match address {
        IpAddr::V4(v4) => state.write_u32(u32::from(*v4)),
        IpAddr::V6(v6) => state.write_u128(u128::from(*v6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn streaming<K: Hash>(keys: (u64, u64), key: &K) -> u64 {
        let mut hasher = SipHasher13::new_with_keys(keys.0, keys.1);
        key.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn one_pass_hash_equals_the_streaming_siphasher() {
        #[derive(Hash)]
        struct Flow(IpAddr, IpAddr, u16, u16);
        #[derive(Hash)]
        struct Source(u32, IpAddr);
        let v4 = |i: u32| IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i));
        let v6 = |i: u32| IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)));
        for seed in [0u64, 7, u64::MAX] {
            let keys = (seed ^ 0x1234, seed.rotate_left(17));
            for i in 0..64u32 {
                let flow = Flow(v4(i), v4(i * 7), 1024 + i as u16, 80);
                assert_eq!(keyed_hash(keys, &flow), streaming(keys, &flow));
                let flow6 = Flow(v6(i), v6(!i), 1024, i as u16);
                assert_eq!(keyed_hash(keys, &flow6), streaming(keys, &flow6));
                let source = Source(i, v4(i));
                assert_eq!(keyed_hash(keys, &source), streaming(keys, &source));
                let source6 = Source(i, v6(i));
                assert_eq!(keyed_hash(keys, &source6), streaming(keys, &source6));
                // Every message length from 0 to past the buffer (streaming fallback).
                let bytes: Vec<u8> = (0..i as u8 + 80).collect();
                let message = &bytes[..i as usize + 8];
                assert_eq!(keyed_hash(keys, &message), streaming(keys, &message));
                assert_eq!(keyed_hash(keys, &i), streaming(keys, &i));
            }
        }
    }

    #[test]
    fn keyed_maps_find_their_entries_and_seeds_change_the_hash() {
        let state = KeyedState::new(7, 1);
        let mut map: HashMap<SocketAddr, u32, KeyedState> = HashMap::with_hasher(state);
        for i in 0..1000u32 {
            map.insert(SocketAddr::from((Ipv4Addr::from(i), i as u16)), i);
        }
        for i in 0..1000u32 {
            assert_eq!(
                map.get(&SocketAddr::from((Ipv4Addr::from(i), i as u16))),
                Some(&i)
            );
        }
        let hash = |s: KeyedState| s.hash_one(SocketAddr::from(([10, 0, 0, 1], 80)));
        assert_eq!(hash(KeyedState::new(7, 1)), hash(KeyedState::new(7, 1)));
        assert_ne!(hash(KeyedState::new(7, 1)), hash(KeyedState::new(8, 1)));
        assert_ne!(hash(KeyedState::new(7, 1)), hash(KeyedState::new(7, 2)));
    }
}
