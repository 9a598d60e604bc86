//! The discrete-event engine: one receive queue (shard) of a scenario run in virtual time.
//!
//! Events — an actor's wake-up, a frame arriving at the appliance, a frame arriving at a
//! host, a timed scenario event — are ordered by (time, sequence number). Actors (traffic
//! sources and backends, see [`crate::actors`]) send frames into their host's link; frames
//! that reach the appliance go through [`Pipeline::process`] with `now` and the bytes only;
//! every frame the pipeline emits is routed to the host owning its destination address
//! (counted as unroutable when none does) over that host's link.
//!
//! A run is split into the scenario's receive queues (shards), each with its own hosts,
//! links (bandwidth shared equally) and per-queue half of the pipeline (parse, fragment
//! tracker, shield, flow hit counters, verdict counters), traffic spread by the client
//! endpoint's hash (a connection's frames, both ways, stay on its client's queue). The
//! directors and the NAT stage are **one state for all queues** ([`shared`]): shards run in
//! parallel in windows bounded by the smallest link latency, and the work that needs the
//! shared stages runs between windows in one order (virtual time, then flow) that depends
//! neither on `--threads` nor on `queues`. See [`shared`] for the contract and for what
//! stays per queue.
//!
//! Files: `event` (queue events, lanes), `result` (what a shard produces), `setup`
//! (building a shard), `shard` (its event loop), `timed` (timed scenario events),
//! `shared` (the shared stages and the window schedule), `cpu` (the appliance's CPU
//! model: per-queue service times and RX rings, off unless the scenario has `[cpu]`).
//!
//! Not here: scenario parsing, report rendering, threads.

pub mod cpu;
mod event;
pub mod queue;
mod result;
pub mod series;
mod setup;
mod shard;
pub mod shared;
mod timed;

use event::{Direction, Event, Held, InFlight, Receiver, lane_of};
pub use result::{
    Collect, ConnectionLine, EventLogEntry, Observer, PacketLine, SecondRow, ShardProbe,
    ShardResult, ShardSnapshot, ShardState, Totals, TranslatedSyn, reused_tuples,
};
use result::{count_row, second_row};
pub use setup::source_name;
pub use timed::apply_stage_event;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use datapath::TimeNs;
use datapath::packet::{LinkType, PacketMeta};
use datapath::pipeline::{
    Deferred, EmittedFrame, Local, PacketOutcome, Pipeline, PipelineCounters, SharedStages,
};
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
    /// Events before this time run in the current [`Engine::run_until`] call.
    limit: TimeNs,
    /// Virtual time last told to the progress callback.
    reported: TimeNs,
    /// The pipeline gave its shared stages away ([`shared`]): work that needs them waits
    /// in `pending` for the shared pass.
    split: bool,
    /// Work waiting for the shared stages, in this shard's order.
    pending: Vec<shared::Pending>,
    /// Keep translated SYNs (the pipeline has a NAT stage).
    track_tuples: bool,
    /// The receive queue's CPU (`[cpu]`; `None`: the appliance takes no time).
    cpu: Option<cpu::Cpu>,
    /// Appliance latency of the packet being finished (CPU model only), for its record.
    latency: Option<TimeNs>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
