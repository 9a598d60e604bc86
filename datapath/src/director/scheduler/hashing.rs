//! `sh` and `dh`: 256-bucket static hash tables (`ip_vs_sh.c`, `ip_vs_dh.c`).
//!
//! sh fills the buckets walking the server list and giving each server `weight` consecutive
//! buckets (a server of weight 0 still gets one, as in the kernel), wrapping until all 256
//! are filled; it hashes `hash_32(port + source, 8)` (port only with `sh-port`). With
//! `sh-fallback` an unavailable bucket leads to probing `offset + hash` for every offset.
//! dh gives each server one bucket in turn (weight ignored) and hashes the destination.

use super::super::dest::{DestId, Dests};
use super::super::hash::{fold_address, hash_32};
use super::{SchedulePacket, SchedulerFlags, usable};

/// Bits of the sh/dh tables.
pub const BUCKET_BITS: u32 = 8;
/// Buckets of the sh/dh tables.
pub const BUCKET_COUNT: usize = 1 << BUCKET_BITS;

/// A 256-bucket table of servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketTable {
    /// Server per bucket (`None` when the service has no servers).
    pub buckets: [Option<DestId>; BUCKET_COUNT],
}

impl BucketTable {
    /// `ip_vs_sh_reassign`: `weight` consecutive buckets per server.
    pub fn source_hashing(dests: &Dests) -> Self {
        Self::fill(dests, |weight| weight)
    }

    /// `ip_vs_dh_reassign`: one bucket per server.
    pub fn destination_hashing(dests: &Dests) -> Self {
        Self::fill(dests, |_| 1)
    }

    fn fill(dests: &Dests, buckets_per_server: fn(i32) -> i32) -> Self {
        let mut buckets = [None; BUCKET_COUNT];
        let order = &dests.order;
        if order.is_empty() {
            return Self { buckets };
        }
        let (mut position, mut count) = (0usize, 0i32);
        for bucket in &mut buckets {
            let id = order[position];
            *bucket = Some(id);
            count += 1;
            if count >= buckets_per_server(dests.get(id).weight) {
                position = (position + 1) % order.len();
                count = 0;
            }
        }
        Self { buckets }
    }

    /// sh: the bucket for a source address / port at a probe offset.
    pub fn source_bucket(address: std::net::IpAddr, port: u16, offset: u32) -> usize {
        let key = u32::from(port).wrapping_add(fold_address(address));
        (offset.wrapping_add(hash_32(key, BUCKET_BITS)) as usize) & (BUCKET_COUNT - 1)
    }

    /// dh: the bucket for a destination address.
    pub fn destination_bucket(address: std::net::IpAddr) -> usize {
        hash_32(fold_address(address), BUCKET_BITS) as usize
    }

    /// `ip_vs_sh_schedule`.
    pub fn schedule_source(
        &self,
        dests: &Dests,
        packet: &SchedulePacket,
        flags: SchedulerFlags,
    ) -> Option<DestId> {
        let port = if flags.port { packet.source_port } else { 0 };
        let first = Self::source_bucket(packet.source, port, 0);
        let id = self.buckets[first]?;
        if usable(dests.get(id)) {
            return Some(id);
        }
        if !flags.fallback {
            return None;
        }
        for offset in 0..BUCKET_COUNT as u32 {
            let rotated = (offset + first as u32) % BUCKET_COUNT as u32;
            let id = self.buckets[Self::source_bucket(packet.source, port, rotated)]?;
            if usable(dests.get(id)) {
                return Some(id);
            }
        }
        None
    }

    /// `ip_vs_dh_schedule`.
    pub fn schedule_destination(&self, dests: &Dests, packet: &SchedulePacket) -> Option<DestId> {
        let id = self.buckets[Self::destination_bucket(packet.destination)]?;
        let server = dests.get(id);
        (server.available && usable(server)).then_some(id)
    }
}
