//! Determinism: every bundled scenario run twice at one thread and once at two threads (the
//! shared-state ones also at four) gives byte-identical deterministic reports, emitted
//! frames and director/NAT results; on a mismatch the first differing per-packet record
//! (the first divergent event) is named.

use std::path::Path;

use sim::engine::{Collect, PacketLine};
use sim::run::{RunOptions, RunOutput, run_scenario};
use sim::scenario::{self, DurationNs};

const SCENARIOS: [&str; 8] = [
    "synflood",
    "udpflood",
    "replay-real",
    "flows-doc",
    "multiport-fwmark",
    "nat-masquerade",
    "failover",
    "faults",
];

fn run(name: &str, threads: usize) -> RunOutput {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/{name}.toml"));
    let mut loaded = scenario::load(&path).unwrap();
    loaded.scenario.duration = DurationNs(loaded.scenario.duration.0.min(150_000_000));
    let options = RunOptions {
        threads,
        collect: Collect {
            records: true,
            emitted: true,
        },
    };
    run_scenario(&loaded, options, &|_| {}).unwrap()
}

fn describe(line: &PacketLine) -> String {
    let m = &line.meta;
    format!(
        "t={}ns queue={} {:?}:{:?} -> {:?}:{:?} flags={:#04x} -> {:?}",
        line.time, line.queue, m.src, m.sport, m.dst, m.dport, m.tcp_flags, line.outcome.verdict
    )
}

fn first_difference(a: &RunOutput, b: &RunOutput) -> String {
    let records = a.merged.records.iter().zip(&b.merged.records).enumerate();
    for (index, (x, y)) in records {
        if x.time != y.time || x.meta != y.meta || x.outcome != y.outcome {
            return format!("packet {index}: {} vs {}", describe(x), describe(y));
        }
    }
    format!(
        "record counts {} vs {}",
        a.merged.records.len(),
        b.merged.records.len()
    )
}

fn assert_same(name: &str, what: &str, a: &RunOutput, b: &RunOutput) {
    let (left, right) = (
        sim::report::deterministic_json(&a.report),
        sim::report::deterministic_json(&b.report),
    );
    let shared_same =
        a.merged.connections == b.merged.connections && a.merged.translated == b.merged.translated;
    if left != right || a.merged.emitted != b.merged.emitted || !shared_same {
        panic!(
            "{name}: {what} differ; first divergent event: {}",
            first_difference(a, b)
        );
    }
}

#[test]
fn runs_are_identical_across_repeats_and_thread_counts() {
    for name in SCENARIOS {
        let first = run(name, 1);
        let again = run(name, 1);
        let parallel = run(name, 2);
        assert_same(name, "two runs at 1 thread", &first, &again);
        assert_same(name, "1 and 2 threads", &first, &parallel);
    }
}

/// The scenarios whose queues share a director (and NAT): also at 4 threads, and the
/// shared stages' own results (connections, translated SYNs) too.
#[test]
fn shared_state_runs_are_identical_at_1_2_and_4_threads() {
    for name in ["multiport-fwmark", "nat-masquerade", "failover"] {
        let first = run(name, 1);
        assert!(!first.merged.connections.is_empty(), "{name}");
        for threads in [2, 4] {
            let other = run(name, threads);
            assert_same(name, &format!("1 and {threads} threads"), &first, &other);
        }
    }
}

#[test]
fn a_different_seed_changes_the_flood() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/udpflood.toml");
    let mut loaded = scenario::load(&path).unwrap();
    loaded.scenario.duration = DurationNs(50_000_000);
    let options = RunOptions {
        threads: 1,
        collect: Collect {
            records: true,
            emitted: false,
        },
    };
    let a = run_scenario(&loaded, options, &|_| {}).unwrap();
    loaded.scenario.seed += 1;
    let b = run_scenario(&loaded, options, &|_| {}).unwrap();
    assert_ne!(
        sim::report::deterministic_json(&a.report),
        sim::report::deterministic_json(&b.report)
    );
}
