//! Rendering a [`Plan`]: `plan.json` (`{"deterministic": …, "measured": …}`), `plan.md`,
//! and the answer in words — per group of points (the points that differ only in the
//! x-axis key): the highest load meeting the `[expect]` SLOs, the first constraint that
//! breaks, and the cores and memory each point (each requested target) needs, with the
//! measured-cost basis and the machine.
//!
//! Not here: the plots ([`super::html`]).

use std::fmt::Write as _;

use super::model::CostClass;
use super::{MeasuredPoint, Plan, PointRow};

/// Points that differ only in the x-axis key, in x order.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The other keys' settings (`queues=2, director.web.scheduler=rr`), or `all points`.
    pub label: String,
    /// Point indices, sorted by x.
    pub points: Vec<usize>,
}

/// The groups of a plan, in order of their first point.
pub fn groups(plan: &Plan) -> Vec<Group> {
    let deterministic = &plan.deterministic;
    let x = deterministic.x_axis;
    let mut groups: Vec<Group> = Vec::new();
    for point in &deterministic.points {
        let others: Vec<String> = deterministic
            .sweep
            .iter()
            .zip(&point.settings)
            .enumerate()
            .filter(|(i, _)| Some(*i) != x)
            .map(|(_, (sweep, value))| format!("{}={value}", sweep.key))
            .collect();
        let label = if others.is_empty() {
            "all points".to_string()
        } else {
            others.join(", ")
        };
        match groups.iter_mut().find(|g| g.label == label) {
            Some(group) => group.points.push(point.index),
            None => groups.push(Group {
                label,
                points: vec![point.index],
            }),
        }
    }
    for group in &mut groups {
        group.points.sort_by_key(|&i| x_value(plan, i));
    }
    groups
}

/// The point's value of the x-axis key (its index when there is none).
pub fn x_value(plan: &Plan, index: usize) -> u64 {
    plan.deterministic
        .x_axis
        .and_then(|x| plan.deterministic.points[index].settings[x].number())
        .unwrap_or(index as u64)
}

/// The x axis's name.
pub fn x_name(plan: &Plan) -> String {
    plan.deterministic.x_axis.map_or("sweep point".into(), |x| {
        plan.deterministic.sweep[x].key.clone()
    })
}

fn settings(plan: &Plan, point: &PointRow) -> String {
    plan.deterministic
        .sweep
        .iter()
        .zip(&point.settings)
        .map(|(s, v)| format!("{}={v}", s.key))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every constraint a point breaks: the deterministic ones, then `cores`.
pub fn all_constraints(point: &PointRow, measured: &MeasuredPoint) -> Vec<String> {
    let mut broken = point.outcome.constraints.clone();
    if !measured.cores_fit {
        broken.push("cores".into());
    }
    broken
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The point's x value as written (`1.41M`), or `point N` without an x axis.
fn x_label(plan: &Plan, index: usize) -> String {
    plan.deterministic
        .x_axis
        .map_or(format!("point {index}"), |k| {
            plan.deterministic.points[index].settings[k].to_string()
        })
}

fn group_answer(plan: &Plan, group: &Group, out: &mut String) {
    let points = &plan.deterministic.points;
    let measured = &plan.measured.points;
    let x = x_name(plan);
    let label = |i: usize| x_label(plan, i);
    let first_slo_failure = group
        .points
        .iter()
        .position(|&i| !points[i].outcome.slo_passed);
    let slo_ok = &group.points[..first_slo_failure.unwrap_or(group.points.len())];
    match slo_ok.last() {
        Some(&i) if first_slo_failure.is_none() => {
            let _ = write!(
                out,
                "- Every point meets the [expect] SLOs, up to {x} = {} (extend the range to find the SLO limit)",
                label(i)
            );
        }
        Some(&i) => {
            let _ = write!(
                out,
                "- Highest load meeting the [expect] SLOs: {x} = {}",
                label(i)
            );
        }
        None => {
            let _ = write!(out, "- No load meets the [expect] SLOs");
        }
    }
    let first_broken = group
        .points
        .iter()
        .find(|&&i| !all_constraints(&points[i], &measured[i]).is_empty());
    match first_broken {
        Some(&i) => {
            let broken = all_constraints(&points[i], &measured[i]).join(", ");
            let _ = writeln!(
                out,
                "; the first constraint breaks at {x} = {}: {broken} (needs {:.2} cores, busiest queue {:.2}).",
                label(i),
                measured[i].cores_needed,
                measured[i].busiest_queue_cores
            );
        }
        None => {
            let _ = writeln!(
                out,
                "; no constraint breaks up to {x} = {}.",
                group.points.last().map_or(String::new(), |&i| label(i))
            );
        }
    }
    fit_sentence(plan, group, out);
}

/// The highest load meeting every SLO and constraint (cores included).
fn fit_sentence(plan: &Plan, group: &Group, out: &mut String) {
    let points = &plan.deterministic.points;
    let measured = &plan.measured.points;
    let x = x_name(plan);
    let fits = group
        .points
        .iter()
        .take_while(|&&i| all_constraints(&points[i], &measured[i]).is_empty())
        .last();
    match fits {
        Some(&i) => {
            let _ = writeln!(
                out,
                "- Highest load meeting every SLO and constraint within {} cores: {x} = {} ({:.2} cores, {}).",
                plan.measured.core_budget,
                x_label(plan, i),
                measured[i].cores_needed,
                mib(measured[i].memory.total_bytes)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "- No load in the sweep meets every SLO and constraint within {} cores.",
                plan.measured.core_budget
            );
        }
    }
}

/// The answer in words (also printed by `sim plan`).
pub fn answer(plan: &Plan) -> String {
    let mut out = String::new();
    let deterministic = &plan.deterministic;
    let machine = &plan.measured.calibration.machine;
    let _ = writeln!(
        out,
        "Plan for scenario `{}` (seed {}, {} ms per run, {} points):",
        deterministic.scenario,
        deterministic.seed,
        deterministic.duration_ns / 1_000_000,
        deterministic.points.len()
    );
    for group in groups(plan) {
        let _ = writeln!(out, "{}:", group.label);
        group_answer(plan, &group, &mut out);
    }
    if let Some(study) = &deterministic.seed_study {
        out.push_str(&super::seeds::answer(study));
    }
    let costs: Vec<String> = plan
        .measured
        .calibration
        .classes
        .iter()
        .map(|(class, cost)| format!("{} {:.0} ns", class.name(), cost.ns_per_packet))
        .collect();
    let _ = writeln!(
        out,
        "Cost basis: {} per packet, measured on {} ({} logical CPUs, {} build); core budget {}.",
        costs.join(", "),
        machine.cpu_model,
        machine.nproc,
        machine.profile,
        plan.measured.core_budget
    );
    out
}

/// `plan.json`: the deterministic and measured parts under their own top-level keys.
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_default() + "\n"
}

/// The deterministic part alone, as pretty JSON (what snapshots and determinism checks
/// compare).
pub fn deterministic_json(plan: &Plan) -> String {
    serde_json::to_string_pretty(&plan.deterministic).unwrap_or_default()
}

fn ratio(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{:.4}", v))
}

fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

/// `plan.md`.
pub fn markdown(plan: &Plan) -> String {
    let mut md = format!("# Capacity plan: `{}`\n\n", plan.deterministic.scenario);
    let _ = writeln!(md, "## Answer\n\n{}", answer(plan));
    md.push_str("## Simulated outcomes (deterministic)\n\n");
    md.push_str("| # | settings | SLOs | legit success | packets | drops | imbalance | connect p50/p99 ms | constraints |\n|---|---|---|---|---|---|---|---|---|\n");
    for point in &plan.deterministic.points {
        let outcome = &point.outcome;
        let drops: Vec<String> = outcome
            .drops
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        let connect = outcome
            .connect_ns
            .as_ref()
            .map_or("-".into(), |p| format!("{} / {}", ms(p.p50), ms(p.p99)));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {connect} | {} |",
            point.index,
            settings(plan, point),
            if outcome.slo_passed { "pass" } else { "FAIL" },
            ratio(outcome.legit_success_ratio),
            outcome.packets_processed,
            drops.join(", "),
            ratio(outcome.imbalance),
            outcome.constraints.join(", ")
        );
    }
    if let Some(study) = &plan.deterministic.seed_study {
        md.push_str(&super::seeds::markdown(study));
    }
    markdown_measured(plan, &mut md);
    md
}

fn markdown_measured(plan: &Plan, md: &mut String) {
    let measured = &plan.measured;
    md.push_str("\n## Cores and memory per target (measured, not deterministic)\n\n");
    md.push_str("| # | settings | cores needed | busiest queue | fits | shield memory | director memory | total |\n|---|---|---|---|---|---|---|---|\n");
    for (point, cost) in plan.deterministic.points.iter().zip(&measured.points) {
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.3} | {} | {} | {} | {} |",
            point.index,
            settings(plan, point),
            cost.cores_needed,
            cost.busiest_queue_cores,
            if cost.cores_fit { "yes" } else { "no" },
            mib(cost.memory.shield_bytes),
            mib(cost.memory.director_bytes),
            mib(cost.memory.total_bytes)
        );
    }
    md.push_str("\n## Cost basis\n\n| class | ns/packet (fastest batch) | median | packets timed |\n|---|---|---|---|\n");
    for (class, cost) in &measured.calibration.classes {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {:.1} | {} |",
            class.name(),
            cost.ns_per_packet,
            cost.median_ns_per_packet,
            cost.packets
        );
    }
    let machine = &measured.calibration.machine;
    let _ = writeln!(
        md,
        "\nMachine: {} · {} logical CPUs · {} build · calibration {} ms · sweep {} ms.\n",
        machine.cpu_model,
        machine.nproc,
        machine.profile,
        measured.calibration_wall_ms,
        measured.sweep_wall_ms
    );
    let _ = writeln!(
        md,
        "Model: cores = Σ over classes (packets/s × ns/packet) / 1e9, with rates averaged from \
         the start of the busiest source to the end of the run; decisions map to classes as \
         shield reply → {}, other shield decisions → {}, director → {}, parse → {}, flows or \
         undecided → {}. The busiest queue needs cores / queues (flows spread evenly). Memory = \
         the shield's slot arrays (allocated at build) + live director connections × {} bytes.",
        CostClass::SynCookie.name(),
        CostClass::ShieldDrop.name(),
        CostClass::NatEstablished.name(),
        CostClass::Parse.name(),
        CostClass::FlowsOnly.name(),
        measured.director_connection_bytes
    );
}
