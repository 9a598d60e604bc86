//! Every per-packet `sim bench` workload as a criterion benchmark, from the same
//! definitions (`sim::cli::bench::workloads`): parse, shield (denylist drop, SYN → cookie, cookie
//! ACK → proxy), flows (10/100/1,000), new connections per scheduler, established NAT, the
//! mixed full pipeline, and pcap file replay through the full pipeline. Throughput is in
//! packets (criterion's elem/s; Mpps = elem/s / 1e6). Each workload's outcomes are checked
//! once before timing (`Runner::new`).
//!
//! Untimed per iteration: copying the pass's frames into the owned buffers
//! `Pipeline::process` consumes, and for workloads whose passes change state (new
//! connections, proxied sessions) building and priming a fresh pipeline.

use std::hint::black_box;
use std::io::Sink;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use datapath::packet::{PacketMeta, ParseOptions};
use sim::cli::bench::measure::{Runner, counted_parse, counted_pass, owned};
use sim::cli::bench::workloads::{
    BenchFrame, Body, PipelineWorkload, names, temp_path, workload, write_pcap,
};

/// Copies of the mixed pass in the replayed file.
const REPLAY_COPIES: usize = 16;

fn pipeline(criterion: &mut Criterion, name: &str, work: &PipelineWorkload) {
    Runner::new(work).expect("every frame decides as the workload expects");
    let mut group = criterion.benchmark_group("workload");
    group.throughput(Throughput::Elements(work.frames.len() as u64));
    if work.fresh {
        group.bench_function(name, |bencher| {
            bencher.iter_batched(
                || (work.ready().expect("pipeline"), owned(&work.frames)),
                |((mut pipeline, mut now), batch)| counted_pass(&mut pipeline, &mut now, batch),
                BatchSize::LargeInput,
            )
        });
    } else {
        let (mut pipeline, mut now) = work.ready().expect("pipeline");
        group.bench_function(name, |bencher| {
            bencher.iter_batched(
                || owned(&work.frames),
                |batch| counted_pass(&mut pipeline, &mut now, batch),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn parse(criterion: &mut Criterion, frames: &[Vec<u8>]) {
    let mut meta = PacketMeta::default();
    let mut group = criterion.benchmark_group("workload");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.bench_function("parse", |bencher| {
        bencher.iter(|| counted_parse(black_box(frames), &mut meta))
    });
    group.finish();
}

fn replay(criterion: &mut Criterion, work: &PipelineWorkload) {
    let path = temp_path("criterion-replay.pcap");
    let frames: Vec<BenchFrame> = (0..REPLAY_COPIES)
        .flat_map(|_| work.frames.clone())
        .collect();
    write_pcap(&path, &frames).expect("temporary pcap");
    let mut group = criterion.benchmark_group("workload");
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.sample_size(10);
    group.bench_function("replay_file", |bencher| {
        bencher.iter_batched(
            || work.ready().expect("pipeline").0,
            |mut pipeline| {
                let outcome = sim::cli::replay::replay_files(
                    std::slice::from_ref(&path),
                    &ParseOptions::default(),
                    Some(&mut pipeline),
                    None::<&mut Sink>,
                    0,
                )
                .expect("replay");
                assert_eq!(outcome.summary.packets, frames.len() as u64);
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
    std::fs::remove_file(path).ok();
}

fn workloads(criterion: &mut Criterion) {
    for name in names() {
        let Some(workload) = workload(&name).expect("workload definition") else {
            continue; // the whole-run comparisons (threads, kernel) are `sim bench` only
        };
        match &workload.body {
            Body::Parse(frames) => parse(criterion, frames),
            Body::Pipeline(work) => pipeline(criterion, &name, work),
            Body::ReplayFile(work) => replay(criterion, work),
        }
    }
}

criterion_group!(benches, workloads);
criterion_main!(benches);
