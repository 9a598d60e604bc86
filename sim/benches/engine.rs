//! Engine benchmark: a SYN flood from spoofed sources through the pipeline (engine, flood
//! generation, pipeline, routing), at 1 and 2 threads over the scenario's 2 receive queues,
//! and on one receive queue (one core's share of a NIC: no other queue's packets to skip).
//! Criterion reports packets per second (elements/s).

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sim::engine::Collect;
use sim::run::{RunOptions, run_scenario};

/// Packets per iteration: 2 Mpps of virtual traffic for 50 ms.
const PACKETS: u64 = 100_000;

fn synflood(c: &mut Criterion) {
    let text = sim::cli::bench::compare::flood_scenario_on(PACKETS as usize, 2, "");
    let loaded = sim::scenario::parse(Path::new("bench.toml"), &text).expect("valid scenario");
    let mut group = c.benchmark_group("engine_synflood");
    group.throughput(Throughput::Elements(PACKETS));
    group.sample_size(10);
    let mut one_queue = loaded.clone();
    one_queue.scenario.queues = 1;
    let cases = [
        ("queues_1_threads_1", &one_queue, 1),
        ("threads_1", &loaded, 1),
        ("threads_2", &loaded, 2),
    ];
    for (name, scenario, threads) in cases {
        let options = RunOptions {
            threads,
            collect: Collect::default(),
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let output = run_scenario(scenario, options, &|_| {}).expect("runs");
                assert_eq!(output.report.totals.processed, PACKETS);
                output.report.totals.processed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, synflood);
criterion_main!(benches);
