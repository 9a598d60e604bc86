//! Where the TUI's frames come from: a live simulation ([`LiveFeed`]) or the time series of a
//! finished run ([`ReplayFeed`]).
//!
//! Live: the scenario runs in background threads with an engine observer
//! ([`crate::engine::Observer`]). At every interval boundary of virtual time each shard copies
//! a [`Tally`] (a few counter arrays: enough for the pps sparklines and the rates) and sends
//! it; it copies its full results ([`crate::engine::ShardProbe::result`]) only at the instant
//! the UI asked a frame for, which the UI does at most once per screen refresh. The UI merges
//! the tallies of every instant as they complete (cheap, incremental) and builds a frame — the
//! shard merge and the report ([`crate::report::build`], the same code as a finished run) —
//! only for the instant it asked for. A [`Gate`] paces the simulation: a shard waits in its
//! observer until the UI's clock reaches the boundary, so pause really pauses the run; the gate
//! also decides, under its lock, which boundary the next frame is taken at, always one no
//! shard has passed yet, so every shard sends its results of the same instant. The observer
//! only observes: the final report is the one a run without the TUI gives.
//!
//! Replay: the final report of `report.json`; the per-second time series and the
//! protection-mode changes are replayed second by second, the other tables are the run's
//! end state. Not here: drawing or key handling.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use datapath::TimeNs;
use datapath::pipeline::PipelineCounters;
use datapath::verdict::NS_PER_SEC;

use super::app::{App, RateBase, verdict_totals};
use crate::engine::{SecondRow, ShardProbe, ShardResult, ShardSnapshot, ShardState};
use crate::net::world::World;
use crate::report::{DecisionRow, Report};
use crate::run::{RunOptions, RunOutput, run_scenario_observed};
use crate::scenario::LoadedScenario;

/// Most instants a live feed holds while waiting for the other queues of the same instant.
pub const PENDING_CAPACITY: usize = 4096;

/// What the gate knows, under its lock.
#[derive(Debug, Default)]
struct GateState {
    /// Shards may run up to here.
    released: TimeNs,
    /// The furthest boundary any shard has passed.
    passed: TimeNs,
    /// The boundary the next frame is taken at, if one was asked for.
    frame_at: Option<TimeNs>,
}

/// Paces the simulation and picks the frame instants: shards wait in their observer until
/// `released` reaches their boundary, and take their full results at the boundary the UI
/// asked a frame for.
#[derive(Debug)]
pub struct Gate {
    interval: TimeNs,
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Gate {
    /// A gate for boundaries every `interval` ns, closed at 0.
    pub fn new(interval: TimeNs) -> Self {
        Self {
            interval: interval.max(1),
            state: Mutex::new(GateState::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Let the simulation run up to `time` (never moves back).
    pub fn release(&self, time: TimeNs) {
        let mut state = self.lock();
        if time > state.released {
            state.released = time;
            self.changed.notify_all();
        }
    }

    /// Block until the simulation may pass boundary `time`, then pass it; true when the UI
    /// asked for a frame at `time`.
    pub fn pass(&self, time: TimeNs) -> bool {
        let mut state = self.lock();
        while state.released < time {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.passed = state.passed.max(time);
        state.frame_at == Some(time)
    }

    /// Ask for a frame at `wanted` (a boundary), or at the first boundary after it that no
    /// shard has passed yet; returns the boundary chosen.
    pub fn ask_frame(&self, wanted: TimeNs) -> TimeNs {
        let mut state = self.lock();
        let at = wanted.max(state.passed + self.interval);
        state.frame_at = Some(at);
        at
    }

    /// The furthest boundary any shard has passed.
    pub fn passed(&self) -> TimeNs {
        self.lock().passed
    }
}

/// Whether [`LiveFeed::pull`] may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Take what has arrived; frames show the freshest instant the run can reach soon.
    No,
    /// Wait for the frame at the model's target clock, or the end of the run (tests).
    UntilTarget,
}

/// One shard's counters at one boundary: what the live view needs at every interval (the
/// sparklines and the rates). Copying it is a few fixed arrays and the flow hits.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Pipeline decisions per (stage, verdict, reason).
    pub counters: PipelineCounters,
    /// Frames per verdict (pass, drop, reply, forward), from the per-second rows.
    pub verdicts: [u64; 4],
    /// Hits per flow, in file order.
    pub flow_hits: Vec<u64>,
}

impl Tally {
    /// The tally of a running shard.
    pub fn of_probe(probe: &ShardProbe<'_>) -> Self {
        let pipeline = probe.pipeline();
        Self {
            counters: pipeline.counters().clone(),
            verdicts: verdicts_of(probe.timeline()),
            flow_hits: pipeline
                .flows()
                .map(|flows| flows.counters.flow_hits.clone())
                .unwrap_or_default(),
        }
    }

    /// The tally of a finished shard.
    pub fn of_result(result: &ShardResult) -> Self {
        Self {
            counters: result.counters.clone(),
            verdicts: verdicts_of(&result.timeline),
            flow_hits: result.appliance.flows.iter().map(|f| f.hits).collect(),
        }
    }

    /// Add another shard's tally of the same instant.
    pub fn merge(&mut self, other: &Self) {
        self.counters.merge(&other.counters);
        self.verdicts
            .iter_mut()
            .zip(other.verdicts)
            .for_each(|(a, b)| *a += b);
        if self.flow_hits.len() < other.flow_hits.len() {
            self.flow_hits.resize(other.flow_hits.len(), 0);
        }
        self.flow_hits
            .iter_mut()
            .zip(&other.flow_hits)
            .for_each(|(a, b)| *a += b);
    }

    /// The decision and flow counts the model takes rates against.
    pub fn rate_base(&self, at: TimeNs) -> RateBase {
        let decisions = self
            .counters
            .rows()
            .into_iter()
            .map(|row| DecisionRow {
                stage: row.stage.name().into(),
                verdict: row.verdict.into(),
                reason: row.reason.unwrap_or_default(),
                packets: row.count,
            })
            .collect();
        RateBase {
            at,
            flow_hits: self.flow_hits.clone(),
            decisions,
        }
    }
}

fn verdicts_of(timeline: &[SecondRow]) -> [u64; 4] {
    timeline.iter().fold([0; 4], |mut sum, row| {
        for (total, count) in sum
            .iter_mut()
            .zip([row.pass, row.drop, row.reply, row.forward])
        {
            *total += count;
        }
        sum
    })
}

/// What a shard sends at a boundary (or at the end): its tally, and its full results when the
/// UI asked a frame for that instant (always at the end).
#[derive(Debug)]
pub struct ShardMessage {
    /// Receive queue.
    pub queue: u16,
    /// Virtual time.
    pub now: TimeNs,
    /// Counters for the sparklines and rates.
    pub tally: Tally,
    /// Full results, for a frame.
    pub result: Option<Box<ShardResult>>,
}

impl ShardMessage {
    /// The message of `snapshot`; `frame` asks for the full results of a running shard.
    pub fn of(snapshot: ShardSnapshot<'_>, frame: bool) -> Self {
        let (tally, result) = match snapshot.state {
            ShardState::Running(probe) => (
                Tally::of_probe(&probe),
                frame.then(|| Box::new(probe.result())),
            ),
            ShardState::Finished(result) => (Tally::of_result(&result), Some(result)),
        };
        Self {
            queue: snapshot.queue,
            now: snapshot.now,
            tally,
            result,
        }
    }
}

/// Merges the shards' messages of each instant once every queue has sent it: tallies into
/// the model's sparklines, full results (when every queue sent them) into a frame.
pub struct Merger {
    loaded: LoadedScenario,
    world: World,
    pending: BTreeMap<TimeNs, Vec<Option<ShardMessage>>>,
    /// The merged tally of the last complete instant: the base of the next frame's rates.
    last: (TimeNs, Tally),
}

impl Merger {
    /// A merger for `loaded`'s queues.
    pub fn new(loaded: &LoadedScenario) -> Self {
        Self {
            world: World::new(&loaded.scenario),
            loaded: loaded.clone(),
            pending: BTreeMap::new(),
            last: (0, Tally::default()),
        }
    }

    /// Take one shard message; push every instant now complete to the model.
    pub fn accept(&mut self, app: &mut App, message: ShardMessage) -> anyhow::Result<()> {
        let queues = usize::from(self.loaded.scenario.queues);
        if self.pending.len() >= PENDING_CAPACITY && !self.pending.contains_key(&message.now) {
            anyhow::bail!("more than {PENDING_CAPACITY} instants pending from the queues");
        }
        let slots = self
            .pending
            .entry(message.now)
            .or_insert_with(|| (0..queues).map(|_| None).collect());
        let queue = usize::from(message.queue);
        slots[queue] = Some(message);
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().iter().any(Option::is_none) {
                break;
            }
            let (now, messages) = entry.remove_entry();
            self.complete(app, now, messages.into_iter().flatten().collect())?;
        }
        Ok(())
    }

    /// Every queue sent instant `now`: a sparkline sample, and a frame when they all sent
    /// their full results.
    fn complete(
        &mut self,
        app: &mut App,
        now: TimeNs,
        messages: Vec<ShardMessage>,
    ) -> anyhow::Result<()> {
        let mut tally = Tally::default();
        messages.iter().for_each(|m| tally.merge(&m.tally));
        app.push_sample(now, tally.verdicts);
        let results: Option<Vec<Box<ShardResult>>> =
            messages.into_iter().map(|m| m.result).collect();
        if let Some(results) = results {
            let mut results = results.into_iter();
            if let Some(first) = results.next() {
                let mut merged = *first;
                results.for_each(|result| merged.merge(*result));
                let report = crate::report::build(&self.loaded.scenario, &self.world, &merged);
                let base = self.last.1.rate_base(self.last.0);
                app.push_frame(now, report, Some(&base));
            }
        }
        self.last = (now, tally);
        Ok(())
    }
}

/// Virtual time between live snapshots: about 1/100 of the run, a round number of
/// milliseconds (1, 2 or 5 × a power of ten), between 1 ms and 1 s.
pub fn default_interval(duration_ns: TimeNs) -> TimeNs {
    let wanted = duration_ns / 100;
    let mut step: TimeNs = 1_000_000;
    for candidate in [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] {
        if candidate * 1_000_000 <= wanted {
            step = candidate * 1_000_000;
        }
    }
    step
}

/// A running simulation feeding the model.
pub struct LiveFeed {
    gate: Arc<Gate>,
    messages: Receiver<ShardMessage>,
    thread: Option<JoinHandle<anyhow::Result<RunOutput>>>,
    output: Option<RunOutput>,
    merger: Merger,
    /// The frame asked for and not shown yet.
    asked: Option<TimeNs>,
    /// What the gate was last released to.
    released: TimeNs,
    /// The boundary the shards had passed at the previous pull (their pace).
    passed_before: TimeNs,
}

impl LiveFeed {
    /// Start the run in a background thread. Shards run in parallel (one thread per queue at
    /// least), so every queue reaches each instant together.
    pub fn start(loaded: &LoadedScenario, options: RunOptions, interval_ns: TimeNs) -> Self {
        let gate = Arc::new(Gate::new(interval_ns));
        let (sender, messages) = channel();
        let options = RunOptions {
            threads: options.threads.max(usize::from(loaded.scenario.queues)),
            ..options
        };
        let thread = {
            let (gate, loaded) = (Arc::clone(&gate), loaded.clone());
            std::thread::spawn(move || run_gated(&loaded, options, interval_ns, &gate, sender))
        };
        Self {
            gate,
            messages,
            thread: Some(thread),
            output: None,
            merger: Merger::new(loaded),
            asked: None,
            released: 0,
            passed_before: 0,
        }
    }

    /// Take what arrived, ask for a frame (unless one is on its way), release the gate to the
    /// model's target, and take what arrives: sparkline samples of every instant, and the
    /// frame once every queue has sent it.
    pub fn pull(&mut self, app: &mut App, wait: Wait) -> anyhow::Result<()> {
        self.take(app, Wait::No)?;
        self.ask_frame(app, wait);
        self.gate.release(app.target_ns);
        self.released = self.released.max(app.target_ns);
        self.take(app, wait)?;
        if app.finished && self.output.is_none() {
            self.output = Some(self.join()?);
        }
        Ok(())
    }

    /// Merge the messages that arrived (with [`Wait::UntilTarget`]: until the frame asked
    /// for is shown or the run ended).
    fn take(&mut self, app: &mut App, wait: Wait) -> anyhow::Result<()> {
        loop {
            let message = match wait {
                Wait::No => match self.messages.try_recv() {
                    Ok(message) => message,
                    Err(TryRecvError::Empty) => return Ok(()),
                    Err(TryRecvError::Disconnected) => return self.ended_early(app),
                },
                Wait::UntilTarget if self.asked.is_none() || app.finished => return Ok(()),
                Wait::UntilTarget => match self.messages.recv_timeout(Duration::from_secs(60)) {
                    Ok(message) => message,
                    Err(RecvTimeoutError::Timeout) => anyhow::bail!("no snapshot for 60 s"),
                    Err(RecvTimeoutError::Disconnected) => return self.ended_early(app),
                },
            };
            self.merger.accept(app, message)?;
            if app.finished || self.asked.is_some_and(|at| app.data_ns >= at) {
                self.asked = None;
            }
        }
    }

    /// Pick the next frame's instant: the model's target (the last boundary at or before it),
    /// or, while the run is slower than the clock, about where the shards will be half a
    /// refresh from now — so the screen shows fresh state once per refresh, whatever the
    /// speed. Always a boundary no shard has passed yet (see [`Gate::ask_frame`]).
    fn ask_frame(&mut self, app: &mut App, wait: Wait) {
        let passed = self.gate.passed();
        let interval = app.interval_ns;
        let pace = passed.saturating_sub(self.passed_before).max(interval);
        self.passed_before = passed;
        let shown = shown_at(app);
        if self.asked.is_some() || app.finished || shown <= app.data_ns {
            return;
        }
        // Held: the shards wait at the gate, so they reach the target by the next refresh.
        let held_by_gate = self.released > 0 && passed.saturating_add(interval) > self.released;
        let wanted = if wait == Wait::UntilTarget || held_by_gate {
            shown
        } else {
            shown.min((passed + pace / 2).div_ceil(interval) * interval)
        };
        let at = self.gate.ask_frame(wanted).min(app.view.duration_ns);
        // After a step back to an instant the shards already passed: the next one they can
        // still show.
        app.target_ns = app.target_ns.max(at);
        self.asked = Some(at);
    }

    /// The simulation thread stopped sending: it finished (collect it) or failed.
    fn ended_early(&mut self, app: &mut App) -> anyhow::Result<()> {
        if self.output.is_none() && self.thread.is_some() {
            match self.join() {
                Ok(output) => self.output = Some(output),
                Err(error) => app.error = Some(format!("{error:#}")),
            }
        }
        Ok(())
    }

    /// Let the run finish at full speed and return its output (once).
    pub fn finish(mut self) -> anyhow::Result<RunOutput> {
        if let Some(output) = self.output.take() {
            return Ok(output);
        }
        self.join()
    }

    fn join(&mut self) -> anyhow::Result<RunOutput> {
        self.gate.release(TimeNs::MAX);
        let thread = self
            .thread
            .take()
            .ok_or_else(|| anyhow::anyhow!("the run was already collected"))?;
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the simulation thread panicked"))?
    }
}

/// The last frame time a live feed can show for the model's target: the last interval
/// boundary at or before it, or the end of the run.
fn shown_at(app: &App) -> TimeNs {
    if app.target_ns >= app.view.duration_ns {
        app.view.duration_ns
    } else {
        app.target_ns / app.interval_ns * app.interval_ns
    }
}

fn run_gated(
    loaded: &LoadedScenario,
    options: RunOptions,
    interval_ns: TimeNs,
    gate: &Gate,
    sender: Sender<ShardMessage>,
) -> anyhow::Result<RunOutput> {
    let sender = Mutex::new(sender);
    let observer = |snapshot: ShardSnapshot<'_>| {
        let frame = gate.pass(snapshot.now);
        let message = ShardMessage::of(snapshot, frame);
        // The UI may have gone: the run still finishes and writes its report.
        let _ = sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(message);
    };
    run_scenario_observed(loaded, options, &|_| {}, Some((interval_ns, &observer)))
}

/// A finished run replayed second by second.
#[derive(Debug)]
pub struct ReplayFeed {
    report: Report,
}

impl ReplayFeed {
    /// Replay `report`.
    pub fn new(report: Report) -> Self {
        Self { report }
    }

    /// A model for this replay (frames every second).
    pub fn app(&self) -> App {
        App::new(
            super::app::Source::Replay,
            self.frame_at(0),
            NS_PER_SEC.min(self.report.duration_ns.max(1)),
        )
    }

    /// Show every whole second up to the model's target (and the end of the run).
    pub fn pull(&self, app: &mut App) {
        let end = self.report.duration_ns;
        let mut next = (app.data_ns / NS_PER_SEC + 1) * NS_PER_SEC;
        while next.min(end) <= app.target_ns && !app.finished {
            let now = next.min(end);
            let view = self.frame_at(now);
            app.push_sample(now, verdict_totals(&view));
            app.push_frame(now, view, None);
            next += NS_PER_SEC;
        }
    }

    /// The report as of `now`: the time series and mode changes up to then, the rest final.
    pub fn frame_at(&self, now: TimeNs) -> Report {
        let mut view = self.report.clone();
        let seconds = now.div_ceil(NS_PER_SEC);
        view.timeline.retain(|row| row.second < seconds);
        for context in &mut view.appliance.shield {
            context.modes.retain(|(at, _)| *at <= now);
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_at_a_boundary_no_shard_has_passed() {
        let gate = Gate::new(10);
        gate.release(50);
        assert!(!gate.pass(10));
        assert!(!gate.pass(20));
        assert_eq!(gate.ask_frame(10), 30, "10 and 20 are passed: the next one");
        assert_eq!(gate.passed(), 20);
        assert!(gate.pass(30), "every shard passing 30 takes its results");
        assert!(!gate.pass(40));
        assert_eq!(gate.ask_frame(100), 100, "ahead of every shard: as asked");
    }

    #[test]
    fn a_shard_waits_at_the_gate_until_released() {
        let gate = Arc::new(Gate::new(10));
        let shard = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || gate.pass(20))
        };
        assert_eq!(gate.ask_frame(20), 20);
        gate.release(15);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!shard.is_finished(), "15 < 20: still waiting");
        gate.release(20);
        assert!(
            shard.join().unwrap(),
            "passed 20, where the frame was asked"
        );
    }

    #[test]
    fn tallies_merge_queue_by_queue() {
        let mut merged = Tally {
            verdicts: [1, 2, 3, 4],
            flow_hits: vec![5],
            ..Tally::default()
        };
        merged.counters.packets = 10;
        let mut other = Tally {
            verdicts: [10, 20, 30, 40],
            flow_hits: vec![1, 7],
            ..Tally::default()
        };
        other.counters.packets = 100;
        merged.merge(&other);
        assert_eq!(merged.verdicts, [11, 22, 33, 44]);
        assert_eq!(merged.flow_hits, [6, 7]);
        assert_eq!(merged.counters.packets, 110);
        let base = merged.rate_base(42);
        assert_eq!((base.at, base.flow_hits), (42, vec![6, 7]));
    }
}
