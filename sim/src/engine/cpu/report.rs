//! The CPU model's part of a run report: which model ran (profile, ring), what the CPUs
//! did (utilization, ring drops, deepest ring) and the appliance's latency (ring wait +
//! service) overall and per path class. Present only when the model ran.

use std::fmt::Write as _;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{CpuStats, PathClass};
use crate::stats::Percentiles;

/// The `cpu` section of a report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CpuSection {
    /// The model that ran: `per-queue CPU` (the only one besides none).
    pub model: Cow<'static, str>,
    /// Cost profile name.
    pub profile: String,
    /// Where its figures come from.
    pub profile_source: String,
    /// RX ring descriptors per queue.
    pub rx_ring: u32,
    /// CPUs (one per receive queue).
    pub cpus: u16,
    /// Busy time / (CPUs × duration).
    pub utilization: f64,
    /// Packets dropped at a full RX ring.
    pub rx_ring_full: u64,
    /// Most packets waiting in one ring at once.
    pub ring_max: u64,
    /// Appliance latency of every served packet (ns).
    pub latency: Option<Percentiles>,
    /// Per path class.
    pub classes: Vec<ClassLatency>,
}

/// Appliance latency of one path class.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassLatency {
    /// Path class.
    pub class: PathClass,
    /// Packets served.
    pub packets: u64,
    /// Latency (ns).
    pub latency: Percentiles,
}

impl CpuSection {
    /// The section of merged CPU counts over `cpus` CPUs for a run of `duration_ns`.
    pub fn new(stats: &CpuStats, cpus: u16, duration_ns: u64) -> Self {
        let capacity = (u64::from(cpus) * duration_ns).max(1) as f64;
        Self {
            model: "per-queue CPU".into(),
            profile: stats.profile.clone(),
            profile_source: stats.profile_source.clone(),
            rx_ring: stats.rx_ring,
            cpus,
            utilization: stats.busy_ns as f64 / capacity,
            rx_ring_full: stats.rx_ring_full,
            ring_max: stats.ring_max,
            latency: stats.latency.as_ref().and_then(Percentiles::of_histogram),
            classes: PathClass::ALL
                .iter()
                .filter_map(|class| {
                    let histogram = stats.by_class.get(class)?;
                    Some(ClassLatency {
                        class: *class,
                        packets: histogram.len(),
                        latency: Percentiles::of_histogram(histogram)?,
                    })
                })
                .collect(),
        }
    }

    /// The section in Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "## Appliance CPU\n\nmodel: {} · profile `{}` ({}) · {} CPU(s) · RX ring {} · utilization {:.1}% · rx_ring_full {} · deepest ring {}\n",
            self.model,
            self.profile,
            self.profile_source,
            self.cpus,
            self.rx_ring,
            self.utilization * 100.0,
            self.rx_ring_full,
            self.ring_max
        );
        md.push_str("| path | packets | latency p50 µs | p90 µs | p99 µs | max µs |\n|---|---|---|---|---|---|\n");
        let us = |ns: u64| format!("{:.2}", ns as f64 / 1e3);
        let rows = self
            .latency
            .map(|l| ("all", self.classes.iter().map(|c| c.packets).sum(), l))
            .into_iter()
            .chain(
                self.classes
                    .iter()
                    .map(|c| (c.class.name(), c.packets, c.latency)),
            );
        for (name, packets, l) in rows {
            let _ = writeln!(
                md,
                "| {name} | {packets} | {} | {} | {} | {} |",
                us(l.p50),
                us(l.p90),
                us(l.p99),
                us(l.max)
            );
        }
        md.push('\n');
        md
    }
}
