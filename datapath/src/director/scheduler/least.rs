//! The load-comparing schedulers: `lc`, `wlc`, `sed`, `nq`, `fo`, `ovf`.
//!
//! All walk the server list in order, so ties go to the server earlier in the list.
//! Overhead is `active × 256 + inactive` for lc/wlc and `active + 1` for sed/nq; weighted
//! comparisons are the kernel's cross-multiplications `loh × w_d > doh × w_least` (strict).

use super::super::dest::{DestId, Dests, RealServer};
use super::usable;

/// lc: smallest overhead among servers with weight ≠ 0 that are not overloaded.
pub(super) fn lc(dests: &Dests) -> Option<DestId> {
    let mut least: Option<(DestId, i64)> = None;
    for (id, server) in dests.linked() {
        if server.overloaded || server.weight == 0 {
            continue;
        }
        let overhead = server.connection_overhead();
        if least.is_none_or(|(_, lowest)| overhead < lowest) {
            least = Some((id, overhead));
        }
    }
    least.map(|(id, _)| id)
}

/// Shared body of wlc and sed: the first usable server, then strict weighted comparison
/// against every later server that is not overloaded.
fn weighted_least(dests: &Dests, overhead: fn(&RealServer) -> i64) -> Option<DestId> {
    let order = &dests.order;
    let first = order.iter().position(|&id| usable(dests.get(id)))?;
    let mut least = order[first];
    let mut least_overhead = overhead(dests.get(least));
    for &id in &order[first + 1..] {
        let server = dests.get(id);
        if server.overloaded {
            continue;
        }
        let candidate = overhead(server);
        if least_overhead * i64::from(server.weight)
            > candidate * i64::from(dests.get(least).weight)
        {
            least = id;
            least_overhead = candidate;
        }
    }
    Some(least)
}

fn expected_delay_overhead(server: &RealServer) -> i64 {
    i64::from(server.active) + 1
}

/// wlc.
pub(super) fn wlc(dests: &Dests) -> Option<DestId> {
    weighted_least(dests, RealServer::connection_overhead)
}

/// sed.
pub(super) fn sed(dests: &Dests) -> Option<DestId> {
    weighted_least(dests, expected_delay_overhead)
}

/// nq: the first idle server (no active connections), else as sed.
pub(super) fn nq(dests: &Dests) -> Option<DestId> {
    let mut least: Option<(DestId, i64)> = None;
    for (id, server) in dests.linked() {
        if server.overloaded || server.weight == 0 {
            continue;
        }
        let overhead = expected_delay_overhead(server);
        if server.active == 0 {
            return Some(id);
        }
        let better = least.is_none_or(|(least_id, lowest)| {
            lowest * i64::from(server.weight) > overhead * i64::from(dests.get(least_id).weight)
        });
        if better {
            least = Some((id, overhead));
        }
    }
    least.map(|(id, _)| id)
}

/// fo: the first server with the highest weight that is not overloaded.
pub(super) fn fo(dests: &Dests) -> Option<DestId> {
    let mut highest: Option<(DestId, i32)> = None;
    for (id, server) in dests.linked() {
        let best = highest.map_or(0, |(_, weight)| weight);
        if !server.overloaded && server.weight > best {
            highest = Some((id, server.weight));
        }
    }
    highest.map(|(id, _)| id)
}

/// ovf: the first server with the highest weight whose active connections do not exceed
/// its weight.
pub(super) fn ovf(dests: &Dests) -> Option<DestId> {
    let mut highest: Option<(DestId, i32)> = None;
    for (id, server) in dests.linked() {
        let weight = server.weight;
        let full = i64::from(server.active) > i64::from(weight);
        if server.overloaded || full || weight == 0 {
            continue;
        }
        if highest.is_none_or(|(_, best)| weight > best) {
            highest = Some((id, weight));
        }
    }
    highest.map(|(id, _)| id)
}
