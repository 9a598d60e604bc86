//! `mh`: Maglev consistent hashing (`ip_vs_mh.c`).
//!
//! Each linked server gets an offset and a skip from `hsiphash` of
//! `port + address` (32-bit, hashed as 4 little-endian bytes, as on x86-64) under the
//! kernel's two fixed keys, and `turns = (last_weight / gcd) >> rshift` (at least 1 when
//! `last_weight` ≠ 0), where `rshift` keeps `max / gcd` within 6 bits. The table is filled
//! round-robin: each server in list order claims `turns` next free slots of its
//! permutation. Lookups hash `port + source` (port only with `mh-port`); `mh-fallback`
//! probes `hash(offset + …)` for every offset when the slot's server is unusable. Weight 0
//! servers keep their slots (built from `last_weight`) but are skipped at lookup.

use super::super::dest::{DestId, Dests};
use super::super::hash::{HsiphashKey, fold_address, hsiphash};
use super::{SchedulePacket, SchedulerFlags, usable};

/// The table sizes the kernel offers (`CONFIG_IP_VS_MH_TAB_INDEX` picks one).
pub const MAGLEV_PRIMES: [usize; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131_071,
];
/// The default table size (`CONFIG_IP_VS_MH_TAB_INDEX = 12`).
pub const MAGLEV_DEFAULT_TABLE_SIZE: usize = 4093;

/// `IP_VS_MH_TAB_BITS` for a table size: half of `CONFIG_IP_VS_MH_TAB_INDEX` (8 + the
/// size's position in [`MAGLEV_PRIMES`]); 6 for the default size.
fn weight_bits(size: usize) -> u32 {
    let index = MAGLEV_PRIMES.iter().position(|&p| p == size).unwrap_or(4);
    (index as u32 + 8) / 2
}
/// `hash1`: offsets and lookups.
const KEY_OFFSET: HsiphashKey = HsiphashKey([2_654_435_761, 2_654_435_761]);
/// `hash2`: skips.
const KEY_SKIP: HsiphashKey = HsiphashKey([2_654_446_892, 2_654_446_892]);

/// The Maglev lookup table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    /// Server per slot.
    pub slots: Vec<Option<DestId>>,
}

/// `ip_vs_mh_hashkey`.
pub fn maglev_hash(address: std::net::IpAddr, port: u16, key: &HsiphashKey, offset: u32) -> u32 {
    let value = offset
        .wrapping_add(u32::from(port))
        .wrapping_add(fold_address(address));
    hsiphash(&value.to_le_bytes(), key)
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

struct Setup {
    permutation: usize,
    skip: usize,
    turns: i64,
}

impl MaglevTable {
    /// `ip_vs_mh_init_svc`: build the table for the given size (one of [`MAGLEV_PRIMES`]).
    pub fn new(size: usize, dests: &Dests) -> Self {
        let mut table = Self {
            slots: vec![None; size],
        };
        table.rebuild(dests);
        table
    }

    /// `ip_vs_mh_dest_changed`: recompute gcd / rshift and repopulate.
    pub fn rebuild(&mut self, dests: &Dests) {
        let weights: Vec<i64> = dests
            .linked()
            .map(|(_, s)| i64::from(s.last_weight))
            .collect();
        let gcd_weight = weights
            .iter()
            .filter(|&&w| w > 0)
            .fold(0, |g, &w| if g > 0 { gcd(w, g) } else { w });
        if gcd_weight < 1 {
            self.slots.iter_mut().for_each(|slot| *slot = None);
            return;
        }
        let max_weight = weights.iter().copied().fold(0, i64::max) / gcd_weight;
        let bits = 64 - max_weight.leading_zeros();
        let size = self.slots.len();
        let shift = bits.saturating_sub(weight_bits(size));
        let mut setups: Vec<Setup> = dests
            .linked()
            .map(|(_, server)| {
                let (address, port) = (server.address.ip(), server.address.port());
                let offset = maglev_hash(address, port, &KEY_OFFSET, 0) as usize % size;
                let skip = maglev_hash(address, port, &KEY_SKIP, 0) as usize % (size - 1) + 1;
                let last = i64::from(server.last_weight);
                let turns = (last / gcd_weight) >> shift;
                let turns = if turns != 0 {
                    turns
                } else {
                    i64::from(last != 0)
                };
                Setup {
                    permutation: offset,
                    skip,
                    turns,
                }
            })
            .collect();
        self.populate(dests, &mut setups);
    }

    fn populate(&mut self, dests: &Dests, setups: &mut [Setup]) {
        let size = self.slots.len();
        let mut taken = vec![false; size];
        let (mut filled, mut index, mut turn_count) = (0usize, 0usize, 0i64);
        let linked: Vec<DestId> = dests.order.clone();
        while filled < size {
            if index == linked.len() {
                index = 0;
            }
            while index < linked.len() {
                let setup = &mut setups[index];
                if setup.turns < 1 {
                    index += 1;
                    continue;
                }
                while taken[setup.permutation] {
                    setup.permutation += setup.skip;
                    if setup.permutation >= size {
                        setup.permutation -= size;
                    }
                }
                taken[setup.permutation] = true;
                self.slots[setup.permutation] = Some(linked[index]);
                filled += 1;
                if filled == size {
                    return;
                }
                turn_count += 1;
                if turn_count >= setup.turns {
                    turn_count = 0;
                    index += 1;
                }
            }
        }
    }

    /// `ip_vs_mh_schedule`.
    pub fn schedule(
        &self,
        dests: &Dests,
        packet: &SchedulePacket,
        flags: SchedulerFlags,
    ) -> Option<DestId> {
        let size = self.slots.len() as u32;
        let port = if flags.port { packet.source_port } else { 0 };
        let first = maglev_hash(packet.source, port, &KEY_OFFSET, 0) % size;
        let id = self.slots[first as usize]?;
        if usable(dests.get(id)) {
            return Some(id);
        }
        if !flags.fallback {
            return None;
        }
        for offset in 0..size {
            let rotated = (offset + first) % size;
            let slot = maglev_hash(packet.source, port, &KEY_OFFSET, rotated) % size;
            let id = self.slots[slot as usize]?;
            if usable(dests.get(id)) {
                return Some(id);
            }
        }
        None
    }
}
