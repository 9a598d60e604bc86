//! The appliance's CPUs (`[cpu]` in a scenario): each receive queue is one CPU that serves
//! the packets reaching the appliance one at a time, in arrival order. A packet waits in the
//! queue's bounded RX ring (`rx_ring` descriptors, like a NIC's) while the CPU is busy; a
//! packet arriving at a full ring is dropped and counted as `rx_ring_full` (what a NIC
//! counts as `rx_missed_errors`). A packet's service time is the cost of the path it takes
//! through the pipeline, from a [`CostProfile`]; the frames it makes leave the appliance
//! when its service ends, so the appliance's latency (ring wait + service) delays them on
//! the wire and shows in records and reports.
//!
//! The model, and what it leaves out:
//! - the pipeline decides a packet when it arrives (its timers, rate limits and cookies see
//!   the arrival time); only what it emits waits for the CPU. The decision does not depend
//!   on the wait, which is at most `rx_ring` service times;
//! - a packet that needs the shared stages (directors, NAT; see [`super::shared`]) is
//!   charged when it arrives, before their result is known: a TCP SYN as a new connection,
//!   anything else as a lookup of an existing one;
//! - one cost per path, no caches, no interrupt coalescing, no batching (NAPI polls up to
//!   64 packets at once; the model serves them one by one at the same total cost).
//!
//! Everything is per shard and in virtual time: deterministic, independent of `--threads`.
//! Off (no `[cpu]`) the appliance takes no time, as before.

use std::collections::{BTreeMap, VecDeque};

use datapath::TimeNs;
use hdrhistogram::Histogram;

mod report;
pub use report::{ClassLatency, CpuSection};

pub use crate::scenario::cpu::{
    CostProfile, CostTable, CpuSpec, DEFAULT_RX_RING, MAX_RX_RING, PathClass,
};

/// The CPU of one receive queue.
#[derive(Debug)]
pub struct Cpu {
    costs: BTreeMap<PathClass, TimeNs>,
    flow_rule: f64,
    ring: usize,
    /// When the CPU finishes the last packet it accepted.
    free_at: TimeNs,
    /// Start times of accepted packets that have not started yet (the ring), in order.
    waiting: VecDeque<TimeNs>,
    stats: CpuStats,
}

impl Cpu {
    /// A CPU pricing paths with `profile`, its ring `rx_ring` descriptors long.
    pub fn new(profile: &CostProfile, rx_ring: u32) -> Self {
        let costs = profile.ns.resolved();
        Self {
            costs: costs
                .into_iter()
                .map(|(class, ns)| (class, ns.round().max(1.0) as TimeNs))
                .collect(),
            flow_rule: profile.ns.flow_rule.unwrap_or(0.0),
            ring: rx_ring as usize,
            free_at: 0,
            waiting: VecDeque::new(),
            stats: CpuStats {
                profile: profile.name.clone(),
                profile_source: profile.source.clone(),
                rx_ring,
                ..CpuStats::default()
            },
        }
    }

    /// A packet arrives at `now`: the time its service starts, or `None` when the ring is
    /// full (counted).
    pub fn admit(&mut self, now: TimeNs) -> Option<TimeNs> {
        while self.waiting.front().is_some_and(|&start| start <= now) {
            self.waiting.pop_front();
        }
        if self.waiting.len() >= self.ring {
            self.stats.rx_ring_full += 1;
            return None;
        }
        let start = self.free_at.max(now);
        if start > now {
            self.waiting.push_back(start);
            self.stats.ring_max = self.stats.ring_max.max(self.waiting.len() as u64);
        }
        Some(start)
    }

    /// Serve the packet that arrived at `arrived` and starts at `start` along `class`
    /// (`rules`: flow rules evaluated before the matching one); returns when it leaves.
    pub fn serve(
        &mut self,
        arrived: TimeNs,
        start: TimeNs,
        class: PathClass,
        rules: u32,
    ) -> TimeNs {
        let extra = (self.flow_rule * f64::from(rules)).round() as TimeNs;
        let service = self.costs[&class] + extra;
        let leaves = start + service;
        self.free_at = leaves;
        self.stats.busy_ns += service;
        self.stats.record(class, leaves - arrived);
        leaves
    }

    /// What this CPU counted.
    pub fn stats(&self) -> &CpuStats {
        &self.stats
    }

    /// What this CPU counted (a copy: the CPU keeps counting).
    pub fn take_stats(&mut self) -> CpuStats {
        self.stats.clone()
    }
}

/// Appliance latencies (ring wait + service, ns) up to one second, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1_000_000_000, 3).expect("valid histogram bounds")
}

/// What the CPUs counted (one per queue, merged over queues).
#[derive(Debug, Clone, Default)]
pub struct CpuStats {
    /// The cost profile's name.
    pub profile: String,
    /// Where its figures come from.
    pub profile_source: String,
    /// RX ring descriptors per queue.
    pub rx_ring: u32,
    /// Packets dropped at a full RX ring.
    pub rx_ring_full: u64,
    /// CPU time spent serving (ns), summed over CPUs.
    pub busy_ns: u64,
    /// Most packets waiting in one ring at once.
    pub ring_max: u64,
    /// Latency of every served packet.
    pub latency: Option<Histogram<u64>>,
    /// Latency per path class.
    pub by_class: BTreeMap<PathClass, Histogram<u64>>,
}

impl CpuStats {
    fn record(&mut self, class: PathClass, latency: TimeNs) {
        let value = latency.clamp(1, 1_000_000_000);
        let all = self.latency.get_or_insert_with(latency_histogram);
        let _ = all.record(value);
        let per = self.by_class.entry(class).or_insert_with(latency_histogram);
        let _ = per.record(value);
    }

    /// Add another CPU's counts.
    pub fn merge(&mut self, other: &Self) {
        self.rx_ring_full += other.rx_ring_full;
        self.busy_ns += other.busy_ns;
        self.ring_max = self.ring_max.max(other.ring_max);
        if let Some(theirs) = &other.latency {
            let mine = self.latency.get_or_insert_with(latency_histogram);
            let _ = mine.add(theirs);
        }
        for (class, theirs) in &other.by_class {
            let mine = self
                .by_class
                .entry(*class)
                .or_insert_with(latency_histogram);
            let _ = mine.add(theirs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn profile(parse: f64) -> CostProfile {
        let text = format!("name = \"t\"\n[ns]\nparse = {parse}\nsyn_cookie = 1000\n");
        CostProfile::parse("t", &text).expect("valid")
    }

    #[test]
    fn an_idle_cpu_serves_at_once() {
        let mut cpu = Cpu::new(&profile(100.0), 4);
        let start = cpu.admit(50).expect("room");
        assert_eq!(start, 50);
        assert_eq!(cpu.serve(50, start, PathClass::Parse, 0), 150);
        // Long after: idle again.
        assert_eq!(cpu.admit(1_000), Some(1_000));
    }

    #[test]
    fn a_burst_waits_in_the_ring_and_overflows_it() {
        let mut cpu = Cpu::new(&profile(100.0), 2);
        let mut leaves = Vec::new();
        for _ in 0..5 {
            if let Some(start) = cpu.admit(0) {
                leaves.push(cpu.serve(0, start, PathClass::SynCookie, 0));
            }
        }
        // One in service, two waiting; the other two dropped.
        assert_eq!(leaves, [1000, 2000, 3000]);
        assert_eq!(cpu.stats().rx_ring_full, 2);
        assert_eq!(cpu.stats().ring_max, 2);
        // When the first waiting one has started, there is room for one more.
        assert_eq!(cpu.admit(1000), Some(3000));
        assert_eq!(cpu.admit(1000), None);
    }

    #[test]
    fn missing_paths_cost_what_they_extend() {
        let table = profile(100.0).ns.resolved();
        assert_eq!(table[&PathClass::ShieldDrop], 100.0);
        assert_eq!(table[&PathClass::SynCookie], 1000.0);
        assert_eq!(table[&PathClass::NewConnection], 100.0);
    }

    #[test]
    fn bad_tables_are_refused_with_the_key() {
        let error = CostProfile::parse("p.toml", "name = \"x\"\n[ns]\nparse = 10\nnat = -1\n")
            .expect_err("negative");
        assert!(
            error.contains("p.toml") && error.contains("ns.nat"),
            "{error}"
        );
        let error = CostProfile::parse("p.toml", "name = \"x\"\n[ns]\nparse = 10\nnatt = 1\n")
            .expect_err("unknown key");
        assert!(error.contains("natt"), "{error}");
    }

    #[test]
    fn bundled_profiles_load() {
        for name in ["lbsim", "linux"] {
            let profile = CostProfile::named(name, Path::new(".")).expect(name);
            assert_eq!(profile.name, name);
            assert!(!profile.source.is_empty());
        }
    }
}
