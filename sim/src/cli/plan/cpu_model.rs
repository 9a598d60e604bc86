//! Cores needed from the simulation (`sim plan --cpu-profile NAME`): every sweep point is
//! run again with the appliance's CPU model on ([`crate::engine::cpu`]) and one CPU per
//! receive queue, for 1, 2, … CPUs until a run meets every `[expect]` SLO; that count is the
//! point's cores needed under the profile. Each run's latency percentiles, utilization and
//! RX-ring drops are kept. Deterministic (virtual time only), unlike the measured
//! multiplication of [`super::model`].

use std::fmt::Write as _;

use anyhow::Context;
use rayon::prelude::*;
use serde::Serialize;

use super::{PlanOptions, point_scenario, sweep};
use crate::engine::Collect;
use crate::engine::cpu::{CostProfile, CpuSpec, DEFAULT_RX_RING};
use crate::report::Percentiles;
use crate::run::{RunOptions, run_scenario};
use crate::scenario::LoadedScenario;

/// One run of a point with `cpus` CPUs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CpuRun {
    /// CPUs (receive queues).
    pub cpus: u16,
    /// Every SLO met.
    pub passed: bool,
    /// The SLOs that failed.
    pub failed: Vec<String>,
    /// Busy / (CPUs × duration).
    pub utilization: f64,
    /// Packets dropped at full RX rings.
    pub rx_ring_full: u64,
    /// Appliance latency (ns).
    pub latency: Option<Percentiles>,
}

/// One sweep point under one profile.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CpuPoint {
    /// The plan's point index.
    pub index: usize,
    /// Its settings, `key=value` joined.
    pub settings: String,
    /// Runs with 1, 2, … CPUs (up to the first that passed).
    pub runs: Vec<CpuRun>,
    /// CPUs of the first run that met every SLO (`None`: none up to the limit).
    pub cores_needed: Option<u16>,
}

/// Cores needed under one profile.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CpuPlan {
    /// Profile name.
    pub profile: String,
    /// Where its figures come from.
    pub profile_source: String,
    /// Most CPUs tried.
    pub max_cpus: u16,
    /// Per point.
    pub points: Vec<CpuPoint>,
}

fn run_with(point: &LoadedScenario, profile: &str, cpus: u16) -> anyhow::Result<CpuRun> {
    let mut point = point.clone();
    point.scenario.queues = cpus;
    point.scenario.cpu = Some(CpuSpec {
        profile: Some(profile.to_string()),
        ns: None,
        rx_ring: point
            .scenario
            .cpu
            .as_ref()
            .map_or(DEFAULT_RX_RING, |c| c.rx_ring),
    });
    let options = RunOptions {
        threads: 1,
        collect: Collect::default(),
    };
    let report = run_scenario(&point, options, &|_| {})?.report;
    let cpu = report.cpu.as_ref().context("the CPU model ran")?;
    Ok(CpuRun {
        cpus,
        passed: report.passed,
        failed: report
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.clone())
            .collect(),
        utilization: cpu.utilization,
        rx_ring_full: cpu.rx_ring_full,
        latency: cpu.latency,
    })
}

/// Cores needed for every sweep point of `options` under `profile` (a bundled name or a
/// file relative to the scenario), trying 1..=`max_cpus` CPUs. A `queues` sweep key is
/// overridden: the CPU count is what this sweeps.
pub fn plan_cpus(
    loaded: &LoadedScenario,
    options: &PlanOptions,
    profile: &str,
    max_cpus: u16,
) -> anyhow::Result<CpuPlan> {
    let resolved = CostProfile::named(profile, &loaded.base_dir).map_err(anyhow::Error::msg)?;
    let combinations = sweep::combinations(&options.sweeps).map_err(anyhow::Error::msg)?;
    let points = combinations
        .into_par_iter()
        .enumerate()
        .map(|(index, settings)| {
            let label: Vec<String> = options
                .sweeps
                .iter()
                .zip(&settings)
                .map(|(s, v)| format!("{}={v}", s.key))
                .collect();
            let point = point_scenario(loaded, &options.sweeps, &settings, options.duration);
            let mut runs = Vec::new();
            for cpus in 1..=max_cpus.max(1) {
                let run = run_with(&point, profile, cpus)
                    .with_context(|| format!("point {index} with {cpus} CPU(s)"))?;
                let passed = run.passed;
                runs.push(run);
                if passed {
                    break;
                }
            }
            let cores_needed = runs.iter().find(|r| r.passed).map(|r| r.cpus);
            Ok(CpuPoint {
                index,
                settings: label.join(", "),
                runs,
                cores_needed,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(CpuPlan {
        profile: resolved.name,
        profile_source: resolved.source,
        max_cpus,
        points,
    })
}

/// The CPU-model answer in words (and Markdown: one table per profile).
pub fn markdown(plans: &[CpuPlan]) -> String {
    let mut md = String::new();
    for plan in plans {
        let _ = writeln!(
            md,
            "## Cores needed from the CPU model: profile `{}`\n\n{}\n\n| point | cores needed | CPUs | util. | rx_ring_full | latency p50 / p99 µs | failed SLOs |\n|---|---|---|---|---|---|---|",
            plan.profile, plan.profile_source
        );
        for point in &plan.points {
            let needed = point
                .cores_needed
                .map_or(format!("> {}", plan.max_cpus), |c| c.to_string());
            for run in &point.runs {
                let latency = run.latency.map_or("-".into(), |l| {
                    format!("{:.1} / {:.1}", l.p50 as f64 / 1e3, l.p99 as f64 / 1e3)
                });
                let _ = writeln!(
                    md,
                    "| {} | {needed} | {} | {:.0}% | {} | {latency} | {} |",
                    point.settings,
                    run.cpus,
                    run.utilization * 100.0,
                    run.rx_ring_full,
                    run.failed.join(", ")
                );
            }
        }
        md.push('\n');
    }
    md
}
