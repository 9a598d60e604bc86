//! `sim plan SCENARIO --sweep KEY=RANGE …`: capacity planning. Runs the scenario once per
//! sweep point (in parallel with rayon; each point deterministic with the scenario's seed),
//! measures this machine's per-packet datapath cost per class, and turns each point's
//! packet mix into CPU cores and its tables into memory. Writes `plan.json` (a
//! `deterministic` part — simulated outcomes — and a `measured` part — costs, cores, memory,
//! the machine), `plan.md` and a self-contained `plan.html` with SVG plots.
//!
//! Map: [`sweep`] (keys, ranges, applying a point to the scenario), [`outcome`] (what a
//! point's report says), [`calibrate`] (measured cost), [`model`] (cores and memory
//! arithmetic), [`render`] (JSON and Markdown, the answer in words), [`html`] (plots).
//! Not here: the simulation itself ([`crate::run::run_scenario`]).

pub mod calibrate;
pub mod cpu_model;
pub mod html;
pub mod model;
pub mod outcome;
pub mod render;
pub mod sweep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use datapath::TimeNs;
use rayon::prelude::*;
use serde::Serialize;

use crate::engine::Collect;
use crate::run::{RunOptions, run_scenario};
use crate::scenario::{self, DurationNs, Expect, LoadedScenario};
use calibrate::Calibration;
use model::Memory;
use outcome::PointOutcome;
use sweep::{Sweep, SweepValue};

/// Arguments of `sim plan`.
#[derive(clap::Args, Debug, Clone)]
pub struct PlanArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// `KEY=RANGE`, e.g. `flood.rate=100k..20M`, `queues=1..4`,
    /// `director.web.scheduler=rr,wlc,mh`, `conntrack.capacity=1k,64k` (repeatable; the
    /// points are every combination).
    #[arg(long = "sweep", required = true)]
    pub sweeps: Vec<String>,
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
#[derive(Clone, Debug, PartialEq, Serialize)]
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

/// Simulate every point (in parallel); the deterministic part and each point's shield
/// allocation in bytes.
pub fn run_points(
    loaded: &LoadedScenario,
    options: &PlanOptions,
) -> anyhow::Result<(DeterministicPlan, Vec<u64>)> {
    let combinations = sweep::combinations(&options.sweeps).map_err(anyhow::Error::msg)?;
    let results: Vec<(PointRow, u64)> = combinations
        .into_par_iter()
        .enumerate()
        .map(|(index, settings)| {
            let point = point_scenario(loaded, &options.sweeps, &settings, options.duration);
            run_point(&point, index, settings)
        })
        .collect::<anyhow::Result<_>>()?;
    let scenario = &loaded.scenario;
    let (points, shield_bytes) = results.into_iter().unzip();
    let plan = DeterministicPlan {
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
        points,
    };
    Ok((plan, shield_bytes))
}

fn run_point(
    point: &LoadedScenario,
    index: usize,
    settings: Vec<SweepValue>,
) -> anyhow::Result<(PointRow, u64)> {
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
    Ok((row, shield_bytes))
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

/// Run a whole plan: calibrate, simulate every point, cost them.
pub fn plan(loaded: &LoadedScenario, options: &PlanOptions) -> anyhow::Result<Plan> {
    let started = Instant::now();
    let calibration = calibrate::calibrate()?;
    let calibration_wall_ms = started.elapsed().as_millis() as u64;
    let started = Instant::now();
    let (deterministic, shield_bytes) = run_points(loaded, options)?;
    let sweep_wall_ms = started.elapsed().as_millis() as u64;
    let core_budget = options.cores.unwrap_or(calibration.machine.nproc);
    let points = measure_points(&deterministic, &shield_bytes, &calibration, core_budget);
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

/// The `sim plan` command.
pub fn run(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let loaded = scenario::load(&args.scenario)?;
    let sweeps = parse_sweeps(&loaded, &args.sweeps, args.points)?;
    let options = PlanOptions {
        sweeps,
        duration: args.duration,
        cores: args.cores,
    };
    let plan = plan(&loaded, &options)?;
    let dir = args.out.clone().unwrap_or_else(|| {
        Path::new("reports")
            .join(&loaded.scenario.name)
            .join("plan")
    });
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
