//! Where the TUI's frames come from: a live simulation ([`LiveFeed`]) or the time series of a
//! finished run ([`ReplayFeed`]).
//!
//! Live: the scenario runs in a background thread with an engine observer
//! ([`crate::engine::Observer`]). Every shard sends a cumulative snapshot every interval of
//! virtual time; the feed waits until every queue has sent the same instant, merges the
//! shards in queue order and builds the report of that instant ([`crate::report::build`]) —
//! the same code as a finished run. A [`Gate`] paces the simulation: a shard waits in its
//! observer until the UI's clock reaches the snapshot's time, so pause really pauses the run.
//! The observer only observes: the final report is the one a run without the TUI gives.
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
use datapath::verdict::NS_PER_SEC;

use super::app::{App, ReportView};
use crate::engine::world::World;
use crate::engine::{ShardResult, ShardSnapshot};
use crate::run::{RunOptions, RunOutput, run_scenario_observed};
use crate::scenario::LoadedScenario;

/// Most snapshots a live feed holds while waiting for the other queues of the same instant.
pub const PENDING_CAPACITY: usize = 4096;

/// How far the simulation may run: shards wait in their observer until `released` reaches
/// their snapshot's time.
#[derive(Debug, Default)]
pub struct Gate {
    released: Mutex<TimeNs>,
    changed: Condvar,
}

impl Gate {
    /// Let the simulation run up to `time` (never moves back).
    pub fn release(&self, time: TimeNs) {
        let mut released = self.released.lock().unwrap_or_else(PoisonError::into_inner);
        if time > *released {
            *released = time;
            self.changed.notify_all();
        }
    }

    /// Block until the simulation may run up to `time`.
    pub fn wait(&self, time: TimeNs) {
        let mut released = self.released.lock().unwrap_or_else(PoisonError::into_inner);
        while *released < time {
            released = self
                .changed
                .wait(released)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Whether [`LiveFeed::pull`] may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Take what has arrived.
    No,
    /// Wait until the data reaches the model's target clock or the run ends (tests).
    UntilTarget,
}

/// A running simulation feeding the model.
pub struct LiveFeed {
    gate: Arc<Gate>,
    snapshots: Receiver<ShardSnapshot>,
    thread: Option<JoinHandle<anyhow::Result<RunOutput>>>,
    output: Option<RunOutput>,
    merger: Merger,
}

/// Merges the shards' snapshots of each instant (once every queue has sent it) into one
/// report frame for the model.
pub struct Merger {
    loaded: LoadedScenario,
    world: World,
    pending: BTreeMap<TimeNs, Vec<Option<ShardResult>>>,
}

impl Merger {
    /// A merger for `loaded`'s queues.
    pub fn new(loaded: &LoadedScenario) -> Self {
        Self {
            world: World::new(&loaded.scenario),
            loaded: loaded.clone(),
            pending: BTreeMap::new(),
        }
    }

    /// Take one shard snapshot; push every instant now complete to the model.
    pub fn accept(&mut self, app: &mut App, snapshot: ShardSnapshot) -> anyhow::Result<()> {
        let queues = usize::from(self.loaded.scenario.queues);
        if self.pending.len() >= PENDING_CAPACITY && !self.pending.contains_key(&snapshot.now) {
            anyhow::bail!("more than {PENDING_CAPACITY} instants pending from the queues");
        }
        let slots = self
            .pending
            .entry(snapshot.now)
            .or_insert_with(|| (0..queues).map(|_| None).collect());
        slots[usize::from(snapshot.queue)] = Some(snapshot.result);
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().iter().any(Option::is_none) {
                break;
            }
            let (now, results) = entry.remove_entry();
            let mut results = results.into_iter().flatten();
            let Some(mut merged) = results.next() else {
                continue;
            };
            results.for_each(|result| merged.merge(result));
            let report = crate::report::build(&self.loaded.scenario, &self.world, &merged);
            app.push_frame(now, ReportView::from_report(&report)?);
        }
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

impl LiveFeed {
    /// Start the run in a background thread. Shards run in parallel (one thread per queue at
    /// least), so every queue reaches each instant together.
    pub fn start(loaded: &LoadedScenario, options: RunOptions, interval_ns: TimeNs) -> Self {
        let gate = Arc::new(Gate::default());
        let (sender, snapshots) = channel();
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
            snapshots,
            thread: Some(thread),
            output: None,
            merger: Merger::new(loaded),
        }
    }

    /// Release the gate to the model's target and show every complete instant that arrived.
    pub fn pull(&mut self, app: &mut App, wait: Wait) -> anyhow::Result<()> {
        self.gate.release(app.target_ns);
        loop {
            let snapshot = match wait {
                Wait::No => match self.snapshots.try_recv() {
                    Ok(snapshot) => Some(snapshot),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return self.ended_early(app),
                },
                Wait::UntilTarget if app.data_ns >= shown_at(app) || app.finished => None,
                Wait::UntilTarget => match self.snapshots.recv_timeout(Duration::from_secs(60)) {
                    Ok(snapshot) => Some(snapshot),
                    Err(RecvTimeoutError::Timeout) => anyhow::bail!("no snapshot for 60 s"),
                    Err(RecvTimeoutError::Disconnected) => return self.ended_early(app),
                },
            };
            let Some(snapshot) = snapshot else {
                break;
            };
            self.merger.accept(app, snapshot)?;
        }
        if app.finished && self.output.is_none() {
            self.output = Some(self.join()?);
        }
        Ok(())
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
    sender: Sender<ShardSnapshot>,
) -> anyhow::Result<RunOutput> {
    let sender = Mutex::new(sender);
    let observer = |snapshot: ShardSnapshot| {
        gate.wait(snapshot.now);
        // The UI may have gone: the run still finishes and writes its report.
        let _ = sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(snapshot);
    };
    run_scenario_observed(loaded, options, &|_| {}, Some((interval_ns, &observer)))
}

/// A finished run replayed second by second.
#[derive(Debug)]
pub struct ReplayFeed {
    report: ReportView,
}

impl ReplayFeed {
    /// Replay `report`.
    pub fn new(report: ReportView) -> Self {
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
            app.push_frame(now, self.frame_at(now));
            next += NS_PER_SEC;
        }
    }

    /// The report as of `now`: the time series and mode changes up to then, the rest final.
    pub fn frame_at(&self, now: TimeNs) -> ReportView {
        let mut view = self.report.clone();
        let seconds = now.div_ceil(NS_PER_SEC);
        view.timeline.retain(|row| row.second < seconds);
        for context in &mut view.appliance.shield {
            context.modes.retain(|(at, _)| *at <= now);
        }
        view
    }
}
