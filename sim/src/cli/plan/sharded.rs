//! `sim plan … --partition K/N` and `sim plan merge SHARD…`: a sweep run as N shards on a
//! batch engine (Slurm array, Kubernetes Indexed Job, CI matrix) and put back together.
//!
//! A shard simulates the points whose index is `K-1` modulo `N` (neighbouring points, of
//! similar cost, go to different shards) and writes `plan-shard-K-of-N.json`: the scenario
//! path, the sweep as written, each point's row, shield allocation and `[expect]` checks. No
//! calibration runs in a shard. The merge checks the shards are exactly one complete sweep
//! of one unchanged scenario, reloads the scenario for the header, assembles the points in
//! index order — so the deterministic part is byte for byte the single-machine one — and
//! calibrates on the merging machine for the measured part.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use datapath::TimeNs;
use serde::{Deserialize, Serialize};

use super::{PlanArgs, PlanOptions, PointResult, render};
use crate::cli::shard::{self, Envelope, Partition};
use crate::scenario::{self, LoadedScenario};

/// Arguments of `sim plan merge`.
#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// Shard files, or directories holding `plan-shard-K-of-N.json` files.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Output directory (default `reports/<name>/plan`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The scenario file, if it is no longer where the shards read it.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Cores the appliance may use (default: this machine's).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Wait up to this long for every shard to appear (e.g. `2h`), showing shards done.
    #[arg(long, value_parser = parse_wait)]
    pub wait: Option<Duration>,
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    scenario::units::parse_duration(text).map(Duration::from_nanos)
}

/// What a plan shard holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanShard {
    /// The scenario file as the command named it.
    pub scenario_path: PathBuf,
    /// `--sweep` texts.
    pub sweeps: Vec<String>,
    /// `--points`.
    pub points: usize,
    /// `--duration`.
    pub duration: Option<TimeNs>,
    /// This shard's points, in index order.
    pub results: Vec<PointResult>,
}

/// Digest of what makes a sweep: the scenario file's bytes, the sweep as written, `--points`,
/// `--duration` and the version.
fn definition(
    scenario_text: &[u8],
    sweeps: &[String],
    points: usize,
    duration: Option<TimeNs>,
) -> String {
    let mut bytes = scenario_text.to_vec();
    let spec = serde_json::json!([env!("CARGO_PKG_VERSION"), sweeps, points, duration]);
    bytes.extend_from_slice(spec.to_string().as_bytes());
    format!("{:016x}", shard::stable_hash(&bytes))
}

fn description(name: &str, sweeps: &[String]) -> String {
    format!(
        "sim plan of scenario `{name}` --sweep {}",
        sweeps.join(" --sweep ")
    )
}

/// Run one shard of a sweep and write its file into `dir`; a failure leaves a `.failed`
/// file naming the error.
pub fn run_shard(
    loaded: &LoadedScenario,
    options: &PlanOptions,
    args: &PlanArgs,
    partition: Partition,
    dir: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let text = std::fs::read(&loaded.path)
        .with_context(|| format!("cannot read {}", loaded.path.display()))?;
    let mut envelope = Envelope::new(
        "plan",
        definition(&text, &args.sweeps, args.points, args.duration),
        description(&loaded.scenario.name, &args.sweeps),
        partition,
    );
    envelope.total_items = super::sweep::combinations(&options.sweeps)
        .map_err(anyhow::Error::msg)?
        .len();
    let results = match super::run_selected(loaded, options, Some(partition)) {
        Ok(results) => results,
        Err(error) => {
            envelope.error = Some(format!("{error:#}"));
            envelope.wall_ms = started.elapsed().as_millis() as u64;
            shard::write_shard::<PlanShard>(dir, &envelope, None)?;
            return Err(error);
        }
    };
    envelope.items = results.len();
    envelope.wall_ms = started.elapsed().as_millis() as u64;
    let body = PlanShard {
        scenario_path: loaded.path.clone(),
        sweeps: args.sweeps.clone(),
        points: args.points,
        duration: args.duration,
        results,
    };
    let path = shard::write_shard(dir, &envelope, Some(&body))?;
    println!(
        "shard {partition}: {} of {} points in {:.1} s: {}",
        envelope.items,
        envelope.total_items,
        envelope.wall_ms as f64 / 1e3,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The `sim plan merge` command.
pub fn merge(args: &MergeArgs) -> anyhow::Result<ExitCode> {
    let paths = shard::wait_for_shards("plan", &args.shards, args.wait)?;
    let complete = shard::collect::<PlanShard>("plan", &paths)?;
    let first = &complete.shards[0].2;
    let path = args
        .scenario
        .clone()
        .unwrap_or_else(|| first.scenario_path.clone());
    let loaded = scenario::load(&path)?;
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if definition(&text, &first.sweeps, first.points, first.duration)
        != complete.envelope.definition
    {
        bail!(
            "{} is not the scenario the shards ran (it changed since, or --scenario names another \
             file): re-run the shards or restore it",
            path.display()
        );
    }
    let options = PlanOptions {
        sweeps: super::parse_sweeps(&loaded, &first.sweeps, first.points)?,
        duration: first.duration,
        cores: args.cores,
    };
    let mut results: Vec<PointResult> = Vec::with_capacity(complete.envelope.total_items);
    let mut sweep_wall_ms = 0;
    for (shard_path, envelope, body) in &complete.shards {
        for result in &body.results {
            if !envelope.partition.owns_position(result.row.index) {
                bail!(
                    "{}: point {} does not belong to shard {}",
                    shard_path.display(),
                    result.row.index,
                    envelope.partition
                );
            }
        }
        results.extend(body.results.iter().cloned());
        sweep_wall_ms += envelope.wall_ms;
    }
    results.sort_by_key(|r| r.row.index);
    let total = complete.envelope.total_items;
    if results.len() != total || results.iter().enumerate().any(|(i, r)| r.row.index != i) {
        bail!(
            "the shards hold {} points, the sweep has {total}: a shard file was edited or cut short",
            results.len()
        );
    }
    let scenario_path = first.scenario_path.display().to_string();
    let (deterministic, shield_bytes) =
        super::assemble(super::header(&loaded, &options), results, &scenario_path);
    let plan = super::cost(deterministic, &shield_bytes, sweep_wall_ms, args.cores)?;
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| super::default_out(&loaded.scenario.name));
    super::write(&plan, &dir)?;
    print!("{}", render::answer(&plan));
    for (shard_path, envelope, _) in &complete.shards {
        println!(
            "shard {}: {} points in {:.1} s ({})",
            envelope.partition,
            envelope.items,
            envelope.wall_ms as f64 / 1e3,
            shard_path.display()
        );
    }
    println!(
        "merged {} shards, {} points ({:.1} s of shard time); plan: {}",
        complete.shards.len(),
        plan.deterministic.points.len(),
        sweep_wall_ms as f64 / 1e3,
        dir.join("plan.html").display()
    );
    Ok(ExitCode::SUCCESS)
}
