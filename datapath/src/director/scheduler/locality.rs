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
    pub entries: HashMap<IpAddr, LocalityEntry>,
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
        Self {
            entries: HashMap::new(),
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
    pub fn collect_garbage(&mut self, now: TimeNs) {
        while self.next_check <= now {
            let at = self.next_check;
            self.check_expire(at);
            self.next_check += CHECK_INTERVAL;
        }
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
