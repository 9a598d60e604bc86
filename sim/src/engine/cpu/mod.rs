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
use std::path::{Path, PathBuf};

use datapath::TimeNs;
use datapath::packet::PacketMeta;
use datapath::pipeline::PacketOutcome;
use datapath::verdict::{Stage, Verdict};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

mod report;
pub use report::{ClassLatency, CpuSection};

/// Default RX ring size (descriptors per queue), a common NIC default.
pub const DEFAULT_RX_RING: u32 = 1024;
/// Largest RX ring a scenario may ask for.
pub const MAX_RX_RING: u32 = 1 << 20;

/// The bundled `lbsim` profile: lbsim's own datapath cost (`sim cpu calibrate`).
const LBSIM_PROFILE: &str = include_str!("../../../profiles/lbsim.toml");
/// The bundled `linux` profile: the kernel's cost (`sim kernel calibrate`).
const LINUX_PROFILE: &str = include_str!("../../../profiles/linux.toml");

/// `[cpu]`: the CPU model of the appliance (one CPU per receive queue).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CpuSpec {
    /// `lbsim`, `linux`, or a profile file (relative to the scenario).
    pub profile: Option<String>,
    /// A cost table written in the scenario (instead of `profile`).
    pub ns: Option<CostTable>,
    /// RX ring descriptors per queue.
    #[serde(default = "default_rx_ring")]
    pub rx_ring: u32,
}

fn default_rx_ring() -> u32 {
    DEFAULT_RX_RING
}

/// Nanoseconds of CPU per packet, by the path it takes. Only `parse` is required; a missing
/// path costs what the path it extends costs (see [`CostTable::resolved`]).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CostTable {
    /// Decided at parse or by the IP layer (invalid, martian, not for us), or no stage.
    pub parse: f64,
    /// Dropped or passed by the shield without a reply (netdev drop, allow-list accept).
    pub shield_drop: Option<f64>,
    /// A SYN answered with a cookie SYN-ACK (synproxy).
    pub syn_cookie: Option<f64>,
    /// Classified by the flow table, or passed through every stage undecided.
    pub flows: Option<f64>,
    /// Extra per flow rule evaluated before the one that matched (mangle MARK per rule).
    pub flow_rule: Option<f64>,
    /// Forwarded by the director over an existing connection (conntrack + DNAT forward).
    pub director: Option<f64>,
    /// A director connection created (first packet of a connection).
    pub new_connection: Option<f64>,
    /// Decided by the NAT stage (MASQUERADE / SNAT / DNAT rules).
    pub nat: Option<f64>,
}

/// The path a packet took, as a cost profile prices it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathClass {
    /// See [`CostTable::parse`].
    Parse,
    /// See [`CostTable::shield_drop`].
    ShieldDrop,
    /// See [`CostTable::syn_cookie`].
    SynCookie,
    /// See [`CostTable::flows`].
    Flows,
    /// See [`CostTable::director`].
    Director,
    /// See [`CostTable::new_connection`].
    NewConnection,
    /// See [`CostTable::nat`].
    Nat,
}

impl PathClass {
    /// Every class, in report order.
    pub const ALL: [PathClass; 7] = [
        Self::Parse,
        Self::ShieldDrop,
        Self::SynCookie,
        Self::Flows,
        Self::Director,
        Self::NewConnection,
        Self::Nat,
    ];

    /// Stable name (the profile key).
    pub fn name(self) -> &'static str {
        match self {
            Self::Parse => "parse",
            Self::ShieldDrop => "shield_drop",
            Self::SynCookie => "syn_cookie",
            Self::Flows => "flows",
            Self::Director => "director",
            Self::NewConnection => "new_connection",
            Self::Nat => "nat",
        }
    }

    /// The class of a packet the pipeline decided.
    pub fn of_outcome(outcome: &PacketOutcome) -> Self {
        match (outcome.stage, outcome.verdict) {
            (Stage::Parse | Stage::Ip, _) => Self::Parse,
            (Stage::Shield, Verdict::Reply) => Self::SynCookie,
            (Stage::Shield, _) => Self::ShieldDrop,
            (Stage::Director, _) if matches!(outcome.director, Some((_, true))) => {
                Self::NewConnection
            }
            (Stage::Director, _) => Self::Director,
            (Stage::Nat, _) => Self::Nat,
            (Stage::Flows | Stage::Forward, _) => Self::Flows,
        }
    }

    /// The class charged to a packet deferred to the shared stages (see the module doc).
    pub fn of_deferred(meta: &PacketMeta) -> Self {
        if meta.proto == Some(6) && meta.tcp_flags & 0x12 == 0x02 {
            Self::NewConnection
        } else {
            Self::Director
        }
    }
}

impl CostTable {
    /// Every path's cost, missing ones filled in: `shield_drop`, `flows` and `nat` cost
    /// `parse`; `syn_cookie` costs `shield_drop`; `director` costs `flows`;
    /// `new_connection` costs `director`; `flow_rule` costs nothing.
    pub fn resolved(&self) -> BTreeMap<PathClass, f64> {
        let shield = self.shield_drop.unwrap_or(self.parse);
        let flows = self.flows.unwrap_or(self.parse);
        let director = self.director.unwrap_or(flows);
        [
            (PathClass::Parse, self.parse),
            (PathClass::ShieldDrop, shield),
            (PathClass::SynCookie, self.syn_cookie.unwrap_or(shield)),
            (PathClass::Flows, flows),
            (PathClass::Director, director),
            (
                PathClass::NewConnection,
                self.new_connection.unwrap_or(director),
            ),
            (PathClass::Nat, self.nat.unwrap_or(self.parse)),
        ]
        .into_iter()
        .collect()
    }

    /// The first negative or non-finite cost: its key and what is wrong.
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        self.check().err().map(|message| {
            let key = message
                .strip_prefix("ns.")
                .and_then(|rest| rest.split(':').next())
                .and_then(|key| Self::KEYS.iter().copied().find(|k| *k == key))
                .unwrap_or("parse");
            (key, message)
        })
    }

    /// The keys of a table.
    const KEYS: [&'static str; 8] = [
        "parse",
        "shield_drop",
        "syn_cookie",
        "flows",
        "flow_rule",
        "director",
        "new_connection",
        "nat",
    ];

    /// The first negative or non-finite cost, named.
    fn check(&self) -> Result<(), String> {
        let named = [
            ("parse", Some(self.parse)),
            ("shield_drop", self.shield_drop),
            ("syn_cookie", self.syn_cookie),
            ("flows", self.flows),
            ("flow_rule", self.flow_rule),
            ("director", self.director),
            ("new_connection", self.new_connection),
            ("nat", self.nat),
        ];
        for (name, value) in named {
            if let Some(value) = value
                && !(value.is_finite() && value >= 0.0)
            {
                return Err(format!(
                    "ns.{name}: {value} is not a cost (ns ≥ 0 expected)"
                ));
            }
        }
        if self.parse <= 0.0 {
            return Err("ns.parse: must be positive (every packet costs something)".into());
        }
        Ok(())
    }
}

/// A cost profile file: what it is, where its figures come from, the table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CostProfile {
    /// Its name in reports.
    pub name: String,
    /// How the figures were obtained (command, machine, date).
    #[serde(default)]
    pub source: String,
    /// Relative spread of repeated calibrations per path (max−min over median), if measured.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spread: BTreeMap<String, f64>,
    /// The costs.
    pub ns: CostTable,
}

impl CostProfile {
    /// Parse a profile file's text (`origin` names it in errors).
    pub fn parse(origin: &str, text: &str) -> Result<Self, String> {
        let profile: Self = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        profile.ns.check().map_err(|e| format!("{origin}: {e}"))?;
        Ok(profile)
    }

    /// The profile a `[cpu]` table names: a bundled one, a file, or its inline table.
    pub fn of_spec(spec: &CpuSpec, base_dir: &Path) -> Result<Self, String> {
        match (&spec.profile, &spec.ns) {
            (Some(_), Some(_)) => Err("give either `profile` or `[cpu.ns]`, not both".into()),
            (None, None) => Err("`profile` (lbsim, linux or a file) or `[cpu.ns]` needed".into()),
            (None, Some(table)) => {
                table.check()?;
                let name = "scenario".into();
                let (source, spread) = ("written in the scenario".into(), BTreeMap::new());
                Ok(Self {
                    name,
                    source,
                    spread,
                    ns: *table,
                })
            }
            (Some(name), None) => Self::named(name, base_dir),
        }
    }

    /// A bundled profile by name, else a profile file relative to `base_dir`.
    pub fn named(name: &str, base_dir: &Path) -> Result<Self, String> {
        match name {
            "lbsim" => Self::parse("bundled profile lbsim", LBSIM_PROFILE),
            "linux" => Self::parse("bundled profile linux", LINUX_PROFILE),
            file => {
                let path: PathBuf = base_dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "`{file}`: not a bundled profile (lbsim, linux) and cannot read {}: {e}",
                        path.display()
                    )
                })?;
                Self::parse(&path.display().to_string(), &text)
            }
        }
    }
}

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
