//! What the live TUI costs the simulation: `synflood` run plain, with the TUI's model updates
//! (engine snapshots every frame interval, shard merge, report frame, `App::push_frame`) done
//! inline on the simulation thread, and with a 120×40 frame rendered on ratatui's
//! `TestBackend` at every frame as well (the real UI renders at most 10 times a second, on
//! its own thread). Prints the best of a few runs of each and the difference in percent.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use datapath::TimeNs;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sim::engine::{Collect, ShardSnapshot};
use sim::run::{RunOptions, run_scenario, run_scenario_observed};
use sim::scenario::{self, LoadedScenario};
use sim::tui::app::{App, ReportView, Source};
use sim::tui::feed::{Merger, default_interval};
use sim::tui::view;

const RUNS: usize = 3;

fn options() -> RunOptions {
    RunOptions {
        threads: 1,
        collect: Collect::default(),
    }
}

fn best_ns(mut run: impl FnMut()) -> u128 {
    (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_nanos()
        })
        .min()
        .unwrap_or(0)
}

fn observed(loaded: &LoadedScenario, interval: TimeNs, render: bool) -> u128 {
    best_ns(|| {
        let skeleton = ReportView {
            duration_ns: loaded.scenario.duration.0,
            ..ReportView::default()
        };
        let state = Mutex::new((
            Merger::new(loaded),
            App::new(Source::Live, skeleton, interval),
            Terminal::new(TestBackend::new(120, 40)).expect("test terminal"),
        ));
        let observer = |snapshot: ShardSnapshot| {
            let mut guard = state.lock().expect("not poisoned");
            let (merger, app, terminal) = &mut *guard;
            let frames = app.frames;
            merger.accept(app, snapshot).expect("merges");
            if render && app.frames > frames {
                terminal.draw(|f| view::draw(f, app)).expect("draws");
            }
        };
        run_scenario_observed(loaded, options(), &|_| {}, Some((interval, &observer)))
            .expect("runs");
    })
}

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/synflood.toml");
    let loaded = scenario::load(&path).expect("synflood loads");
    let interval = default_interval(loaded.scenario.duration.0);
    let plain = best_ns(|| {
        run_scenario(&loaded, options(), &|_| {}).expect("runs");
    });
    let snapshots = best_ns(|| {
        let observer = |snapshot: ShardSnapshot| drop(snapshot);
        run_scenario_observed(&loaded, options(), &|_| {}, Some((interval, &observer)))
            .expect("runs");
    });
    let model = observed(&loaded, interval, false);
    let rendered = observed(&loaded, interval, true);
    let percent = |ns: u128| (ns as f64 / plain as f64 - 1.0) * 100.0;
    println!(
        "synflood, frames every {} ms of virtual time, best of {RUNS}:",
        interval / 1_000_000
    );
    println!(
        "  plain run                         {:>8.1} ms",
        plain as f64 / 1e6
    );
    println!(
        "  + engine snapshots only           {:>8.1} ms  ({:+.2}%)",
        snapshots as f64 / 1e6,
        percent(snapshots)
    );
    println!(
        "  + model updates                   {:>8.1} ms  ({:+.2}%)",
        model as f64 / 1e6,
        percent(model)
    );
    println!(
        "  + model updates + 120x40 render   {:>8.1} ms  ({:+.2}%)",
        rendered as f64 / 1e6,
        percent(rendered)
    );
}
