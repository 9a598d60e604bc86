//! A bounded, set-associative table: the storage of the known-session and per-source tables.
//!
//! The capacity is fixed when the table is built (a power of two of slots, grouped in
//! buckets of [`WAYS`]); a key can only live in its bucket, so memory never grows with
//! traffic. When a bucket is full the caller's policy picks a victim: a slot that is
//! reclaimable (expired), else the evictable slot with the oldest rank, else nothing — the
//! insertion is refused and the caller counts it. Keys are hashed with SipHash-1-3 keyed from
//! the shield's seed, so spoofed sources cannot aim at one bucket without knowing it (the
//! one-pass [`keyed_hash`] of [`crate::hash::keyed`]). A caller that looks a key up and
//! then inserts it hashes once (`bucket_of`, `find_in`, `insert_in`, for the shield's
//! per-source count).
//!
//! Each slot has a one-byte tag beside the slots (`tags`, eight per bucket: one 64-bit
//! word): 0 for an empty slot, else a fingerprint of the key's hash (bits the bucket index
//! does not use). A lookup compares the bucket's eight tags at once and reads only the
//! slots whose tag matches (a miss, the common case for a spoofed SYN, reads no slot:
//! one cache line instead of the bucket's slots, several lines). An insertion finds the
//! first empty slot from the tags too. Placement and eviction are those of the slots
//! alone (the first empty way, else the policy over every way in order): the tags only
//! skip reads.
//! No iteration order is exposed except by slot index (deterministic).

use std::hash::Hash;

use crate::hash::keyed::keyed_hash;

/// Slots per bucket (a bucket's tags fill one `u64`).
pub const WAYS: usize = 8;
const _: () = assert!(WAYS == 8);

/// What the overflow policy says about an occupied slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Victim {
    /// Expired: reuse it (the caller is told, to count the expiry).
    Reclaim,
    /// May be evicted; lower rank is evicted first (e.g. last-seen time).
    Evict(u64),
    /// Must stay.
    Keep,
}

/// Where an insertion landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed<V> {
    /// In an empty slot.
    Empty(usize),
    /// In a slot whose expired value is returned.
    Reclaimed(usize, V),
    /// In a slot whose evicted value is returned.
    Evicted(usize, V),
}

impl<V> Placed<V> {
    /// The slot index.
    pub fn index(&self) -> usize {
        match self {
            Self::Empty(index) | Self::Reclaimed(index, _) | Self::Evicted(index, _) => *index,
        }
    }
}

/// The bounded table.
#[derive(Clone, Debug)]
pub struct BoundedTable<K, V> {
    slots: Vec<Option<(K, V)>>,
    /// One tag per slot ([`tag_of`]; 0: empty), a bucket's [`WAYS`] tags in one word.
    tags: Vec<u64>,
    bucket_mask: usize,
    keys: (u64, u64),
    len: usize,
    high_water: usize,
}

impl<K: Hash + Eq + Copy, V> BoundedTable<K, V> {
    /// A table of at least `capacity` slots (rounded up to a power of two, at least one
    /// bucket), hashing with keys derived from `seed`.
    pub fn new(capacity: usize, seed: u64) -> Self {
        let slots = capacity.max(WAYS).next_power_of_two();
        Self {
            slots: (0..slots).map(|_| None).collect(),
            tags: vec![0; slots / WAYS],
            bucket_mask: slots / WAYS - 1,
            keys: (
                seed ^ 0x7461_626c_655f_6b30,
                seed.rotate_left(17) ^ 0x7461_626c_655f_6b31,
            ),
            len: 0,
            high_water: 0,
        }
    }

    /// The bucket `key` lives in (its first slot index), for [`Self::find_in`] and
    /// [`Self::insert_in`]: one hash for a lookup followed by an insertion.
    #[inline]
    pub(crate) fn bucket_of(&self, key: &K) -> Bucket {
        let hash = keyed_hash(self.keys, key);
        Bucket {
            index: hash as usize & self.bucket_mask,
            tag: tag_of(hash),
        }
    }

    /// The slot holding `key`.
    #[inline]
    pub fn find(&self, key: &K) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        self.find_in(self.bucket_of(key), key)
    }

    /// The slot holding `key`, which hashes to `bucket`: only the slots whose tag matches
    /// are read.
    #[inline]
    pub(crate) fn find_in(&self, bucket: Bucket, key: &K) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let tags = *self.tags.get(bucket.index)?;
        let start = bucket.index * WAYS;
        let mut matches = bytes_equal(tags, bucket.tag);
        while matches != 0 {
            let index = start + (matches.trailing_zeros() / 8) as usize;
            if matches!(&self.slots[index], Some((k, _)) if k == key) {
                return Some(index);
            }
            matches &= matches - 1;
        }
        None
    }

    /// The value in a slot.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&V> {
        self.slots.get(index)?.as_ref().map(|(_, v)| v)
    }

    /// The value in a slot, mutably.
    #[inline]
    pub fn get_mut(&mut self, index: usize) -> Option<&mut V> {
        self.slots.get_mut(index)?.as_mut().map(|(_, v)| v)
    }

    /// Remove the value in a slot.
    pub fn remove(&mut self, index: usize) -> Option<V> {
        let taken = self.slots.get_mut(index)?.take();
        if taken.is_some() {
            self.len -= 1;
            self.set_tag(index, 0);
        }
        taken.map(|(_, v)| v)
    }

    /// Insert a key that is not in the table, choosing a victim with `policy` when its
    /// bucket is full. `Err(value)` when every slot must stay.
    pub fn insert(
        &mut self,
        key: K,
        value: V,
        policy: impl Fn(&V) -> Victim,
    ) -> Result<Placed<V>, V> {
        let bucket = self.bucket_of(&key);
        self.insert_in(bucket, key, value, policy)
    }

    /// [`Self::insert`] of a key whose bucket is already known ([`Self::bucket_of`]).
    pub(crate) fn insert_in(
        &mut self,
        bucket: Bucket,
        key: K,
        value: V,
        policy: impl Fn(&V) -> Victim,
    ) -> Result<Placed<V>, V> {
        let start = bucket.index * WAYS;
        let empty = bytes_equal(self.tags[bucket.index], 0);
        if empty != 0 {
            let index = start + (empty.trailing_zeros() / 8) as usize;
            self.slots[index] = Some((key, value));
            self.set_tag(index, bucket.tag);
            self.len += 1;
            self.high_water = self.high_water.max(self.len);
            return Ok(Placed::Empty(index));
        }
        let mut oldest: Option<(u64, usize)> = None;
        let mut reclaim = None;
        for index in start..start + WAYS {
            if let Some((_, old)) = &self.slots[index] {
                match policy(old) {
                    Victim::Reclaim if reclaim.is_none() => reclaim = Some(index),
                    Victim::Evict(rank) if oldest.is_none_or(|(r, _)| rank < r) => {
                        oldest = Some((rank, index));
                    }
                    _ => {}
                }
            }
        }
        let (index, reclaimed) = match (reclaim, oldest) {
            (Some(index), _) => (index, true),
            (None, Some((_, index))) => (index, false),
            (None, None) => return Err(value),
        };
        let old = self.slots[index]
            .replace((key, value))
            .map(|(_, v)| v)
            .expect("occupied slot");
        self.set_tag(index, bucket.tag);
        Ok(if reclaimed {
            Placed::Reclaimed(index, old)
        } else {
            Placed::Evicted(index, old)
        })
    }

    /// Set the tag of slot `index`.
    #[inline]
    fn set_tag(&mut self, index: usize, tag: u8) {
        let shift = (index % WAYS) * 8;
        let word = &mut self.tags[index / WAYS];
        *word = (*word & !(0xff << shift)) | (u64::from(tag) << shift);
    }

    /// Occupied slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no slot is occupied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most slots ever occupied at once.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    /// Bytes of the slot and tag arrays (fixed at construction).
    pub fn slot_bytes(&self) -> usize {
        self.slots.len() * (std::mem::size_of::<Option<(K, V)>>() + 1)
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

/// The bucket of a key and its tag: from [`BoundedTable::bucket_of`], valid for that
/// table only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Bucket number (its first slot is `index * WAYS`).
    index: usize,
    /// The key's tag.
    tag: u8,
}

/// The tag of a key hashing to `hash`: its top byte (the bucket index takes low bits; a
/// table of 2^56 buckets would share bits, harmlessly), never 0 (the empty tag).
#[inline]
fn tag_of(hash: u64) -> u8 {
    ((hash >> 56) as u8).max(1)
}

/// A word with 0x80 in each byte where `word`'s byte equals `byte`, 0 elsewhere (exact:
/// no false positives).
#[inline]
fn bytes_equal(word: u64, byte: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ (u64::from(byte) * 0x0101_0101_0101_0101);
    !(((x & LOW7) + LOW7) | x | LOW7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_bucket_evicts_oldest_or_refuses() {
        let mut table: BoundedTable<u32, u64> = BoundedTable::new(WAYS, 1);
        for key in 0..WAYS as u32 {
            assert!(matches!(
                table.insert(key, u64::from(key), |_| Victim::Keep),
                Ok(Placed::Empty(_))
            ));
        }
        assert_eq!(table.insert(100, 5, |_| Victim::Keep), Err(5));
        let placed = table.insert(100, 5, |&v| Victim::Evict(v)).unwrap();
        assert!(matches!(placed, Placed::Evicted(_, 0)));
        assert_eq!(table.find(&0), None);
        assert_eq!(table.get(table.find(&100).unwrap()), Some(&5));
        assert_eq!(table.len(), WAYS);
    }

    #[test]
    fn bytes_equal_marks_exactly_the_equal_bytes() {
        let word = u64::from_le_bytes([0, 5, 0x80, 5, 0xff, 0x7f, 1, 5]);
        assert_eq!(bytes_equal(word, 5), 0x8000_0000_8000_8000);
        for byte in [0u8, 1, 0x7f, 0x80, 0xff] {
            let expected = word
                .to_le_bytes()
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == byte)
                .fold(0u64, |m, (i, _)| m | 0x80 << (8 * i));
            assert_eq!(bytes_equal(word, byte), expected, "byte {byte:#x}");
        }
    }

    /// The slot-by-slot table the tags must not change: the first empty way, else the
    /// policy over every way (first reclaimable, else lowest rank, else refused).
    fn model_insert(
        slots: &mut [Option<(u32, u64)>],
        start: usize,
        key: u32,
        value: u64,
        policy: impl Fn(&u64) -> Victim,
    ) -> Result<Placed<u64>, u64> {
        if let Some(way) = slots[start..start + WAYS].iter().position(Option::is_none) {
            slots[start + way] = Some((key, value));
            return Ok(Placed::Empty(start + way));
        }
        let ways = start..start + WAYS;
        let verdicts: Vec<(usize, Victim)> =
            ways.map(|i| (i, policy(&slots[i].unwrap().1))).collect();
        let reclaim = verdicts.iter().find(|(_, v)| *v == Victim::Reclaim);
        let evict = verdicts
            .iter()
            .filter_map(|&(i, v)| match v {
                Victim::Evict(rank) => Some((rank, i)),
                _ => None,
            })
            .min();
        let (index, reclaimed) = match (reclaim, evict) {
            (Some(&(i, _)), _) => (i, true),
            (None, Some((_, i))) => (i, false),
            (None, None) => return Err(value),
        };
        let old = slots[index].replace((key, value)).unwrap().1;
        Ok(if reclaimed {
            Placed::Reclaimed(index, old)
        } else {
            Placed::Evicted(index, old)
        })
    }

    /// Random lookups, insertions and removals on a small table (many collisions, full
    /// buckets, equal tags): the same slots, evictions and lookups as the model.
    #[test]
    fn tags_change_no_placement() {
        let mut table: BoundedTable<u32, u64> = BoundedTable::new(64, 3);
        let mut model: Vec<Option<(u32, u64)>> = vec![None; table.capacity()];
        let mut state = 0x1234_5678_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            state >> 33
        };
        for step in 0..50_000u64 {
            let key = (next() % 300) as u32;
            let start = table.bucket_of(&key).index * WAYS;
            let expected = model[start..start + WAYS]
                .iter()
                .position(|s| matches!(s, Some((k, _)) if *k == key))
                .map(|way| start + way);
            let found = table.find(&key);
            assert_eq!(found, expected, "step {step} key {key}");
            match (found, next() % 4) {
                (Some(index), 0) => {
                    assert_eq!(table.remove(index), model[index].take().map(|(_, v)| v));
                }
                (Some(index), _) => {
                    *table.get_mut(index).unwrap() = step;
                    model[index].as_mut().unwrap().1 = step;
                }
                (None, mode) => {
                    let horizon = step.saturating_sub(200);
                    let policy = move |v: &u64| match mode {
                        0 => Victim::Keep,
                        1 if *v < horizon => Victim::Reclaim,
                        _ if v.is_multiple_of(3) => Victim::Keep,
                        _ => Victim::Evict(*v),
                    };
                    let placed = table.insert(key, step, policy);
                    assert_eq!(placed, model_insert(&mut model, start, key, step, policy));
                }
            }
            assert_eq!(table.len(), model.iter().flatten().count());
        }
    }
}
