//! The live terminal UI (ratatui + crossterm): `sim tui SCENARIO|report.json` and
//! `sim run SCENARIO --tui`. Per-flow hits, shield verdicts with the protection-mode bits over
//! time, directors in `ipvsadm` shape with share bars, pps sparklines per verdict, legitimate
//! clients, virtual clock and speed.
//!
//! Split as model ([`app`]: state and key handlers, no ratatui; [`frame`]: the report frames
//! it is fed; [`text`]: its plain-text summary and number formats), view ([`view`]: drawing
//! only), data source ([`feed`]: a live run through an engine observer, or a finished run's
//! time series) and terminal handling ([`term`]: setup and restore, also on panic).
//! [`Session`] ties model and feed together so tests can drive the whole UI on ratatui's
//! `TestBackend` with scripted keys. Not here: the simulation or the report format.

pub mod app;
pub mod feed;
pub mod frame;
pub mod term;
pub mod text;
pub mod units;
pub mod view;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use datapath::TimeNs;
use ratatui::Terminal;
use ratatui::backend::Backend;

use crate::engine::Collect;
use crate::report::Report;
use crate::run::{RunOptions, RunOutput};
use crate::scenario::{self, LoadedScenario};
use app::{App, Key, SPEED_EXPONENT_MAX, SPEED_EXPONENT_MIN, Source};
use feed::{LiveFeed, ReplayFeed, Wait};

/// Time between screen refreshes (and input polls).
pub const REFRESH: Duration = Duration::from_millis(100);

/// Arguments of `sim tui`.
#[derive(clap::Args, Debug, Clone)]
pub struct TuiArgs {
    /// A scenario file (run live) or a finished run's `report.json` (replay its time series).
    pub path: PathBuf,
    /// Speed: virtual seconds per real second, rounded to a power of two (1/64 … 1024).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Start paused.
    #[arg(long)]
    pub paused: bool,
    /// Virtual time between live frames (default: about 1/100 of the run, e.g. `10ms`).
    #[arg(long, value_parser = scenario::units::parse_duration)]
    pub interval: Option<TimeNs>,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the scenario's duration (e.g. `500ms`).
    #[arg(long, value_parser = scenario::units::parse_duration)]
    pub duration: Option<TimeNs>,
}

/// The frames' source.
pub enum Feed {
    /// A running simulation.
    Live(Box<LiveFeed>),
    /// A finished run.
    Replay(Box<ReplayFeed>),
}

/// An input event, independent of the terminal library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A key press.
    Key(Key),
    /// The terminal was resized (the next draw adapts).
    Resize,
}

/// Model plus data source: everything but the terminal.
pub struct Session {
    /// The model.
    pub app: App,
    /// The data source.
    pub feed: Feed,
}

/// The empty frame of a scenario (name, seed, duration, queues).
fn skeleton(loaded: &LoadedScenario) -> Report {
    let scenario = &loaded.scenario;
    Report {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        duration_ns: scenario.duration.0,
        queues: scenario.queues,
        ..Report::default()
    }
}

impl Session {
    /// Run `loaded` live with frames every `interval_ns` (None: [`feed::default_interval`]).
    pub fn live(loaded: &LoadedScenario, options: RunOptions, interval_ns: Option<TimeNs>) -> Self {
        let interval =
            interval_ns.unwrap_or_else(|| feed::default_interval(loaded.scenario.duration.0));
        let app = App::new(Source::Live, skeleton(loaded), interval);
        let feed = Feed::Live(Box::new(LiveFeed::start(loaded, options, interval)));
        Self { app, feed }
    }

    /// Replay a finished run's report.
    pub fn replay(report: Report) -> Self {
        let feed = ReplayFeed::new(report);
        Self {
            app: feed.app(),
            feed: Feed::Replay(Box::new(feed)),
        }
    }

    /// Handle one input event.
    pub fn handle(&mut self, input: Input) {
        if let Input::Key(key) = input {
            self.app.on_key(key);
        }
    }

    /// Let `wall` of real time pass, then show what the source has up to the clock.
    pub fn tick(&mut self, wall: Duration, wait: Wait) -> anyhow::Result<()> {
        self.app.advance(wall);
        match &mut self.feed {
            Feed::Live(live) => live.pull(&mut self.app, wait),
            Feed::Replay(replay) => {
                replay.pull(&mut self.app);
                Ok(())
            }
        }
    }

    /// Draw the model.
    pub fn draw<B: Backend>(&self, terminal: &mut Terminal<B>) -> anyhow::Result<()>
    where
        B::Error: Send + Sync + 'static,
    {
        terminal.draw(|frame| view::draw(frame, &self.app))?;
        Ok(())
    }

    /// The finished run of a live session (lets it finish at full speed first).
    pub fn finish(self) -> anyhow::Result<Option<RunOutput>> {
        match self.feed {
            Feed::Live(live) => live.finish().map(Some),
            Feed::Replay(_) => Ok(None),
        }
    }

    fn set_speed(&mut self, speed: f64) {
        let exponent = speed.max(f64::MIN_POSITIVE).log2().round() as i32;
        self.app.speed_exponent = exponent.clamp(SPEED_EXPONENT_MIN, SPEED_EXPONENT_MAX);
    }
}

/// A crossterm key event as a [`Key`] (Ctrl-C is `q`).
pub fn key_of(event: KeyEvent) -> Option<Key> {
    if event.kind == KeyEventKind::Release {
        return None;
    }
    if event.modifiers.contains(KeyModifiers::CONTROL) && event.code == KeyCode::Char('c') {
        return Some(Key::Char('q'));
    }
    Some(match event.code {
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        _ => return None,
    })
}

/// Run the session on the real terminal until the user quits; the terminal is restored
/// whatever happens.
pub fn interact(session: &mut Session) -> anyhow::Result<()> {
    let mut guard = term::TerminalGuard::enter()?;
    let mut last = Instant::now();
    while !session.app.quit {
        session.draw(&mut guard.terminal)?;
        if event::poll(REFRESH)? {
            let input = match event::read()? {
                Event::Key(key) => key_of(key).map(Input::Key),
                Event::Resize(..) => Some(Input::Resize),
                _ => None,
            };
            if let Some(input) = input {
                session.handle(input);
            }
        }
        let now = Instant::now();
        session.tick(now - last, Wait::No)?;
        last = now;
    }
    drop(guard);
    Ok(())
}

/// `sim run SCENARIO --tui`: run with the live view, then hand back the finished run (the
/// caller writes the report as usual).
pub fn run_live(loaded: &LoadedScenario, options: RunOptions) -> anyhow::Result<RunOutput> {
    let mut session = Session::live(loaded, options, None);
    interact(&mut session)?;
    if !session.app.finished {
        eprintln!("finishing the run at full speed…");
    }
    session.finish()?.context("a live session has a run")
}

/// The `sim tui` command.
pub fn run(args: &TuiArgs) -> anyhow::Result<ExitCode> {
    let is_report = args.path.extension().is_some_and(|e| e == "json");
    let mut session = if is_report {
        let text = std::fs::read_to_string(&args.path)
            .with_context(|| format!("cannot read {}", args.path.display()))?;
        let view = crate::report::from_report_json(&text)
            .with_context(|| format!("{} is not a report.json", args.path.display()))?;
        Session::replay(view)
    } else {
        let mut loaded = scenario::load(&args.path)?;
        if let Some(seed) = args.seed {
            loaded.scenario.seed = seed;
        }
        if let Some(duration) = args.duration {
            loaded.scenario.duration = scenario::DurationNs(duration);
        }
        let options = RunOptions {
            threads: 1,
            collect: Collect::default(),
        };
        Session::live(&loaded, options, args.interval)
    };
    session.set_speed(args.speed);
    session.app.paused = args.paused;
    interact(&mut session)?;
    print!("{}", session.app.summary());
    session.finish()?;
    Ok(ExitCode::SUCCESS)
}
