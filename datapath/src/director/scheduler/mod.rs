//! The IPVS schedulers, each a faithful re-implementation of `net/netfilter/ipvs/ip_vs_*.c`.
//!
//! A [`Scheduler`] holds the per-service scheduler state (`svc->sched_data` in the kernel):
//! the rr cursor, the wrr mark, the sh/dh bucket tables, the Maglev table, the lblc/lblcr
//! caches. [`Scheduler::schedule`] picks a real server for a new connection from the linked
//! servers in list order; [`Scheduler::dest_changed`] is the kernel's
//! `add_dest`/`del_dest`/`upd_dest` callback. Schedulers never change connection counters
//! and never see packets: they get a [`SchedulePacket`] with the addresses they hash.

mod hashing;
mod least;
mod locality;
mod maglev;
mod round_robin;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::dest::{DestId, Dests};
use crate::verdict::TimeNs;

pub use hashing::BucketTable;
pub use locality::{LBLC_CACHE_CAPACITY, LocalityCache};
pub use maglev::{MAGLEV_DEFAULT_TABLE_SIZE, MAGLEV_PRIMES, MaglevTable};
pub use round_robin::WrrMark;

/// Scheduler names as `ipvsadm -s` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection.
    Wlc,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Source hashing.
    Sh,
    /// Destination hashing.
    Dh,
    /// Maglev hashing.
    Mh,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
}

impl SchedulerKind {
    /// The `ipvsadm` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Sh => "sh",
            Self::Dh => "dh",
            Self::Mh => "mh",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Fo => "fo",
            Self::Ovf => "ovf",
        }
    }
}

/// Scheduler flags (`ipvsadm -b`): `sh-fallback`/`mh-fallback` = `flag-1`,
/// `sh-port`/`mh-port` = `flag-2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerFlags {
    /// Look for another server when the hashed one is unavailable.
    pub fallback: bool,
    /// Hash the source port too.
    pub port: bool,
}

/// What a scheduler may look at in a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulePacket {
    /// Client address (`sh`, `mh`).
    pub source: IpAddr,
    /// Client port (`sh-port`, `mh-port`; 0 for protocols without ports).
    pub source_port: u16,
    /// Destination address (`dh`, `lblc`, `lblcr`).
    pub destination: IpAddr,
}

/// Per-service scheduler state.
#[derive(Clone, Debug)]
pub enum Scheduler {
    /// rr: the cursor (`None` = list head).
    Rr(Option<DestId>),
    /// wrr: the mark.
    Wrr(WrrMark),
    /// lc.
    Lc,
    /// wlc.
    Wlc,
    /// sed.
    Sed,
    /// nq.
    Nq,
    /// sh: 256 buckets.
    Sh(BucketTable, SchedulerFlags),
    /// dh: 256 buckets.
    Dh(BucketTable),
    /// mh: the Maglev lookup table.
    Mh(Box<MaglevTable>, SchedulerFlags),
    /// lblc: destination address → server cache.
    Lblc(LocalityCache),
    /// lblcr: destination address → server set cache.
    Lblcr(LocalityCache),
    /// fo.
    Fo,
    /// ovf.
    Ovf,
}

/// A change to a service's server list, as the kernel reports it to the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestChange {
    /// A server was linked (prepended).
    Added(DestId),
    /// A server was unlinked from the given list position.
    Removed(DestId, usize),
    /// A server's weight or thresholds changed.
    Updated(DestId),
}

impl Scheduler {
    /// `init_service`: fresh state for the given servers (an lblc/lblcr cache keyed from
    /// [`crate::hash::keyed::DEFAULT_SEED`]).
    pub fn new(
        kind: SchedulerKind,
        flags: SchedulerFlags,
        maglev_table_size: usize,
        dests: &Dests,
    ) -> Self {
        Self::new_keyed(
            kind,
            flags,
            maglev_table_size,
            dests,
            crate::hash::keyed::DEFAULT_SEED,
        )
    }

    /// [`Scheduler::new`] with the lblc/lblcr cache's index keyed from `hash_seed`.
    pub fn new_keyed(
        kind: SchedulerKind,
        flags: SchedulerFlags,
        maglev_table_size: usize,
        dests: &Dests,
        hash_seed: u64,
    ) -> Self {
        match kind {
            SchedulerKind::Rr => Self::Rr(None),
            SchedulerKind::Wrr => Self::Wrr(WrrMark::new(dests)),
            SchedulerKind::Lc => Self::Lc,
            SchedulerKind::Wlc => Self::Wlc,
            SchedulerKind::Sed => Self::Sed,
            SchedulerKind::Nq => Self::Nq,
            SchedulerKind::Sh => Self::Sh(BucketTable::source_hashing(dests), flags),
            SchedulerKind::Dh => Self::Dh(BucketTable::destination_hashing(dests)),
            SchedulerKind::Mh => {
                Self::Mh(Box::new(MaglevTable::new(maglev_table_size, dests)), flags)
            }
            SchedulerKind::Lblc => Self::Lblc(LocalityCache::new(hash_seed)),
            SchedulerKind::Lblcr => Self::Lblcr(LocalityCache::new(hash_seed)),
            SchedulerKind::Fo => Self::Fo,
            SchedulerKind::Ovf => Self::Ovf,
        }
    }

    /// The state of a service configured as operators and keepalived do it: `ipvsadm -A`
    /// (`init_service` on an empty list), then one `ipvsadm -a` per server in the order
    /// given (`add_dest` after each). `dests` holds the servers added in id order.
    ///
    /// Only wrr's state depends on that history: `ip_vs_wrr_dest_changed` keeps the current
    /// weight `cw` across changes (weights 4, 3, 2 added as A, B, C leave `cw` at 1, so the
    /// first pass takes every server: C B A, then A, B A, C B A, …), where `init_service`
    /// with all servers present would start at the maximum weight. The other schedulers'
    /// state after the last `add_dest` is a function of the final list. Checked against the
    /// guest kernel (Linux 6.1) by `sim/tests/ipvs_guest_oracle.rs`.
    pub fn configured(
        kind: SchedulerKind,
        flags: SchedulerFlags,
        maglev_table_size: usize,
        dests: &Dests,
    ) -> Self {
        Self::configured_keyed(
            kind,
            flags,
            maglev_table_size,
            dests,
            crate::hash::keyed::DEFAULT_SEED,
        )
    }

    /// [`Scheduler::configured`] with the lblc/lblcr cache's index keyed from `hash_seed`.
    pub fn configured_keyed(
        kind: SchedulerKind,
        flags: SchedulerFlags,
        maglev_table_size: usize,
        dests: &Dests,
        hash_seed: u64,
    ) -> Self {
        if kind != SchedulerKind::Wrr {
            return Self::new_keyed(kind, flags, maglev_table_size, dests, hash_seed);
        }
        let mut partial = Dests::default();
        let mut mark = WrrMark::new(&partial);
        for server in &dests.servers {
            partial.add(server.clone());
            mark.dest_changed(&partial);
        }
        Self::Wrr(mark)
    }

    /// The scheduler's kind.
    pub fn kind(&self) -> SchedulerKind {
        match self {
            Self::Rr(_) => SchedulerKind::Rr,
            Self::Wrr(_) => SchedulerKind::Wrr,
            Self::Lc => SchedulerKind::Lc,
            Self::Wlc => SchedulerKind::Wlc,
            Self::Sed => SchedulerKind::Sed,
            Self::Nq => SchedulerKind::Nq,
            Self::Sh(..) => SchedulerKind::Sh,
            Self::Dh(_) => SchedulerKind::Dh,
            Self::Mh(..) => SchedulerKind::Mh,
            Self::Lblc(_) => SchedulerKind::Lblc,
            Self::Lblcr(_) => SchedulerKind::Lblcr,
            Self::Fo => SchedulerKind::Fo,
            Self::Ovf => SchedulerKind::Ovf,
        }
    }

    /// Pick a server for a new connection, or `None` ("no destination available").
    pub fn schedule(
        &mut self,
        now: TimeNs,
        dests: &Dests,
        packet: &SchedulePacket,
    ) -> Option<DestId> {
        match self {
            Self::Rr(cursor) => round_robin::rr(cursor, dests),
            Self::Wrr(mark) => mark.schedule(dests),
            Self::Lc => least::lc(dests),
            Self::Wlc => least::wlc(dests),
            Self::Sed => least::sed(dests),
            Self::Nq => least::nq(dests),
            Self::Sh(table, flags) => table.schedule_source(dests, packet, *flags),
            Self::Dh(table) => table.schedule_destination(dests, packet),
            Self::Mh(table, flags) => table.schedule(dests, packet, *flags),
            Self::Lblc(cache) => cache.schedule_lblc(now, dests, packet.destination),
            Self::Lblcr(cache) => cache.schedule_lblcr(now, dests, packet.destination),
            Self::Fo => least::fo(dests),
            Self::Ovf => least::ovf(dests),
        }
    }

    /// `add_dest` / `del_dest` / `upd_dest`.
    pub fn dest_changed(&mut self, dests: &Dests, change: DestChange) {
        match self {
            Self::Rr(cursor) => round_robin::rr_dest_changed(cursor, dests, change),
            Self::Wrr(mark) => mark.dest_changed(dests),
            Self::Sh(table, _) => *table = BucketTable::source_hashing(dests),
            Self::Dh(table) => *table = BucketTable::destination_hashing(dests),
            Self::Mh(table, _) => table.rebuild(dests),
            _ => {}
        }
    }

    /// The lblc/lblcr cache, for schedulers that have one.
    pub fn locality_cache(&self) -> Option<&LocalityCache> {
        match self {
            Self::Lblc(cache) | Self::Lblcr(cache) => Some(cache),
            _ => None,
        }
    }

    /// The lblc/lblcr cache, mutably (QA: [`LocalityCache::report_full`]).
    pub fn locality_cache_mut(&mut self) -> Option<&mut LocalityCache> {
        match self {
            Self::Lblc(cache) | Self::Lblcr(cache) => Some(cache),
            _ => None,
        }
    }

    /// New scheduler flags (`ipvsadm -E -b`): sh and mh read them at every schedule.
    pub fn set_flags(&mut self, new: SchedulerFlags) {
        if let Self::Sh(_, flags) | Self::Mh(_, flags) = self {
            *flags = new;
        }
    }

    /// Periodic housekeeping (the lblc/lblcr garbage-collection timers).
    pub fn tick(&mut self, now: TimeNs) {
        if let Self::Lblc(cache) | Self::Lblcr(cache) = self {
            cache.collect_garbage(now);
        }
    }
}

/// True when `server` may take new connections at all (weight > 0, not overloaded).
pub(crate) fn usable(server: &super::dest::RealServer) -> bool {
    server.weight > 0 && !server.overloaded
}
