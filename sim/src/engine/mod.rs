//! The discrete-event engine: one receive queue (shard) of a scenario run in virtual time.
//!
//! Events — an actor's wake-up, a frame arriving at the appliance, a frame arriving at a
//! host, a timed scenario event — are ordered by (time, sequence number). Actors (traffic
//! sources and backends, see [`crate::actors`]) send frames into their host's link; frames
//! that reach the appliance go through [`Pipeline::process`] with `now` and the bytes only;
//! every frame the pipeline emits is routed to the host owning its destination address
//! (counted as unroutable when none does) over that host's link.
//!
//! A run is split into the scenario's receive queues, each with its own pipeline, hosts and
//! links (bandwidth shared equally), and traffic spread by the client endpoint's hash;
//! [`crate::run`] runs the shards (in parallel) and merges them in queue order.
//!
//! Not here: scenario parsing, report rendering, threads.

pub mod queue;
pub mod series;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use datapath::TimeNs;
use datapath::packet::{LinkType, PacketMeta};
use datapath::pipeline::{EmittedFrame, PacketOutcome, Pipeline, PipelineCounters};
use datapath::verdict::{NS_PER_SEC, Verdict};
use serde::Serialize;

use crate::actors::flood::{FloodKind, FloodSource};
use crate::actors::pcap::PcapSource;
use crate::actors::tcp_clients::TcpClients;
use crate::actors::udp_clients::UdpClients;
use crate::actors::{Actor, ActorStats, Outbox};
use crate::net::link::{Faults, Pipe, Transit};
use crate::net::world::{HostId, HostKind, World, frame_destination};
use crate::scenario::{Scenario, TimedEvent, TrafficSpec};
use queue::EventQueue;

/// Wake-ups of one actor at one instant before the engine moves it 1 µs on (a guard against
/// an actor that keeps asking for "now").
const MAX_SAME_INSTANT_WAKES: u32 = 100_000;
/// Most emitted frames kept per shard for `--pcap-out`; more are counted, not kept.
pub const CAPTURE_CAPACITY: usize = 1 << 21;
/// Most per-packet records kept per shard for `--packets`; more are counted, not kept.
pub const RECORD_CAPACITY: usize = 1 << 22;
/// Most frames travelling on a shard's links at once; more are tail-dropped (counted as
/// `link_queue_full`).
pub const IN_FLIGHT_CAPACITY: usize = queue::EVENT_QUEUE_CAPACITY;

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
}

/// Frame counts of a run.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
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
            + self.in_flight;
        Some(entered as i64 - left as i64)
    }

    fn merge(&mut self, other: &Self) {
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
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
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
    fn merge(&mut self, other: &Self) {
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
#[derive(Clone, Debug, Serialize, PartialEq)]
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
    /// Fine-grained time series for plots.
    pub series: series::Series,
}

impl ShardResult {
    /// Add a later shard's results (call in queue order).
    pub fn merge(&mut self, other: ShardResult) {
        merge_counters(&mut self.counters, &other.counters);
        self.appliance.merge(&other.appliance);
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
    pipeline: &'e Pipeline,
    result: &'e ShardResult,
    actors: &'e [Box<dyn Actor>],
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
            appliance: crate::appliance::report(self.pipeline),
            series: result.series.clone(),
        }
    }
}

/// Observes a running shard: called at every interval boundary of virtual time and once at
/// the end. It only observes (it cannot change the run), so a run with an observer gives the
/// same report as one without; it may block (e.g. to pace a live view).
pub type Observer<'o> = &'o (dyn Fn(ShardSnapshot<'_>) + Sync);

fn merge_counters(mine: &mut PipelineCounters, theirs: &PipelineCounters) {
    mine.merge(theirs);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Wake(u16),
    /// The first frame of a lane's FIFO arrives.
    Lane(u16),
    /// A frame that arrives out of its lane's order (held back by reordering, or overtaking
    /// after a link change shortened the latency): its slot in [`Held`].
    Frame(u32),
    Timed(u16),
}

/// Bits of a packed event that say which kind it is.
const EVENT_KIND_SHIFT: u32 = queue::EVENT_BITS - 2;

impl queue::Packed for Event {
    fn pack(self) -> u32 {
        let (kind, value) = match self {
            Self::Wake(actor) => (0, u32::from(actor)),
            Self::Lane(lane) => (1, u32::from(lane)),
            Self::Frame(slot) => (2, slot),
            Self::Timed(index) => (3, u32::from(index)),
        };
        (kind << EVENT_KIND_SHIFT) | value
    }

    fn unpack(code: u32) -> Self {
        let value = code & ((1 << EVENT_KIND_SHIFT) - 1);
        match code >> EVENT_KIND_SHIFT {
            0 => Self::Wake(value as u16),
            1 => Self::Lane(value as u16),
            2 => Self::Frame(value),
            _ => Self::Timed(value as u16),
        }
    }
}

/// Frames of [`Event::Frame`] events, by slot (freed slots are reused). At most
/// [`IN_FLIGHT_CAPACITY`] frames travel, so slots fit an event's bits.
#[derive(Default)]
struct Held {
    slots: Vec<Option<(u16, Vec<u8>)>>,
    free: Vec<u32>,
}

impl Held {
    fn hold(&mut self, lane: u16, frame: Vec<u8>) -> u32 {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some((lane, frame));
                slot
            }
            None => {
                self.slots.push(Some((lane, frame)));
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn take(&mut self, slot: u32) -> Option<(u16, Vec<u8>)> {
        let held = self.slots.get_mut(slot as usize)?.take();
        self.free.push(slot);
        held
    }
}

/// Which way a frame crosses a host's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    ToAppliance = 0,
    FromAppliance = 1,
}

/// The lane (one direction of one host's link) of `host` in `direction`.
fn lane_of(host: HostId, direction: Direction) -> u16 {
    host * 2 + direction as u16
}

/// A frame on its way, in its lane's FIFO: it arrives at `at` and runs under the sequence
/// number reserved when it was sent, exactly where an event of its own would have run.
struct InFlight {
    at: TimeNs,
    seq: u64,
    frame: Vec<u8>,
}

/// Where frames to a host's addresses go.
enum Receiver {
    Actor(u16),
    Sink,
}

/// One shard of a run.
pub struct Engine<'a> {
    scenario: &'a Scenario,
    world: &'a World,
    queue_index: u16,
    end: TimeNs,
    pipeline: Pipeline,
    queue: EventQueue<Event>,
    actors: Vec<Box<dyn Actor>>,
    scheduled: Vec<Option<TimeNs>>,
    same_instant: Vec<(TimeNs, u32)>,
    /// Per host: (host → appliance, appliance → host).
    links: Vec<(Pipe, Pipe)>,
    /// Frames travelling, per lane ([`lane_of`]), in arrival order: only each FIFO's first
    /// frame has an event in the queue, so a flood's frames in flight cost the heap nothing.
    lanes: Vec<VecDeque<InFlight>>,
    /// Frames in all lanes and out-of-order frame events.
    in_flight: usize,
    /// The frames of out-of-order frame events.
    held: Held,
    /// Frames being sent (the outbox's, swapped out; reused).
    sending: Vec<(HostId, Vec<u8>)>,
    /// Frames the pipeline emitted for the current packet (reused).
    emitted: Vec<EmittedFrame>,
    backend_actor: Vec<Option<u16>>,
    client_actor: HashMap<IpAddr, u16>,
    collect: Collect,
    outbox: Outbox,
    result: ShardResult,
    /// Live observer and its snapshot interval (virtual ns).
    observer: Option<(TimeNs, Observer<'a>)>,
    /// Start of the next series bucket: the first event at or after it samples ActiveConn.
    next_sample: TimeNs,
    /// Next observer boundary (`TimeNs::MAX` without an observer).
    boundary: TimeNs,
    /// Bucket of the last per-second row and of the last series row.
    cursors: (series::BucketCursor, series::BucketCursor),
    /// The same for deliveries counted ahead of their arrival ([`Engine::deliver_to_sink`]).
    sink_cursors: (series::BucketCursor, series::BucketCursor),
    /// Per host: whether any client actor owns one of its addresses.
    has_clients: Vec<bool>,
    /// Sink deliveries counted when sent and actors run ahead (off only in the test that
    /// checks they change nothing).
    shortcuts: bool,
}

impl<'a> Engine<'a> {
    /// Build shard `queue_index` of `scenario`: its pipeline (from the appliance
    /// configuration), actors and links. All configuration errors surface here.
    pub fn new(
        scenario: &'a Scenario,
        base_dir: &Path,
        world: &'a World,
        queue_index: u16,
        collect: Collect,
    ) -> anyhow::Result<Self> {
        let names: Vec<&str> = scenario
            .topology
            .interfaces
            .iter()
            .map(String::as_str)
            .collect();
        let mut pipeline =
            crate::appliance::build_pipeline(&scenario.appliance, base_dir, scenario.seed, &names)?;
        // Dropped frames' buffers come back to the sources' pool instead of being freed.
        pipeline.keep_spare_frames(true);
        let links = world
            .hosts
            .iter()
            .map(|host| {
                let stream = |direction: &str| {
                    let name = format!("link/{}/{direction}/q{queue_index}", host.name);
                    crate::net::rng::stream(scenario.seed, &name)
                };
                (
                    Pipe::new(&host.link, scenario.queues, stream("to_appliance")),
                    Pipe::new(&host.link, scenario.queues, stream("from_appliance")),
                )
            })
            .collect();
        let mut engine = Self {
            scenario,
            world,
            queue_index,
            end: scenario.duration.0,
            pipeline,
            queue: EventQueue::default(),
            actors: Vec::new(),
            scheduled: Vec::new(),
            same_instant: Vec::new(),
            links,
            lanes: (0..world.hosts.len() * 2)
                .map(|_| VecDeque::new())
                .collect(),
            in_flight: 0,
            held: Held::default(),
            sending: Vec::new(),
            emitted: Vec::new(),
            backend_actor: vec![None; world.hosts.len()],
            client_actor: HashMap::new(),
            collect,
            outbox: Outbox::default(),
            result: ShardResult {
                counters: PipelineCounters::default(),
                totals: Totals::default(),
                flows: BTreeMap::new(),
                backends: BTreeMap::new(),
                delivered: vec![0; world.hosts.len()],
                timeline: Vec::new(),
                actors: Vec::new(),
                events: Vec::new(),
                records: Vec::new(),
                emitted: Vec::new(),
                appliance: crate::appliance::ApplianceReport::default(),
                series: series::Series::new(series::bucket_ns(scenario.duration.0)),
            },
            observer: None,
            next_sample: 0,
            boundary: TimeNs::MAX,
            cursors: Default::default(),
            sink_cursors: Default::default(),
            has_clients: vec![false; world.hosts.len()],
            shortcuts: true,
        };
        engine.build_sources(base_dir)?;
        engine.build_backends();
        for address in engine.client_actor.keys() {
            if let Some(host) = world.route(*address) {
                engine.has_clients[usize::from(host)] = true;
            }
        }
        Ok(engine)
    }

    fn add_actor(&mut self, actor: Box<dyn Actor>) -> u16 {
        self.actors.push(actor);
        self.scheduled.push(None);
        self.same_instant.push((0, 0));
        (self.actors.len() - 1) as u16
    }

    fn build_sources(&mut self, base_dir: &Path) -> anyhow::Result<()> {
        let (seed, queues, queue, end) = (
            self.scenario.seed,
            self.scenario.queues,
            self.queue_index,
            self.end,
        );
        let mut next_address: BTreeMap<HostId, u32> = BTreeMap::new();
        for (index, traffic) in self.scenario.traffic.iter().enumerate() {
            let spec = traffic.get_ref();
            let host = self.world.network(spec.network()).ok_or_else(|| {
                anyhow::anyhow!(
                    "traffic source {index}: network {:?} is not defined",
                    spec.network()
                )
            })?;
            let HostKind::Network(prefix) = self.world.hosts[usize::from(host)].kind else {
                anyhow::bail!(
                    "traffic source {index}: {:?} is not a network",
                    spec.network()
                );
            };
            let name = source_name(spec, index);
            let stream = crate::net::rng::stream(seed, &format!("traffic/{name}"));
            let flood = |kind, flood_spec| -> Box<dyn Actor> {
                Box::new(FloodSource::new(
                    name.clone(),
                    kind,
                    flood_spec,
                    host,
                    prefix,
                    end,
                    (queue, queues),
                    stream.clone(),
                ))
            };
            let (actor, addresses): (Box<dyn Actor>, Vec<IpAddr>) = match spec {
                TrafficSpec::SynFlood(f) => (flood(FloodKind::Syn, f), Vec::new()),
                TrafficSpec::AckFlood(f) => (flood(FloodKind::Ack, f), Vec::new()),
                TrafficSpec::UdpFlood(f) => (flood(FloodKind::Udp, f), Vec::new()),
                TrafficSpec::IcmpFlood(f) => (flood(FloodKind::Icmp, f), Vec::new()),
                TrafficSpec::Pcap(p) => {
                    let source = PcapSource::new(
                        name.clone(),
                        p,
                        base_dir.join(&p.file),
                        host,
                        (queue, queues),
                    )?;
                    (Box::new(source), Vec::new())
                }
                TrafficSpec::TcpClients(t) => {
                    let addresses =
                        self.client_addresses(host, prefix, t.clients, &mut next_address);
                    let clients = TcpClients::new(
                        name.clone(),
                        t,
                        host,
                        addresses,
                        end,
                        (seed, queue, queues),
                    );
                    let addresses = clients.addresses();
                    (Box::new(clients), addresses)
                }
                TrafficSpec::UdpClients(u) => {
                    let addresses =
                        self.client_addresses(host, prefix, u.clients, &mut next_address);
                    let clients =
                        UdpClients::new(name.clone(), u, host, addresses, end, (queue, queues));
                    let addresses = clients.addresses();
                    (Box::new(clients), addresses)
                }
            };
            let id = self.add_actor(actor);
            for address in addresses {
                self.client_actor.entry(address).or_insert(id);
            }
        }
        Ok(())
    }

    /// `count` client addresses of network `host` not used by an earlier source and not
    /// owned by a backend.
    fn client_addresses(
        &self,
        host: HostId,
        prefix: ipnet::IpNet,
        count: u32,
        next: &mut BTreeMap<HostId, u32>,
    ) -> Vec<IpAddr> {
        let index = next.entry(host).or_insert(0);
        let mut addresses = Vec::with_capacity(count as usize);
        let mut tries = 0u32;
        while addresses.len() < count as usize && tries < count.saturating_mul(4).max(16) {
            let address = crate::actors::tcp_clients::client_address(&prefix, *index);
            *index = index.wrapping_add(1);
            tries += 1;
            if self.world.route(address) == Some(host) {
                addresses.push(address);
            }
        }
        addresses
    }

    fn build_backends(&mut self) {
        for (host, spec) in self.world.hosts.clone().iter().enumerate() {
            let HostKind::Backend(index) = spec.kind else {
                continue;
            };
            let backend_spec = &self.scenario.topology.backends[index];
            let name = format!("backend/{}/q{}", backend_spec.name, self.queue_index);
            let seed = crate::net::rng::derive_u64(self.scenario.seed, &name);
            let actor = crate::actors::backend::Backend::new(backend_spec, host as HostId, seed);
            let id = self.add_actor(Box::new(actor));
            self.backend_actor[host] = Some(id);
        }
    }

    fn schedule_wake(&mut self, actor: u16, at: TimeNs) {
        let slot = &mut self.scheduled[usize::from(actor)];
        if slot.is_none_or(|current| at < current) {
            *slot = Some(at);
            if !self.queue.push(at, Event::Wake(actor)) {
                *slot = None;
            }
        }
    }

    /// Call `observer` with a snapshot every `interval_ns` of virtual time (and at the end).
    /// Observing does not change the run.
    pub fn observe(&mut self, interval_ns: TimeNs, observer: Observer<'a>) {
        self.observer = Some((interval_ns.max(1), observer));
    }

    /// The shard's cumulative results so far (without records and emitted frames).
    pub fn snapshot(&self) -> ShardResult {
        self.probe().result()
    }

    fn probe(&self) -> ShardProbe<'_> {
        ShardProbe {
            pipeline: &self.pipeline,
            result: &self.result,
            actors: &self.actors,
        }
    }

    /// Tell the observer about every interval boundary up to and including `time`; returns
    /// the next boundary.
    fn observe_until(&self, next: TimeNs, time: TimeNs) -> TimeNs {
        let Some((interval, observer)) = self.observer else {
            return TimeNs::MAX;
        };
        let mut boundary = next;
        while boundary <= time {
            observer(ShardSnapshot {
                queue: self.queue_index,
                now: boundary,
                state: ShardState::Running(self.probe()),
            });
            boundary = boundary.saturating_add(interval);
        }
        boundary
    }

    /// Run to the end of the scenario; `progress` is told how much virtual time passed.
    pub fn run(mut self, progress: &dyn Fn(TimeNs)) -> ShardResult {
        for actor in 0..self.actors.len() as u16 {
            self.schedule_wake(actor, 0);
        }
        for (index, event) in self.scenario.events.iter().enumerate() {
            self.queue
                .push(event.get_ref().at().0, Event::Timed(index as u16));
        }
        let mut reported: TimeNs = 0;
        self.boundary = self.observer.map_or(TimeNs::MAX, |(interval, _)| interval);
        while let Some(time) = self.queue.peek_time() {
            if time > self.end {
                break;
            }
            if time > self.boundary {
                self.boundary = self.observe_until(self.boundary, time - 1);
            }
            let Some((now, event)) = self.queue.pop() else {
                break;
            };
            if now - reported >= 1_000_000 {
                progress(now - reported);
                reported = now;
            }
            if now >= self.next_sample {
                self.sample(now);
            }
            self.handle(now, event);
        }
        progress(self.end.saturating_sub(reported));
        if self.boundary < self.end {
            self.observe_until(self.boundary, self.end - 1);
        }
        self.finish_observed()
    }

    /// Finish the run and give the observer the final state (at the end of the scenario).
    fn finish_observed(self) -> ShardResult {
        let observer = self.observer;
        let (queue, end) = (self.queue_index, self.end);
        let result = self.finish();
        if let Some((_, observer)) = observer {
            let snapshot = ShardResult {
                counters: result.counters.clone(),
                totals: result.totals.clone(),
                flows: result.flows.clone(),
                backends: result.backends.clone(),
                delivered: result.delivered.clone(),
                timeline: result.timeline.clone(),
                actors: result.actors.clone(),
                events: result.events.clone(),
                records: Vec::new(),
                emitted: Vec::new(),
                appliance: result.appliance.clone(),
                series: result.series.clone(),
            };
            observer(ShardSnapshot {
                queue,
                now: end,
                state: ShardState::Finished(Box::new(snapshot)),
            });
        }
        result
    }

    /// Sample the series' ActiveConn at the first event of a bucket.
    fn sample(&mut self, now: TimeNs) {
        let series = &mut self.result.series;
        // An event at the very end of a run that ends on a bucket boundary starts no bucket
        // of the run (whether such an event exists must not change the series).
        if now < self.end || !self.end.is_multiple_of(series.bucket_ns) {
            series.sample_active(now, &self.pipeline);
        }
        self.next_sample = (now / series.bucket_ns + 1) * series.bucket_ns;
    }

    fn handle(&mut self, now: TimeNs, event: Event) {
        match event {
            Event::Wake(actor) => self.wake(now, actor),
            Event::Lane(lane) => self.lane_arrival(now, lane),
            Event::Frame(slot) => {
                if let Some((lane, frame)) = self.held.take(slot) {
                    self.in_flight -= 1;
                    self.arrived(now, lane, frame);
                }
            }
            Event::Timed(index) => self.timed(now, index),
        }
    }

    /// The first frame of `lane` arrives; the next one (if any) gets the lane's event.
    fn lane_arrival(&mut self, now: TimeNs, lane: u16) {
        let fifo = &mut self.lanes[usize::from(lane)];
        let Some(head) = fifo.pop_front() else {
            return;
        };
        debug_assert_eq!(head.at, now);
        if let Some(next) = fifo.front() {
            let (at, seq) = (next.at, next.seq);
            self.queue.push_keyed(at, seq, Event::Lane(lane));
        }
        self.in_flight -= 1;
        self.arrived(now, lane, head.frame);
    }

    fn arrived(&mut self, now: TimeNs, lane: u16, frame: Vec<u8>) {
        let host = lane / 2;
        if lane % 2 == Direction::ToAppliance as u16 {
            self.at_appliance(now, host, frame);
        } else {
            self.at_host(now, host, frame);
        }
    }

    fn wake(&mut self, mut now: TimeNs, actor: u16) {
        let index = usize::from(actor);
        if self.scheduled[index] != Some(now) {
            return; // superseded by an earlier wake-up
        }
        self.scheduled[index] = None;
        loop {
            let next = self.actors[index].wake(now, &mut self.outbox);
            self.send_outbox(now);
            match next {
                Some(next) if next > now && next < self.run_ahead_limit() => now = next,
                _ => return self.after_actor(now, actor, next),
            }
        }
    }

    /// An actor asking to be woken before this time (and after now) is woken at once
    /// instead of through the queue: its wake-up would be the very next event anyway —
    /// earlier than everything queued (a queued event at the same time was scheduled first
    /// and runs first), before the next series sample and observer boundary, not after the
    /// end — so the order of events is unchanged. A flood thus sends packet after packet
    /// without an event per packet while nothing else is due.
    fn run_ahead_limit(&self) -> TimeNs {
        if !self.shortcuts {
            return 0;
        }
        self.queue
            .peek_time()
            .unwrap_or(TimeNs::MAX)
            .min(self.next_sample)
            .min(self.boundary.saturating_add(1))
            .min(self.end.saturating_add(1))
    }

    fn after_actor(&mut self, now: TimeNs, actor: u16, next: Option<TimeNs>) {
        let Some(mut next) = next else {
            return;
        };
        let index = usize::from(actor);
        let (instant, count) = &mut self.same_instant[index];
        if next <= now {
            next = now;
            if *instant == now {
                *count += 1;
            } else {
                (*instant, *count) = (now, 1);
            }
            if *count > MAX_SAME_INSTANT_WAKES {
                next = now + 1_000;
            }
        }
        self.schedule_wake(actor, next);
    }

    fn send_outbox(&mut self, now: TimeNs) {
        if self.outbox.is_empty() {
            return;
        }
        let mut sending = std::mem::take(&mut self.sending);
        self.outbox.drain_into(&mut sending);
        for (host, frame) in sending.drain(..) {
            self.result.totals.sent += 1;
            self.travel(now, host, Direction::ToAppliance, frame);
        }
        self.sending = sending;
    }

    /// Send `frame` over `host`'s link in `direction`: lost, tail-dropped, or arriving
    /// (with its duplicate, when the link makes one). A frame reaching the appliance at the
    /// instant it was sent is processed at once; every other arrival is queued.
    fn travel(&mut self, now: TimeNs, host: HostId, direction: Direction, mut frame: Vec<u8>) {
        let (to_appliance, from_appliance) = &mut self.links[usize::from(host)];
        let pipe = match direction {
            Direction::ToAppliance => to_appliance,
            Direction::FromAppliance => from_appliance,
        };
        let sent = pipe.send_frame(now, &mut frame);
        let totals = &mut self.result.totals;
        totals.link_reordered += u64::from(sent.reordered);
        totals.link_corrupted += u64::from(sent.corrupted);
        let at = match sent.transit {
            Transit::Arrives(at) => at,
            Transit::Lost | Transit::QueueFull => {
                if sent.transit == Transit::Lost {
                    totals.link_lost += 1;
                } else {
                    totals.link_queue_full += 1;
                }
                self.outbox.recycle(frame);
                return;
            }
        };
        let copy = sent.duplicated.then(|| {
            totals.link_duplicated += 1;
            let mut copy = self.outbox.buffer();
            copy.extend_from_slice(&frame);
            copy
        });
        self.arrive_or_enqueue(now, at, host, direction, frame);
        if let Some(copy) = copy {
            self.arrive_or_enqueue(now, at, host, direction, copy);
        }
    }

    /// A frame arriving at `at`: processed at once when it reaches the appliance now, else
    /// queued on its lane.
    fn arrive_or_enqueue(
        &mut self,
        now: TimeNs,
        at: TimeNs,
        host: HostId,
        direction: Direction,
        frame: Vec<u8>,
    ) {
        if direction == Direction::ToAppliance && at == now {
            self.at_appliance(now, host, frame);
        } else {
            self.enqueue(at, lane_of(host, direction), frame);
        }
    }

    /// Put a frame on its way: at the end of its lane's FIFO when it arrives no earlier than
    /// the FIFO's last frame, else as an event of its own.
    fn enqueue(&mut self, at: TimeNs, lane: u16, frame: Vec<u8>) {
        if self.in_flight >= IN_FLIGHT_CAPACITY {
            self.result.totals.link_queue_full += 1;
            self.outbox.recycle(frame);
            return;
        }
        let seq = self.queue.reserve_seq();
        let fifo = &mut self.lanes[usize::from(lane)];
        if fifo.back().is_none_or(|last| last.at <= at) {
            fifo.push_back(InFlight { at, seq, frame });
            self.in_flight += 1;
            if fifo.len() == 1 {
                self.queue.push_keyed(at, seq, Event::Lane(lane));
            }
        } else {
            let slot = self.held.hold(lane, frame);
            if self.queue.push_keyed(at, seq, Event::Frame(slot)) {
                self.in_flight += 1;
            } else if let Some((_, frame)) = self.held.take(slot) {
                self.outbox.recycle(frame);
            }
        }
    }

    fn second(&mut self, now: TimeNs) -> &mut SecondRow {
        second_row(&mut self.result.timeline, &mut self.cursors.0, now)
    }

    fn at_appliance(&mut self, now: TimeNs, host: HostId, frame: Vec<u8>) {
        let iface = self.world.hosts[usize::from(host)].iface;
        let wire_len = frame.len() as u32;
        let outcome = self
            .pipeline
            .process(now, iface, LinkType::Ethernet, frame, wire_len);
        if let Some(buffer) = self.pipeline.take_spare_frame() {
            self.outbox.recycle(buffer);
        }
        let mut emitted = std::mem::take(&mut self.emitted);
        self.pipeline.drain_emitted_into(&mut emitted);
        self.count_outcome(now, &outcome, emitted.len());
        if self.collect.records {
            if self.result.records.len() < RECORD_CAPACITY {
                self.result.records.push(PacketLine {
                    time: now,
                    queue: self.queue_index,
                    meta: self.pipeline.last_meta().clone(),
                    outcome,
                    emitted: emitted.len() as u16,
                });
            } else {
                self.result.totals.not_kept += 1;
            }
        }
        for frame in emitted.drain(..) {
            self.route(now, frame.frame);
        }
        self.emitted = emitted;
    }

    fn count_outcome(&mut self, now: TimeNs, outcome: &PacketOutcome, emitted: usize) {
        self.result.totals.processed += 1;
        self.result.totals.emitted += emitted as u64;
        if let (Some(flow), rule) = (outcome.flow, outcome.flow_rule) {
            *self
                .result
                .flows
                .entry((flow, rule.unwrap_or(0)))
                .or_default() += 1;
        }
        if let Some(backend) = outcome.backend {
            *self.result.backends.entry(backend).or_default() += 1;
            self.result.series.count_backend(now, backend);
        }
        count_row(self.second(now), outcome, emitted);
        count_row(
            self.result.series.row(now, &mut self.cursors.1),
            outcome,
            emitted,
        );
    }

    fn route(&mut self, now: TimeNs, frame: Vec<u8>) {
        if self.collect.emitted {
            if self.result.emitted.len() < CAPTURE_CAPACITY {
                self.result.emitted.push((now, frame.clone()));
            } else {
                self.result.totals.not_kept += 1;
            }
        }
        let Some(destination) = frame_destination(&frame) else {
            self.result.totals.non_ip += 1;
            self.outbox.recycle(frame);
            return;
        };
        let Some(host) = self.world.route(destination) else {
            self.result.totals.unroutable += 1;
            self.outbox.recycle(frame);
            return;
        };
        if self.deliver_to_sink(now, host) {
            self.outbox.recycle(frame);
            return;
        }
        self.travel(now, host, Direction::FromAppliance, frame);
    }

    /// A frame to a host where nothing listens (no backend, no client owns an address of
    /// it: flood replies to spoofed sources) over a link that only delays it (no bandwidth
    /// limit, loss or faults, so no random draw and no queue): its fate is known now, so it
    /// is counted now — delivered in the rows of its arrival time, or in flight when that is
    /// after the end — instead of travelling as an event. Nothing else can observe it, so
    /// every count is what the event would have made; only a live observer sees such
    /// deliveries up to one link latency early. Returns false (the frame travels) otherwise.
    fn deliver_to_sink(&mut self, now: TimeNs, host: HostId) -> bool {
        let index = usize::from(host);
        if !self.shortcuts || self.backend_actor[index].is_some() || self.has_clients[index] {
            return false;
        }
        let Some(latency) = self.links[index].1.fixed_latency() else {
            return false;
        };
        let at = now.saturating_add(latency);
        if at > self.end {
            self.result.totals.in_flight += 1;
            return true;
        }
        let result = &mut self.result;
        result.totals.delivered += 1;
        result.totals.delivered_to_sink += 1;
        result.delivered[index] += 1;
        second_row(&mut result.timeline, &mut self.sink_cursors.0, at).delivered += 1;
        result.series.row(at, &mut self.sink_cursors.1).delivered += 1;
        true
    }

    fn at_host(&mut self, now: TimeNs, host: HostId, frame: Vec<u8>) {
        self.result.totals.delivered += 1;
        self.result.delivered[usize::from(host)] += 1;
        self.second(now).delivered += 1;
        self.result.series.row(now, &mut self.cursors.1).delivered += 1;
        let receiver = match self.backend_actor[usize::from(host)] {
            Some(actor) => Receiver::Actor(actor),
            None => frame_destination(&frame)
                .and_then(|dst| self.client_actor.get(&dst).copied())
                .map_or(Receiver::Sink, Receiver::Actor),
        };
        match receiver {
            Receiver::Sink => self.result.totals.delivered_to_sink += 1,
            Receiver::Actor(actor) => {
                let next = self.actors[usize::from(actor)].deliver(now, &frame, &mut self.outbox);
                self.send_outbox(now);
                self.after_actor(now, actor, next);
            }
        }
        self.outbox.recycle(frame);
    }

    fn timed(&mut self, now: TimeNs, index: u16) {
        let event = self.scenario.events[usize::from(index)].get_ref().clone();
        let status = match &event {
            TimedEvent::Link { .. } => self.link_event(&event),
            other => apply_stage_event(&mut self.pipeline, other),
        };
        self.result.events.push(EventLogEntry {
            at_ns: now,
            event,
            status,
        });
    }

    /// Apply a timed link change to both directions of the host's link.
    fn link_event(&mut self, event: &TimedEvent) -> String {
        let TimedEvent::Link {
            host,
            latency,
            bandwidth,
            loss_ppm,
            duplicate_ppm,
            reorder_ppm,
            reorder_delay,
            corrupt_ppm,
            ..
        } = event
        else {
            return "ignored: not a link event".into();
        };
        let Some(id) = self.world.host(host) else {
            return "applied".into();
        };
        let queues = self.scenario.queues;
        let (pipe_in, pipe_out) = &mut self.links[usize::from(id)];
        for pipe in [pipe_in, pipe_out] {
            let (old_latency, old_bandwidth, old_loss) = pipe.parameters();
            let bandwidth = bandwidth
                .map(|b| b.0)
                .or(old_bandwidth.map(|b| b * u64::from(queues)));
            pipe.apply(
                latency.map_or(old_latency, |l| l.0),
                bandwidth,
                loss_ppm.unwrap_or(old_loss),
                queues,
            );
            let old = pipe.faults();
            pipe.set_faults(Faults {
                duplicate_ppm: duplicate_ppm.unwrap_or(old.duplicate_ppm),
                reorder_ppm: reorder_ppm.unwrap_or(old.reorder_ppm),
                reorder_delay_ns: reorder_delay.map_or(old.reorder_delay_ns, |d| d.0),
                corrupt_ppm: corrupt_ppm.unwrap_or(old.corrupt_ppm),
            });
        }
        "applied".into()
    }

    fn finish(mut self) -> ShardResult {
        for actor in &mut self.actors {
            actor.finish(self.end);
        }
        self.result.actors = self.actors.iter().map(|a| a.stats()).collect();
        self.result.counters = self.pipeline.counters().clone();
        self.result.appliance = crate::appliance::report(&self.pipeline);
        let series = &mut self.result.series;
        series.record_modes(self.queue_index, &self.pipeline);
        let buckets = self.end.div_ceil(series.bucket_ns) as usize;
        // Buckets after the last event's start with the final state.
        series.fill_active(buckets, &self.pipeline);
        series.finish(buckets);
        self.result.totals.event_overflow = self.queue.overflow();
        let out_of_order = self
            .queue
            .pending()
            .filter(|e| matches!(e, Event::Frame(_)))
            .count();
        let in_lanes: usize = self.lanes.iter().map(VecDeque::len).sum();
        // Plus frames to sinks that arrive after the end (counted when sent).
        self.result.totals.in_flight += (out_of_order + in_lanes) as u64;
        self.result
    }
}

/// The per-second row of `now` (rows up to it created), found through `cursor`.
fn second_row<'t>(
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
fn count_row(row: &mut SecondRow, outcome: &PacketOutcome, emitted: usize) {
    row.processed += 1;
    row.emitted += emitted as u64;
    match outcome.verdict {
        Verdict::Pass => row.pass += 1,
        Verdict::Drop(_) => row.drop += 1,
        Verdict::Reply => row.reply += 1,
        Verdict::Forward => row.forward += 1,
    }
}

/// Apply a timed event that needs a stage API (server down/up, weight, shield mode).
///
/// The pipeline has no such API yet: the event is recorded as pending. When the director and
/// shield land, the lead replaces the body with calls such as
/// `pipeline.set_server_state(director, server, up)`, `pipeline.set_server_weight(...)` and
/// `pipeline.set_syn_cookie_mode(context, mode, now)` and returns `"applied"`.
pub fn apply_stage_event(pipeline: &mut Pipeline, event: &TimedEvent) -> String {
    match event {
        TimedEvent::ServerDown {
            at,
            director,
            server,
        } => director_event(pipeline, director.as_deref(), |d, name| {
            d.set_down(at.0, name, *server)
        }),
        TimedEvent::ServerUp {
            at,
            director,
            server,
        } => director_event(pipeline, director.as_deref(), |d, name| {
            d.set_up(at.0, name, *server)
        }),
        TimedEvent::Weight {
            at,
            director,
            server,
            weight,
        } => {
            let weight = i32::try_from(*weight).unwrap_or(i32::MAX);
            director_event(pipeline, director.as_deref(), |d, name| {
                d.set_weight(at.0, name, *server, weight)
            })
        }
        TimedEvent::Mode {
            at,
            context,
            syn_cookies,
        } => mode_event(pipeline, at.0, *context, syn_cookies),
        TimedEvent::Link { .. } => "applied".into(),
    }
}

/// Force the SYN-cookie mode of the shield contexts for `context` (every context with that
/// destination, in every instance; the default contexts when absent) to `on`, `off` or
/// `auto` at `now`: the change shows in the contexts' mode timelines.
fn mode_event(pipeline: &mut Pipeline, now: u64, context: Option<IpAddr>, setting: &str) -> String {
    use datapath::shield::{ContextScope, InstanceScope, MODE_SYN_COOKIES, ModeSetting};
    let Some(shield) = pipeline.shield_mut() else {
        return "ignored: no shield configured".into();
    };
    let setting = match setting {
        "on" => ModeSetting::On,
        "off" => ModeSetting::Off,
        "auto" => ModeSetting::Auto,
        other => return format!("failed: syn_cookies must be on, off or auto, not {other:?}"),
    };
    let scope = context.map_or(ContextScope::Default, ContextScope::Destination);
    match shield.override_modes(now, InstanceScope::All, scope, MODE_SYN_COOKIES, setting) {
        Ok(contexts) => {
            let names: Vec<String> = contexts.iter().map(|c| shield.context_name(*c)).collect();
            format!("applied to {}", names.join(", "))
        }
        Err(error) => format!("failed: {error}"),
    }
}

/// Apply a health change to the named director, or to every director that has the server.
fn director_event(
    pipeline: &mut Pipeline,
    director: Option<&str>,
    mut change: impl FnMut(
        &mut datapath::director::Directors,
        &str,
    ) -> Result<(), datapath::director::HealthError>,
) -> String {
    let Some(directors) = pipeline.directors_mut() else {
        return "ignored: no director configured".into();
    };
    let names: Vec<String> = match director {
        Some(name) => vec![name.to_string()],
        None => directors
            .services()
            .iter()
            .map(|s| s.spec.name.clone())
            .collect(),
    };
    let mut applied = Vec::new();
    let mut errors = Vec::new();
    for name in &names {
        match change(directors, name) {
            Ok(()) => applied.push(name.as_str()),
            Err(error) if director.is_some() => errors.push(error.to_string()),
            Err(_) => {}
        }
    }
    match (applied.is_empty(), errors.is_empty()) {
        (false, _) => format!("applied to {}", applied.join(", ")),
        (true, false) => format!("failed: {}", errors.join("; ")),
        (true, true) => "ignored: no director has that server".into(),
    }
}

/// A source's name in reports: its `name`, or `<kind><index>`.
pub fn source_name(spec: &TrafficSpec, index: usize) -> String {
    let given = match spec {
        TrafficSpec::Pcap(p) => p.name.clone(),
        TrafficSpec::SynFlood(f)
        | TrafficSpec::AckFlood(f)
        | TrafficSpec::UdpFlood(f)
        | TrafficSpec::IcmpFlood(f) => f.name.clone(),
        TrafficSpec::TcpClients(t) => t.name.clone(),
        TrafficSpec::UdpClients(u) => u.name.clone(),
    };
    given.unwrap_or_else(|| format!("{}{index}", spec.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue::Packed;

    #[test]
    fn events_pack_and_unpack() {
        let slot_max = (1 << EVENT_KIND_SHIFT) - 1;
        assert!(IN_FLIGHT_CAPACITY <= slot_max as usize + 1);
        for event in [
            Event::Wake(0),
            Event::Wake(u16::MAX),
            Event::Lane(7),
            Event::Frame(0),
            Event::Frame(slot_max),
            Event::Timed(u16::MAX),
        ] {
            assert!(event.pack() < 1 << queue::EVENT_BITS);
            assert_eq!(Event::unpack(event.pack()), event);
        }
    }

    /// A flood with latency on both sides of its link plus legitimate clients, backends, a
    /// timed event and a link change: every per-shard result is the same with the shortcuts
    /// (sink deliveries counted when sent, actors run ahead) as without them.
    #[test]
    fn shortcuts_change_nothing() {
        let text = r#"
name = "shortcuts"
seed = 3
duration = "300ms"
queues = 2

[topology]
interfaces = ["outside", "inside"]
vips = ["192.0.2.10"]

[[topology.network]]
name = "clients"
prefix = "198.51.100.0/24"
iface = "outside"
link = { latency = "1ms" }

[[topology.network]]
name = "internet"
prefix = "0.0.0.0/0"
iface = "outside"
link = { latency = "3ms" }

[[topology.backend]]
name = "web1"
addr = "10.0.1.2"
iface = "inside"
tcp_ports = [80]
link = { latency = "100us" }

[appliance.shield]
syn_cookies = "auto"

[[appliance.shield.context]]
dst = "192.0.2.10"
protected_tcp_ports = [80]

[[appliance.director]]
name = "web"
vip = "192.0.2.10"
port = 80
proto = "tcp"
scheduler = "rr"
forward = "nat"
real = [{ addr = "10.0.1.2:80", weight = 1 }]

[[traffic]]
kind = "tcp_clients"
from = "clients"
clients = 5
rate = "200/s"
dst = "192.0.2.10:80"

[[traffic]]
kind = "syn_flood"
from = "internet"
rate = "200k/s"
dst = "192.0.2.10:80"

[[events]]
at = "150ms"
kind = "link"
host = "internet"
latency = "7ms"
"#;
        let loaded = crate::scenario::parse(Path::new("shortcuts.toml"), text).expect("valid");
        let world = World::new(&loaded.scenario);
        let run = |shortcuts: bool, queue: u16| {
            let mut engine = Engine::new(
                &loaded.scenario,
                &loaded.base_dir,
                &world,
                queue,
                Collect::default(),
            )
            .expect("engine");
            engine.shortcuts = shortcuts;
            format!("{:?}", engine.run(&|_| {}))
        };
        for queue in 0..2 {
            let (with, without) = (run(true, queue), run(false, queue));
            assert!(
                with.contains("delivered_to_sink: ") && !with.contains("delivered_to_sink: 0,")
            );
            assert_eq!(with, without, "queue {queue}");
        }
    }
}
