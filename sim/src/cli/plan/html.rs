//! `plan.html`: one self-contained page (inline CSS and inline SVG, nothing fetched) with
//! the answer in words, the per-point tables and seven plots drawn with plotters' SVG backend
//! (text becomes SVG `<text>`, so no font library is needed): legitimate success, drops by
//! reason, per-backend load and imbalance, connect-time percentiles, cores needed and memory,
//! each against the x-axis sweep key (log scale when it spans a decade or more).
//!
//! Not here: the numbers (see [`super::render`] and [`super::model`]).

use std::fmt::Write as _;

use plotters::prelude::*;

use super::Plan;
use super::render::{self, Group};
use super::sweep::{human, round_significant};

/// One line on a plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend.
    pub name: String,
    /// (x, y) points in x order.
    pub points: Vec<(f64, f64)>,
}

/// One plot.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Caption.
    pub title: String,
    /// Y axis description.
    pub y_desc: String,
    /// Lines.
    pub series: Vec<Series>,
    /// Fixed y range (else from the data, from 0).
    pub y_range: Option<(f64, f64)>,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Escape text for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

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

/// How [`svg_with`] draws a chart's axes: everything that differs between a capacity sweep
/// and a run's time series.
pub struct Axes<'a> {
    /// X axis description.
    pub x_desc: &'a str,
    /// Fixed x range (else from the data, padded 3%).
    pub x_range: Option<(f64, f64)>,
    /// X tick label.
    pub x_label: &'a dyn Fn(f64) -> String,
    /// Draw a dot on every point (sweeps have few points; time series many).
    pub markers: bool,
}

fn bounds(chart: &Chart, x_range: Option<(f64, f64)>) -> ((f64, f64), (f64, f64)) {
    let all = chart.series.iter().flat_map(|s| &s.points);
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 >= x1 {
        (x0, x1) = (x0 - 1.0, x0 + 1.0);
    }
    let pad = (x1 - x0) * 0.03;
    let y = chart
        .y_range
        .unwrap_or((0.0, if y1 > 0.0 { y1 * 1.1 } else { 1.0 }));
    (x_range.unwrap_or((x0 - pad, x1 + pad)), y)
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

/// Draw one chart as an SVG document (plotters SVG backend: no font libraries).
pub fn svg_with(chart: &Chart, axes: &Axes) -> anyhow::Result<String> {
    let mut out = String::new();
    let error = |e: &dyn std::fmt::Debug| anyhow::anyhow!("plotting {}: {e:?}", chart.title);
    {
        let root = SVGBackend::with_string(&mut out, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| error(&e))?;
        let ((x0, x1), (y0, y1)) = bounds(chart, axes.x_range);
        let mut plot = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| error(&e))?;
        let x_label = |v: &f64| (axes.x_label)(*v);
        let y_label = |v: &f64| {
            if v.abs() >= 1000.0 {
                human(v.round() as u64)
            } else {
                format!("{v:.2}")
            }
        };
        plot.configure_mesh()
            .x_desc(axes.x_desc)
            .y_desc(&chart.y_desc)
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .draw()
            .map_err(|e| error(&e))?;
        for (index, series) in chart.series.iter().enumerate() {
            let color = PALETTE[index % PALETTE.len()];
            plot.draw_series(LineSeries::new(
                series.points.clone(),
                color.stroke_width(2),
            ))
            .map_err(|e| error(&e))?
            .label(&series.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            if axes.markers {
                plot.draw_series(
                    series
                        .points
                        .iter()
                        .map(|&point| Circle::new(point, 3, color.filled())),
                )
                .map_err(|e| error(&e))?;
            }
        }
        plot.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| error(&e))?;
        root.present().map_err(|e| error(&e))?;
    }
    Ok(out)
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
    let _ = writeln!(
        html,
        "<h2>Tables</h2>\n<pre>{}</pre>\n</body></html>",
        escape(&render::markdown(plan))
    );
    Ok(html)
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

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
