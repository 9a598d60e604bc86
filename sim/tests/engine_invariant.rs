//! Every frame of every bundled scenario ends in exactly one counted outcome: frames that
//! entered the simulation (sent by hosts, emitted by the pipeline) equal those that left it
//! (lost or tail-dropped on a link, processed, delivered, unroutable, not IP, in flight).

use std::path::Path;

#[test]
fn every_frame_of_every_bundled_scenario_is_accounted_for() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 7);
    for path in paths {
        let mut loaded = sim::scenario::load(&path).unwrap();
        // At most 250 ms each (the line-rate scenario's own 25 ms is 372 k packets already).
        let duration = loaded.scenario.duration.0.min(250_000_000);
        loaded.scenario.duration = sim::scenario::units::DurationNs(duration);
        let collect = sim::engine::Collect {
            records: false,
            emitted: false,
        };
        let options = sim::run::RunOptions {
            threads: 1,
            collect,
        };
        let output = sim::run::run_scenario(&loaded, options, &|_| {}).unwrap();
        let totals = &output.report.totals;
        assert_eq!(
            totals.frame_imbalance(),
            Some(0),
            "{}: {totals:?}",
            path.display()
        );
        let decided: u64 = output
            .report
            .pipeline
            .decisions
            .iter()
            .map(|d| d.packets)
            .sum();
        assert_eq!(
            decided,
            totals.processed,
            "{}: every processed packet has one decision",
            path.display()
        );
    }
}
