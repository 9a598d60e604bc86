//! `report.html` of `sim run`: one self-contained page (inline CSS and inline SVG, nothing
//! fetched) with the run's verdict, plots of its time series drawn with plotters' SVG backend
//! (text becomes SVG `<text>`, so no font library is needed) — packets per second by
//! verdict, shield mode bits per context and queue, each real server's share of forwarded
//! packets and its ActiveConn, legitimate clients' connection-time percentiles — then the
//! Markdown report's tables and the measured (wall-clock) figures.
//!
//! Not here: the numbers (see [`crate::report`] and [`crate::engine::series`]).

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::report::{Measured, Report};

/// One line on a plot: legend and (x seconds, y) points in x order.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Legend.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

/// One plot over virtual time.
#[derive(Clone, Debug, PartialEq)]
pub struct Plot {
    /// Caption.
    pub title: String,
    /// Y axis description.
    pub y_desc: String,
    /// Lines.
    pub lines: Vec<Line>,
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

/// Most lines on one plot (shield tracks of many contexts × queues are cut here).
const LINES_MAX: usize = 16;

/// Buckets of the share plot are this many series buckets wide (shares of a few packets
/// would only show noise).
const SHARE_BUCKETS_MERGED: usize = 5;

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Buckets that start before the end of the run (events at exactly the end fall into a
/// bucket of their own, which would plot as a collapse).
fn buckets_in_run(report: &Report) -> usize {
    let bucket_ns = report.plots.series.bucket_ns.max(1);
    report.duration_ns.div_ceil(bucket_ns) as usize
}

/// One column of a time-series row.
type RowValue = fn(&crate::engine::SecondRow) -> u64;

/// Packets per second by verdict.
fn verdict_plot(report: &Report) -> Plot {
    let series = &report.plots.series;
    let per_second = 1e9 / series.bucket_ns as f64;
    let rows = &series.rows[..series.rows.len().min(buckets_in_run(report))];
    let pick: [(&str, RowValue); 5] = [
        ("processed", |r| r.processed),
        ("pass", |r| r.pass),
        ("drop", |r| r.drop),
        ("reply", |r| r.reply),
        ("forward", |r| r.forward),
    ];
    let lines = pick
        .iter()
        .filter(|(_, value)| rows.iter().any(|r| value(r) > 0))
        .map(|(name, value)| Line {
            name: (*name).into(),
            points: rows
                .iter()
                .map(|r| {
                    let x = seconds(r.second * series.bucket_ns);
                    (x, value(r) as f64 * per_second)
                })
                .collect(),
        })
        .collect();
    plot("Packets per second by verdict", "packets/s", lines)
}

/// Shield mode bits as steps, one line per context and queue.
fn mode_plot(report: &Report) -> Plot {
    let end = seconds(report.duration_ns);
    let lines = report
        .plots
        .series
        .modes
        .iter()
        .filter(|track| !track.changes.is_empty())
        .take(LINES_MAX)
        .map(|track| {
            let mut points = vec![(0.0, 0.0)];
            let mut bits = 0.0;
            for &(time, new_bits) in &track.changes {
                let x = seconds(time);
                points.push((x, bits));
                bits = f64::from(new_bits);
                points.push((x, bits));
            }
            points.push((end, bits));
            Line {
                name: format!("{} q{}", track.context, track.queue),
                points,
            }
        })
        .collect();
    plot(
        "Shield mode bits (0x1 cookies, 0x2 TTL filter, 0x4 unmatched drop, 0x8 surge)",
        "mode bits",
        lines,
    )
}

/// Each real server's share of the packets forwarded in each bucket.
fn share_plot(report: &Report) -> Plot {
    let series = &report.plots.series;
    let buckets = buckets_in_run(report).div_ceil(SHARE_BUCKETS_MERGED);
    let merged = |counts: &[u64], bucket: usize| -> u64 {
        let start = bucket * SHARE_BUCKETS_MERGED;
        counts.iter().skip(start).take(SHARE_BUCKETS_MERGED).sum()
    };
    let totals: Vec<u64> = (0..buckets)
        .map(|i| series.backend_packets.values().map(|c| merged(c, i)).sum())
        .collect();
    let width_ns = series.bucket_ns * SHARE_BUCKETS_MERGED as u64;
    let lines = series
        .backend_packets
        .iter()
        .take(LINES_MAX)
        .map(|(server, counts)| Line {
            name: server.to_string(),
            points: (0..buckets)
                .filter(|&i| totals[i] > 0)
                .map(|i| {
                    let x = seconds(i as u64 * width_ns);
                    (x, merged(counts, i) as f64 / totals[i] as f64)
                })
                .collect(),
        })
        .collect();
    plot("Real-server share of forwarded packets", "share", lines)
}

/// ActiveConn per real server.
fn active_plot(report: &Report) -> Plot {
    let series = &report.plots.series;
    let lines = series
        .active
        .iter()
        .take(LINES_MAX)
        .map(|(server, values)| Line {
            name: server.clone(),
            points: values
                .iter()
                .take(buckets_in_run(report))
                .enumerate()
                .map(|(i, &v)| (seconds(i as u64 * series.bucket_ns), v as f64))
                .collect(),
        })
        .collect();
    plot("ActiveConn per real server", "connections", lines)
}

/// Connection setup time percentiles per bucket (buckets with a connection only).
fn connect_plot(report: &Report) -> Plot {
    let bucket_ns = report.plots.series.bucket_ns.max(1);
    let mut by_bucket: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for &(time, connect) in &report.plots.connect_samples {
        by_bucket.entry(time / bucket_ns).or_default().push(connect);
    }
    let mut lines: Vec<Line> = ["p50", "p90", "p99"]
        .iter()
        .map(|name| Line {
            name: (*name).into(),
            points: Vec::new(),
        })
        .collect();
    for (bucket, mut values) in by_bucket {
        values.sort_unstable();
        let x = seconds(bucket * bucket_ns);
        for (line, quantile) in lines.iter_mut().zip([0.50, 0.90, 0.99]) {
            let rank = ((values.len() as f64 * quantile).ceil() as usize).clamp(1, values.len());
            line.points.push((x, values[rank - 1] as f64 / 1e6));
        }
    }
    lines.retain(|line| !line.points.is_empty());
    plot("Client connection time percentiles", "ms", lines)
}

fn plot(title: &str, y_desc: &str, lines: Vec<Line>) -> Plot {
    Plot {
        title: title.into(),
        y_desc: y_desc.into(),
        lines,
    }
}

/// The plots' data.
pub fn plots(report: &Report) -> Vec<Plot> {
    vec![
        verdict_plot(report),
        mode_plot(report),
        share_plot(report),
        active_plot(report),
        connect_plot(report),
    ]
}

fn axis_label(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if magnitude >= 100.0 || value == value.round() {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// Draw one plot as an SVG document (x: virtual seconds from 0 to `duration_s`).
pub fn svg(plot: &Plot, duration_s: f64) -> anyhow::Result<String> {
    let mut out = String::new();
    let error = |e: &dyn std::fmt::Debug| anyhow::anyhow!("plotting {}: {e:?}", plot.title);
    {
        let root = SVGBackend::with_string(&mut out, (900, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| error(&e))?;
        let y_max = plot
            .lines
            .iter()
            .flat_map(|l| &l.points)
            .map(|p| p.1)
            .fold(0.0f64, f64::max);
        let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(&root)
            .caption(&plot.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..duration_s.max(1e-3), 0.0..y_max)
            .map_err(|e| error(&e))?;
        chart
            .configure_mesh()
            .x_desc("virtual time (s)")
            .y_desc(&plot.y_desc)
            .x_label_formatter(&|v| format!("{v:.2}"))
            .y_label_formatter(&|v| axis_label(*v))
            .draw()
            .map_err(|e| error(&e))?;
        for (index, line) in plot.lines.iter().enumerate() {
            let color = PALETTE[index % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(line.points.clone(), color.stroke_width(2)))
                .map_err(|e| error(&e))?
                .label(&line.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| error(&e))?;
        root.present().map_err(|e| error(&e))?;
    }
    Ok(out)
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1000px}\
pre{background:#f6f6f6;padding:1em;white-space:pre-wrap;font-size:12px}\
figure{margin:1.5em 0}.pass{color:#2a7d2a}.fail{color:#b22222}";

/// The whole page.
pub fn page(report: &Report, measured: Option<&Measured>) -> anyhow::Result<String> {
    let escape = crate::plan::html::escape;
    let name = escape(&report.scenario);
    let (class, verdict) = if report.passed {
        ("pass", "PASS")
    } else {
        ("fail", "FAIL")
    };
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Scenario {name}</title><style>{STYLE}</style></head><body>\n\
         <h1>Scenario {name} — <span class=\"{class}\">{verdict}</span></h1>\n\
         <p>seed {} · {} receive queues · {:.3} s of virtual time · {} packets processed</p>\n",
        report.seed,
        report.queues,
        seconds(report.duration_ns),
        report.totals.processed
    );
    html.push_str("<h2>Time series</h2>\n");
    for plot in plots(report) {
        if plot.lines.is_empty() {
            let _ = writeln!(
                html,
                "<p>{}: nothing to plot in this run.</p>",
                escape(&plot.title)
            );
            continue;
        }
        let svg = svg(&plot, seconds(report.duration_ns))?;
        let _ = writeln!(html, "<figure>{svg}</figure>");
    }
    let _ = writeln!(
        html,
        "<h2>Report</h2>\n<pre>{}</pre>\n</body></html>",
        escape(&crate::report::markdown(report, measured))
    );
    Ok(html)
}
