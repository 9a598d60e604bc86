//! The callgrind instruction-count check's data: the committed baseline
//! (`benches/callgrind-baseline.toml`: instructions per packet per workload and a
//! tolerance), the comparison of a measurement against it, and its table.
//!
//! Instruction counts do not depend on machine load, so this catches hot-path regressions
//! that wall-clock benchmarks on a shared machine cannot. `scripts/callgrind-check` runs
//! the workloads under valgrind and calls `lbsim-callgrind check`, which uses this module.
//!
//! Not here: running valgrind (the script does) or the measured loops
//! ([`super::measure::counted_pass`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Workloads the check counts, in table order.
pub const KEY_WORKLOADS: [&str; 10] = [
    "parse",
    "deny_drop",
    "syn_cookie",
    "flows_100",
    "established",
    "schedule_wlc",
    "pipeline_mixed",
    "engine_synflood",
    "engine_synflood_cookies",
    "realtime_10g_1t",
];

/// Default tolerance when a baseline is first written, percent.
pub const DEFAULT_TOLERANCE_PERCENT: f64 = 5.0;

/// The committed baseline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// A change within ± this many percent passes.
    pub tolerance_percent: f64,
    /// Instructions per packet, by workload.
    pub workloads: BTreeMap<String, f64>,
}

/// How one workload compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within the tolerance.
    Pass,
    /// More instructions than the tolerance allows: fails the check.
    Regression,
    /// Fewer instructions than the tolerance: passes; `--update` to lock it in.
    Improvement,
    /// Measured but not in the baseline: passes; `--update` to add it.
    New,
    /// In the baseline but not measured: fails the check.
    Missing,
}

impl Status {
    /// Whether this fails the check.
    pub fn fails(self) -> bool {
        matches!(self, Self::Regression | Self::Missing)
    }

    fn name(self) -> &'static str {
        match self {
            Self::Pass => "ok",
            Self::Regression => "REGRESSION",
            Self::Improvement => "improvement",
            Self::New => "new",
            Self::Missing => "MISSING",
        }
    }
}

/// One workload's comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// Workload name.
    pub workload: String,
    /// Baseline instructions per packet.
    pub baseline: Option<f64>,
    /// Measured instructions per packet.
    pub measured: Option<f64>,
    /// `(measured − baseline) / baseline`, percent.
    pub change_percent: Option<f64>,
    /// The verdict.
    pub status: Status,
}

/// Compare measured instructions per packet with the baseline, workload by workload (the
/// union of both, in name order).
pub fn compare(baseline: &Baseline, measured: &BTreeMap<String, f64>) -> Vec<Comparison> {
    let mut names: Vec<&String> = baseline.workloads.keys().chain(measured.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let (base, now) = (
                baseline.workloads.get(name).copied(),
                measured.get(name).copied(),
            );
            let change_percent = base.zip(now).map(|(base, now)| (now - base) / base * 100.0);
            let status = match (base, now, change_percent) {
                (None, _, _) => Status::New,
                (_, None, _) => Status::Missing,
                (_, _, Some(change)) if change > baseline.tolerance_percent => Status::Regression,
                (_, _, Some(change)) if change < -baseline.tolerance_percent => Status::Improvement,
                _ => Status::Pass,
            };
            Comparison {
                workload: name.clone(),
                baseline: base,
                measured: now,
                change_percent,
                status,
            }
        })
        .collect()
}

/// Whether any comparison fails the check.
pub fn failed(comparisons: &[Comparison]) -> bool {
    comparisons.iter().any(|c| c.status.fails())
}

/// The comparison table.
pub fn render(comparisons: &[Comparison], tolerance_percent: f64) -> String {
    let width = comparisons
        .iter()
        .map(|c| c.workload.len())
        .max()
        .unwrap_or(0)
        .max(16);
    let mut out = format!(
        "instructions per packet (callgrind, release), tolerance ±{tolerance_percent}%\n{:<width$} {:>12} {:>12} {:>9}  status\n",
        "workload", "baseline", "measured", "change"
    );
    let number = |value: Option<f64>| value.map_or("-".into(), |v| format!("{v:.1}"));
    for row in comparisons {
        let change = row
            .change_percent
            .map_or("-".into(), |c| format!("{c:+.2}%"));
        let _ = writeln!(
            out,
            "{:<width$} {:>12} {:>12} {:>9}  {}",
            row.workload,
            number(row.baseline),
            number(row.measured),
            change,
            row.status.name()
        );
    }
    out
}

/// The baseline file's text for these measurements (what `--update` writes): keeps the
/// given tolerance, and says how to regenerate it.
pub fn baseline_text(tolerance_percent: f64, measured: &BTreeMap<String, f64>) -> String {
    let baseline = Baseline {
        tolerance_percent,
        workloads: measured
            .iter()
            .map(|(name, value)| (name.clone(), (value * 10.0).round() / 10.0))
            .collect(),
    };
    let body = toml::to_string(&baseline).unwrap_or_default();
    format!(
        "# Instructions per packet of the key `sim bench` workloads, counted by callgrind in the\n\
         # measured loop only (release build). `scripts/callgrind-check` fails when a workload\n\
         # costs more than `tolerance_percent` above its figure here.\n\
         # Regenerate after an intended change (and commit): scripts/callgrind-check --update\n\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(entries: &[(&str, f64)]) -> Baseline {
        Baseline {
            tolerance_percent: 5.0,
            workloads: entries.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        }
    }

    fn measured(entries: &[(&str, f64)]) -> BTreeMap<String, f64> {
        entries.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn within_tolerance_passes_beyond_it_regresses_or_improves() {
        let base = baseline(&[("a", 100.0), ("b", 100.0), ("c", 100.0), ("d", 100.0)]);
        let rows = compare(
            &base,
            &measured(&[("a", 105.0), ("b", 105.1), ("c", 94.0), ("d", 95.0)]),
        );
        let statuses: Vec<_> = rows
            .iter()
            .map(|r| (r.workload.as_str(), r.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("a", Status::Pass),
                ("b", Status::Regression),
                ("c", Status::Improvement),
                ("d", Status::Pass),
            ]
        );
        assert!(failed(&rows));
        assert!((rows[1].change_percent.unwrap() - 5.1).abs() < 1e-9);
    }

    #[test]
    fn new_workloads_pass_and_missing_ones_fail() {
        let rows = compare(&baseline(&[("gone", 10.0)]), &measured(&[("fresh", 10.0)]));
        assert_eq!(rows[0].workload, "fresh");
        assert_eq!(rows[0].status, Status::New);
        assert_eq!(rows[1].status, Status::Missing);
        assert!(failed(&rows));
        assert!(!failed(&compare(&baseline(&[]), &measured(&[("x", 1.0)]))));
    }

    #[test]
    fn the_written_baseline_reads_back() {
        let text = baseline_text(5.0, &measured(&[("parse", 101.26), ("deny_drop", 300.0)]));
        let read: Baseline = toml::from_str(&text).unwrap();
        assert_eq!(read, baseline(&[("parse", 101.3), ("deny_drop", 300.0)]));
        assert!(text.contains("scripts/callgrind-check --update"));
    }
}
