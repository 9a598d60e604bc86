//! `realtime_10g` (2 threads) and `realtime_10g_1t` (1 thread): the bundled
//! `scenarios/linerate.toml` — a 10 Gbit/s line-rate spoofed SYN flood (14.88 Mpps) with SYN
//! cookies, smoltcp clients through the cookie proxy to a NAT director, 2 receive queues —
//! run whole through [`run_scenario`], timed by the wall clock a user waits.
//!
//! Figures: the **real-time factor** (virtual seconds simulated per wall second while the
//! simulation runs, from its first to its last progress report: 1.0 means it keeps up with
//! the 10G link; building the scenario — 300 client stacks, the shield's tables — is a fixed
//! cost that a short run would otherwise mostly measure), the same for the whole run, the
//! factor per CPU second of each thread (what a quiet machine would give: on a busy one the
//! wall clock also waits for a core), Mpps of packets the pipeline processed (whole runs),
//! and the resident memory the runs added at their peak (a flood of any length must run in
//! flat memory). The virtual duration is the one that carries about `--packets` flood packets
//! (never below [`MIN_DURATION_NS`]): `sim bench --workloads realtime_10g --packets
//! 148800000` simulates ten seconds of line rate.
//!
//! Not here: the scenario itself (`scenarios/linerate.toml`), per-packet workloads.

use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::measure::{Measurement, Settings};
use crate::engine::Collect;
use crate::run::{RunOptions, run_scenario};
use crate::scenario::{self, DurationNs, LoadedScenario};

/// The flood rate of `scenarios/linerate.toml`: 10 Gbit/s of minimum Ethernet frames.
pub const LINE_RATE_PPS: u64 = 14_880_000;
/// Shortest virtual duration a real-time run simulates, ns: twice the flood's 2 ms link
/// latency, so that even a `--quick` run processes flood packets (none arrive before 2 ms).
pub const MIN_DURATION_NS: u64 = 4_000_000;

/// What one real-time workload measured (the median run by simulation wall time).
#[derive(Clone, Debug)]
pub struct Realtime {
    /// Processed packets and wall-clock ns per packet (whole runs, setup included).
    pub measurement: Measurement,
    /// Virtual seconds simulated per wall second while simulating (from the first to the
    /// last progress report of the run: building the scenario and the report excluded).
    pub factor: f64,
    /// Virtual seconds per wall second of the whole run, setup and report included.
    pub whole_run_factor: f64,
    /// Virtual seconds per second of process CPU time divided by the threads: the factor
    /// with a core of its own per thread (on a busy machine the wall clock waits for cores).
    pub cpu_factor: Option<f64>,
    /// Virtual time simulated per run, ns.
    pub virtual_ns: u64,
    /// Simulation wall time of the median run.
    pub wall: Duration,
    /// Peak resident memory above the resident memory before the first run, bytes
    /// (`None` without `/proc/self/status`).
    pub rss_growth: Option<u64>,
    /// Whether the scenario's `[expect]` held in every run (`None`: the runs were shorter
    /// than the scenario's own duration, whose clients then cannot all finish).
    pub expect_passed: Option<bool>,
}

/// Wall clock of a run's simulation, from its progress reports (each shard reports the
/// virtual time it covered, in steps of about a millisecond).
#[derive(Default)]
struct SimulationClock {
    first: OnceLock<Instant>,
    /// Last report and the virtual time (summed over shards) reported after the first.
    last: Mutex<(Option<Instant>, u64)>,
}

impl SimulationClock {
    fn report(&self, virtual_ns: u64) {
        let now = Instant::now();
        let first = self.first.set(now).is_ok();
        if let Ok(mut last) = self.last.lock() {
            last.0 = Some(now);
            if !first {
                last.1 += virtual_ns;
            }
        }
    }

    /// Virtual ns per shard and wall time between the first and the last report.
    fn covered(&self, queues: u64) -> Option<(u64, Duration)> {
        let first = *self.first.get()?;
        let (last, virtual_ns) = *self.last.lock().ok()?;
        Some((virtual_ns / queues.max(1), last?.duration_since(first)))
    }
}

/// CPU time this process has used (all its threads, ended ones too), from
/// `/proc/self/stat` (clock ticks, usually 10 ms).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The bundled line-rate scenario with the virtual duration for about `packets` flood
/// packets (`0`: its own duration).
pub fn linerate_scenario(packets: usize) -> anyhow::Result<LoadedScenario> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/linerate.toml");
    let mut loaded = scenario::load(&path).with_context(|| format!("{}", path.display()))?;
    if packets > 0 {
        let duration = (packets as u64)
            .saturating_mul(1_000_000_000)
            .div_ceil(LINE_RATE_PPS)
            .max(MIN_DURATION_NS);
        loaded.scenario.duration = DurationNs(duration);
    }
    Ok(loaded)
}

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One run: the output, its whole wall time, and the simulation's (virtual ns, wall).
type OneRun = (crate::run::RunOutput, Duration, Option<(u64, Duration)>);

/// One run of `loaded` on `threads` threads ([`OneRun`]).
fn run_once(loaded: &LoadedScenario, threads: usize) -> anyhow::Result<OneRun> {
    let clock = SimulationClock::default();
    let options = RunOptions {
        threads,
        collect: Collect::default(),
    };
    let started = Instant::now();
    let output = run_scenario(loaded, options, &|ns| clock.report(ns))?;
    let queues = u64::from(loaded.scenario.queues);
    Ok((output, started.elapsed(), clock.covered(queues)))
}

/// Run the line-rate scenario on `threads` threads, `settings.repetitions` times.
pub fn realtime_10g(settings: Settings, threads: usize) -> anyhow::Result<Realtime> {
    let full_length = linerate_scenario(0)?.scenario.duration;
    let loaded = linerate_scenario(settings.packets)?;
    let virtual_ns = loaded.scenario.duration.0;
    // Reset the peak so that it is this workload's (best effort: an older peak only makes
    // the growth look larger).
    std::fs::write("/proc/self/clear_refs", "5").ok();
    let before = status_bytes("VmRSS:");
    let cpu_before = process_cpu();
    let (mut runs, mut simulated) = (Vec::new(), Vec::new());
    let mut expect_passed = true;
    for _ in 0..settings.repetitions.max(1) {
        let (output, whole, covered) = run_once(&loaded, threads)?;
        expect_passed &= output.report.passed;
        runs.push((whole, output.report.totals.processed as usize));
        let (covered_ns, wall) = covered.unwrap_or((virtual_ns, whole));
        simulated.push((covered_ns as f64 / wall.as_nanos().max(1) as f64, wall));
    }
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(a, b)| a.saturating_sub(b));
    let peak = status_bytes("VmHWM:");
    let measurement = Measurement::from_repetitions(runs[0].1, &runs);
    simulated.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (factor, wall) = simulated[simulated.len() / 2];
    let total_virtual = virtual_ns as f64 * runs.len() as f64;
    Ok(Realtime {
        factor,
        whole_run_factor: virtual_ns as f64 / measurement.ns_per_packet / runs[0].1 as f64,
        cpu_factor: cpu
            .filter(|c| !c.is_zero())
            .map(|c| total_virtual / (c.as_nanos() as f64 / threads as f64)),
        measurement,
        virtual_ns,
        wall,
        rss_growth: before.zip(peak).map(|(b, p)| p.saturating_sub(b)),
        expect_passed: (virtual_ns >= full_length.0).then_some(expect_passed),
    })
}

impl Realtime {
    /// What the table's last column says.
    pub fn note(&self, threads: usize) -> String {
        let rss = self.rss_growth.map_or("unknown".into(), |b| {
            format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
        });
        let cpu = self
            .cpu_factor
            .map_or("unknown".into(), |f| format!("{f:.2}x"));
        format!(
            "scenarios/linerate.toml on {threads} thread(s): {:.3} virtual s, simulated in \
             {:.3} wall s (median; setup excluded); whole run {:.2}x; per CPU second of each \
             thread {cpu}; peak RSS growth {rss}; [expect] {}",
            self.virtual_ns as f64 * 1e-9,
            self.wall.as_secs_f64(),
            self.whole_run_factor,
            match self.expect_passed {
                Some(true) => "passed",
                Some(false) => "FAILED",
                None => "not checked (shorter than the scenario's own duration)",
            }
        )
    }
}
