//! The run report: a deterministic part (scenario, seed, frame totals, per-stage verdict and
//! drop-reason counters, per-flow hits, per-backend shares, client success and latency
//! percentiles, hosts, timed events, per-second time series, `[expect]` checks) that is
//! byte-identical for the same scenario and seed whatever the thread count, and a separate
//! `measured` part (wall-clock cost) excluded from determinism checks.
//!
//! Rendered as JSON (`report.json`: `{"report": …, "measured": …}`) and Markdown, and read
//! back from that JSON ([`from_report_json`]: the TUI replays a finished run's report in
//! the same types it shows a live run's). Reading back is lenient: keys a report of an
//! earlier version did not write take their defaults.
//! Not here: running (see [`crate::run`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use datapath::InvalidReason;
use datapath::packet::fragments::FragmentCounters;
use serde::{Deserialize, Serialize};

use crate::actors::{BackendStats, TcpStats, UdpStats};
use crate::engine::{EventLogEntry, SecondRow, ShardResult, Totals};
use crate::net::world::World;
use crate::scenario::{Expect, Scenario};
pub use crate::stats::Percentiles;

/// The deterministic report.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Virtual duration.
    pub duration_ns: u64,
    /// Receive queues (pipeline shards).
    pub queues: u16,
    /// All `[expect]` checks passed.
    pub passed: bool,
    /// `[expect]` checks.
    pub checks: Vec<Check>,
    /// Frame totals.
    pub totals: Totals,
    /// Pipeline counters.
    pub pipeline: PipelineSection,
    /// Packets whose final outcome names a flow and rule (the flow's index in
    /// `appliance.flows`). Every evaluation, by flow name, is in `appliance.flows`: packets a
    /// later stage (director, IP layer) decided and frames the SYN proxy sent count there.
    pub flows: Vec<FlowRow>,
    /// Packets per real server.
    pub backends: Vec<BackendRow>,
    /// Legitimate clients.
    pub clients: ClientsSection,
    /// Traffic sources.
    pub sources: Vec<SourceRow>,
    /// Hosts.
    pub hosts: Vec<HostRow>,
    /// Director and NAT state shared by every queue.
    pub shared: SharedSection,
    /// Timed events.
    pub events: Vec<EventLogEntry>,
    /// Per-second time series.
    pub timeline: Vec<SecondRow>,
    /// What the appliance's stages saw: shield contexts (counters, mode changes per queue),
    /// flowmgr hits, virtual services with ActiveConn/InActConn at the end of the run.
    pub appliance: crate::appliance::ApplianceReport,
    /// The appliance's CPU model, when it ran (`[cpu]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<crate::engine::cpu::CpuSection>,
    /// Data for the plots of `report.html` (deterministic, not part of `report.json`:
    /// empty in a report read back).
    #[serde(skip)]
    pub plots: Plots,
}

/// Time series behind `report.html`'s plots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plots {
    /// Verdicts, backends, ActiveConn and shield modes over time.
    pub series: crate::engine::series::Series,
    /// (time established, setup time) of TCP client connections.
    pub connect_samples: Vec<(u64, u64)>,
}

/// One `[expect]` check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    /// Key as written in `[expect]` (`source.<name>.<key>` for `[[expect.source]]`).
    pub name: String,
    /// The limit.
    #[serde(deserialize_with = "null_is_infinite")]
    pub limit: f64,
    /// The measured value (infinite for `connect_p99_max` without a connection).
    #[serde(deserialize_with = "null_is_infinite")]
    pub value: f64,
    /// Whether it holds.
    pub passed: bool,
}

/// A check's limit or value: JSON has no infinity (serde_json writes a non-finite number as
/// `null`, as the p99 of no connection), so `null` reads back as infinity.
fn null_is_infinite<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::INFINITY))
}

/// Pipeline counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PipelineSection {
    /// Packets processed.
    pub packets: u64,
    /// Decisions per stage, verdict and reason.
    pub decisions: Vec<DecisionRow>,
    /// Invalid packets per reason.
    pub invalid: BTreeMap<String, u64>,
    /// Fragment tracker.
    pub fragments: FragmentCounters,
}

/// Decisions of one (stage, verdict, reason).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecisionRow {
    /// Stage.
    pub stage: Cow<'static, str>,
    /// Verdict.
    pub verdict: Cow<'static, str>,
    /// Drop reason ("" unless dropped).
    pub reason: String,
    /// Packets.
    pub packets: u64,
}

/// Hits of one flow rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlowRow {
    /// Flow index.
    pub flow: u16,
    /// Rule (1-based; 0 when the stage did not say).
    pub rule: u16,
    /// Packets.
    pub hits: u64,
}

/// One real server's share.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendRow {
    /// Real server.
    pub server: SocketAddr,
    /// Packets sent to it.
    pub packets: u64,
    /// Share of all director-forwarded packets.
    pub share: f64,
}

/// TCP client results (all `tcp_clients` sources).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TcpSection {
    /// Connections opened.
    pub attempted: u64,
    /// Reached ESTABLISHED.
    pub established: u64,
    /// Read their whole response.
    pub completed: u64,
    /// Timed out.
    pub failed_timeout: u64,
    /// Closed or reset early.
    pub failed_reset: u64,
    /// Still open at the end (not succeeded).
    pub unfinished: u64,
    /// completed / attempted: failed and still-open connections both count against it.
    pub success_ratio: f64,
    /// Connection setup time.
    pub connect_ns: Option<Percentiles>,
    /// Connect to last response byte.
    pub complete_ns: Option<Percentiles>,
}

/// UDP client results (all `udp_clients` sources).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct UdpSection {
    /// Requests sent.
    pub sent: u64,
    /// Answered.
    pub answered: u64,
    /// Timed out.
    pub failed_timeout: u64,
    /// Waiting at the end (not succeeded).
    pub unfinished: u64,
    /// answered / (answered + timed out + still waiting).
    pub success_ratio: f64,
    /// Round-trip time.
    pub rtt_ns: Option<Percentiles>,
}

/// Legitimate clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClientsSection {
    /// TCP clients.
    pub tcp: Option<TcpSection>,
    /// UDP clients.
    pub udp: Option<UdpSection>,
}

/// One traffic source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceRow {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: Cow<'static, str>,
    /// Frames sent.
    pub sent: u64,
    /// Frames received.
    pub received: u64,
    /// Frames skipped.
    pub skipped: u64,
    /// First error.
    pub error: Option<String>,
    /// Client sources: completed (answered) / finished attempts, as the `clients` section
    /// counts them.
    pub success_ratio: Option<f64>,
}

/// What the state every queue shares (directors, NAT) did, checked by `[expect]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SharedSection {
    /// Clients with two connections to one persistent virtual service within its timeout
    /// of each other on different real servers (`persistence_violations_max`).
    pub persistence_violations: u64,
    /// Translated tuples used for more than one client endpoint (`nat_tuple_reuse_max`).
    pub nat_tuple_reuse: u64,
}

/// A client source's success ratio (`None` for other sources).
fn source_success_ratio(actor: &crate::actors::ActorStats) -> Option<f64> {
    if let Some(t) = &actor.tcp {
        return Some(ratio(t.completed, t.failed_timeout + t.failed_reset));
    }
    actor
        .udp
        .as_ref()
        .map(|u| ratio(u.answered, u.failed_timeout))
}

/// Clients (address, service) with two consecutive connections to one persistent
/// service, within its persistence timeout of each other, on different real servers
/// (addresses: an fwmark service's real keeps the client's port). `connections` in time
/// order; `timeouts` per service (`None`: not persistent).
pub fn persistence_violations(
    connections: &[crate::engine::ConnectionLine],
    timeouts: &[Option<u64>],
) -> u64 {
    use std::collections::BTreeMap;
    let mut last: BTreeMap<(std::net::IpAddr, u16), (u64, std::net::IpAddr)> = BTreeMap::new();
    let mut violators = std::collections::BTreeSet::new();
    for line in connections {
        let Some(Some(timeout)) = timeouts.get(usize::from(line.service)) else {
            continue;
        };
        let key = (line.client.ip(), line.service);
        let real = line.real.ip();
        if let Some(&(at, previous)) = last.get(&key)
            && previous != real
            && line.at.saturating_sub(at) <= *timeout
        {
            violators.insert(key);
        }
        last.insert(key, (line.at, real));
    }
    violators.len() as u64
}

/// One host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostRow {
    /// Name.
    pub name: String,
    /// Frames delivered to it.
    pub delivered: u64,
    /// Backend service figures.
    pub backend: Option<BackendStats>,
}

/// The wall-clock part (not deterministic).
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Threads used.
    pub threads: usize,
    /// Wall time of the whole run.
    pub wall_ns: u64,
    /// Wall time of each queue's shard.
    pub queue_wall_ns: Vec<u64>,
    /// Packets processed by the pipeline.
    pub packets: u64,
    /// Wall ns per processed packet (engine + pipeline).
    pub ns_per_packet: f64,
    /// Millions of processed packets per wall second.
    pub mpps: f64,
    /// CPU time each queue's shard took on its thread (Linux `/proc/thread-self/schedstat`;
    /// 0 where unavailable): unlike wall time it does not count time the thread waited for
    /// a core, so it measures the cost on a busy machine too.
    pub queue_cpu_ns: Vec<u64>,
    /// CPU ns per processed packet, all shards (0 when CPU time is unavailable).
    pub cpu_ns_per_packet: f64,
    /// Millions of processed packets per second of one core's CPU time.
    pub mpps_per_core: f64,
}

impl Measured {
    /// From the wall times of a run.
    pub fn new(threads: usize, wall_ns: u64, queue_wall_ns: Vec<u64>, packets: u64) -> Self {
        let ns_per_packet = if packets == 0 {
            0.0
        } else {
            wall_ns as f64 / packets as f64
        };
        let mpps = if wall_ns == 0 {
            0.0
        } else {
            packets as f64 * 1e3 / wall_ns as f64
        };
        Self {
            threads,
            wall_ns,
            queue_wall_ns,
            packets,
            ns_per_packet,
            mpps,
            queue_cpu_ns: Vec::new(),
            cpu_ns_per_packet: 0.0,
            mpps_per_core: 0.0,
        }
    }

    /// Add the shards' CPU times.
    pub fn with_cpu(mut self, queue_cpu_ns: Vec<u64>) -> Self {
        let cpu_ns: u64 = queue_cpu_ns.iter().sum();
        if cpu_ns > 0 && self.packets > 0 {
            self.cpu_ns_per_packet = cpu_ns as f64 / self.packets as f64;
            self.mpps_per_core = self.packets as f64 * 1e3 / cpu_ns as f64;
        }
        self.queue_cpu_ns = queue_cpu_ns;
        self
    }
}

pub use crate::engine::shared::thread_cpu_ns;

mod markdown;
pub use markdown::markdown;

/// Success ratio over every attempt: `bad` includes the attempts still open when the run
/// ends (a connection stranded by a failover has not succeeded). No attempt: 0 (no
/// evidence of success).
fn ratio(good: u64, bad: u64) -> f64 {
    if good + bad == 0 {
        0.0
    } else {
        good as f64 / (good + bad) as f64
    }
}

fn clients(merged: &ShardResult) -> ClientsSection {
    let mut tcp: Option<TcpStats> = None;
    let mut udp: Option<UdpStats> = None;
    for actor in &merged.actors {
        if let Some(stats) = &actor.tcp {
            tcp.get_or_insert_with(TcpStats::default).merge(stats);
        }
        if let Some(stats) = &actor.udp {
            udp.get_or_insert_with(UdpStats::default).merge(stats);
        }
    }
    ClientsSection {
        tcp: tcp.map(|t| TcpSection {
            attempted: t.attempted,
            established: t.established,
            completed: t.completed,
            failed_timeout: t.failed_timeout,
            failed_reset: t.failed_reset,
            unfinished: t.unfinished,
            success_ratio: ratio(
                t.completed,
                t.failed_timeout + t.failed_reset + t.unfinished,
            ),
            connect_ns: Percentiles::of_histogram(&t.connect_ns),
            complete_ns: Percentiles::of_histogram(&t.complete_ns),
        }),
        udp: udp.map(|u| UdpSection {
            sent: u.sent,
            answered: u.answered,
            failed_timeout: u.failed_timeout,
            unfinished: u.unfinished,
            success_ratio: ratio(u.answered, u.failed_timeout + u.unfinished),
            rtt_ns: Percentiles::of_histogram(&u.rtt_ns),
        }),
    }
}

fn pipeline_section(merged: &ShardResult) -> PipelineSection {
    let counters = &merged.counters;
    let decisions = counters
        .rows()
        .into_iter()
        .map(|row| DecisionRow {
            stage: row.stage.name().into(),
            verdict: row.verdict.into(),
            reason: row.reason.unwrap_or_default(),
            packets: row.count,
        })
        .collect();
    let invalid = InvalidReason::ALL
        .iter()
        .filter_map(|r| {
            let count = counters.invalid(*r);
            (count > 0).then(|| (r.name().to_string(), count))
        })
        .collect();
    PipelineSection {
        packets: counters.packets,
        decisions,
        invalid,
        fragments: counters.fragments,
    }
}

/// Build the deterministic report from the merged shard results.
pub fn build(scenario: &Scenario, world: &World, merged: &ShardResult) -> Report {
    let forwarded: u64 = merged.backends.values().sum();
    let mut report = Report {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        duration_ns: scenario.duration.0,
        queues: scenario.queues,
        passed: true,
        checks: Vec::new(),
        totals: merged.totals.clone(),
        pipeline: pipeline_section(merged),
        appliance: merged.appliance.clone(),
        flows: merged
            .flows
            .iter()
            .map(|(&(flow, rule), &hits)| FlowRow { flow, rule, hits })
            .collect(),
        backends: merged
            .backends
            .iter()
            .map(|(&server, &packets)| BackendRow {
                server,
                packets,
                share: packets as f64 / forwarded.max(1) as f64,
            })
            .collect(),
        clients: clients(merged),
        sources: merged
            .actors
            .iter()
            .filter(|a| a.backend.is_none())
            .map(|a| SourceRow {
                name: a.name.clone(),
                kind: a.kind.into(),
                sent: a.packets_sent,
                received: a.packets_received,
                skipped: a.packets_skipped,
                error: a.error.clone(),
                success_ratio: source_success_ratio(a),
            })
            .collect(),
        shared: SharedSection {
            persistence_violations: persistence_violations(
                &merged.connections,
                &merged.persistence,
            ),
            nat_tuple_reuse: crate::engine::reused_tuples(&merged.translated),
        },
        hosts: world
            .hosts
            .iter()
            .zip(&merged.delivered)
            .map(|(host, &delivered)| HostRow {
                name: host.name.clone(),
                delivered,
                backend: merged
                    .actors
                    .iter()
                    .find(|a| a.backend.is_some() && a.name == host.name)
                    .and_then(|a| a.backend.clone()),
            })
            .collect(),
        events: merged.events.clone(),
        timeline: merged.timeline.clone(),
        cpu: merged.cpu.as_ref().map(|stats| {
            crate::engine::cpu::CpuSection::new(stats, scenario.queues, scenario.duration.0)
        }),
        plots: Plots {
            series: merged.series.clone(),
            connect_samples: merged
                .actors
                .iter()
                .filter_map(|a| a.tcp.as_ref())
                .flat_map(|t| t.connect_samples.iter().copied())
                .collect(),
        },
    };
    report.checks = checks(&scenario.expect, &report);
    report.passed = report.checks.iter().all(|c| c.passed);
    report
}

fn checks(expect: &Expect, report: &Report) -> Vec<Check> {
    // Frames dropped at a full RX ring (CPU model) reached the appliance and were dropped.
    let ring = report.totals.rx_ring_full;
    let processed = report.totals.processed + ring;
    let dropped: u64 = ring
        + report
            .pipeline
            .decisions
            .iter()
            .filter(|d| d.verdict == "drop")
            .map(|d| d.packets)
            .sum::<u64>();
    let drop_ratio = if processed == 0 {
        0.0
    } else {
        dropped as f64 / processed as f64
    };
    let tcp_ratio = report.clients.tcp.as_ref().map_or(0.0, |t| t.success_ratio);
    let udp_ratio = report.clients.udp.as_ref().map_or(0.0, |u| u.success_ratio);
    let connect_p99 = report
        .clients
        .tcp
        .as_ref()
        .and_then(|t| t.connect_ns.as_ref())
        .map_or(f64::INFINITY, |p| p.p99 as f64);
    let mut out = Vec::new();
    let mut at_least = |name: &str, limit: Option<f64>, value: f64| {
        if let Some(limit) = limit {
            out.push(Check {
                name: name.to_string(),
                limit,
                value,
                passed: value >= limit,
            });
        }
    };
    at_least(
        "legit_success_ratio_min",
        expect.legit_success_ratio_min,
        tcp_ratio,
    );
    at_least(
        "udp_success_ratio_min",
        expect.udp_success_ratio_min,
        udp_ratio,
    );
    at_least("min_drop_ratio", expect.min_drop_ratio, drop_ratio);
    at_least(
        "min_packets",
        expect.min_packets.map(|v| v as f64),
        report.totals.processed as f64,
    );
    let mut at_most = |name: &str, limit: Option<f64>, value: f64| {
        if let Some(limit) = limit {
            out.push(Check {
                name: name.to_string(),
                limit,
                value,
                passed: value <= limit,
            });
        }
    };
    at_most("max_drop_ratio", expect.max_drop_ratio, drop_ratio);
    at_most(
        "max_unroutable",
        expect.max_unroutable.map(|v| v as f64),
        report.totals.unroutable as f64,
    );
    at_most(
        "connect_p99_max",
        expect.connect_p99_max.map(|d| d.0 as f64),
        connect_p99,
    );
    at_most(
        "persistence_violations_max",
        expect.persistence_violations_max.map(|v| v as f64),
        report.shared.persistence_violations as f64,
    );
    at_most(
        "nat_tuple_reuse_max",
        expect.nat_tuple_reuse_max.map(|v| v as f64),
        report.shared.nat_tuple_reuse as f64,
    );
    out.extend(source_checks(expect, report));
    out
}

/// `[[expect.source]]` checks (`source.<name>.success_ratio_min` / `_max`).
fn source_checks(expect: &Expect, report: &Report) -> Vec<Check> {
    let mut out = Vec::new();
    for check in &expect.source {
        let check = check.get_ref();
        let row = report.sources.iter().find(|s| s.name == check.name);
        let value = row.and_then(|r| r.success_ratio).unwrap_or(0.0);
        let bounds = [
            ("min", check.success_ratio_min, true),
            ("max", check.success_ratio_max, false),
        ];
        for (bound, limit, at_least) in bounds {
            let Some(limit) = limit else { continue };
            out.push(Check {
                name: format!("source.{}.success_ratio_{bound}", check.name),
                limit,
                value,
                passed: if at_least {
                    value >= limit
                } else {
                    value <= limit
                },
            });
        }
    }
    out
}

/// The deterministic part as pretty JSON (what determinism checks compare).
pub fn deterministic_json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default()
}

/// The report of a `report.json` file's text (`{"report": …, "measured": …}`; the
/// `measured` part is not read).
pub fn from_report_json(text: &str) -> serde_json::Result<Report> {
    #[derive(Deserialize)]
    struct File {
        report: Report,
    }
    Ok(serde_json::from_str::<File>(text)?.report)
}

/// `report.json`: `{"report": …, "measured": …}`.
pub fn full_json(report: &Report, measured: &Measured) -> String {
    #[derive(Serialize)]
    struct Full<'a> {
        report: &'a Report,
        measured: &'a Measured,
    }
    serde_json::to_string_pretty(&Full { report, measured }).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of timed event reads back from the report's JSON as it was (durations,
    /// bandwidths and ppm values are written as plain numbers, absent ones as `null`).
    #[test]
    fn timed_events_read_back_from_json() {
        #[derive(Deserialize)]
        struct Events {
            events: Vec<crate::scenario::TimedEvent>,
        }
        let toml = r#"
            [[events]]
            kind = "server_down"
            at = "200ms"
            server = "10.0.1.3:80"
            [[events]]
            kind = "server_up"
            at = "1.5s"
            director = "web"
            server = "[2001:db8::3]:80"
            [[events]]
            kind = "weight"
            at = "150ms"
            server = "10.0.1.4:80"
            weight = 0
            [[events]]
            kind = "mode"
            at = "1s"
            context = "192.0.2.10"
            syn_cookies = "on"
            [[events]]
            kind = "link"
            at = "300ms"
            host = "clients"
            latency = "5ms"
            bandwidth = "10Mbit/s"
            [[events]]
            kind = "link"
            at = "600ms"
            host = "clients"
            loss_ppm = 1000
            duplicate_ppm = 50000
            reorder_ppm = 5000
            reorder_delay = "2ms"
            corrupt_ppm = 20000
        "#;
        let events = toml::from_str::<Events>(toml).unwrap().events;
        let log: Vec<EventLogEntry> = events
            .into_iter()
            .map(|event| EventLogEntry {
                at_ns: event.at().0,
                event,
                status: "applied".into(),
            })
            .collect();
        let json = serde_json::to_string(&log).unwrap();
        let back: Vec<EventLogEntry> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, log, "{json}");
    }

    /// A check without a measurement (p99 of no connection: infinite, written `null`) and
    /// the `&'static str`-born fields read back.
    #[test]
    fn a_report_reads_back_from_json() {
        let report = Report {
            scenario: "s".into(),
            checks: vec![Check {
                name: "connect_p99_max".into(),
                limit: 5e6,
                value: f64::INFINITY,
                passed: false,
            }],
            pipeline: PipelineSection {
                decisions: vec![DecisionRow {
                    stage: "shield".into(),
                    verdict: "drop".into(),
                    reason: "ttl_filter".into(),
                    packets: 7,
                }],
                ..PipelineSection::default()
            },
            ..Report::default()
        };
        let measured = Measured::new(1, 0, Vec::new(), 0);
        let back = from_report_json(&full_json(&report, &measured)).unwrap();
        assert_eq!(back, report);
        assert_eq!(deterministic_json(&back), deterministic_json(&report));
    }
}
