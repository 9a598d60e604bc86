//! `sim run SCENARIO`: load a scenario, run it ([`crate::run`]) with a progress bar or live in
//! the terminal UI (`--tui`), check `[expect]`, print a summary ending in one PASS/FAIL line
//! (only that line with `--quiet`; coloured on a terminal unless `NO_COLOR`) and write
//! `report.json` / `report.md` / `report.html` (plus `--packets` records and a `--pcap-out`
//! capture).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use datapath::TimeNs;
use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::Collect;
use crate::report;
use crate::run::{RunOptions, run_scenario, summary, verdict_line, write_pcap, write_records};
use crate::scenario;

/// Arguments of `sim run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the scenario's duration (e.g. `500ms`).
    #[arg(long, value_parser = scenario::units::parse_duration)]
    pub duration: Option<TimeNs>,
    /// Worker threads (results do not depend on it).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Report directory (default `reports/<name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write one JSON record per processed packet to this file.
    #[arg(long, value_name = "FILE.jsonl")]
    pub packets: Option<PathBuf>,
    /// Write what the pipeline emitted to this pcap file.
    #[arg(long, value_name = "FILE.pcap")]
    pub pcap_out: Option<PathBuf>,
    /// Watch the run live in a terminal UI (see `sim tui`); the report is written as usual.
    #[arg(long)]
    pub tui: bool,
    /// Print only the PASS/FAIL line (no summary, no progress bar); errors still go to
    /// stderr and the exit code is unchanged.
    #[arg(short, long)]
    pub quiet: bool,
    /// Colour the PASS/FAIL word: `auto` on a terminal unless `NO_COLOR` is set.
    #[arg(long, value_enum, default_value_t = Colour::Auto, value_name = "WHEN")]
    pub color: Colour,
}

/// When to colour the output (`--color`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    /// On a terminal, unless `NO_COLOR` is set (non-empty) or `TERM=dumb`.
    Auto,
    /// Always (e.g. for `less -R`).
    Always,
    /// Never.
    Never,
}

impl Colour {
    /// Whether to colour stdout (<https://no-color.org>: a non-empty `NO_COLOR` disables
    /// colour whatever the terminal).
    pub fn enabled(self) -> bool {
        match self {
            Colour::Always => true,
            Colour::Never => false,
            Colour::Auto => {
                let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
                let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
                !no_colour && !dumb && std::io::stdout().is_terminal()
            }
        }
    }
}

fn progress_bar(total_ns: u64, quiet: bool) -> ProgressBar {
    let hidden = quiet || !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some();
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_ns / 1_000_000);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} virtual ms (all queues) {elapsed}")
    {
        bar.set_style(style);
    }
    bar
}

/// The report directory, created; fails before the run, not after it, on an output that
/// cannot be written (the directory first: `--packets` may be inside it).
fn prepare_outputs(args: &RunArgs, name: &str) -> anyhow::Result<PathBuf> {
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("reports").join(name));
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    for path in [&args.packets, &args.pcap_out].into_iter().flatten() {
        if path.as_os_str() == "-" {
            anyhow::bail!(
                "`-` is not a file: sim run prints its summary on stdout; give a file name (e.g. `--packets packets.jsonl`)"
            );
        }
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    }
    Ok(out_dir)
}

/// The `sim run` command.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut loaded = scenario::load(&args.scenario)?;
    let out_dir = prepare_outputs(args, &loaded.scenario.name)?;
    if let Some(seed) = args.seed {
        loaded.scenario.seed = seed;
    }
    if let Some(duration) = args.duration {
        loaded.scenario.duration = scenario::DurationNs(duration);
    }
    let options = RunOptions {
        threads: args.threads,
        collect: Collect {
            records: args.packets.is_some(),
            emitted: args.pcap_out.is_some(),
        },
    };
    let output = if args.tui {
        super::tui::run_live(&loaded, options)?
    } else {
        let bar = progress_bar(
            loaded.scenario.duration.0 * u64::from(loaded.scenario.queues),
            args.quiet,
        );
        let output = run_scenario(&loaded, options, &|ns| bar.inc(ns / 1_000_000))?;
        bar.finish_and_clear();
        output
    };
    // Invariant: every frame ends in exactly one counted outcome. A mismatch is a bug in
    // the engine, never a property of the scenario: fail loudly, with the seed.
    if let Some(imbalance) = output.report.totals.frame_imbalance()
        && imbalance != 0
    {
        anyhow::bail!(
            "internal error: {imbalance} frame(s) unaccounted for in scenario {} (seed {})",
            output.report.scenario,
            output.report.seed
        );
    }
    std::fs::write(
        out_dir.join("report.json"),
        report::full_json(&output.report, &output.measured),
    )?;
    std::fs::write(
        out_dir.join("report.md"),
        report::markdown(&output.report, Some(&output.measured)),
    )?;
    std::fs::write(
        out_dir.join("report.html"),
        crate::report_html::page(&output.report, Some(&output.measured))?,
    )?;
    if let Some(path) = &args.packets {
        let names: Vec<&str> = (output.report.appliance.flows.iter())
            .map(|f| f.name.as_str())
            .collect();
        write_records(path, &output.merged.records, &names)?;
    }
    if let Some(path) = &args.pcap_out {
        write_pcap(path, &output.merged.emitted)?;
    }
    if !args.quiet {
        print!("{}", summary(&output.report, &output.measured));
        println!("report: {}", out_dir.join("report.md").display());
    }
    print!("{}", verdict_line(&output.report, args.color.enabled()));
    Ok(if output.report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
