//! What a shard produces: totals, per-second rows, the event log, shard results and
//! live snapshots.

use super::*;

/// What the caller wants collected besides counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Collect {
    /// Per-packet records (`--packets`).
    pub records: bool,
    /// Emitted frames (`--pcap-out`).
    pub emitted: bool,
}

/// One packet the pipeline processed, for `--packets`.
#[derive(Clone, Debug)]
pub struct PacketLine {
    /// Virtual time.
    pub time: TimeNs,
    /// Receive queue.
    pub queue: u16,
    /// Parsed packet.
    pub meta: PacketMeta,
    /// What the pipeline decided.
    pub outcome: PacketOutcome,
    /// Frames it emitted.
    pub emitted: u16,
    /// Appliance latency: RX ring wait + service (CPU model only).
    pub appliance_ns: Option<TimeNs>,
}

/// Frame counts of a run.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Totals {
    /// Frames sent by sources and backends.
    pub sent: u64,
    /// Frames lost on links (random loss).
    pub link_lost: u64,
    /// Frames tail-dropped at full link queues.
    pub link_queue_full: u64,
    /// Extra frames made by link duplication (each also ends in one outcome).
    #[serde(skip_serializing_if = "is_zero")]
    pub link_duplicated: u64,
    /// Frames a link held back so that later frames overtook them.
    #[serde(skip_serializing_if = "is_zero")]
    pub link_reordered: u64,
    /// Frames with a bit flipped on a link (still processed or delivered: the pipeline
    /// counts most as invalid, hosts' stacks drop them on their checksums).
    #[serde(skip_serializing_if = "is_zero")]
    pub link_corrupted: u64,
    /// Frames processed by the pipeline.
    pub processed: u64,
    /// Frames the pipeline emitted.
    pub emitted: u64,
    /// Emitted frames to addresses no host owns.
    pub unroutable: u64,
    /// Emitted frames without an IP destination (ARP, LLDP, …): not routed.
    pub non_ip: u64,
    /// Frames delivered to hosts.
    pub delivered: u64,
    /// Delivered frames to network addresses no client uses (flood replies).
    pub delivered_to_sink: u64,
    /// Events dropped because the event queue was full.
    pub event_overflow: u64,
    /// Frames still travelling on a link when the run ended.
    pub in_flight: u64,
    /// Frames not kept for `--pcap-out` / records not kept for `--packets` (capacity).
    pub not_kept: u64,
    /// Frames dropped at the appliance's full RX ring (CPU model only; `rx_missed_errors`).
    #[serde(skip_serializing_if = "is_zero")]
    pub rx_ring_full: u64,
}

impl Totals {
    /// Every frame ends in exactly one counted outcome: frames that entered (sent by hosts,
    /// emitted by the pipeline) equal frames that left (lost, tail-dropped, processed by the
    /// pipeline, delivered, unroutable, not IP, still in flight); copies made by link
    /// duplication count as entered. `None` when events overflowed the queue (then not
    /// every lost event was a frame); else the imbalance.
    pub fn frame_imbalance(&self) -> Option<i64> {
        if self.event_overflow > 0 {
            return None;
        }
        let entered = self.sent + self.emitted + self.link_duplicated;
        let left = self.link_lost
            + self.link_queue_full
            + self.processed
            + self.delivered
            + self.unroutable
            + self.non_ip
            + self.in_flight
            + self.rx_ring_full;
        Some(entered as i64 - left as i64)
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        self.sent += other.sent;
        self.link_lost += other.link_lost;
        self.link_queue_full += other.link_queue_full;
        self.link_duplicated += other.link_duplicated;
        self.link_reordered += other.link_reordered;
        self.link_corrupted += other.link_corrupted;
        self.processed += other.processed;
        self.emitted += other.emitted;
        self.unroutable += other.unroutable;
        self.non_ip += other.non_ip;
        self.delivered += other.delivered;
        self.delivered_to_sink += other.delivered_to_sink;
        self.event_overflow += other.event_overflow;
        self.in_flight += other.in_flight;
        self.not_kept += other.not_kept;
        self.rx_ring_full += other.rx_ring_full;
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SecondRow {
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
    /// Frames emitted.
    pub emitted: u64,
    /// Frames delivered to hosts.
    pub delivered: u64,
}

impl SecondRow {
    pub(crate) fn merge(&mut self, other: &Self) {
        self.processed += other.processed;
        self.pass += other.pass;
        self.drop += other.drop;
        self.reply += other.reply;
        self.forward += other.forward;
        self.emitted += other.emitted;
        self.delivered += other.delivered;
    }
}

/// A timed event as it happened.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct EventLogEntry {
    /// When (virtual ns).
    pub at_ns: TimeNs,
    /// The event.
    pub event: TimedEvent,
    /// `applied`, or `pending: …` when the pipeline has no API for it yet.
    pub status: String,
}

/// Everything one shard produced.
#[derive(Debug)]
pub struct ShardResult {
    /// Pipeline counters.
    pub counters: PipelineCounters,
    /// Frame counts.
    pub totals: Totals,
    /// Hits per (flow, rule).
    pub flows: BTreeMap<(u16, u16), u64>,
    /// Packets per backend chosen by the director.
    pub backends: BTreeMap<SocketAddr, u64>,
    /// Frames delivered per host, by host id.
    pub delivered: Vec<u64>,
    /// Per-second rows.
    pub timeline: Vec<SecondRow>,
    /// Actor statistics, in actor order.
    pub actors: Vec<ActorStats>,
    /// Timed events.
    pub events: Vec<EventLogEntry>,
    /// Per-packet records (when collected).
    pub records: Vec<PacketLine>,
    /// Emitted frames with their time (when collected).
    pub emitted: Vec<(TimeNs, Vec<u8>)>,
    /// What the appliance's stages saw (shield contexts, flows, directors).
    pub appliance: crate::appliance::ApplianceReport,
    /// What the CPU counted (CPU model only).
    pub cpu: Option<super::cpu::CpuStats>,
    /// Fine-grained time series for plots.
    pub series: series::Series,
    /// Connections the directors created, in this shard's order (merged: by time).
    pub connections: Vec<ConnectionLine>,
    /// TCP SYNs the appliance sent with a translated source (NAT scenarios only).
    pub translated: Vec<TranslatedSyn>,
    /// Persistence timeout per virtual service (`None`: not persistent); from the shard
    /// that reports the shared stages.
    pub persistence: Vec<Option<TimeNs>>,
}

/// A connection opening the appliance sent with a translated source endpoint.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TranslatedSyn {
    /// Virtual time.
    pub at: TimeNs,
    /// Source and destination as sent.
    pub translated: (SocketAddr, SocketAddr),
    /// The client endpoint it was translated from.
    pub original: SocketAddr,
}

/// Translated tuples used by more than one client endpoint during the run: for each
/// translated (source, destination), the distinct original endpoints beyond the first
/// (what Wireshark flags as `tcp.analysis.reused_ports` on the server side).
pub fn reused_tuples(syns: &[TranslatedSyn]) -> u64 {
    let mut originals: BTreeMap<(SocketAddr, SocketAddr), std::collections::BTreeSet<SocketAddr>> =
        BTreeMap::new();
    for syn in syns {
        originals
            .entry(syn.translated)
            .or_default()
            .insert(syn.original);
    }
    originals.values().map(|o| o.len() as u64 - 1).sum()
}

/// One connection a director created: when, for which client, service and real server.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ConnectionLine {
    /// Virtual time of the packet that created it.
    pub at: TimeNs,
    /// Client address and port.
    pub client: SocketAddr,
    /// Virtual service (index in the appliance's director order).
    pub service: u16,
    /// Real server chosen.
    pub real: SocketAddr,
    /// Receive queue that processed the packet.
    pub queue: u16,
}

impl ShardResult {
    /// Add a later shard's results (call in queue order).
    pub fn merge(&mut self, other: ShardResult) {
        merge_counters(&mut self.counters, &other.counters);
        self.appliance.merge(&other.appliance);
        match (&mut self.cpu, &other.cpu) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.cpu = Some(theirs.clone()),
            _ => {}
        }
        self.totals.merge(&other.totals);
        for (key, value) in other.flows {
            *self.flows.entry(key).or_default() += value;
        }
        for (key, value) in other.backends {
            *self.backends.entry(key).or_default() += value;
        }
        for (mine, theirs) in self.delivered.iter_mut().zip(&other.delivered) {
            *mine += theirs;
        }
        if self.timeline.len() < other.timeline.len() {
            self.timeline
                .resize_with(other.timeline.len(), SecondRow::default);
        }
        for (index, row) in other.timeline.iter().enumerate() {
            self.timeline[index].second = index as u64;
            self.timeline[index].merge(row);
        }
        for (mine, theirs) in self.actors.iter_mut().zip(&other.actors) {
            mine.merge(theirs);
        }
        self.records.extend(other.records);
        self.connections.extend(other.connections);
        self.translated.extend(other.translated);
        if self.persistence.is_empty() {
            self.persistence = other.persistence;
        }
        self.emitted.extend(other.emitted);
        self.series.merge(&other.series);
    }
}

/// A shard as its observer sees it, for live views (`sim run --tui`): at an interval
/// boundary the running shard, borrowed, so the observer copies only what it needs; at the
/// end the final results. Everything is cumulative since the start; per-packet records and
/// emitted frames are not included.
pub struct ShardSnapshot<'e> {
    /// Receive queue of the shard.
    pub queue: u16,
    /// Virtual time of the snapshot (a multiple of the observer's interval, or the end).
    pub now: TimeNs,
    /// The shard at that instant.
    pub state: ShardState<'e>,
}

/// What an observer gets of a shard.
pub enum ShardState<'e> {
    /// At an interval boundary: the running shard, borrowed.
    Running(ShardProbe<'e>),
    /// At the end of the scenario: the shard's final results.
    Finished(Box<ShardResult>),
}

/// A running shard, borrowed by its observer for the duration of the call. Reading it costs
/// nothing; [`ShardProbe::actor_stats`] and [`ShardProbe::result`] copy (histograms, the
/// appliance report), so a live view calls them only when it needs them.
#[derive(Clone, Copy)]
pub struct ShardProbe<'e> {
    pub(super) pipeline: &'e Pipeline,
    pub(super) result: &'e ShardResult,
    pub(super) actors: &'e [Box<dyn Actor>],
    /// The shared stages, for the shard that shows them (queue 0) while they are out.
    pub(super) shared: Option<&'e datapath::pipeline::SharedStages>,
    /// The queue's CPU (CPU model only).
    pub(super) cpu: Option<&'e super::cpu::Cpu>,
}

impl<'e> ShardProbe<'e> {
    /// The shard's pipeline: counters, shield, flows, directors.
    pub fn pipeline(&self) -> &'e Pipeline {
        self.pipeline
    }

    /// Frame counts so far (`in_flight` and `event_overflow` are only known at the end).
    pub fn totals(&self) -> &'e Totals {
        &self.result.totals
    }

    /// Per-second rows so far.
    pub fn timeline(&self) -> &'e [SecondRow] {
        &self.result.timeline
    }

    /// Every actor's statistics so far, in actor order (copies their latency histograms).
    pub fn actor_stats(&self) -> Vec<ActorStats> {
        self.actors.iter().map(|a| a.stats()).collect()
    }

    /// The shard's results so far in the shape of a finished shard, without records and
    /// emitted frames (copies everything and builds the appliance report).
    pub fn result(&self) -> ShardResult {
        let result = self.result;
        ShardResult {
            counters: self.pipeline.counters().clone(),
            totals: result.totals.clone(),
            flows: result.flows.clone(),
            backends: result.backends.clone(),
            delivered: result.delivered.clone(),
            timeline: result.timeline.clone(),
            actors: self.actor_stats(),
            events: result.events.clone(),
            records: Vec::new(),
            emitted: Vec::new(),
            appliance: crate::appliance::report_with(self.pipeline, self.shared),
            cpu: self.cpu.map(|cpu| cpu.stats().clone()),
            series: result.series.clone(),
            connections: result.connections.clone(),
            translated: result.translated.clone(),
            persistence: result.persistence.clone(),
        }
    }
}

/// Observes a running shard: called at every interval boundary of virtual time and once at
/// the end. It only observes (it cannot change the run), so a run with an observer gives the
/// same report as one without; it may block (e.g. to pace a live view).
pub type Observer<'o> = &'o (dyn Fn(ShardSnapshot<'_>) + Sync);

pub(super) fn merge_counters(mine: &mut PipelineCounters, theirs: &PipelineCounters) {
    mine.merge(theirs);
}

/// The per-second row of `now` (rows up to it created), found through `cursor`.
pub(super) fn second_row<'t>(
    timeline: &'t mut Vec<SecondRow>,
    cursor: &mut series::BucketCursor,
    now: TimeNs,
) -> &'t mut SecondRow {
    let second = cursor.locate(now, NS_PER_SEC);
    if timeline.len() <= second {
        let from = timeline.len();
        timeline.extend((from..=second).map(|s| SecondRow {
            second: s as u64,
            ..SecondRow::default()
        }));
    }
    &mut timeline[second]
}

/// Count one processed packet in a time-series row.
pub(super) fn count_row(row: &mut SecondRow, outcome: &PacketOutcome, emitted: usize) {
    row.processed += 1;
    row.emitted += emitted as u64;
    match outcome.verdict {
        Verdict::Pass => row.pass += 1,
        Verdict::Drop(_) => row.drop += 1,
        Verdict::Reply => row.reply += 1,
        Verdict::Forward => row.forward += 1,
    }
}
