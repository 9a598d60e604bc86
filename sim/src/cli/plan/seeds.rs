//! Seed studies (`sim plan SCENARIO --sweep seed=1..1000`): not whether the SLO broke once,
//! but how often. Per group of points that differ only in the seed: the distribution of each
//! `[expect]` check's measured value (min, p50, p90, p99, max — nearest rank), the fraction
//! of seeds failing each check and any check, and the worst seed with the command that
//! reproduces it.
//!
//! The worst seed fails the most checks; ties go to the smallest margin to a limit (value −
//! limit for a lower bound — a `*_min` / `min_*` check — limit − value for an upper bound,
//! relative to the limit), then to the lowest seed. Not here: running the points
//! ([`super::run_points`]), plots ([`super::html`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DeterministicPlan, SweepRow};
use crate::report::Check;
use datapath::TimeNs;

/// Key of the seed sweep.
pub const SEED_KEY: &str = "seed";

/// One `[expect]` check over the seeds of a group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckDistribution {
    /// Key as written in `[expect]`.
    pub name: String,
    /// The limit.
    pub limit: f64,
    /// Smallest value.
    pub min: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
    /// Seeds that fail it.
    pub failed_seeds: usize,
    /// Seeds that fail it / seeds.
    pub failure_fraction: f64,
    /// Each seed's value, in seed order (for the plots).
    pub values: Vec<f64>,
}

/// The worst seed of a group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorstSeed {
    /// The seed.
    pub seed: u64,
    /// Its point's index.
    pub point: usize,
    /// The checks it fails.
    pub failed_checks: Vec<String>,
    /// A command that reruns exactly this seed.
    pub command: String,
}

/// The seeds of one group (the other sweep keys fixed).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedGroup {
    /// The other keys' settings, or `all seeds`.
    pub label: String,
    /// Seeds in the group.
    pub seeds: usize,
    /// Seeds failing any check / seeds.
    pub slo_failure_fraction: f64,
    /// Per check, in the scenario's order.
    pub checks: Vec<CheckDistribution>,
    /// The worst seed (None without checks).
    pub worst: Option<WorstSeed>,
}

/// A seed study: present in a plan whose sweep has a `seed` key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeedStudy {
    /// Per group.
    pub groups: Vec<SeedGroup>,
}

/// The seed study of a plan whose points carry these checks (one list per point, in point
/// order); `None` when the sweep has no seed key.
pub fn study(
    plan: &DeterministicPlan,
    checks: &[Vec<Check>],
    scenario_path: &str,
) -> Option<SeedStudy> {
    let seed_key = plan.sweep.iter().position(|s| s.key == SEED_KEY)?;
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for point in &plan.points {
        let label = others(&plan.sweep, &point.settings, seed_key, ", ");
        let label = if label.is_empty() {
            "all seeds".into()
        } else {
            label
        };
        match groups.iter_mut().find(|(l, _)| *l == label) {
            Some((_, members)) => members.push(point.index),
            None => groups.push((label, vec![point.index])),
        }
    }
    let groups = groups
        .into_iter()
        .map(|(label, members)| group(plan, checks, seed_key, label, &members, scenario_path))
        .collect();
    Some(SeedStudy { groups })
}

/// `key=value` of every sweep key but the seed.
fn others(
    sweep: &[SweepRow],
    settings: &[super::SweepValue],
    seed_key: usize,
    sep: &str,
) -> String {
    sweep
        .iter()
        .zip(settings)
        .enumerate()
        .filter(|(i, _)| *i != seed_key)
        .map(|(_, (row, value))| format!("{}={}", row.key, plain(value)))
        .collect::<Vec<_>>()
        .join(sep)
}

/// A sweep value as a command line takes it (exact digits, not `1.41M`).
fn plain(value: &super::SweepValue) -> String {
    match value {
        super::SweepValue::Number(n) => n.to_string(),
        super::SweepValue::Name(name) => name.clone(),
    }
}

fn group(
    plan: &DeterministicPlan,
    checks: &[Vec<Check>],
    seed_key: usize,
    label: String,
    members: &[usize],
    scenario_path: &str,
) -> SeedGroup {
    let seed_of = |i: usize| plan.points[i].settings[seed_key].number().unwrap_or(0);
    let mut by_name: BTreeMap<&str, (usize, f64, Vec<f64>, usize)> = BTreeMap::new();
    for (order, &i) in members.iter().enumerate() {
        for (position, check) in checks[i].iter().enumerate() {
            let entry = by_name.entry(check.name.as_str()).or_insert((
                position,
                check.limit,
                Vec::new(),
                0,
            ));
            entry.2.push(check.value);
            entry.3 += usize::from(!check.passed);
            debug_assert!(entry.2.len() == order + 1);
        }
    }
    let seeds = members.len();
    let mut distributions: Vec<(usize, CheckDistribution)> = by_name
        .into_iter()
        .map(|(name, (position, limit, values, failed))| {
            (position, distribution(name, limit, values, failed, seeds))
        })
        .collect();
    distributions.sort_by_key(|(position, _)| *position);
    let failing = members
        .iter()
        .filter(|&&i| checks[i].iter().any(|c| !c.passed))
        .count();
    let worst = members
        .iter()
        .copied()
        .filter(|&i| !checks[i].is_empty())
        .min_by(|&a, &b| {
            let failed = |i: usize| checks[i].iter().filter(|c| !c.passed).count();
            failed(b)
                .cmp(&failed(a))
                .then(margin(&checks[a]).total_cmp(&margin(&checks[b])))
                .then(seed_of(a).cmp(&seed_of(b)))
        })
        .map(|i| WorstSeed {
            seed: seed_of(i),
            point: i,
            failed_checks: checks[i]
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.clone())
                .collect(),
            command: command(plan, seed_key, i, scenario_path),
        });
    SeedGroup {
        label,
        seeds,
        slo_failure_fraction: fraction(failing, seeds),
        checks: distributions.into_iter().map(|(_, d)| d).collect(),
        worst,
    }
}

fn fraction(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn distribution(
    name: &str,
    limit: f64,
    values: Vec<f64>,
    failed: usize,
    seeds: usize,
) -> CheckDistribution {
    let mut sorted = values.clone();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let n = sorted.len();
        let index = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
        sorted.get(index).copied().unwrap_or(f64::NAN)
    };
    CheckDistribution {
        name: name.to_string(),
        limit,
        min: sorted.first().copied().unwrap_or(f64::NAN),
        p50: rank(50.0),
        p90: rank(90.0),
        p99: rank(99.0),
        max: sorted.last().copied().unwrap_or(f64::NAN),
        failed_seeds: failed,
        failure_fraction: fraction(failed, seeds),
        values,
    }
}

/// Whether a check is a lower bound (`legit_success_ratio_min`, `min_packets`, …).
pub fn is_lower_bound(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last.ends_with("_min") || last.starts_with("min_")
}

/// The smallest relative margin of a point's checks to their limits (negative: broken).
fn margin(checks: &[Check]) -> f64 {
    checks
        .iter()
        .map(|c| {
            let slack = if is_lower_bound(&c.name) {
                c.value - c.limit
            } else {
                c.limit - c.value
            };
            slack / c.limit.abs().max(1e-9)
        })
        .fold(f64::INFINITY, f64::min)
}

/// `sim run … --seed S` when the seed is the only key, else a one-point `sim plan`.
fn command(plan: &DeterministicPlan, seed_key: usize, i: usize, scenario_path: &str) -> String {
    let point = &plan.points[i];
    let seed = point.settings[seed_key].number().unwrap_or(0);
    let duration = duration_text(plan.duration_ns);
    if plan.sweep.len() == 1 {
        return format!("sim run {scenario_path} --seed {seed} --duration {duration}");
    }
    let sweeps = others(&plan.sweep, &point.settings, seed_key, " --sweep ");
    format!("sim plan {scenario_path} --sweep seed={seed} --sweep {sweeps} --duration {duration}")
}

/// A duration as `--duration` takes it, exactly.
pub fn duration_text(ns: TimeNs) -> String {
    match ns {
        ns if ns % 1_000_000 == 0 => format!("{}ms", ns / 1_000_000),
        ns if ns % 1_000 == 0 => format!("{}us", ns / 1_000),
        ns => format!("{ns}ns"),
    }
}

/// The study in Markdown (a `## Seed study` section).
pub fn markdown(study: &SeedStudy) -> String {
    use std::fmt::Write as _;
    let mut md = String::from("\n## Seed study (deterministic)\n\n");
    for group in &study.groups {
        let _ = writeln!(
            md,
            "### {} — {} seeds, {:.1} % fail an [expect] check\n",
            group.label,
            group.seeds,
            group.slo_failure_fraction * 100.0
        );
        md.push_str("| check | limit | min | p50 | p90 | p99 | max | seeds failing |\n|---|---|---|---|---|---|---|---|\n");
        for c in &group.checks {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} ({:.1} %) |",
                c.name,
                num(c.limit),
                num(c.min),
                num(c.p50),
                num(c.p90),
                num(c.p99),
                num(c.max),
                c.failed_seeds,
                c.failure_fraction * 100.0
            );
        }
        if let Some(worst) = &group.worst {
            let failed = if worst.failed_checks.is_empty() {
                "fails no check; closest to a limit".to_string()
            } else {
                format!("fails {}", worst.failed_checks.join(", "))
            };
            let _ = writeln!(
                md,
                "\nWorst seed: {} ({failed}). Reproduce: `{}`\n",
                worst.seed, worst.command
            );
        }
    }
    md
}

/// The study in words, for the answer.
pub fn answer(study: &SeedStudy) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for group in &study.groups {
        let checks: Vec<String> = group
            .checks
            .iter()
            .filter(|c| c.failed_seeds > 0)
            .map(|c| format!("{} {:.1} %", c.name, c.failure_fraction * 100.0))
            .collect();
        let checks = if checks.is_empty() {
            "no check fails".into()
        } else {
            checks.join(", ")
        };
        let _ = writeln!(
            out,
            "Seed study ({}): {} seeds, {:.1} % fail an [expect] check ({checks}).",
            group.label,
            group.seeds,
            group.slo_failure_fraction * 100.0
        );
        if let Some(worst) = &group.worst {
            let _ = writeln!(out, "  worst seed {}: {}", worst.seed, worst.command);
        }
    }
    out
}

fn num(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_durations() {
        assert!(is_lower_bound("legit_success_ratio_min"));
        assert!(is_lower_bound("min_packets"));
        assert!(is_lower_bound("source.web.success_ratio_min"));
        assert!(!is_lower_bound("max_drop_ratio"));
        assert!(!is_lower_bound("connect_p99_max"));
        assert_eq!(duration_text(50_000_000), "50ms");
        assert_eq!(duration_text(1_500), "1500ns");
        assert_eq!(duration_text(3_000), "3us");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=200).map(f64::from).collect();
        let d = distribution("x_min", 10.0, values, 9, 200);
        assert_eq!(
            (d.min, d.p50, d.p90, d.p99, d.max),
            (1.0, 100.0, 180.0, 198.0, 200.0)
        );
        assert_eq!(d.failure_fraction, 0.045);
    }
}
