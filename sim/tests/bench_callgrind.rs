//! The committed callgrind baseline: it parses, states a tolerance, and covers exactly the
//! key workloads, which are the ones `scripts/callgrind-check` runs and which exist.

use std::collections::BTreeSet;
use std::path::Path;

use sim::cli::bench::callgrind::{Baseline, KEY_WORKLOADS, Status, compare};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn the_baseline_covers_the_key_workloads_with_a_tolerance() {
    let text = std::fs::read_to_string(root().join("benches/callgrind-baseline.toml")).unwrap();
    let baseline: Baseline = toml::from_str(&text).unwrap();
    assert!(baseline.tolerance_percent > 0.0 && baseline.tolerance_percent <= 20.0);
    let names: BTreeSet<&str> = baseline.workloads.keys().map(String::as_str).collect();
    assert_eq!(names, KEY_WORKLOADS.into_iter().collect());
    assert!(
        baseline
            .workloads
            .values()
            .all(|v| v.is_finite() && *v > 0.0)
    );
    assert!(text.contains("scripts/callgrind-check --update"));
    // Measuring exactly the baseline passes.
    let same = compare(&baseline, &baseline.workloads);
    assert!(same.iter().all(|row| row.status == Status::Pass));
}

#[test]
fn the_script_runs_the_key_workloads_and_they_exist() {
    let script = std::fs::read_to_string(root().join("scripts/callgrind-check")).unwrap();
    let line = script
        .lines()
        .find(|line| line.starts_with("workloads=("))
        .expect("a workloads=(...) line");
    let listed: Vec<&str> = line
        .trim_start_matches("workloads=(")
        .trim_end_matches(')')
        .split_whitespace()
        .collect();
    assert_eq!(listed, KEY_WORKLOADS);
    for name in KEY_WORKLOADS {
        if let Some(scenario) = name.strip_prefix("engine_synflood") {
            // A whole scenario, not a per-packet workload: it must build.
            assert!(sim::cli::bench::compare::engine_scenario(64, scenario == "_cookies").is_ok());
            continue;
        }
        if name == "realtime_10g_1t" {
            // The bundled line-rate scenario, sized for a few packets.
            assert!(sim::cli::bench::realtime::linerate_scenario(64).is_ok());
            continue;
        }
        assert!(
            sim::cli::bench::workloads::workload(name)
                .unwrap()
                .is_some(),
            "{name}"
        );
    }
}
