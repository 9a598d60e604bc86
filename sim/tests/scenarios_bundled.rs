//! Every bundled scenario loads and runs (shortened to a few hundred virtual ms so debug
//! test runs stay quick); the deterministic part of its report is a snapshot.

use std::path::{Path, PathBuf};

use sim::engine::Collect;
use sim::run::{RunOptions, run_scenario};
use sim::scenario::{self, DurationNs};

/// Scenarios bundled in `scenarios/`.
pub const BUNDLED: [&str; 9] = [
    "synflood",
    "udpflood",
    "replay-real",
    "flows-doc",
    "multiport-fwmark",
    "nat-masquerade",
    "failover",
    "faults",
    "ipvs-schedulers",
];

fn path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{name}.toml"))
}

#[test]
fn bundled_scenarios_run_and_match_their_snapshots() {
    for name in BUNDLED {
        let mut loaded = scenario::load(&path(name)).unwrap_or_else(|e| panic!("{e}"));
        loaded.scenario.duration = DurationNs(loaded.scenario.duration.0.min(250_000_000));
        let options = RunOptions {
            threads: 2,
            collect: Collect::default(),
        };
        let output = run_scenario(&loaded, options, &|_| {}).unwrap();
        assert!(
            output.report.totals.processed > 0,
            "{name} processed nothing"
        );
        insta::assert_snapshot!(
            format!("bundled_{name}"),
            sim::report::markdown(&output.report, None)
        );
    }
}

#[test]
fn full_length_synflood_keeps_its_expectations() {
    let loaded = scenario::load(&path("synflood")).unwrap();
    let expect = &loaded.scenario.expect;
    // The SYN-cookie acceptance check; it holds once the shield is in the pipeline.
    assert_eq!(expect.legit_success_ratio_min, Some(0.99));
}
