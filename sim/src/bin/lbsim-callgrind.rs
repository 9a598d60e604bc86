//! `lbsim-callgrind`: the two halves of `scripts/callgrind-check`.
//!
//! - `lbsim-callgrind run WORKLOAD PACKETS` — builds a `sim bench` workload, runs one
//!   checked pass (untimed, not counted), then whole passes through
//!   `sim::cli::bench::measure::counted_pass` (or `counted_parse`) until at least PACKETS packets,
//!   and prints `packets N`; `engine_synflood`, `engine_synflood_cookies` and
//!   `realtime_10g_1t` (the line-rate scenario, sized for PACKETS flood packets) run their
//!   whole scenario once on one thread (counted: `sim::engine::shared::run_shards`, the
//!   shards and the shared stages, all on the calling thread); so does `threads_2_vs_1_1t`
//!   (`threads_2_vs_1`'s two-queue flood on one thread: not in the check, for measuring
//!   what of a run is serial — everything outside the shards' `Engine::run`). Run it
//!   under `valgrind --tool=callgrind --toggle-collect=<that function>` so only the
//!   measured loop's instructions count.
//! - `lbsim-callgrind check BASELINE.toml MEASURED.toml [--update]` — compares measured
//!   instructions per packet with the baseline, prints the table, exits 1 on a regression;
//!   `--update` rewrites the baseline from the measurement instead.
//!
//! Not here: valgrind itself (the script runs it) and any timing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use datapath::packet::PacketMeta;
use sim::cli::bench::callgrind::{self, Baseline, DEFAULT_TOLERANCE_PERCENT};
use sim::cli::bench::measure::{Runner, counted_parse};
use sim::cli::bench::workloads::{Body, workload};

fn run_workload(name: &str, packets: usize) -> anyhow::Result<()> {
    if let Some(cookies) = match name {
        "engine_synflood" => Some(false),
        "engine_synflood_cookies" => Some(true),
        _ => None,
    } {
        // The whole scenario; the script counts `run_shards` only (not loading or the report).
        let loaded = sim::cli::bench::compare::engine_scenario(packets, cookies)?;
        let options = sim::run::RunOptions {
            threads: 1,
            collect: sim::engine::Collect::default(),
        };
        let output = sim::run::run_scenario(&loaded, options, &|_| {})?;
        println!("packets {}", output.report.totals.processed);
        return Ok(());
    }
    if name == "realtime_10g_1t" || name == "threads_2_vs_1_1t" {
        let loaded = if name == "realtime_10g_1t" {
            // The line-rate scenario, sized for about `packets` flood packets, on one thread.
            sim::cli::bench::realtime::linerate_scenario(packets)?
        } else {
            let text = sim::cli::bench::compare::flood_scenario_on(packets, 2, "");
            sim::scenario::parse(Path::new("bench-synflood.toml"), &text)?
        };
        let options = sim::run::RunOptions {
            threads: 1,
            collect: sim::engine::Collect::default(),
        };
        let output = sim::run::run_scenario(&loaded, options, &|_| {})?;
        println!("packets {}", output.report.totals.processed);
        return Ok(());
    }
    let Some(workload) = workload(name)? else {
        bail!("unknown workload `{name}`");
    };
    let passes = packets.div_ceil(workload.pass_len().max(1)).max(1);
    match &workload.body {
        Body::Parse(frames) => {
            let mut meta = PacketMeta::default();
            for _ in 0..passes {
                counted_parse(frames, &mut meta);
            }
        }
        Body::Pipeline(work) => {
            let mut runner = Runner::new(work)?;
            for _ in 0..passes {
                let batch = runner.next_batch()?;
                runner.run(batch);
            }
        }
        Body::ReplayFile(_) => bail!("`{name}` is not counted (it reads a file)"),
    }
    println!("packets {}", passes * workload.pass_len());
    Ok(())
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn check(baseline_path: &Path, measured_path: &Path, update: bool) -> anyhow::Result<ExitCode> {
    #[derive(serde::Deserialize)]
    struct Measured {
        workloads: BTreeMap<String, f64>,
    }
    let measured: Measured = read_toml(measured_path)?;
    let baseline: Option<Baseline> = baseline_path
        .exists()
        .then(|| read_toml(baseline_path))
        .transpose()?;
    let tolerance = baseline
        .as_ref()
        .map_or(DEFAULT_TOLERANCE_PERCENT, |b| b.tolerance_percent);
    if update || baseline.is_none() {
        std::fs::write(
            baseline_path,
            callgrind::baseline_text(tolerance, &measured.workloads),
        )?;
        println!("wrote {}", baseline_path.display());
    }
    let baseline = match baseline {
        Some(baseline) if !update => baseline,
        _ => read_toml(baseline_path)?,
    };
    let comparisons = callgrind::compare(&baseline, &measured.workloads);
    print!(
        "{}",
        callgrind::render(&comparisons, baseline.tolerance_percent)
    );
    if callgrind::failed(&comparisons) {
        println!(
            "instruction-count regression: fix it, or if intended run scripts/callgrind-check --update and commit {}",
            baseline_path.display()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["run", name, packets] => packets
            .parse()
            .context("PACKETS")
            .and_then(|packets| run_workload(name, packets))
            .map(|()| ExitCode::SUCCESS),
        ["check", baseline, measured] => check(Path::new(baseline), Path::new(measured), false),
        ["check", baseline, measured, "--update"] => {
            check(Path::new(baseline), Path::new(measured), true)
        }
        _ => {
            eprintln!(
                "usage: lbsim-callgrind run WORKLOAD PACKETS\n       lbsim-callgrind check BASELINE.toml MEASURED.toml [--update]"
            );
            return ExitCode::from(2);
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::from(2)
    })
}
