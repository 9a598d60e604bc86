//! The capacity model: which measured cost class each pipeline decision costs, the CPU
//! cores a packet mix needs (Σ packets per second × ns per packet / 1e9), and the memory
//! the tables hold (entries × entry size).
//!
//! Pure arithmetic on numbers handed in; measuring the costs is [`super::calibrate`]'s job
//! and counting the packets [`super::outcome`]'s.

use std::collections::BTreeMap;
use std::mem::size_of;

use datapath::TimeNs;
use datapath::director::connection::{ClientKey, Connection, RealKey, TimerEntry};
use serde::{Deserialize, Serialize};

/// A kind of packet work whose per-packet cost is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostClass {
    /// Parsed and decided at parse (invalid with no shield, or no stage at all).
    Parse,
    /// Decided by the shield without a reply: dropped (denylist, TTL, rate, …) or passed.
    ShieldDrop,
    /// A SYN to a protected port answered with a cookie SYN-ACK (shield reply).
    SynCookie,
    /// Classified by the flow table (or passed through every stage undecided).
    FlowsOnly,
    /// Forwarded by the director over an established (NAT) connection.
    NatEstablished,
}

impl CostClass {
    /// Every class, in report order.
    pub const ALL: [CostClass; 5] = [
        Self::Parse,
        Self::ShieldDrop,
        Self::SynCookie,
        Self::FlowsOnly,
        Self::NatEstablished,
    ];

    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Parse => "parse",
            Self::ShieldDrop => "shield_drop",
            Self::SynCookie => "syn_cookie",
            Self::FlowsOnly => "flows_only",
            Self::NatEstablished => "nat_established",
        }
    }

    /// The class of a pipeline decision (`stage` and `verdict` as the report names them).
    pub fn of_decision(stage: &str, verdict: &str) -> Self {
        match (stage, verdict) {
            ("parse", _) => Self::Parse,
            ("shield", "reply") => Self::SynCookie,
            ("shield", _) => Self::ShieldDrop,
            ("director" | "nat", _) => Self::NatEstablished,
            _ => Self::FlowsOnly,
        }
    }
}

/// Measured nanoseconds per packet of each class.
pub type Costs = BTreeMap<CostClass, f64>;

/// Packets per second of each class.
pub type ClassRates = BTreeMap<CostClass, f64>;

/// CPU cores (of the machine the costs were measured on) a packet mix needs:
/// Σ (packets per second × ns per packet) / 1e9. A class without a cost counts as free.
pub fn cores_needed(rates: &ClassRates, costs: &Costs) -> f64 {
    rates
        .iter()
        .map(|(class, pps)| pps * costs.get(class).copied().unwrap_or(0.0))
        .sum::<f64>()
        / 1e9
}

/// Bytes one director connection holds: its slot plus its entries in the client index,
/// the real-server index and the timer set (hash tables counted at their 7/8 load factor,
/// with one control byte per bucket).
pub fn director_connection_bytes() -> usize {
    let hashed = |entry: usize| (entry + 1) * 8 / 7;
    size_of::<Option<Connection>>()
        + hashed(size_of::<(ClientKey, u32)>())
        + hashed(size_of::<(RealKey, u32)>())
        + size_of::<(TimeNs, TimerEntry)>()
}

/// Memory of one sweep point.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Memory {
    /// The shield's slot arrays (allocated at build: capacity × slot size) and proxy state.
    pub shield_bytes: u64,
    /// Director connections live at the end of the run × [`director_connection_bytes`].
    pub director_bytes: u64,
    /// Both.
    pub total_bytes: u64,
}

impl Memory {
    /// From the shield's fixed allocation and the live director connections.
    pub fn new(shield_bytes: u64, director_connections: u64) -> Self {
        let director_bytes = director_connections * director_connection_bytes() as u64;
        Self {
            shield_bytes,
            director_bytes,
            total_bytes: shield_bytes + director_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs(scale: f64) -> Costs {
        [
            (CostClass::ShieldDrop, 40.0 * scale),
            (CostClass::SynCookie, 250.0 * scale),
            (CostClass::NatEstablished, 120.0 * scale),
        ]
        .into_iter()
        .collect()
    }

    fn rates() -> ClassRates {
        [
            (CostClass::ShieldDrop, 4_000_000.0),
            (CostClass::SynCookie, 1_000_000.0),
            (CostClass::NatEstablished, 500_000.0),
            (CostClass::Parse, 10.0),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn cores_are_rate_times_cost() {
        // 4M × 40 ns + 1M × 250 ns + 0.5M × 120 ns = 0.16 + 0.25 + 0.06 s per s.
        let cores = cores_needed(&rates(), &costs(1.0));
        assert!((cores - 0.47).abs() < 1e-12, "{cores}");
    }

    #[test]
    fn doubling_the_per_packet_cost_doubles_the_cores() {
        let single = cores_needed(&rates(), &costs(1.0));
        let double = cores_needed(&rates(), &costs(2.0));
        assert!(single > 0.0);
        assert!((double - 2.0 * single).abs() < 1e-12, "{single} → {double}");
    }

    #[test]
    fn decisions_map_to_classes() {
        assert_eq!(
            CostClass::of_decision("shield", "reply"),
            CostClass::SynCookie
        );
        assert_eq!(
            CostClass::of_decision("shield", "drop"),
            CostClass::ShieldDrop
        );
        assert_eq!(
            CostClass::of_decision("director", "forward"),
            CostClass::NatEstablished
        );
        assert_eq!(
            CostClass::of_decision("flows", "pass"),
            CostClass::FlowsOnly
        );
        assert_eq!(
            CostClass::of_decision("forward", "pass"),
            CostClass::FlowsOnly
        );
        assert_eq!(CostClass::of_decision("parse", "drop"), CostClass::Parse);
    }

    #[test]
    fn memory_counts_entries_times_size() {
        let memory = Memory::new(1000, 10);
        assert_eq!(
            memory.director_bytes,
            10 * director_connection_bytes() as u64
        );
        assert_eq!(memory.total_bytes, 1000 + memory.director_bytes);
        assert!(director_connection_bytes() >= size_of::<Connection>());
    }
}
