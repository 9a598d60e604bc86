//! `plan.html`: one self-contained page (inline CSS and inline SVG, nothing fetched) with
//! the answer in words, the per-point tables and seven plots drawn with plotters' SVG backend
//! (text becomes SVG `<text>`, so no font library is needed): legitimate success, drops by
//! reason, per-backend load and imbalance, connect-time percentiles, cores needed and memory,
//! each against the x-axis sweep key (log scale when it spans a decade or more).
//!
//! Not here: the numbers (see [`super::render`] and [`super::model`]), drawing a chart (see
//! [`crate::svg`]).

use std::fmt::Write as _;

use super::Plan;
use super::render::{self, Group};
use super::sweep::round_significant;
use crate::svg::{Axes, Chart, Series, escape, human, svg_with};

fn log_axis(plan: &Plan) -> bool {
    let xs: Vec<u64> = (0..plan.deterministic.points.len())
        .map(|i| render::x_value(plan, i))
        .collect();
    let (low, high) = (xs.iter().min(), xs.iter().max());
    plan.deterministic.x_axis.is_some()
        && matches!((low, high), (Some(&l), Some(&h)) if l > 0 && h >= 10 * l)
}

/// Build a series per group from a per-point value.
fn per_group(
    plan: &Plan,
    groups: &[Group],
    prefix: &str,
    value: impl Fn(usize) -> Option<f64>,
) -> Vec<Series> {
    let log = log_axis(plan);
    groups
        .iter()
        .map(|group| {
            let name = match (prefix.is_empty(), groups.len() > 1) {
                (true, _) => group.label.clone(),
                (false, true) => format!("{prefix} ({})", group.label),
                (false, false) => prefix.to_string(),
            };
            let points = group
                .points
                .iter()
                .filter_map(|&i| {
                    let x = render::x_value(plan, i) as f64;
                    let x = if log { x.log10() } else { x };
                    value(i).map(|y| (x, y))
                })
                .collect();
            Series { name, points }
        })
        .filter(|s: &Series| !s.points.is_empty())
        .collect()
}

fn chart(title: &str, y_desc: &str, series: Vec<Series>, y_range: Option<(f64, f64)>) -> Chart {
    Chart {
        title: title.into(),
        y_desc: y_desc.into(),
        series,
        y_range,
    }
}

/// The plots' data.
pub fn charts(plan: &Plan) -> Vec<Chart> {
    let groups = render::groups(plan);
    let points = &plan.deterministic.points;
    let measured = &plan.measured.points;
    let mut drop_reasons: Vec<&String> =
        points.iter().flat_map(|p| p.outcome.drops.keys()).collect();
    drop_reasons.sort();
    drop_reasons.dedup();
    let drops = drop_reasons
        .iter()
        .flat_map(|reason| {
            per_group(plan, &groups, reason, |i| {
                Some(points[i].outcome.drops.get(*reason).copied().unwrap_or(0) as f64)
            })
        })
        .collect();
    let mut servers: Vec<&String> = points
        .iter()
        .flat_map(|p| p.outcome.backends.iter().map(|b| &b.server))
        .collect();
    servers.sort();
    servers.dedup();
    let backends: Vec<Series> = servers
        .iter()
        .flat_map(|server| {
            per_group(plan, &groups, server, |i| {
                let backend = points[i]
                    .outcome
                    .backends
                    .iter()
                    .find(|b| &b.server == *server);
                backend.map(|b| b.packets as f64)
            })
        })
        .collect();
    let imbalance = per_group(plan, &groups, "", |i| points[i].outcome.imbalance);
    let percentile = |pick: fn(&crate::report::Percentiles) -> u64| {
        move |i: usize| {
            points[i]
                .outcome
                .connect_ns
                .as_ref()
                .map(|p| pick(p) as f64 / 1e6)
        }
    };
    let mut latency = per_group(plan, &groups, "p50", percentile(|p| p.p50));
    latency.extend(per_group(plan, &groups, "p90", percentile(|p| p.p90)));
    latency.extend(per_group(plan, &groups, "p99", percentile(|p| p.p99)));
    let mut cores = per_group(plan, &groups, "cores needed", |i| {
        Some(measured[i].cores_needed)
    });
    cores.extend(per_group(plan, &groups, "budget", |_| {
        Some(plan.measured.core_budget as f64)
    }));
    let memory = per_group(plan, &groups, "", |i| {
        Some(measured[i].memory.total_bytes as f64 / (1024.0 * 1024.0))
    });
    vec![
        chart(
            "Legitimate success ratio",
            "success ratio",
            per_group(plan, &groups, "", |i| points[i].outcome.legit_success_ratio),
            Some((0.0, 1.05)),
        ),
        chart("Drops by reason", "packets dropped", drops, None),
        chart("Per-backend load", "packets forwarded", backends, None),
        chart(
            "Backend imbalance (busiest / mean)",
            "max / mean",
            imbalance,
            None,
        ),
        chart("Connect time percentiles", "ms", latency, None),
        chart("CPU cores needed (measured cost)", "cores", cores, None),
        chart("Table memory", "MiB", memory, None),
    ]
}

/// Draw one sweep chart as an SVG document (x: the swept key, log scale when `log_x`).
pub fn svg(chart: &Chart, x_desc: &str, log_x: bool) -> anyhow::Result<String> {
    let x_label = |v: f64| {
        let value = if log_x { 10f64.powf(v) } else { v };
        human(round_significant(value, 2))
    };
    let axes = Axes {
        x_desc,
        x_range: None,
        x_label: &x_label,
        markers: true,
    };
    svg_with(chart, &axes)
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1000px}\
table{border-collapse:collapse;font-size:13px;margin:1em 0}\
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}\
pre{background:#f6f6f6;padding:1em;white-space:pre-wrap}\
figure{margin:1.5em 0}";

/// The whole page.
pub fn page(plan: &Plan) -> anyhow::Result<String> {
    let mut html = String::new();
    let name = escape(&plan.deterministic.scenario);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Capacity plan: {name}</title><style>{STYLE}</style></head><body>\n\
         <h1>Capacity plan: {name}</h1>\n<h2>Answer</h2>\n<pre>{}</pre>\n",
        escape(&render::answer(plan))
    );
    let x_desc = render::x_name(plan);
    let log_x = log_axis(plan);
    html.push_str("<h2>Plots</h2>\n");
    for chart in charts(plan) {
        if chart.series.is_empty() {
            let _ = writeln!(
                html,
                "<p>{}: no data in this sweep.</p>",
                escape(&chart.title)
            );
            continue;
        }
        let _ = writeln!(html, "<figure>{}</figure>", svg(&chart, &x_desc, log_x)?);
    }
    if let Some(study) = &plan.deterministic.seed_study {
        seed_plots(study, &mut html)?;
    }
    let _ = writeln!(
        html,
        "<h2>Tables</h2>\n<pre>{}</pre>\n</body></html>",
        escape(&render::markdown(plan))
    );
    Ok(html)
}

/// Per check of a seed study: its values over the seeds, sorted (x: the share of seeds at
/// or below, %), with the limit.
fn seed_plots(study: &super::seeds::SeedStudy, html: &mut String) -> anyhow::Result<()> {
    html.push_str("<h2>Seed study</h2>\n");
    for group in &study.groups {
        for check in &group.checks {
            let mut sorted = check.values.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len().max(1) as f64;
            let points = sorted
                .iter()
                .enumerate()
                .map(|(i, v)| ((i + 1) as f64 * 100.0 / n, *v))
                .collect();
            let limit = vec![(0.0, check.limit), (100.0, check.limit)];
            let title = format!(
                "{} over {} seeds ({}): {:.1} % fail",
                check.name,
                group.seeds,
                group.label,
                check.failure_fraction * 100.0
            );
            let series = vec![
                Series {
                    name: "value".into(),
                    points,
                },
                Series {
                    name: "limit".into(),
                    points: limit,
                },
            ];
            let chart = chart(&title, &check.name, series, None);
            let label = |v: f64| format!("{v:.0} %");
            let axes = Axes {
                x_desc: "seeds at or below (%)",
                x_range: Some((0.0, 100.0)),
                x_label: &label,
                markers: false,
            };
            let _ = writeln!(html, "<figure>{}</figure>", svg_with(&chart, &axes)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_renders_lines_and_text_without_fonts() {
        let chart = chart(
            "test",
            "y",
            vec![Series {
                name: "a".into(),
                points: vec![(1.0, 1.0), (2.0, 3.0), (3.0, 2.0)],
            }],
            None,
        );
        let svg = svg(&chart, "x", false).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("<text"));
    }
}
