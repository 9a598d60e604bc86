//! What the live TUI costs the simulation: `synflood` (5 s of virtual time by default) run
//! flat out
//! (a) plain, with one thread per queue as the TUI uses;
//! (b) under a live TUI session at full speed, its model fed at the default refresh rate
//!     ([`sim::cli::tui::REFRESH`] of wall time): the shards send counters every interval and full
//!     results once per refresh, the UI thread merges them and builds a frame per refresh;
//! (c) as (b), plus drawing the screen (120×40) on ratatui's `TestBackend` every refresh.
//!
//! The figure is the simulation's own wall time (`RunOutput::measured`, from the first event
//! to the last shard's end), best of a few runs; the UI thread competes with the shards for
//! the cores, so its work shows there. Environment: `LBSIM_TUI_BENCH_SECONDS` (virtual
//! duration), `LBSIM_TUI_BENCH_RUNS`, `LBSIM_TUI_BENCH_REFRESH_MS` (e.g. scale the refresh up
//! under callgrind, which runs ~50× slower) and `LBSIM_TUI_BENCH_ONLY=plain|model|render`
//! (one case, for instruction counts). Instructions, the figure to trust on a busy machine:
//! `LBSIM_TUI_BENCH_SECONDS=2 LBSIM_TUI_BENCH_RUNS=1 LBSIM_TUI_BENCH_ONLY=model
//! LBSIM_TUI_BENCH_REFRESH_MS=4000 valgrind --tool=callgrind target/release/deps/tui-…`
//! (4000 ms under callgrind gives about as many refreshes per run as 100 ms natively; the
//! case prints how many frames it showed).

use std::path::Path;
use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sim::cli::tui::app::SPEED_EXPONENT_MAX;
use sim::cli::tui::feed::Wait;
use sim::cli::tui::{REFRESH, Session};
use sim::engine::Collect;
use sim::run::{RunOptions, RunOutput, run_scenario};
use sim::scenario::{self, DurationNs, LoadedScenario};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn options(loaded: &LoadedScenario) -> RunOptions {
    RunOptions {
        threads: usize::from(loaded.scenario.queues),
        collect: Collect::default(),
    }
}

/// A live session at full speed, refreshed every `refresh` of wall time until the run ends.
/// Returns the run and the frames the model showed.
fn live(loaded: &LoadedScenario, refresh: Duration, render: bool) -> (RunOutput, u64) {
    let mut session = Session::live(loaded, options(loaded), None);
    session.app.speed_exponent = SPEED_EXPONENT_MAX;
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).expect("test terminal");
    // The first tick moves the clock one refresh on, so the run starts at once.
    let mut last = Instant::now()
        .checked_sub(refresh)
        .unwrap_or_else(Instant::now);
    loop {
        let now = Instant::now();
        session.tick(now - last, Wait::No).expect("pulls");
        last = now;
        if render {
            session.draw(&mut terminal).expect("draws");
        }
        if session.app.finished {
            break;
        }
        std::thread::sleep(refresh.saturating_sub(last.elapsed()));
    }
    let frames = session.app.frames;
    (session.finish().expect("runs").expect("a live run"), frames)
}

fn best(runs: u64, mut run: impl FnMut() -> (RunOutput, u64)) -> (u64, u64) {
    (0..runs.max(1))
        .map(|_| {
            let (output, frames) = run();
            (output.measured.wall_ns, frames)
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/synflood.toml");
    let mut loaded = scenario::load(&path).expect("synflood loads");
    let seconds = env_number("LBSIM_TUI_BENCH_SECONDS", 5);
    loaded.scenario.duration = DurationNs(seconds * 1_000_000_000);
    let runs = env_number("LBSIM_TUI_BENCH_RUNS", 5);
    let refresh_ms = env_number("LBSIM_TUI_BENCH_REFRESH_MS", REFRESH.as_millis() as u64);
    let refresh = Duration::from_millis(refresh_ms);
    let only = std::env::var("LBSIM_TUI_BENCH_ONLY").unwrap_or_default();
    let wanted = |case: &str| only.is_empty() || only == case;
    println!(
        "synflood {seconds} s, {} queues, refresh every {refresh_ms} ms, best of {runs}:",
        loaded.scenario.queues
    );
    let mut plain = None;
    if wanted("plain") {
        let (ns, _) = best(runs, || {
            (
                run_scenario(&loaded, options(&loaded), &|_| {}).expect("runs"),
                0,
            )
        });
        println!(
            "  (a) plain run                  {:>9.1} ms",
            ns as f64 / 1e6
        );
        plain = Some(ns);
    }
    for (case, render, label) in [
        ("model", false, "(b) + live model          "),
        ("render", true, "(c) + model + 120x40 draw "),
    ] {
        if !wanted(case) {
            continue;
        }
        let (ns, frames) = best(runs, || live(&loaded, refresh, render));
        let ratio = plain.map_or(String::new(), |plain| {
            format!(
                "  throughput {:.3} of plain ({:+.2}%)",
                plain as f64 / ns as f64,
                (plain as f64 / ns as f64 - 1.0) * 100.0
            )
        });
        println!(
            "  {label}     {:>9.1} ms  {frames} frames{ratio}",
            ns as f64 / 1e6
        );
    }
}
