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
//! No iteration order is exposed except by slot index (deterministic).

use std::hash::Hash;

use crate::hash::keyed::keyed_hash;

/// Slots per bucket.
pub const WAYS: usize = 8;

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
        Bucket((keyed_hash(self.keys, key) as usize & self.bucket_mask) * WAYS)
    }

    /// The slot holding `key`.
    #[inline]
    pub fn find(&self, key: &K) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        self.find_in(self.bucket_of(key), key)
    }

    /// The slot holding `key`, which hashes to `bucket`.
    #[inline]
    pub(crate) fn find_in(&self, bucket: Bucket, key: &K) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let start = bucket.0;
        let slots = self.slots.get(start..start + WAYS)?;
        let way = slots
            .iter()
            .position(|slot| matches!(slot, Some((k, _)) if k == key))?;
        Some(start + way)
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
        let start = bucket.0;
        let mut oldest: Option<(u64, usize)> = None;
        let mut reclaim = None;
        for index in start..start + WAYS {
            match &self.slots[index] {
                None => {
                    self.slots[index] = Some((key, value));
                    self.len += 1;
                    self.high_water = self.high_water.max(self.len);
                    return Ok(Placed::Empty(index));
                }
                Some((_, old)) => match policy(old) {
                    Victim::Reclaim if reclaim.is_none() => reclaim = Some(index),
                    Victim::Evict(rank) if oldest.is_none_or(|(r, _)| rank < r) => {
                        oldest = Some((rank, index));
                    }
                    _ => {}
                },
            }
        }
        let placed = match (reclaim, oldest) {
            (Some(index), _) => (index, true),
            (None, Some((_, index))) => (index, false),
            (None, None) => return Err(value),
        };
        let (index, reclaimed) = placed;
        let old = self.slots[index]
            .replace((key, value))
            .map(|(_, v)| v)
            .expect("occupied slot");
        Ok(if reclaimed {
            Placed::Reclaimed(index, old)
        } else {
            Placed::Evicted(index, old)
        })
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

    /// Bytes of the slot array (fixed at construction).
    pub fn slot_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Option<(K, V)>>()
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

/// The bucket of a key: from [`BoundedTable::bucket_of`], valid for that table only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bucket(usize);

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
}
