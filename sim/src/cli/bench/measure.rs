//! Timing a [`Workload`]: one untimed pass that checks every frame's outcome (and warms
//! caches and tables), then `repetitions` timed repetitions of `packets` packets each; the
//! figure is the median repetition. The wall clock is read here, around whole passes,
//! never inside the datapath.
//!
//! Untimed: building and priming pipelines (for `fresh` workloads, before every pass) and
//! copying the pass's frames into the owned buffers [`Pipeline::process`] consumes (the
//! buffers the previous pass gave back). Timed: `process` itself, and taking back the
//! buffers of what it emitted or consumed, as the simulator and `sim replay` do.
//!
//! [`counted_pass`] and [`counted_parse`] are the loops the callgrind check counts
//! (`--toggle-collect`), kept out of line so their instructions are attributed to them.

use std::hint::black_box;
use std::io::Sink;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use datapath::packet::{LinkType, PacketMeta, ParseOptions, parse_into};
use datapath::pipeline::{Pipeline, PipelineCounters};
use datapath::verdict::Verdict;

use super::workloads::{
    BenchFrame, Body, PACKET_SPACING_NS, PipelineWorkload, Workload, temp_path, write_pcap,
};

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Packets per timed repetition (rounded up to whole passes).
    pub packets: usize,
    /// Timed repetitions; the median is reported.
    pub repetitions: usize,
}

/// One workload's timing.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Packets per repetition.
    pub packets: usize,
    /// Median repetition, ns per packet.
    pub ns_per_packet: f64,
    /// Fastest repetition, ns per packet.
    pub min_ns_per_packet: f64,
    /// Slowest repetition, ns per packet.
    pub max_ns_per_packet: f64,
}

impl Measurement {
    /// Millions of packets per second at the median.
    pub fn mpps(&self) -> f64 {
        1_000.0 / self.ns_per_packet
    }

    /// From per-repetition (elapsed, packets).
    pub fn from_repetitions(packets: usize, repetitions: &[(Duration, usize)]) -> Self {
        let mut per_packet: Vec<f64> = repetitions
            .iter()
            .map(|(elapsed, count)| elapsed.as_nanos() as f64 / (*count).max(1) as f64)
            .collect();
        per_packet.sort_by(f64::total_cmp);
        Self {
            packets,
            ns_per_packet: median(&per_packet),
            min_ns_per_packet: per_packet.first().copied().unwrap_or(f64::NAN),
            max_ns_per_packet: per_packet.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// Median of sorted values (mean of the middle two for an even count).
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Time a workload.
pub fn measure(workload: &Workload, settings: Settings) -> anyhow::Result<Measurement> {
    ensure!(settings.repetitions > 0, "at least one repetition");
    let passes = settings.packets.div_ceil(workload.pass_len().max(1)).max(1);
    match &workload.body {
        Body::Parse(frames) => Ok(measure_parse(frames, passes, settings.repetitions)),
        Body::Pipeline(work) => measure_pipeline(work, passes, settings.repetitions),
        Body::ReplayFile(work) => measure_replay(&workload.name, work, passes, settings),
    }
}

/// Parse every frame once into a reused description (counted by callgrind).
#[inline(never)]
pub fn counted_parse(frames: &[Vec<u8>], meta: &mut PacketMeta) {
    let options = ParseOptions::default();
    for frame in frames {
        parse_into(
            &options,
            LinkType::Ethernet,
            black_box(frame),
            frame.len() as u32,
            0,
            meta,
        );
        black_box(&*meta);
    }
}

fn measure_parse(frames: &[Vec<u8>], passes: usize, repetitions: usize) -> Measurement {
    let mut meta = PacketMeta::default();
    counted_parse(frames, &mut meta);
    let timed: Vec<(Duration, usize)> = (0..repetitions)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..passes {
                counted_parse(frames, &mut meta);
            }
            (started.elapsed(), passes * frames.len())
        })
        .collect();
    Measurement::from_repetitions(passes * frames.len(), &timed)
}

/// Owned copies of a pass's frames, ready for [`counted_pass`].
pub fn owned(frames: &[BenchFrame]) -> Vec<(Vec<u8>, u32)> {
    frames
        .iter()
        .map(|f| (f.frame.clone(), f.frame.len() as u32))
        .collect()
}

/// Owned copies of a pass's frames in the buffers of `spares` (then fresh ones).
pub fn owned_reusing(frames: &[BenchFrame], spares: &mut Vec<Vec<u8>>) -> Vec<(Vec<u8>, u32)> {
    frames
        .iter()
        .map(|f| {
            let mut buffer = spares.pop().unwrap_or_default();
            buffer.clear();
            buffer.extend_from_slice(&f.frame);
            (buffer, f.frame.len() as u32)
        })
        .collect()
}

/// Process one pass of frames from virtual time `*now` on (counted by callgrind), the way
/// the simulator drives the pipeline: the buffers of what it emitted or consumed are taken
/// back (returned, for the next pass's frames) rather than freed, so no packet allocates
/// or frees. The pipeline must keep spare frames ([`PipelineWorkload::ready`] sets it).
#[inline(never)]
pub fn counted_pass(
    pipeline: &mut Pipeline,
    now: &mut u64,
    batch: Vec<(Vec<u8>, u32)>,
) -> Vec<Vec<u8>> {
    let mut returned = Vec::with_capacity(batch.len() + 16);
    let mut emitted = Vec::new();
    for (frame, wire_len) in batch {
        black_box(pipeline.process(*now, 0, LinkType::Ethernet, frame, wire_len));
        *now += PACKET_SPACING_NS;
        if let Some(spare) = pipeline.take_spare_frame() {
            returned.push(spare);
        }
        pipeline.drain_emitted_into(&mut emitted);
        returned.extend(emitted.drain(..).map(|sent| sent.frame));
    }
    returned
}

/// Run one pass checking every frame's outcome; the pipeline is left as it ends.
pub fn checked_pass(
    pipeline: &mut Pipeline,
    now: &mut u64,
    frames: &[BenchFrame],
) -> anyhow::Result<()> {
    for (index, bench) in frames.iter().enumerate() {
        let wire_len = bench.frame.len() as u32;
        let outcome = pipeline.process(*now, 0, LinkType::Ethernet, bench.frame.clone(), wire_len);
        *now += PACKET_SPACING_NS;
        if (outcome.stage, outcome.verdict) != (bench.expect.stage, bench.expect.verdict) {
            bail!(
                "frame {index} decided {:?} {:?}, the workload expects {:?} {:?}",
                outcome.stage,
                outcome.verdict,
                bench.expect.stage,
                bench.expect.verdict
            );
        }
    }
    Ok(())
}

/// A pipeline ready for a timed pass: the checked one for the first pass of a workload
/// that keeps state, a freshly built one otherwise.
pub struct Runner<'a> {
    work: &'a PipelineWorkload,
    pipeline: Pipeline,
    now: u64,
    /// Buffers the last pass gave back, for the next pass's frames.
    spares: Vec<Vec<u8>>,
}

impl<'a> Runner<'a> {
    /// Build, prime and check one pass (untimed).
    pub fn new(work: &'a PipelineWorkload) -> anyhow::Result<Self> {
        let (mut pipeline, mut now) = work.ready()?;
        checked_pass(&mut pipeline, &mut now, &work.frames)?;
        Ok(Self {
            work,
            pipeline,
            now,
            spares: Vec::new(),
        })
    }

    /// Prepare the next pass (untimed): a fresh pipeline when the workload needs one.
    pub fn next_batch(&mut self) -> anyhow::Result<Vec<(Vec<u8>, u32)>> {
        if self.work.fresh {
            (self.pipeline, self.now) = self.work.ready()?;
        }
        Ok(owned_reusing(&self.work.frames, &mut self.spares))
    }

    /// Run one pass of `batch` (what callgrind counts).
    pub fn run(&mut self, batch: Vec<(Vec<u8>, u32)>) {
        self.spares = counted_pass(&mut self.pipeline, &mut self.now, batch);
    }
}

fn measure_pipeline(
    work: &PipelineWorkload,
    passes: usize,
    repetitions: usize,
) -> anyhow::Result<Measurement> {
    let mut runner = Runner::new(work)?;
    let mut timed = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        let mut elapsed = Duration::ZERO;
        for _ in 0..passes {
            let batch = runner.next_batch()?;
            let started = Instant::now();
            runner.run(batch);
            elapsed += started.elapsed();
        }
        timed.push((elapsed, passes * work.frames.len()));
    }
    Ok(Measurement::from_repetitions(
        passes * work.frames.len(),
        &timed,
    ))
}

/// Replay `path` through a freshly primed pipeline; the counters it added.
fn replay_once(work: &PipelineWorkload, path: &std::path::Path) -> anyhow::Result<(Duration, u64)> {
    let (mut pipeline, _) = work.ready()?;
    let before = pipeline.counters().clone();
    let started = Instant::now();
    let outcome = crate::cli::replay::replay_files(
        &[path.to_path_buf()],
        &ParseOptions::default(),
        Some(&mut pipeline),
        None::<&mut Sink>,
        0,
    )?;
    let elapsed = started.elapsed();
    check_replay_counters(work, &before, pipeline.counters(), outcome.summary.packets)?;
    Ok((elapsed, outcome.summary.packets))
}

/// Every verdict the replay added is one the frames expect, in the expected numbers.
fn check_replay_counters(
    work: &PipelineWorkload,
    before: &PipelineCounters,
    after: &PipelineCounters,
    packets: u64,
) -> anyhow::Result<()> {
    let copies = packets / work.frames.len().max(1) as u64;
    let mut expected = PipelineCounters::default();
    for bench in &work.frames {
        let (stage, kind) = (
            bench.expect.stage.index(),
            bench.expect.verdict.kind_index(),
        );
        expected.verdicts[stage][kind] += copies;
    }
    for (stage, (after, before)) in after.verdicts.iter().zip(&before.verdicts).enumerate() {
        for kind in 0..Verdict::KINDS.len() {
            let added = after[kind] - before[kind];
            ensure!(
                added == expected.verdicts[stage][kind],
                "replay: stage {stage} verdict {} decided {added} packets, expected {}",
                Verdict::KINDS[kind],
                expected.verdicts[stage][kind]
            );
        }
    }
    Ok(())
}

fn measure_replay(
    name: &str,
    work: &PipelineWorkload,
    copies: usize,
    settings: Settings,
) -> anyhow::Result<Measurement> {
    let path = temp_path(&format!("{name}.pcap"));
    let frames: Vec<BenchFrame> = (0..copies).flat_map(|_| work.frames.clone()).collect();
    write_pcap(&path, &frames)?;
    let result = (|| {
        replay_once(work, &path)?;
        let timed = (0..settings.repetitions)
            .map(|_| replay_once(work, &path).map(|(elapsed, n)| (elapsed, n as usize)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Measurement::from_repetitions(frames.len(), &timed))
    })();
    std::fs::remove_file(&path).ok();
    result
}
