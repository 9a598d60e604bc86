//! The whole TUI (model, data source, view) driven on ratatui's `TestBackend` with scripted
//! keys and virtual time steps; frames snapshotted at several sizes, 80×24 included.

use std::path::Path;
use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use sim::cli::tui::app::{App, DecisionSort, FlowSort, Key, Panel};
use sim::cli::tui::feed::Wait;
use sim::cli::tui::{Input, Session};
use sim::engine::Collect;
use sim::report;
use sim::run::{RunOptions, run_scenario};
use sim::scenario::{self, DurationNs, LoadedScenario};

fn load(name: &str) -> LoadedScenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name);
    scenario::load(&path).expect("bundled scenario loads")
}

fn options() -> RunOptions {
    RunOptions {
        threads: 1,
        collect: Collect::default(),
    }
}

/// The screen as text, one line per row, trailing blanks trimmed.
fn screen(session: &Session, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    session.draw(&mut terminal).unwrap();
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..height {
        let line: String = (0..width).map(|x| buffer[(x, y)].symbol()).collect();
        text += line.trim_end();
        text.push('\n');
    }
    text
}

fn keys(session: &mut Session, keys: &[Key]) {
    for key in keys {
        session.handle(Input::Key(*key));
    }
}

fn tick(session: &mut Session, millis: u64) {
    session
        .tick(Duration::from_millis(millis), Wait::UntilTarget)
        .unwrap();
}

fn app(session: &Session) -> &App {
    &session.app
}

#[test]
fn live_synflood_pause_step_speed_panels_help_and_end() {
    let loaded = load("synflood.toml");
    let mut session = Session::live(&loaded, options(), None);
    insta::assert_snapshot!("live_synflood_start_120x40", screen(&session, 120, 40));
    tick(&mut session, 300);
    assert_eq!(app(&session).data_ns, 300_000_000);
    // synflood's flows (`web` directed, the rest denied) have hits: the TUI opens on them,
    // per-flow hits visible at 80×24 (the README's quick start).
    assert_eq!(app(&session).focus, Panel::Flows);
    insta::assert_snapshot!("live_synflood_300ms_120x40", screen(&session, 120, 40));
    let small = screen(&session, 80, 24);
    assert!(
        small
            .lines()
            .any(|l| l.contains("web") && l.contains("director")),
        "no per-flow hits at 80×24:\n{small}"
    );
    insta::assert_snapshot!("live_synflood_300ms_80x24", small);
    keys(&mut session, &[Key::Tab]);
    assert_eq!(app(&session).focus, Panel::Shield);

    keys(&mut session, &[Key::Char(' ')]);
    tick(&mut session, 1000);
    assert_eq!(
        app(&session).data_ns,
        300_000_000,
        "paused: the clock stands"
    );
    keys(&mut session, &[Key::Char('s')]);
    tick(&mut session, 0);
    keys(&mut session, &[Key::Char('.')]);
    tick(&mut session, 0);
    assert_eq!(app(&session).data_ns, 320_000_000, "two steps of 10 ms");

    keys(
        &mut session,
        &[Key::Char('+'), Key::Char('+'), Key::Char('o')],
    );
    assert_eq!(app(&session).focus, Panel::Shield);
    assert_eq!(app(&session).decision_sort, DecisionSort::Packets);
    insta::assert_snapshot!("live_synflood_shield_80x24", screen(&session, 80, 24));
    keys(&mut session, &[Key::Tab]);
    insta::assert_snapshot!("live_synflood_director_80x24", screen(&session, 80, 24));
    keys(&mut session, &[Key::Tab]);
    insta::assert_snapshot!("live_synflood_rates_100x30", screen(&session, 100, 30));
    keys(&mut session, &[Key::Char('?')]);
    insta::assert_snapshot!("live_synflood_help_80x24", screen(&session, 80, 24));

    keys(&mut session, &[Key::Esc, Key::Char(' ')]);
    tick(&mut session, 1000);
    assert!(app(&session).finished);
    assert_eq!(app(&session).data_ns, 1_000_000_000);
    insta::assert_snapshot!("live_synflood_end_160x48", screen(&session, 160, 48));
    insta::assert_snapshot!("live_synflood_end_summary", app(&session).summary());
    keys(&mut session, &[Key::Char('q')]);
    assert!(app(&session).quit);

    let last_frame = app(&session).view.clone();
    let live = session.finish().unwrap().expect("a live run");
    let plain = run_scenario(&loaded, options(), &|_| {}).unwrap();
    assert_eq!(
        report::deterministic_json(&live.report),
        report::deterministic_json(&plain.report),
        "observing the run does not change it"
    );
    assert_eq!(
        last_frame, plain.report,
        "the last frame is the final report"
    );
}

/// Flat out (the clock far ahead of the run), as a real terminal pulls: no waiting, a frame
/// asked once per refresh. Every interval still gives a sparkline sample, frames fall on
/// boundaries, and the last frame is the final report.
#[test]
fn live_full_speed_samples_every_interval_and_frames_per_refresh() {
    let loaded = load("synflood.toml");
    let mut session = Session::live(&loaded, options(), None);
    session.app.speed_exponent = sim::cli::tui::app::SPEED_EXPONENT_MAX;
    let mut frame_times = Vec::new();
    let mut pulls = 0;
    while !app(&session).finished {
        session.tick(Duration::from_millis(5), Wait::No).unwrap();
        pulls += 1;
        if frame_times.last() != Some(&app(&session).data_ns) {
            frame_times.push(app(&session).data_ns);
        }
        std::thread::sleep(Duration::from_millis(5));
        assert!(pulls < 100_000, "the run ends");
    }
    let interval = app(&session).interval_ns;
    assert!(frame_times.iter().all(|t| t % interval == 0));
    assert_eq!(frame_times.last(), Some(&1_000_000_000));
    assert!(app(&session).frames <= pulls, "at most one frame per pull");
    for verdict in 0..4 {
        assert_eq!(
            app(&session).history(verdict).len(),
            100,
            "one sample per 10 ms"
        );
    }
    let last_frame = app(&session).view.clone();
    let live = session.finish().unwrap().expect("a live run");
    assert_eq!(last_frame, live.report);
}

#[test]
fn live_flows_sort_filter_and_rule_drill_down() {
    let loaded = load("flows-doc.toml");
    let mut session = Session::live(&loaded, options(), None);
    tick(&mut session, 250);
    insta::assert_snapshot!("live_flows_250ms_120x36", screen(&session, 120, 36));
    keys(&mut session, &[Key::Char('o')]);
    assert_eq!(app(&session).flow_sort, FlowSort::Hits);
    keys(&mut session, &[Key::Enter]);
    insta::assert_snapshot!("live_flows_by_hits_drilled_80x24", screen(&session, 80, 24));
    keys(&mut session, &[Key::Enter, Key::Char('/'), Key::Char('s')]);
    insta::assert_snapshot!("live_flows_filter_typing_80x24", screen(&session, 80, 24));
    keys(
        &mut session,
        &[Key::Char('s'), Key::Enter, Key::Down, Key::Enter],
    );
    insta::assert_snapshot!(
        "live_flows_filtered_second_drilled_100x30",
        screen(&session, 100, 30)
    );
    insta::assert_snapshot!("live_flows_filtered_summary", app(&session).summary());
    keys(&mut session, &[Key::Esc]);
    assert!(app(&session).filter.is_empty());
    // Re-sorting keeps the highlight on the same flow, wherever the new order puts it.
    let selected = |session: &Session| {
        let lines = app(session).flow_lines();
        lines.into_iter().find(|l| l.selected).map(|l| l.name)
    };
    let before = selected(&session);
    for _ in 0..3 {
        keys(&mut session, &[Key::Char('o')]);
        assert_eq!(selected(&session), before, "{:?}", app(&session).flow_sort);
    }
    // At a small size the table scrolls with the selection: the last flow is in view.
    keys(&mut session, &[Key::Char('o')]);
    assert_eq!(app(&session).flow_sort, FlowSort::Hits);
    keys(&mut session, &[Key::Down; 10]);
    assert_eq!(selected(&session).as_deref(), Some("alltherest"));
    let small = screen(&session, 80, 10);
    assert!(small.contains("alltherest"), "{small}");
    insta::assert_snapshot!("live_flows_scrolled_to_the_last_80x10", small);
    keys(&mut session, &[Key::Char('q')]);
    session.finish().unwrap();
}

#[test]
fn replay_of_report_json_second_by_second() {
    let mut loaded = load("synflood.toml");
    loaded.scenario.duration = DurationNs(3_000_000_000);
    let output = run_scenario(&loaded, options(), &|_| {}).unwrap();
    let dir = std::env::temp_dir().join(format!("lbsim-tui-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.json");
    std::fs::write(&path, report::full_json(&output.report, &output.measured)).unwrap();
    let view = report::from_report_json(&std::fs::read_to_string(&path).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut without_plots = output.report.clone();
    without_plots.plots = Default::default();
    assert_eq!(
        view, without_plots,
        "report.json reads back as the report (but its plots)"
    );

    let mut session = Session::replay(view);
    insta::assert_snapshot!("replay_start_80x24", screen(&session, 80, 24));
    tick(&mut session, 1500);
    assert_eq!(
        app(&session).data_ns,
        1_000_000_000,
        "replays whole seconds"
    );
    keys(&mut session, &[Key::Tab]);
    insta::assert_snapshot!("replay_1s_120x40", screen(&session, 120, 40));
    keys(&mut session, &[Key::Char('+')]);
    tick(&mut session, 1000);
    assert!(app(&session).finished);
    insta::assert_snapshot!("replay_end_120x40", screen(&session, 120, 40));
    insta::assert_snapshot!("replay_end_summary", app(&session).summary());
}

/// `report.json` reads back as the report it was written from (the TUI replays it in the
/// report's own types), for the sections the synflood replay above does not have: directors
/// and timed events (failover), link faults (faults), the CPU model (cpu-ramp), NAT and
/// its table (nat-masquerade), the FTP helper (ftp-fwmark).
#[test]
fn report_json_reads_back_with_every_section() {
    let runs = [
        ("failover.toml", None),
        ("faults.toml", Some(700)),
        ("cpu-ramp.toml", Some(50)),
        ("nat-masquerade.toml", Some(100)),
        ("ftp-fwmark.toml", Some(300)),
    ];
    for (name, millis) in runs {
        let mut loaded = load(name);
        if let Some(millis) = millis {
            loaded.scenario.duration = DurationNs(millis * 1_000_000);
        }
        let output = run_scenario(&loaded, options(), &|_| {}).unwrap();
        let json = report::full_json(&output.report, &output.measured);
        let back = report::from_report_json(&json).unwrap();
        assert_eq!(
            report::deterministic_json(&back),
            report::deterministic_json(&output.report),
            "{name}"
        );
        let mut without_plots = output.report.clone();
        without_plots.plots = Default::default();
        assert_eq!(back, without_plots, "{name}");
    }
}
