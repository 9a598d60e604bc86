//! A small, fast, deterministic hasher for read-only lookup maps keyed by configuration
//! (the shield's context selectors): the FxHash multiply-rotate mix, with no random state,
//! so every run hashes the same way. It is not collision-resistant: use it only for maps
//! whose keys come from the configuration, never for tables keyed by packet fields an
//! attacker chooses (those use [`super::keyed`]). Map iteration order is never relied upon.

use std::hash::{BuildHasherDefault, Hasher};

/// The multiplier of FxHash (rustc's hasher).
const MULTIPLIER: u64 = 0xf135_7aea_2e62_a9c5;

/// FxHash-style hasher state.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher {
    hash: u64,
}

/// Builds [`FastHasher`]s (no state, no randomness).
pub type FastBuild = BuildHasherDefault<FastHasher>;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(MULTIPLIER);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u16(&mut self, value: u16) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves its entropy in the high bits; the map indexes with the low
        // ones.
        self.hash.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::IpAddr;

    #[test]
    fn maps_keyed_by_addresses_find_their_entries() {
        let mut map: HashMap<(IpAddr, u16), u16, FastBuild> = HashMap::default();
        for index in 0..512u16 {
            let address = IpAddr::from([192, 0, (index >> 8) as u8, index as u8]);
            map.insert((address, index % 3), index);
        }
        for index in 0..512u16 {
            let address = IpAddr::from([192, 0, (index >> 8) as u8, index as u8]);
            assert_eq!(map.get(&(address, index % 3)), Some(&index));
            assert_eq!(map.get(&(address, 3)), None);
        }
    }
}
