//! `sim plan SCENARIO --sweep KEY=RANGE …`: capacity planning. Runs the scenario once per
//! sweep point (in parallel with rayon; each point deterministic with the scenario's seed),
//! measures this machine's per-packet datapath cost per class, and turns each point's
//! packet mix into CPU cores and its tables into memory. Writes `plan.json` (a
//! `deterministic` part — simulated outcomes — and a `measured` part — costs, cores, memory,
//! the machine), `plan.md` and a self-contained `plan.html` with SVG plots.
//!
//! Map: [`sweep`] (keys, ranges, applying a point to the scenario), [`outcome`] (what a
//! point's report says), [`calibrate`] (measured cost), [`model`] (cores and memory
//! arithmetic), [`render`] (JSON and Markdown, the answer in words), [`html`] (plots),
//! [`seeds`] (seed studies: `--sweep seed=1..1000`), [`sharded`] (`--partition K/N` and
//! `sim plan merge`).
//! Not here: the simulation itself ([`crate::run::run_scenario`]).

pub mod calibrate;
pub mod cpu_model;
pub mod html;
pub mod model;
pub mod outcome;
pub mod render;
pub mod seeds;
pub mod sharded;
pub mod sweep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use datapath::TimeNs;
use serde::{Deserialize, Serialize};

use crate::cli::shard::{self, Partition};
use crate::engine::Collect;
use crate::report::Check;
use crate::run::{RunOptions, run_scenario};
use crate::scenario::{self, DurationNs, Expect, LoadedScenario};
use calibrate::Calibration;
use model::Memory;
use outcome::PointOutcome;
use sweep::{Sweep, SweepValue};

/// Arguments of `sim plan`.
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PlanArgs {
    /// `sim plan merge`: put shards back together.
    #[command(subcommand)]
    pub command: Option<PlanCommand>,
    /// The scenario file.
    #[arg(required = true)]
    pub scenario: Option<PathBuf>,
    /// `KEY=RANGE`, e.g. `flood.rate=100k..20M`, `queues=1..4`,
    /// `director.web.scheduler=rr,wlc,mh`, `conntrack.capacity=1k,64k`, `seed=1..1000` (a
    /// seed study; repeatable; the points are every combination).
    #[arg(long = "sweep", required = true)]
    pub sweeps: Vec<String>,
    /// Run only shard K of N (1-based): the points whose index is K-1 modulo N; writes
    /// `plan-shard-K-of-N.json` for `sim plan merge`. Without the flag, also taken from
    /// LBSIM_PARTITION, a Slurm array task, a Kubernetes Indexed Job or GitLab's parallel.
    #[arg(long, value_name = "K/N", value_parser = shard::parse_partition)]
    pub partition: Option<Partition>,
    /// Directory for the shard file (default: the output directory).
    #[arg(long, value_name = "DIR")]
    pub shard_out: Option<PathBuf>,
    /// Points of a log range `a..b`.
    #[arg(long, default_value_t = 5)]
    pub points: usize,
    /// Virtual duration of each run (default: the scenario's).
    #[arg(long, value_parser = scenario::units::parse_duration)]
    pub duration: Option<TimeNs>,
    /// Cores the appliance may use (default: this machine's).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Output directory (default `reports/<name>/plan`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also find cores needed with the appliance's CPU model under this cost profile
    /// (`lbsim`, `linux` or a file; repeatable): each point run with 1, 2, … CPUs until
    /// every SLO holds (`plan-cpu.md`, `plan-cpu.json`).
    #[arg(long = "cpu-profile")]
    pub cpu_profiles: Vec<String>,
    /// Most CPUs the CPU-model search tries.
    #[arg(long, default_value_t = 8)]
    pub max_cpus: u16,
}

/// `sim plan` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum PlanCommand {
    /// Merge the shards of a partitioned `sim plan` into plan.json, plan.md and plan.html.
    #[command(after_help = "Examples:
  sim plan scenarios/synflood.toml --sweep flood.rate=100k..20M --partition 1/2 --shard-out shards/
  sim plan scenarios/synflood.toml --sweep flood.rate=100k..20M --partition 2/2 --shard-out shards/
  sim plan merge shards/ --out plan/")]
    Merge(sharded::MergeArgs),
}

/// How to plan.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// The sweeps.
    pub sweeps: Vec<Sweep>,
    /// Duration override.
    pub duration: Option<TimeNs>,
    /// Core budget (None: this machine's).
    pub cores: Option<usize>,
}

/// One sweep key and its values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepRow {
    /// Key as written.
    pub key: String,
    /// Values.
    pub values: Vec<SweepValue>,
}

/// One point's settings and outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointRow {
    /// Index in sweep order.
    pub index: usize,
    /// One value per sweep key, in key order.
    pub settings: Vec<SweepValue>,
    /// Receive queues the point ran with.
    pub queues: u16,
    /// What the simulation says.
    pub outcome: PointOutcome,
}

/// The simulated part of a plan: the same for the same scenario, seed and sweep.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeterministicPlan {
    /// Scenario name.
    pub scenario: String,
    /// Seed of every point.
    pub seed: u64,
    /// Virtual duration of each run.
    pub duration_ns: u64,
    /// The SLOs.
    pub expect: Expect,
    /// The sweeps.
    pub sweep: Vec<SweepRow>,
    /// Index of the sweep key on the plots' x axis (the first numeric one).
    pub x_axis: Option<usize>,
    /// The points.
    pub points: Vec<PointRow>,
    /// The seed study, when the sweep has a `seed` key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed_study: Option<seeds::SeedStudy>,
}

/// One point's cost.
#[derive(Clone, Debug, Serialize)]
pub struct MeasuredPoint {
    /// Point index.
    pub index: usize,
    /// Cores of the calibration machine the point's packet rate needs.
    pub cores_needed: f64,
    /// Cores the busiest receive queue needs (the flows spread evenly over the queues;
    /// above 1.0 one queue cannot keep up).
    pub busiest_queue_cores: f64,
    /// Table memory.
    pub memory: Memory,
    /// Whether the cores fit the budget and every queue keeps up.
    pub cores_fit: bool,
}

/// The measured part.
#[derive(Clone, Debug, Serialize)]
pub struct MeasuredPlan {
    /// Per-class cost and the machine.
    pub calibration: Calibration,
    /// Cores the appliance may use.
    pub core_budget: usize,
    /// Bytes per director connection (slot + indexes).
    pub director_connection_bytes: usize,
    /// Per point.
    pub points: Vec<MeasuredPoint>,
    /// Wall time of all sweep runs, ms.
    pub sweep_wall_ms: u64,
    /// Wall time of the calibration, ms.
    pub calibration_wall_ms: u64,
}

/// A whole plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Simulated outcomes.
    pub deterministic: DeterministicPlan,
    /// Costs on this machine.
    pub measured: MeasuredPlan,
}

/// Parse `--sweep` texts and check them against the scenario.
pub fn parse_sweeps(
    loaded: &LoadedScenario,
    texts: &[String],
    points: usize,
) -> anyhow::Result<Vec<Sweep>> {
    let sweeps = texts
        .iter()
        .map(|t| sweep::parse_sweep(t, points))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    sweep::check_targets(&loaded.scenario, &sweeps).map_err(anyhow::Error::msg)?;
    Ok(sweeps)
}

/// The scenario of one point.
pub fn point_scenario(
    loaded: &LoadedScenario,
    sweeps: &[Sweep],
    settings: &[SweepValue],
    duration: Option<TimeNs>,
) -> LoadedScenario {
    let mut point = loaded.clone();
    for (sweep, value) in sweeps.iter().zip(settings) {
        sweep::apply(&mut point.scenario, &sweep.target, value);
    }
    if let Some(duration) = duration {
        point.scenario.duration = DurationNs(duration);
    }
    point
}

/// One simulated point: its row, its shield allocation in bytes and its `[expect]` checks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PointResult {
    /// Settings and outcome.
    pub row: PointRow,
    /// Bytes the shield allocates.
    pub shield_bytes: u64,
    /// The `[expect]` checks with their measured values (seed studies).
    pub checks: Vec<Check>,
}

/// Simulate every point (in parallel); the deterministic part and each point's shield
/// allocation in bytes.
pub fn run_points(
    loaded: &LoadedScenario,
    options: &PlanOptions,
) -> anyhow::Result<(DeterministicPlan, Vec<u64>)> {
    let results = run_selected(loaded, options, None)?;
    let path = loaded.path.display().to_string();
    Ok(assemble(header(loaded, options), results, &path))
}

/// The deterministic part without its points.
pub fn header(loaded: &LoadedScenario, options: &PlanOptions) -> DeterministicPlan {
    let scenario = &loaded.scenario;
    DeterministicPlan {
        scenario: scenario.name.clone(),
        seed: scenario.seed,
        duration_ns: options.duration.unwrap_or(scenario.duration.0),
        expect: scenario.expect.clone(),
        sweep: options
            .sweeps
            .iter()
            .map(|s| SweepRow {
                key: s.key.clone(),
                values: s.values.clone(),
            })
            .collect(),
        x_axis: options.sweeps.iter().position(Sweep::is_numeric),
        points: Vec::new(),
        seed_study: None,
    }
}

/// Simulate the points `partition` owns (all without one), in parallel, with a points-done
/// bar on a terminal; the results in point order.
pub fn run_selected(
    loaded: &LoadedScenario,
    options: &PlanOptions,
    partition: Option<Partition>,
) -> anyhow::Result<Vec<PointResult>> {
    let combinations = sweep::combinations(&options.sweeps).map_err(anyhow::Error::msg)?;
    let selected: Vec<(usize, Vec<SweepValue>)> = combinations
        .into_iter()
        .enumerate()
        .filter(|(index, _)| partition.is_none_or(|p| p.owns_position(*index)))
        .collect();
    let what = match partition {
        Some(p) => format!("sim plan shard {p}: points"),
        None => "sim plan: points".to_string(),
    };
    let bar = shard::item_bar(&what, selected.len());
    let results = run_on_threads(selected, &|(index, settings)| {
        let point = point_scenario(loaded, &options.sweeps, &settings, options.duration);
        let result = run_point(&point, index, settings);
        bar.inc(1);
        result
    });
    bar.finish_and_clear();
    results.into_iter().collect()
}

/// Run `work` on every item with one plain thread per CPU, results in item order. Not rayon:
/// each point's engine installs into its own rayon pool, and a rayon worker waiting on that
/// would run other points on top of its stack (nested runs until the stack overflows).
fn run_on_threads<T: Send, R: Send>(items: Vec<T>, work: &(dyn Fn(T) -> R + Sync)) -> Vec<R> {
    let count = items.len();
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let slots: Vec<std::sync::Mutex<Option<R>>> =
        (0..count).map(|_| std::sync::Mutex::new(None)).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(count.max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.next()).ok().flatten();
                    let Some((index, item)) = next else { break };
                    let result = work(item);
                    if let Ok(mut slot) = slots[index].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .filter_map(|slot| slot.into_inner().ok().flatten())
        .collect()
}

/// The deterministic part from its header and every point's result (in point order; the
/// seed study's commands name `scenario_path`), and each point's shield allocation.
pub fn assemble(
    mut plan: DeterministicPlan,
    results: Vec<PointResult>,
    scenario_path: &str,
) -> (DeterministicPlan, Vec<u64>) {
    let mut checks = Vec::with_capacity(results.len());
    let mut shield_bytes = Vec::with_capacity(results.len());
    for result in results {
        plan.points.push(result.row);
        shield_bytes.push(result.shield_bytes);
        checks.push(result.checks);
    }
    plan.seed_study = seeds::study(&plan, &checks, scenario_path);
    (plan, shield_bytes)
}

fn run_point(
    point: &LoadedScenario,
    index: usize,
    settings: Vec<SweepValue>,
) -> anyhow::Result<PointResult> {
    let label = || {
        let values: Vec<String> = settings.iter().map(ToString::to_string).collect();
        format!("sweep point {index} ({})", values.join(", "))
    };
    let options = RunOptions {
        threads: 1,
        collect: Collect::default(),
    };
    let output = run_scenario(point, options, &|_| {}).with_context(label)?;
    let outcome = outcome::from_report(&point.scenario, &output.report);
    let shield_bytes = shield_allocation(point).with_context(label)?;
    let row = PointRow {
        index,
        queues: point.scenario.queues,
        settings,
        outcome,
    };
    Ok(PointResult {
        row,
        shield_bytes,
        checks: output.report.checks.clone(),
    })
}

/// Bytes the shield of this point's appliance allocates when built (its slot arrays).
fn shield_allocation(point: &LoadedScenario) -> anyhow::Result<u64> {
    let names: Vec<&str> = point
        .scenario
        .topology
        .interfaces
        .iter()
        .map(String::as_str)
        .collect();
    let pipeline = crate::appliance::build_pipeline(
        &point.scenario.appliance,
        &point.base_dir,
        point.scenario.seed,
        &names,
    )?;
    Ok(pipeline
        .shield()
        .map_or(0, |s| s.table_stats().state_bytes as u64))
}

/// Cost every point with a calibration.
pub fn measure_points(
    plan: &DeterministicPlan,
    shield_bytes: &[u64],
    calibration: &Calibration,
    core_budget: usize,
) -> Vec<MeasuredPoint> {
    let costs = calibration.costs();
    plan.points
        .iter()
        .zip(shield_bytes)
        .map(|(point, &shield)| {
            let cores_needed = model::cores_needed(&point.outcome.class_rates, &costs);
            let busiest_queue_cores = cores_needed / f64::from(point.queues.max(1));
            MeasuredPoint {
                index: point.index,
                cores_needed,
                busiest_queue_cores,
                memory: Memory::new(shield, point.outcome.tables.director_connections),
                cores_fit: cores_needed <= core_budget as f64 && busiest_queue_cores <= 1.0,
            }
        })
        .collect()
}

/// Run a whole plan: simulate every point, calibrate, cost them.
pub fn plan(loaded: &LoadedScenario, options: &PlanOptions) -> anyhow::Result<Plan> {
    let started = Instant::now();
    let (deterministic, shield_bytes) = run_points(loaded, options)?;
    let sweep_wall_ms = started.elapsed().as_millis() as u64;
    cost(deterministic, &shield_bytes, sweep_wall_ms, options.cores)
}

/// Calibrate this machine and cost simulated points (`cores`: the budget, default this
/// machine's).
pub fn cost(
    deterministic: DeterministicPlan,
    shield_bytes: &[u64],
    sweep_wall_ms: u64,
    cores: Option<usize>,
) -> anyhow::Result<Plan> {
    let started = Instant::now();
    let spinner = shard::step_spinner("sim plan: measuring this machine's datapath costs");
    let calibration = calibrate::calibrate();
    spinner.finish_and_clear();
    let calibration = calibration?;
    let calibration_wall_ms = started.elapsed().as_millis() as u64;
    let core_budget = cores.unwrap_or(calibration.machine.nproc);
    let points = measure_points(&deterministic, shield_bytes, &calibration, core_budget);
    Ok(Plan {
        deterministic,
        measured: MeasuredPlan {
            calibration,
            core_budget,
            director_connection_bytes: model::director_connection_bytes(),
            points,
            sweep_wall_ms,
            calibration_wall_ms,
        },
    })
}

/// Write `plan.json`, `plan.md` and `plan.html` into `dir`.
pub fn write(plan: &Plan, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("plan.json"), render::json(plan))?;
    std::fs::write(dir.join("plan.md"), render::markdown(plan))?;
    std::fs::write(dir.join("plan.html"), html::page(plan)?)?;
    Ok(())
}

/// `reports/<name>/plan`.
pub fn default_out(name: &str) -> PathBuf {
    Path::new("reports").join(name).join("plan")
}

/// The `sim plan` command.
pub fn run(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    if let Some(PlanCommand::Merge(merge)) = &args.command {
        return sharded::merge(merge);
    }
    let path = args
        .scenario
        .as_ref()
        .context("a scenario file is required")?;
    let loaded = scenario::load(path)?;
    let sweeps = parse_sweeps(&loaded, &args.sweeps, args.points)?;
    let options = PlanOptions {
        sweeps,
        duration: args.duration,
        cores: args.cores,
    };
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&loaded.scenario.name));
    if let Some(partition) = shard::resolve(args.partition)? {
        let shard_dir = args.shard_out.as_ref().unwrap_or(&dir);
        return sharded::run_shard(&loaded, &options, args, partition, shard_dir);
    }
    let plan = plan(&loaded, &options)?;
    write(&plan, &dir)?;
    print!("{}", render::answer(&plan));
    if !args.cpu_profiles.is_empty() {
        let plans = args
            .cpu_profiles
            .iter()
            .map(|p| cpu_model::plan_cpus(&loaded, &options, p, args.max_cpus))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let md = cpu_model::markdown(&plans);
        std::fs::write(dir.join("plan-cpu.md"), &md)?;
        std::fs::write(
            dir.join("plan-cpu.json"),
            serde_json::to_string_pretty(&plans)? + "\n",
        )?;
        print!("{md}");
    }
    println!(
        "{} points in {:.1} s; plan: {}",
        plan.deterministic.points.len(),
        plan.measured.sweep_wall_ms as f64 / 1e3,
        dir.join("plan.html").display()
    );
    Ok(ExitCode::SUCCESS)
}
