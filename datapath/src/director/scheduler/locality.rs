//! `lblc` and `lblcr`: locality-based least connection, without and with replication
//! (`ip_vs_lblc.c`, `ip_vs_lblcr.c`).
//!
//! Both keep a cache keyed by the packet's *destination* address. lblc maps it to one
//! server and re-picks (wlc over all servers) when that server is unavailable, quiescent, or
//! "overloaded" in lblc's sense (more active connections than its weight while some server
//! has fewer than half its weight). lblcr maps it to a server *set*, serves the set's
//! weighted-least member, adds a wlc pick when that member is overloaded, and drops the
//! set's most loaded member when the set has not changed for `lblcr_expiration`.
//! Garbage collection runs on the kernel's 60 s timer, in virtual time: a full sweep every
//! 30th run (entries idle ≥ 24 h), otherwise only when above 16384 entries (idle ≥ 6 min).
//! Unlike the kernel (whose cache is bounded only by memory) the cache has a hard capacity;
//! a new entry beyond it is not stored (counted), which is what the kernel does when its
//! allocation fails.

use std::collections::HashMap;
use std::net::IpAddr;

use super::super::dest::{DestId, Dests, RealServer};
use super::super::hash::{fold_address, hash_32};
use super::least::wlc;
use crate::hash::keyed::{DEFAULT_SEED, KeyedState};
use crate::verdict::{NS_PER_SEC, TimeNs};

/// Hard capacity of one service's lblc/lblcr cache.
pub const LBLC_CACHE_CAPACITY: usize = 65_536;
/// The kernel's soft limit (`IP_VS_LBLC_TAB_SIZE * 16`).
const SOFT_LIMIT: usize = 16 * 1024;
const TABLE_BITS: u32 = 10;
const CHECK_INTERVAL: TimeNs = 60 * NS_PER_SEC;
const ENTRY_TIMEOUT: TimeNs = 6 * 60 * NS_PER_SEC;
/// Default `lblc_expiration` / `lblcr_expiration`: 24 hours.
pub const LOCALITY_EXPIRATION: TimeNs = 24 * 60 * 60 * NS_PER_SEC;
const COUNT_FOR_FULL_EXPIRATION: u32 = 30;
/// Garbage-collection checks replayed one by one after a quiet gap; the rest are collapsed
/// (see [`LocalityCache::collect_garbage`]).
pub const MAX_GARBAGE_CHECKS_REPLAYED: u32 = 64;

/// One cache entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalityEntry {
    /// Servers (lblc: exactly one), most recently added first.
    pub servers: Vec<DestId>,
    /// Last lookup.
    pub last_use: TimeNs,
    /// Last change of the server set (lblcr).
    pub set_modified: TimeNs,
}

/// The per-service cache and its garbage-collection timer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalityCache {
    /// Entries by destination address (lookup only; never iterated unordered).
    pub entries: HashMap<IpAddr, LocalityEntry, KeyedState>,
    /// Entries not stored because the cache was full.
    pub overflows: u64,
    /// QA: new entries are refused as if the cache were at capacity.
    pub report_full: bool,
    next_check: TimeNs,
    counter: u32,
    rover: usize,
}

impl Default for LocalityCache {
    fn default() -> Self {
        Self::new(DEFAULT_SEED)
    }
}

impl LocalityCache {
    /// An empty cache; its index (keyed by packet destinations) hashes with keyed SipHash
    /// from `hash_seed`.
    pub fn new(hash_seed: u64) -> Self {
        Self {
            entries: HashMap::with_hasher(KeyedState::new(hash_seed, 0x6970_7673_6c62_6c63)),
            overflows: 0,
            report_full: false,
            next_check: CHECK_INTERVAL,
            counter: 1,
            rover: 0,
        }
    }
}

/// lblc's `is_overloaded`: more active connections than weight, and some server under half.
fn locality_overloaded(server: &RealServer, dests: &Dests) -> bool {
    i64::from(server.active) > i64::from(server.weight)
        && dests
            .linked()
            .any(|(_, d)| i64::from(d.active) * 2 < i64::from(d.weight))
}

fn set_min(set: &[DestId], dests: &Dests) -> Option<DestId> {
    let candidate = |id: &DestId| !dests.get(*id).overloaded;
    let mut members = set.iter().filter(|id| candidate(id));
    let first = *members.find(|&&id| dests.get(id).weight > 0 && dests.get(id).available)?;
    let (mut least, mut least_overhead) = (first, dests.get(first).connection_overhead());
    for &id in members {
        let server = dests.get(id);
        let overhead = server.connection_overhead();
        if least_overhead * i64::from(server.weight) > overhead * i64::from(dests.get(least).weight)
            && server.available
        {
            least = id;
            least_overhead = overhead;
        }
    }
    Some(least)
}

fn set_max(set: &[DestId], dests: &Dests) -> Option<DestId> {
    let mut members = set.iter();
    let first = *members.find(|&&id| dests.get(id).weight > 0)?;
    let (mut most, mut most_overhead) = (first, dests.get(first).connection_overhead());
    for &id in members {
        let server = dests.get(id);
        let overhead = server.connection_overhead();
        if most_overhead * i64::from(server.weight) < overhead * i64::from(dests.get(most).weight)
            && server.weight > 0
        {
            most = id;
            most_overhead = overhead;
        }
    }
    Some(most)
}

impl LocalityCache {
    fn store(&mut self, now: TimeNs, address: IpAddr, server: DestId) {
        let full = self.report_full || self.entries.len() >= LBLC_CACHE_CAPACITY;
        if full && !self.entries.contains_key(&address) {
            self.overflows += 1;
            return;
        }
        self.entries.insert(
            address,
            LocalityEntry {
                servers: vec![server],
                last_use: now,
                set_modified: now,
            },
        );
    }

    /// `ip_vs_lblc_schedule`.
    pub fn schedule_lblc(&mut self, now: TimeNs, dests: &Dests, address: IpAddr) -> Option<DestId> {
        if let Some(entry) = self.entries.get_mut(&address) {
            entry.last_use = now;
            let id = entry.servers[0];
            let server = dests.get(id);
            if server.available && server.weight > 0 && !locality_overloaded(server, dests) {
                return Some(id);
            }
        }
        let chosen = wlc(dests)?;
        let unchanged = self
            .entries
            .get(&address)
            .is_some_and(|e| e.servers[0] == chosen);
        if !unchanged {
            self.entries.remove(&address);
            self.store(now, address, chosen);
        }
        Some(chosen)
    }

    /// `ip_vs_lblcr_schedule`.
    pub fn schedule_lblcr(
        &mut self,
        now: TimeNs,
        dests: &Dests,
        address: IpAddr,
    ) -> Option<DestId> {
        let Some(entry) = self.entries.get_mut(&address) else {
            let chosen = wlc(dests)?;
            self.store(now, address, chosen);
            return Some(chosen);
        };
        entry.last_use = now;
        let least = set_min(&entry.servers, dests);
        if entry.servers.len() > 1
            && now > entry.set_modified + LOCALITY_EXPIRATION
            && let Some(most) = set_max(&entry.servers, dests)
        {
            entry.servers.retain(|&id| id != most);
            entry.set_modified = now;
        }
        if let Some(id) = least
            && !locality_overloaded(dests.get(id), dests)
        {
            return Some(id);
        }
        let chosen = wlc(dests)?;
        if !entry.servers.contains(&chosen) {
            entry.servers.insert(0, chosen);
            entry.set_modified = now;
        }
        Some(chosen)
    }

    /// Run every garbage-collection timer tick due by `now`.
    ///
    /// After a long quiet gap (virtual time may jump by years) at most
    /// [`MAX_GARBAGE_CHECKS_REPLAYED`] checks are replayed one by one; the rest are collapsed
    /// into their one visible effect, the last full sweep, so the cost stays bounded.
    pub fn collect_garbage(&mut self, now: TimeNs) {
        let mut replayed = 0;
        while self.next_check <= now && replayed < MAX_GARBAGE_CHECKS_REPLAYED {
            let at = self.next_check;
            self.check_expire(at);
            self.next_check += CHECK_INTERVAL;
            replayed += 1;
        }
        if self.next_check <= now {
            self.collapse_checks(now);
        }
    }

    /// The checks due by `now`, at once. No packet came since the replayed checks, so every
    /// entry is past [`ENTRY_TIMEOUT`] and the cache is within its soft limit (each replayed
    /// check over it removed up to `SOFT_LIMIT / 2` expired entries): the skipped checks
    /// only count, and every [`COUNT_FOR_FULL_EXPIRATION`]th one sweeps; sweeps at later
    /// times remove a superset, so the last one alone decides what remains.
    fn collapse_checks(&mut self, now: TimeNs) {
        let checks = (now - self.next_check) / CHECK_INTERVAL + 1;
        let period = u64::from(COUNT_FOR_FULL_EXPIRATION);
        let first_sweep = (period - u64::from(self.counter) % period) % period;
        if first_sweep < checks {
            let last_sweep = first_sweep + (checks - 1 - first_sweep) / period * period;
            let at = self.next_check + last_sweep * CHECK_INTERVAL;
            self.entries
                .retain(|_, e| at < e.last_use.saturating_add(LOCALITY_EXPIRATION));
            self.counter = 1 + (checks - 1 - last_sweep) as u32;
        } else {
            self.counter += checks as u32;
        }
        self.next_check += checks * CHECK_INTERVAL;
    }

    fn check_expire(&mut self, now: TimeNs) {
        if self.counter.is_multiple_of(COUNT_FOR_FULL_EXPIRATION) {
            self.entries
                .retain(|_, e| now < e.last_use.saturating_add(LOCALITY_EXPIRATION));
            self.counter = 1;
            return;
        }
        if self.entries.len() <= SOFT_LIMIT {
            self.counter += 1;
            return;
        }
        let mut goal = ((self.entries.len() - SOFT_LIMIT) * 4 / 3).min(SOFT_LIMIT / 2) as i64;
        let mut by_bucket: Vec<(usize, IpAddr)> = self
            .entries
            .iter()
            .filter(|(_, e)| now >= e.last_use.saturating_add(ENTRY_TIMEOUT))
            .map(|(a, _)| (hash_32(fold_address(*a), TABLE_BITS) as usize, *a))
            .collect();
        by_bucket.sort_unstable();
        let buckets = 1usize << TABLE_BITS;
        let mut bucket = self.rover;
        for _ in 0..buckets {
            bucket = (bucket + 1) & (buckets - 1);
            let start = by_bucket.partition_point(|(b, _)| *b < bucket);
            for (_, address) in by_bucket[start..].iter().take_while(|(b, _)| *b == bucket) {
                self.entries.remove(address);
                goal -= 1;
            }
            if goal <= 0 {
                break;
            }
        }
        self.rover = bucket;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with_entries() -> LocalityCache {
        let mut cache = LocalityCache::default();
        for (index, hours) in [0u64, 3, 20, 30, 47].into_iter().enumerate() {
            let address = IpAddr::from([10, 0, 0, index as u8]);
            cache.store(hours * 3600 * NS_PER_SEC, address, 0);
        }
        cache
    }

    fn replay_every_check(cache: &mut LocalityCache, now: TimeNs) {
        while cache.next_check <= now {
            let at = cache.next_check;
            cache.check_expire(at);
            cache.next_check += CHECK_INTERVAL;
        }
    }

    /// A quiet gap collapsed into its last sweep leaves the cache exactly as replaying every
    /// 60-second check would, whatever the gap and the phase of the sweep counter.
    #[test]
    fn a_long_gap_is_collapsed_exactly() {
        let hour = 3600 * NS_PER_SEC;
        for start_minutes in [0u64, 7, 29, 30, 31, 95] {
            for gap in [
                hour,
                2 * hour,
                24 * hour,
                25 * hour,
                49 * hour,
                50 * hour,
                400 * hour,
            ] {
                let mut fast = cache_with_entries();
                fast.collect_garbage(start_minutes * 60 * NS_PER_SEC);
                let mut slow = fast.clone();
                let now = 47 * hour + gap;
                fast.collect_garbage(now);
                replay_every_check(&mut slow, now);
                assert_eq!(fast, slow, "start {start_minutes} min, gap {gap} ns");
            }
        }
    }

    #[test]
    fn a_gap_of_centuries_costs_a_bounded_number_of_checks() {
        let mut cache = cache_with_entries();
        cache.collect_garbage(1 << 62);
        assert!(cache.entries.is_empty());
        assert!(cache.next_check > 1 << 62);
    }
}
