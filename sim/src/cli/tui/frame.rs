//! The report frames the TUI shows: the part of a run report it reads ([`ReportView`]),
//! deserialised from `report.json` or from a live report through the same serde shape, and
//! the counts a frame's rates are taken against ([`RateBase`]).

use std::collections::BTreeMap;

use datapath::TimeNs;
use serde::Deserialize;

/// The part of a run report the TUI shows. Deserialised from `report.json`'s `report` (and
/// from a live [`crate::report::Report`] through the same serde shape), so both sources feed
/// the same model. Unknown keys are ignored.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ReportView {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Virtual duration.
    pub duration_ns: u64,
    /// Receive queues.
    pub queues: u16,
    /// Frame totals.
    pub totals: TotalsView,
    /// Pipeline decisions.
    pub pipeline: PipelineView,
    /// Legitimate clients.
    pub clients: ClientsView,
    /// Per-second rows.
    pub timeline: Vec<SecondView>,
    /// Shield contexts, flows and directors.
    pub appliance: ApplianceView,
}

/// Frame totals.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct TotalsView {
    /// Frames sent by sources and backends.
    pub sent: u64,
    /// Frames the pipeline processed.
    pub processed: u64,
    /// Frames the pipeline emitted.
    pub emitted: u64,
    /// Frames delivered to hosts.
    pub delivered: u64,
}

/// Pipeline decisions.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PipelineView {
    /// Decisions per (stage, verdict, reason).
    pub decisions: Vec<DecisionView>,
}

/// Decisions of one (stage, verdict, reason).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct DecisionView {
    /// Stage.
    pub stage: String,
    /// Verdict.
    pub verdict: String,
    /// Drop reason, "" unless dropped.
    pub reason: String,
    /// Packets.
    pub packets: u64,
}

/// Latency percentiles (ns): the report's own type.
pub type PercentilesView = crate::report::Percentiles;

/// TCP clients.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct TcpView {
    /// Connections opened.
    pub attempted: u64,
    /// Reached ESTABLISHED.
    pub established: u64,
    /// Read their whole response.
    pub completed: u64,
    /// Timed out.
    pub failed_timeout: u64,
    /// Reset early.
    pub failed_reset: u64,
    /// Still open at the end of the run.
    pub unfinished: u64,
    /// Success over every attempt (still open counts as not succeeded).
    pub success_ratio: f64,
    /// Connection setup time.
    pub connect_ns: Option<PercentilesView>,
}

/// UDP clients.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct UdpView {
    /// Requests sent.
    pub sent: u64,
    /// Answered.
    pub answered: u64,
    /// Timed out.
    pub failed_timeout: u64,
    /// Still waiting at the end of the run.
    pub unfinished: u64,
    /// Success over every request (still waiting counts as not succeeded).
    pub success_ratio: f64,
    /// Round-trip time.
    pub rtt_ns: Option<PercentilesView>,
}

/// Legitimate clients.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ClientsView {
    /// TCP clients.
    pub tcp: Option<TcpView>,
    /// UDP clients.
    pub udp: Option<UdpView>,
}

/// One second of the run.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct SecondView {
    /// Second since the start.
    pub second: u64,
    /// Frames processed.
    pub processed: u64,
    /// Verdict `pass`.
    pub pass: u64,
    /// Verdict `drop`.
    pub drop: u64,
    /// Verdict `reply`.
    pub reply: u64,
    /// Verdict `forward`.
    pub forward: u64,
}

impl SecondView {
    fn verdicts(&self) -> [u64; 4] {
        [self.pass, self.drop, self.reply, self.forward]
    }
}

/// Shield contexts, flows and directors.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ApplianceView {
    /// Shield contexts.
    pub shield: Vec<ShieldView>,
    /// Flows in file order.
    pub flows: Vec<FlowView>,
    /// IP packets no flow claimed.
    pub unclassified: u64,
    /// Virtual services.
    pub directors: Vec<ServiceView>,
}

/// One shield context.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ShieldView {
    /// Context name.
    pub name: String,
    /// Non-zero counters.
    pub counters: BTreeMap<String, u64>,
    /// Protection-mode changes (virtual ns, status bits).
    pub modes: Vec<(u64, u8)>,
}

/// One flow.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct FlowView {
    /// Name.
    pub name: String,
    /// Policy as written.
    pub policy: String,
    /// Packets claimed.
    pub hits: u64,
    /// Packets per rule (1-based order).
    pub rule_hits: Vec<u64>,
    /// Each rule's text (`match proto tcp dport 80`); empty in reports written before they
    /// were recorded.
    pub rules: Vec<String>,
}

/// One virtual service.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServiceView {
    /// Director name.
    pub name: String,
    /// `TCP 192.0.2.10:80` or `FWM 80`.
    pub key: String,
    /// Scheduler.
    pub scheduler: String,
    /// Real servers.
    pub reals: Vec<RealView>,
}

/// One real server.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct RealView {
    /// Address.
    pub address: String,
    /// `Masq`, `Route` or `Tunnel`.
    pub forward: String,
    /// Weight.
    pub weight: i32,
    /// ActiveConn.
    pub active: u64,
    /// InActConn.
    pub inactive: u64,
    /// Connections scheduled.
    pub connections: u64,
    /// Packets client → server.
    pub packets_in: u64,
    /// Packets server → client.
    pub packets_out: u64,
}

impl ReportView {
    /// The view of a live report (same serde shape as `report.json`).
    pub fn from_report(report: &crate::report::Report) -> anyhow::Result<Self> {
        Ok(serde_json::from_value(serde_json::to_value(report)?)?)
    }

    /// The view of a `report.json` file's text (`{"report": …, "measured": …}`).
    pub fn from_report_json(text: &str) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct File {
            report: ReportView,
        }
        Ok(serde_json::from_str::<File>(text)?.report)
    }

    /// Cumulative packets per verdict (pass, drop, reply, forward).
    pub fn verdict_totals(&self) -> [u64; 4] {
        self.timeline.iter().fold([0; 4], |mut sum, row| {
            sum.iter_mut()
                .zip(row.verdicts())
                .for_each(|(a, b)| *a += b);
            sum
        })
    }

    /// Protection-mode bits of shield context `context` at `time` (the last change at or
    /// before it; in a sharded run, whichever queue changed last).
    pub fn mode_bits_at(&self, context: usize, time: TimeNs) -> u8 {
        self.appliance.shield.get(context).map_or(0, |shield| {
            shield
                .modes
                .iter()
                .take_while(|(at, _)| *at <= time)
                .last()
                .map_or(0, |(_, bits)| *bits)
        })
    }
}

/// The decision and flow counts at the boundary before a frame, which the frame's rates are
/// taken against (a live feed keeps them for every interval; they are cheap).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateBase {
    /// Virtual time of the counts.
    pub at: TimeNs,
    /// Hits per flow, in file order.
    pub flow_hits: Vec<u64>,
    /// Decisions per (stage, verdict, reason).
    pub decisions: Vec<DecisionView>,
}

impl RateBase {
    /// The counts of `view` at `at`.
    pub fn of_view(at: TimeNs, view: &ReportView) -> Self {
        Self {
            at,
            flow_hits: view.appliance.flows.iter().map(|f| f.hits).collect(),
            decisions: view.pipeline.decisions.clone(),
        }
    }
}
