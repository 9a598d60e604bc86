//! Link faults: duplication, reordering and corruption (parts per million, seeded per link
//! like loss), from a link's configuration and from timed `link` events. Each fault is
//! counted, every frame still ends in exactly one counted outcome (duplicates add frames;
//! corrupted frames are processed and counted invalid by the pipeline), and runs with faults
//! are deterministic across repeats and thread counts.

use std::path::Path;

use sim::engine::Collect;
use sim::run::{RunOptions, RunOutput, run_scenario};

/// A flood of exactly 1000 packets, one every µs, over a 1 ms link with `LINK_FAULTS`.
const FLOOD: &str = r#"
name = "faults"
seed = 11
duration = "20ms"
queues = 2

[topology]
interfaces = ["outside", "inside"]

[[topology.network]]
name = "internet"
prefix = "0.0.0.0/0"
iface = "outside"
link = { latency = "1ms" LINK_FAULTS }

[[traffic]]
kind = "udp_flood"
from = "internet"
rate = "1M/s"
src = "198.18.0.0/15"
dst = "192.0.2.10:53"
payload = 32
stop = "1ms"
"#;

fn scenario(link_faults: &str, extra: &str) -> sim::scenario::LoadedScenario {
    let text = FLOOD.replace("LINK_FAULTS", link_faults) + extra;
    sim::scenario::parse(Path::new("faults.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

fn run(loaded: &sim::scenario::LoadedScenario, threads: usize) -> RunOutput {
    let options = RunOptions {
        threads,
        collect: Collect {
            records: true,
            emitted: false,
        },
    };
    run_scenario(loaded, options, &|_| {}).unwrap()
}

/// Runs at 1 thread twice and at 2 threads agree byte for byte; returns the first.
fn deterministic(loaded: &sim::scenario::LoadedScenario) -> RunOutput {
    let first = run(loaded, 1);
    let json = sim::report::deterministic_json(&first.report);
    assert_eq!(
        json,
        sim::report::deterministic_json(&run(loaded, 1).report)
    );
    assert_eq!(
        json,
        sim::report::deterministic_json(&run(loaded, 2).report)
    );
    assert_eq!(first.report.totals.frame_imbalance(), Some(0));
    first
}

#[test]
fn duplicated_frames_are_extra_frames_with_their_own_outcome() {
    let output = deterministic(&scenario(", duplicate_ppm = 250000", ""));
    let totals = &output.report.totals;
    assert_eq!(totals.sent, 1000);
    // Both directions duplicate: the flood's frames on their way in (each copy processed
    // again) and what the pipeline emits on its way back (each copy delivered again).
    let inbound = totals.processed - totals.sent;
    let outbound = totals.delivered - totals.emitted;
    assert_eq!(inbound + outbound, totals.link_duplicated);
    // ±5 standard deviations around 250 of 1000 (σ ≈ 13.7).
    assert!((180..=320).contains(&inbound), "{totals:?}");
    assert!(outbound > 0, "{totals:?}");
}

#[test]
fn reordered_frames_are_held_back_and_overtaken() {
    let loaded = scenario(", reorder_ppm = 100000, reorder_delay = \"2500ns\"", "");
    let output = deterministic(&loaded);
    let totals = &output.report.totals;
    // 10% of 2000 frames (1000 in, 1000 back), ±5 σ.
    assert!((130..=270).contains(&totals.link_reordered), "{totals:?}");
    // Sent on a 1 µs grid over a 1 ms link: on time arrivals fall on the grid, held-back
    // ones 2.5 µs later (half-way between two later frames that overtook them).
    let records = &output.merged.records;
    let off_grid = records.iter().filter(|r| r.time % 1000 == 500).count();
    let reordered_inbound = off_grid as u64;
    assert!(reordered_inbound > 0 && reordered_inbound <= totals.link_reordered);
    let times: Vec<u64> = records.iter().map(|r| r.time).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "processed in time order"
    );
    assert_eq!(totals.processed, 1000, "reordering loses nothing");
}

#[test]
fn corrupted_frames_are_processed_and_counted_invalid() {
    let output = deterministic(&scenario(", corrupt_ppm = 1000000", ""));
    let totals = &output.report.totals;
    assert_eq!(totals.processed, 1000);
    assert!(totals.link_corrupted >= 1000, "{totals:?}");
    let invalid: u64 = output.report.pipeline.invalid.values().sum();
    assert_eq!(
        invalid, 1000,
        "every flipped bit of an IP packet fails a check: {:?}",
        output.report.pipeline.invalid
    );
}

#[test]
fn link_events_switch_faults_on_and_off() {
    let events = r#"
[[events]]
kind = "link"
at = "1400us"
host = "internet"
duplicate_ppm = 1000000

[[events]]
kind = "link"
at = "1600us"
host = "internet"
duplicate_ppm = 0
"#;
    let output = deterministic(&scenario("", events));
    let totals = &output.report.totals;
    // Only frames arriving from the pipeline during [1.4 ms, 1.6 ms) cross the link back
    // while it duplicates everything: about 200 of them (the flood reaches the appliance
    // during [1 ms, 2 ms)); none of the flood's own frames (sent before 1 ms).
    assert_eq!(totals.processed, 1000);
    assert!((150..=250).contains(&totals.link_duplicated), "{totals:?}");
    assert_eq!(totals.delivered, totals.emitted + totals.link_duplicated);
    let text = sim::report::deterministic_json(&output.report);
    assert!(
        text.contains("\"duplicate_ppm\": 1000000"),
        "the event log shows the change"
    );
}

#[test]
fn out_of_range_fault_probabilities_are_rejected_with_their_location() {
    let text = FLOOD.replace("LINK_FAULTS", ", corrupt_ppm = 1000001");
    let error = sim::scenario::parse(Path::new("faults.toml"), &text).unwrap_err();
    assert_eq!(
        error.to_string(),
        "faults.toml:14:42: topology.network[0].link.corrupt_ppm: `1000001`: corrupt_ppm 1000001 is above 1000000 (parts per million)"
    );
}
