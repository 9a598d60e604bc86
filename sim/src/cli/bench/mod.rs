//! `sim bench`: run the benchmark workloads end to end in one process and print a table
//! (workload, packets, ns/packet, Mpps, target, met?) or, with `--json`, one JSON object
//! per line per workload. Figures are wall-clock medians of repeated passes on a shared
//! machine: for before/after claims use instruction counts (`scripts/callgrind-check`).
//!
//! - [`workloads`] — the packets and configured pipelines (shared with the criterion
//!   benches and the callgrind counter);
//! - [`measure`] — warm-up, repetitions, median;
//! - [`compare`] — `threads_2_vs_1`, `director_threads_2_vs_1` and `vs_kernel`, both sides in the same run, and the
//!   whole-scenario `engine_synflood` (per-core CPU time, as `sim run` measures it);
//! - [`realtime`] — `realtime_10g` / `realtime_10g_1t`: the line-rate scenario's real-time
//!   factor (virtual seconds per wall second) and memory growth;
//! - [`callgrind`] — the instruction-count baseline and its comparison.
//!
//! Not here: assertions on timings (there are none), the kernel runner (called, not owned).

pub mod callgrind;
pub mod compare;
pub mod measure;
pub mod realtime;
pub mod workloads;

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use serde::Serialize;

use measure::{Measurement, Settings};

/// Packets per timed repetition by default (`--quick`: [`QUICK_PACKETS`]).
pub const DEFAULT_PACKETS: usize = 1_000_000;
/// Packets per timed repetition with `--quick`.
pub const QUICK_PACKETS: usize = 20_000;
/// Timed repetitions by default (`--quick`: 2).
pub const DEFAULT_REPETITIONS: usize = 5;
/// `threads_2_vs_1` target: 2 threads at least this many times one.
pub const THREADS_TARGET_RATIO: f64 = 1.8;
/// `vs_kernel` target: lbsim at least this many times the kernel.
pub const KERNEL_TARGET_RATIO: f64 = 10.0;
/// `engine_synflood` target (issue #6): Mpps on one core for the whole simulated flood.
pub const ENGINE_TARGET_MPPS: f64 = 8.0;
/// `realtime_10g` target (issue #22): virtual seconds per wall second on 2 threads.
pub const REALTIME_TARGET_FACTOR: f64 = 1.0;

/// Arguments of `sim bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// One JSON object per line per workload instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Fewer packets and repetitions (a smoke run; figures are rough).
    #[arg(long)]
    pub quick: bool,
    /// Workloads to run (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Packets per timed repetition.
    #[arg(long)]
    pub packets: Option<usize>,
}

/// One row of the result: a workload's figures, or why it was skipped.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Row {
    /// Workload name.
    pub workload: String,
    /// Packets per timed repetition.
    pub packets: usize,
    /// Median ns per packet (`None` when skipped).
    pub ns_per_packet: Option<f64>,
    /// Millions of packets per second at the median (`None` when skipped).
    pub mpps: Option<f64>,
    /// Target, Mpps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_mpps: Option<f64>,
    /// Comparisons: the baseline side's Mpps (1 thread; the kernel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_mpps: Option<f64>,
    /// Comparisons: measured Mpps / baseline Mpps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Comparisons: target ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_ratio: Option<f64>,
    /// Whether the target is met (`None`: no target, or skipped).
    pub met: Option<bool>,
    /// Why the workload was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// What a comparison compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Real-time workloads: virtual seconds simulated per wall second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realtime_factor: Option<f64>,
    /// Real-time workloads: peak resident memory added by the runs, MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_growth_mib: Option<f64>,
}

impl Row {
    fn measured(workload: &str, measurement: &Measurement, target_mpps: Option<f64>) -> Self {
        let mpps = measurement.mpps();
        Self {
            workload: workload.to_string(),
            packets: measurement.packets,
            ns_per_packet: Some(measurement.ns_per_packet),
            mpps: Some(mpps),
            target_mpps,
            baseline_mpps: None,
            ratio: None,
            target_ratio: None,
            met: target_mpps.map(|target| mpps >= target),
            skipped: None,
            note: None,
            realtime_factor: None,
            rss_growth_mib: None,
        }
    }

    fn realtime(workload: &str, run: &realtime::Realtime, threads: usize) -> Self {
        let target = (threads == 2).then_some(REALTIME_TARGET_FACTOR);
        Self {
            ratio: Some(run.factor),
            target_ratio: target,
            met: target.map(|t| run.factor >= t),
            note: Some(run.note(threads)),
            realtime_factor: Some(run.factor),
            rss_growth_mib: run.rss_growth.map(|b| b as f64 / (1024.0 * 1024.0)),
            ..Self::measured(workload, &run.measurement, None)
        }
    }

    fn compared(workload: &str, side: &compare::SideBySide, target_ratio: f64) -> Self {
        Self {
            baseline_mpps: Some(side.baseline_mpps),
            ratio: Some(side.ratio),
            target_ratio: Some(target_ratio),
            met: Some(side.ratio >= target_ratio),
            note: Some(side.note.clone()),
            ..Self::measured(workload, &side.measured, None)
        }
    }

    fn skipped(workload: &str, reason: String) -> Self {
        Self {
            workload: workload.to_string(),
            packets: 0,
            ns_per_packet: None,
            mpps: None,
            target_mpps: None,
            baseline_mpps: None,
            ratio: None,
            target_ratio: None,
            met: None,
            skipped: Some(reason),
            note: None,
            realtime_factor: None,
            rss_growth_mib: None,
        }
    }
}

/// The workloads `args` selects, checked against the known names.
fn selected(args: &BenchArgs) -> anyhow::Result<Vec<String>> {
    let known = workloads::names();
    if args.workloads.is_empty() {
        return Ok(known);
    }
    for name in &args.workloads {
        if !known.contains(name) {
            bail!("unknown workload `{name}`; known: {}", known.join(", "));
        }
    }
    Ok(args.workloads.clone())
}

/// Measure one workload by name.
pub fn run_workload(name: &str, settings: Settings) -> anyhow::Result<Row> {
    match name {
        "threads_2_vs_1" => Ok(Row::compared(
            name,
            &compare::threads_2_vs_1(settings)?,
            THREADS_TARGET_RATIO,
        )),
        "director_threads_2_vs_1" => Ok(Row::compared(
            name,
            &compare::director_threads_2_vs_1(settings)?,
            THREADS_TARGET_RATIO,
        )),
        "engine_synflood" => Ok(Row::measured(
            name,
            &compare::engine_synflood(settings, false)?,
            Some(ENGINE_TARGET_MPPS),
        )),
        "engine_synflood_cookies" => Ok(Row::measured(
            name,
            &compare::engine_synflood(settings, true)?,
            None,
        )),
        "realtime_10g" | "realtime_10g_1t" => {
            let threads = if name == "realtime_10g" { 2 } else { 1 };
            let run = realtime::realtime_10g(settings, threads)?;
            Ok(Row::realtime(name, &run, threads))
        }
        "vs_kernel" => Ok(match compare::kernel_unavailable() {
            Some(reason) => Row::skipped(name, reason),
            None => Row::compared(name, &compare::vs_kernel(settings)?, KERNEL_TARGET_RATIO),
        }),
        _ => {
            let Some(workload) = workloads::workload(name)? else {
                bail!("unknown workload `{name}`");
            };
            let measurement = measure::measure(&workload, settings)?;
            Ok(Row::measured(name, &measurement, workload.target_mpps))
        }
    }
}

/// Run `sim bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let names = selected(args)?;
    let settings = Settings {
        packets: args.packets.unwrap_or(if args.quick {
            QUICK_PACKETS
        } else {
            DEFAULT_PACKETS
        }),
        repetitions: if args.quick { 2 } else { DEFAULT_REPETITIONS },
    };
    let mut rows = Vec::new();
    for name in &names {
        if !args.json {
            eprintln!("bench: {name} …");
        }
        let row =
            run_workload(name, settings).map_err(|e| e.context(format!("workload {name}")))?;
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        }
        rows.push(row);
    }
    if !args.json {
        print!("{}", render(&rows, settings));
    }
    Ok(ExitCode::SUCCESS)
}

fn target_text(row: &Row) -> String {
    match (row.target_mpps, row.target_ratio) {
        (Some(mpps), _) => format!(">= {mpps} Mpps"),
        (None, Some(ratio)) => format!(">= {ratio}x"),
        _ => "-".into(),
    }
}

fn figures(row: &Row) -> [String; 3] {
    let number = |value: Option<f64>, digits: usize| {
        value.map_or("-".to_string(), |v| format!("{v:.digits$}"))
    };
    let ratio = match (row.ratio, row.baseline_mpps, &row.note) {
        (Some(ratio), Some(base), _) => format!("{ratio:.2}x (baseline {base:.3} Mpps)"),
        (Some(ratio), None, Some(note)) => format!("{ratio:.2}x real time ({note})"),
        _ => String::new(),
    };
    [number(row.ns_per_packet, 1), number(row.mpps, 2), ratio]
}

/// The table `sim bench` prints.
pub fn render(rows: &[Row], settings: Settings) -> String {
    let machine = crate::stats::Machine::detect();
    let mut out = format!(
        "sim bench: {} build, {} CPU(s), {}; median of {} repetitions (wall clock: noisy on a shared machine)\n",
        machine.profile, machine.nproc, machine.cpu_model, settings.repetitions
    );
    let width = rows
        .iter()
        .map(|r| r.workload.len())
        .max()
        .unwrap_or(0)
        .max(18);
    let _ = writeln!(
        out,
        "{:<width$} {:>9} {:>10} {:>8}  {:<14} {:<5} ratio",
        "workload", "packets", "ns/packet", "Mpps", "target", "met?"
    );
    for row in rows {
        if let Some(reason) = &row.skipped {
            let _ = writeln!(out, "{:<width$} skipped: {reason}", row.workload);
            continue;
        }
        let [ns, mpps, ratio] = figures(row);
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let _ = writeln!(
            out,
            "{:<width$} {:>9} {:>10} {:>8}  {:<14} {:<5} {ratio}",
            row.workload,
            row.packets,
            ns,
            mpps,
            target_text(row),
            met
        );
    }
    out
}
