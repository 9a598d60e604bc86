//! What one sweep point's simulated run says, taken from its [`Report`]: legitimate
//! success, drops by reason, per-backend load and imbalance, connect-time percentiles,
//! packets per cost class and rate, table occupancy, and the deterministic constraints
//! that broke (failed `[expect]` checks, table capacity, backend overload, shield
//! thresholds, link capacity).
//!
//! Deterministic: the same scenario and seed give the same outcome. Not here: the
//! measured cost (see [`super::calibrate`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{ClassRates, CostClass};
use crate::report::{Percentiles, Report};
use crate::scenario::{Scenario, TrafficSpec};

/// One real server's load in one point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendLoad {
    /// Real server.
    pub server: String,
    /// Packets the director sent it.
    pub packets: u64,
    /// Connections scheduled to it (all directors).
    pub connections: u64,
}

/// Table occupancy at the end of the run (the sweep's runs are shorter than every table
/// timeout, so this is also the peak).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tables {
    /// Shield sessions created (all contexts).
    pub shield_sessions_created: u64,
    /// Shield sessions evicted to make room.
    pub shield_sessions_evicted: u64,
    /// Director connections live at the end (ActiveConn + InActConn).
    pub director_connections: u64,
}

/// The deterministic outcome of one sweep point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointOutcome {
    /// All `[expect]` checks passed.
    pub slo_passed: bool,
    /// Names of the failed checks.
    pub failed_checks: Vec<String>,
    /// TCP client success ratio (None: no TCP clients).
    pub legit_success_ratio: Option<f64>,
    /// UDP client success ratio (None: no UDP clients).
    pub udp_success_ratio: Option<f64>,
    /// Packets the pipeline processed.
    pub packets_processed: u64,
    /// Drops by reason (all stages).
    pub drops: BTreeMap<String, u64>,
    /// Packets per cost class.
    pub class_packets: BTreeMap<CostClass, u64>,
    /// Virtual ns over which the rates are averaged (from the start of the busiest source).
    pub window_ns: u64,
    /// Packets per second per cost class over the window.
    pub class_rates: ClassRates,
    /// Per real server.
    pub backends: Vec<BackendLoad>,
    /// Busiest / mean real-server packets (1.0 = even; None without backends).
    pub imbalance: Option<f64>,
    /// TCP connect time.
    pub connect_ns: Option<Percentiles>,
    /// Table occupancy.
    pub tables: Tables,
    /// Deterministic constraints that broke, in a fixed order.
    pub constraints: Vec<String>,
}

/// Extract the outcome of a point from its report.
pub fn from_report(scenario: &Scenario, report: &Report) -> PointOutcome {
    let mut drops = BTreeMap::new();
    let mut class_packets = BTreeMap::new();
    for decision in &report.pipeline.decisions {
        if decision.verdict == "drop" {
            *drops.entry(decision.reason.clone()).or_insert(0) += decision.packets;
        }
        let class = CostClass::of_decision(&decision.stage, &decision.verdict);
        *class_packets.entry(class).or_insert(0) += decision.packets;
    }
    let window_ns = rate_window(scenario, report);
    let class_rates = class_packets
        .iter()
        .map(|(class, packets)| (*class, *packets as f64 * 1e9 / window_ns as f64))
        .collect();
    let backends = backend_loads(report);
    let imbalance = imbalance(&backends);
    let tables = tables(report);
    let tcp = report.clients.tcp.as_ref();
    let mut outcome = PointOutcome {
        slo_passed: report.passed,
        failed_checks: report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.to_string())
            .collect(),
        legit_success_ratio: tcp.map(|t| t.success_ratio),
        udp_success_ratio: report.clients.udp.as_ref().map(|u| u.success_ratio),
        packets_processed: report.totals.processed,
        drops,
        class_packets,
        window_ns,
        class_rates,
        backends,
        imbalance,
        connect_ns: tcp.and_then(|t| t.connect_ns),
        tables,
        constraints: Vec::new(),
    };
    outcome.constraints = constraints(&outcome, report);
    outcome
}

/// Rates are averaged from the start of the source that sent the most frames (a flood
/// starting at 100 ms of a 300 ms run is measured over 200 ms) to the end of the run.
/// Smaller sources are thereby slightly over-counted: the estimate errs on the safe side.
fn rate_window(scenario: &Scenario, report: &Report) -> u64 {
    let busiest = report
        .sources
        .iter()
        .enumerate()
        .max_by_key(|(index, s)| (s.sent, std::cmp::Reverse(*index)))
        .map(|(_, s)| s.name.as_str());
    let start = scenario
        .traffic
        .iter()
        .zip(&report.sources)
        .find(|(_, row)| Some(row.name.as_str()) == busiest)
        .map_or(0, |(spec, _)| source_start(spec.get_ref()));
    scenario.duration.0.saturating_sub(start).max(1)
}

fn source_start(spec: &TrafficSpec) -> u64 {
    match spec {
        TrafficSpec::Pcap(s) => s.start.0,
        TrafficSpec::SynFlood(s)
        | TrafficSpec::AckFlood(s)
        | TrafficSpec::UdpFlood(s)
        | TrafficSpec::IcmpFlood(s) => s.start.0,
        TrafficSpec::TcpClients(s) => s.start.0,
        TrafficSpec::UdpClients(s) => s.start.0,
        TrafficSpec::FtpClients(s) => s.start.0,
    }
}

fn backend_loads(report: &Report) -> Vec<BackendLoad> {
    let mut connections: BTreeMap<String, u64> = BTreeMap::new();
    for service in &report.appliance.directors {
        for real in &service.reals {
            *connections.entry(real.address.clone()).or_insert(0) += real.connections;
        }
    }
    report
        .backends
        .iter()
        .map(|b| BackendLoad {
            server: b.server.to_string(),
            packets: b.packets,
            connections: connections.get(&b.server.to_string()).copied().unwrap_or(0),
        })
        .collect()
}

fn imbalance(backends: &[BackendLoad]) -> Option<f64> {
    let total: u64 = backends.iter().map(|b| b.packets).sum();
    let busiest = backends.iter().map(|b| b.packets).max()?;
    (total > 0).then(|| busiest as f64 * backends.len() as f64 / total as f64)
}

fn tables(report: &Report) -> Tables {
    let mut tables = Tables::default();
    for context in &report.appliance.shield {
        let counter = |name: &str| context.counters.get(name).copied().unwrap_or(0);
        tables.shield_sessions_created += counter("sessions_created");
        tables.shield_sessions_evicted += counter("sessions_evicted");
    }
    tables.director_connections = report
        .appliance
        .directors
        .iter()
        .flat_map(|s| &s.reals)
        .map(|r| r.active + r.inactive)
        .sum();
    tables
}

/// Deterministic constraints, in this order: `slo:<check>` per failed check,
/// `table_capacity` (table-full drops or evicted shield sessions), `backend_overload`
/// (backlog or receive-queue overflow on a server), `shield_thresholds` (rate-limit drops),
/// `link_capacity` (frames tail-dropped at a full link queue).
fn constraints(outcome: &PointOutcome, report: &Report) -> Vec<String> {
    let mut broken: Vec<String> = outcome
        .failed_checks
        .iter()
        .map(|c| format!("slo:{c}"))
        .collect();
    let drops = |reason: &str| outcome.drops.get(reason).copied().unwrap_or(0);
    if drops("table_full") + drops("conn_table_full") + outcome.tables.shield_sessions_evicted > 0 {
        broken.push("table_capacity".into());
    }
    let overloaded = report
        .hosts
        .iter()
        .filter_map(|h| h.backend.as_ref())
        .any(|b| b.backlog_full + b.rx_overflow > 0);
    if overloaded {
        broken.push("backend_overload".into());
    }
    if drops("rate") > 0 {
        broken.push("shield_thresholds".into());
    }
    if report.totals.link_queue_full > 0 {
        broken.push("link_capacity".into());
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imbalance_is_busiest_over_mean() {
        let load = |packets| BackendLoad {
            server: String::new(),
            packets,
            connections: 0,
        };
        assert_eq!(imbalance(&[load(30), load(10)]), Some(1.5));
        assert_eq!(imbalance(&[load(10), load(10)]), Some(1.0));
        assert_eq!(imbalance(&[]), None);
        assert_eq!(imbalance(&[load(0)]), None);
    }
}
