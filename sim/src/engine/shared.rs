//! One appliance, many receive queues: the shards of a run with one set of shared stages
//! (directors, NAT), run in parallel and merged in one deterministic order.
//!
//! Each shard is one receive queue (CPU) with its per-queue half of the pipeline (see
//! [`datapath::pipeline::SharedStages`]). How the shards run depends only on the scenario,
//! never on `--threads`:
//! - **independent**: no director and no NAT, nothing is shared: every shard runs to the
//!   end on its own (in parallel), as separate appliances would;
//! - **windows** otherwise, whatever `queues` says (one queue included), conservative PDES
//!   style. The lookahead `L` is the smallest appliance → host link latency over the whole
//!   run (timed link changes included). Every shard handles its events of `[T, T + L)` in
//!   parallel (`T`: the earliest pending event), deferring the work that needs the shared
//!   stages; then the shared pass runs the window's deferred work of all shards in one
//!   order — virtual time; timed director events before packets; the packet's flow
//!   (protocol, source, source port, destination, destination port); then queue and the
//!   queue's own order — and routes what it emits. A frame emitted at `t ≥ T` arrives at
//!   `t + L ≥ T + L` or later, so no shard has run past anything the pass causes.
//!   With `L = 0` (a link without latency) a window is one instant, repeated while that
//!   instant has events: a frame the pass emits with no latency is handled in the next
//!   round of the same instant.
//!
//! Hence the contract: the shared stages see every packet in virtual-time order, ties
//! broken by the flow, not by the queue a flow hashes to, so their results (backend per
//! connection, persistence templates, scheduler order, translated tuples, ipvsadm
//! counters) do not depend on `queues` as long as the traffic reaching the appliance does
//! not (link bandwidth is shared per queue, so a bandwidth-limited link can change
//! arrival times); and nothing depends on `--threads`. The per-queue half sees a
//! window's shared results late: a director or NAT reply is shown to the shield at the end
//! of its window, at most `L` after it arrived.

//!
//! What stays per queue, and why (Linux keeps it per CPU): parsing and the fragment
//! tracker (a datagram's fragments share the client's queue: RSS hashes fragments by
//! address pair); the shield (PacketShield runs one instance per core); flow-manager hit
//! counters (nft counters are per-CPU); verdict counters (per-CPU netdev and IPVS
//! statistics, summed when read). What is shared (Linux keeps one per network namespace):
//! the IPVS connection table and persistence templates (`ip_vs_conn_tab`), each service's
//! scheduler state (`svc->sched_data`: rr/wrr cursors), per-real counters and ActiveConn /
//! InActConn, NAT rules, conntrack (`nf_conntrack_hash`) and NAT source-port allocation
//! (`nf_nat_bysource`). Backend and client hosts stay per queue (a connection's frames,
//! both ways, stay on its client's queue).

use std::net::IpAddr;
use std::time::Instant;

use datapath::TimeNs;
use datapath::pipeline::{Deferred, SharedStages};

use super::timed::apply_director_event;
use super::{Engine, EventLogEntry, ShardResult};
use crate::scenario::{Scenario, TimedEvent};

/// Work of one shard waiting for the shared stages.
pub struct Pending {
    at: TimeNs,
    order: u64,
    kind: PendingKind,
}

enum PendingKind {
    Work(Deferred),
    Timed(u16),
}

impl Pending {
    /// A packet (or a frame the shield sent) deferred at `at`, `order`-th of its shard.
    pub(super) fn work(at: TimeNs, order: u64, work: Deferred) -> Self {
        let kind = PendingKind::Work(work);
        Self { at, order, kind }
    }

    /// Timed event `index` (server down/up, weight) due at `at`.
    pub(super) fn timed(at: TimeNs, index: u16) -> Self {
        let kind = PendingKind::Timed(index);
        Self { at, order: 0, kind }
    }
}

/// The shared pass's order of one piece of work (see the module doc).
type Key = (
    TimeNs,
    u8,
    u8,
    Option<IpAddr>,
    u16,
    Option<IpAddr>,
    u16,
    u16,
    u64,
);

fn key(pending: &Pending, queue: u16) -> Key {
    let (at, order) = (pending.at, pending.order);
    match &pending.kind {
        PendingKind::Timed(index) => (at, 0, 0, None, *index, None, 0, queue, order),
        PendingKind::Work(work) => {
            let meta = work.meta();
            let class = 1 + u8::from(work.is_shield_frame());
            let proto = meta.proto.unwrap_or(0);
            let (sport, dport) = (meta.sport.unwrap_or(0), meta.dport.unwrap_or(0));
            (
                at, class, proto, meta.src, sport, meta.dst, dport, queue, order,
            )
        }
    }
}

/// How the shards of a scenario run (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Nothing shared: every shard on its own.
    Independent,
    /// Windows of this many ns.
    Windows(TimeNs),
}

/// The smallest latency a frame from the appliance to any host can have during the run.
pub fn lookahead(scenario: &Scenario) -> TimeNs {
    let topology = &scenario.topology;
    let links = topology
        .networks
        .iter()
        .map(|n| n.link.latency.0)
        .chain(topology.backends.iter().map(|b| b.link.latency.0));
    let changes = scenario.events.iter().filter_map(|e| match e.get_ref() {
        TimedEvent::Link { latency, .. } => latency.map(|l| l.0),
        _ => None,
    });
    links.chain(changes).min().unwrap_or(0)
}

/// The schedule of `scenario` when its pipeline has shared stages (`shares`).
pub fn schedule(scenario: &Scenario, shares: bool) -> Schedule {
    if shares {
        Schedule::Windows(lookahead(scenario).max(1))
    } else {
        Schedule::Independent
    }
}

/// One shard's results and what it cost: wall-clock ns and thread CPU ns.
pub type QueueRun = (ShardResult, u64, u64);

/// Run built shards to the end (see the module doc) on `pool`; results in queue order.
#[inline(never)]
pub fn run_shards(
    mut engines: Vec<Engine<'_>>,
    pool: &rayon::ThreadPool,
    progress: &(dyn Fn(TimeNs) + Sync),
) -> anyhow::Result<Vec<QueueRun>> {
    let Some(first) = engines.first_mut() else {
        return Ok(Vec::new());
    };
    let scenario = first.scenario;
    let shared = first.pipeline.take_shared();
    let mode = schedule(scenario, !shared.is_empty());
    if mode == Schedule::Independent {
        first.pipeline.restore_shared(shared);
        return Ok(map_shards(pool, engines, |engine| {
            timed_run(|| engine.run(progress))
        }));
    }
    for engine in &mut engines[1..] {
        drop(engine.pipeline.take_shared());
    }
    let mut run = SharedRun {
        shared,
        costs: vec![(0, 0); engines.len()],
        next_sample: 0,
    };
    engines.iter_mut().for_each(|e| {
        e.split = true;
        e.start();
    });
    if let Schedule::Windows(window) = mode {
        run.windows(&mut engines, window, pool, progress);
    }
    let SharedRun { shared, costs, .. } = run;
    engines[0].pipeline.restore_shared(shared);
    let results = map_shards(pool, engines, |engine| engine.end_run(progress));
    Ok(results
        .into_iter()
        .zip(costs)
        .map(|(result, (wall, cpu))| (result, wall, cpu))
        .collect())
}

/// `work` on every shard, in parallel on `pool`, results in queue order. With one thread
/// the shards run one after the other on the calling thread (no hop to a pool worker):
/// the same results, and every instruction of a one-thread run sits under `run_shards`
/// (what `scripts/callgrind-check` counts).
fn map_shards<'a, T: Send>(
    pool: &rayon::ThreadPool,
    engines: Vec<Engine<'a>>,
    work: impl Fn(Engine<'a>) -> T + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    if pool.current_num_threads() > 1 {
        pool.install(|| engines.into_par_iter().map(work).collect())
    } else {
        engines.into_iter().map(work).collect()
    }
}

/// CPU time the calling thread has run so far (ns), from `/proc/thread-self/schedstat`;
/// `None` where that file is unavailable. Measurement code only: never feeds a result.
pub fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Run `work` and measure it (wall-clock and thread CPU ns).
fn timed_run<T>(work: impl FnOnce() -> T) -> (T, u64, u64) {
    let started = Instant::now();
    let cpu_started = thread_cpu_ns();
    let value = work();
    let cpu_ns = thread_cpu_ns()
        .zip(cpu_started)
        .map_or(0, |(end, start)| end.saturating_sub(start));
    (value, started.elapsed().as_nanos() as u64, cpu_ns)
}

/// The shared side of a run whose shards share stages.
struct SharedRun {
    /// The directors and NAT of every shard.
    shared: SharedStages,
    /// Per shard: wall-clock and CPU ns spent in it.
    costs: Vec<(u64, u64)>,
    /// Start of the next series bucket: the first shared work at or after it samples the
    /// directors' ActiveConn.
    next_sample: TimeNs,
}

impl SharedRun {
    fn windows(
        &mut self,
        engines: &mut [Engine<'_>],
        window: TimeNs,
        pool: &rayon::ThreadPool,
        progress: &(dyn Fn(TimeNs) + Sync),
    ) {
        use rayon::prelude::*;
        let end = engines[0].end;
        while let Some(from) = engines.iter().filter_map(|e| e.next_time()).min() {
            let limit = from.saturating_add(window).min(end.saturating_add(1));
            let shared = &self.shared;
            let step = |(engine, cost): (&mut Engine<'_>, &mut (u64, u64))| {
                // Queue 0 shows the shared stages to a live observer (once, not per queue).
                let shown = (engine.queue_index == 0).then_some(shared);
                let ((), wall, cpu) = timed_run(|| engine.run_until(limit, progress, shown));
                cost.0 += wall;
                cost.1 += cpu;
            };
            let costs = &mut self.costs;
            if pool.current_num_threads() > 1 {
                pool.install(|| {
                    engines
                        .par_iter_mut()
                        .zip(costs.par_iter_mut())
                        .for_each(step)
                });
            } else {
                engines.iter_mut().zip(costs.iter_mut()).for_each(step);
            }
            self.shared_pass(engines);
        }
    }

    /// Run every shard's deferred work in the shared order (see the module doc).
    fn shared_pass(&mut self, engines: &mut [Engine<'_>]) {
        let mut work: Vec<(Key, usize, Pending)> = Vec::new();
        for (queue, engine) in engines.iter_mut().enumerate() {
            let pending = engine.pending.drain(..);
            work.extend(pending.map(|p| (key(&p, queue as u16), queue, p)));
        }
        work.sort_unstable_by_key(|w| w.0);
        if work.is_empty() {
            return;
        }
        let ((), wall, cpu) = timed_run(|| {
            for (_, queue, pending) in work {
                self.sample(&mut engines[0], pending.at);
                engines[queue].resume_pending(pending, &mut self.shared);
            }
        });
        // The pass serves every queue: its cost is shared out equally.
        let queues = self.costs.len().max(1) as u64;
        for cost in &mut self.costs {
            cost.0 += wall / queues;
            cost.1 += cpu / queues;
        }
    }

    /// Sample the directors' ActiveConn into the first shard's series at the first shared
    /// work of a bucket.
    fn sample(&mut self, first: &mut Engine<'_>, now: TimeNs) {
        if now < self.next_sample {
            return;
        }
        let series = &mut first.result.series;
        if now < first.end || !first.end.is_multiple_of(series.bucket_ns) {
            series.sample_active(now, self.shared.directors());
        }
        self.next_sample = (now / series.bucket_ns + 1) * series.bucket_ns;
    }
}

impl Engine<'_> {
    /// Finish one piece of deferred work with the shared stages.
    fn resume_pending(&mut self, pending: Pending, shared: &mut SharedStages) {
        let at = pending.at;
        match pending.kind {
            PendingKind::Work(work) => {
                let outcome = self.pipeline.resume(at, work, shared);
                self.after_pipeline(at, outcome);
            }
            PendingKind::Timed(index) => {
                let event = self.scenario.events[usize::from(index)].get_ref().clone();
                let status = apply_director_event(shared.directors_mut(), &event);
                let entry = EventLogEntry {
                    at_ns: at,
                    event,
                    status,
                };
                self.result.events.push(entry);
            }
        }
    }
}
