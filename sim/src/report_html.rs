//! `report.html` of `sim run`: one self-contained page (inline CSS and inline SVG, nothing
//! fetched) with the run's verdict, plots of its time series drawn with plotters' SVG backend
//! (text becomes SVG `<text>`, so no font library is needed) — packets per second by
//! verdict, shield protection modes per context and queue as a state chart (a bar while a
//! mode is on), each real server's share of forwarded
//! packets and its ActiveConn, legitimate clients' connection-time percentiles — then the
//! Markdown report's tables as HTML tables (numbers right-aligned) and the measured
//! (wall-clock) figures.
//!
//! Not here: the numbers (see [`crate::report`] and [`crate::engine::series`]).

use std::fmt::Write as _;

use crate::report::{Measured, Report};
use crate::svg::{Axes, Chart, Series, svg_with};

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
fn verdict_plot(report: &Report) -> Chart {
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
        .map(|(name, value)| Series {
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

/// Geometry of the mode state chart (SVG user units).
const STATE_WIDTH: f64 = 960.0;
const STATE_LABEL: f64 = 300.0;
const STATE_LANE: f64 = 20.0;
const STATE_TOP: f64 = 30.0;
/// Colour per mode bit, in [`crate::appliance::MODE_BITS`] order.
const STATE_COLOURS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];

/// The intervals during which `bit` was on in a track's changes, ending at `end` (ns).
fn on_intervals(changes: &[(u64, u8)], bit: u8, end: u64) -> Vec<(u64, u64)> {
    let mut intervals = Vec::new();
    let mut since = None;
    for &(time, bits) in changes {
        match (since, bits & bit != 0) {
            (None, true) => since = Some(time),
            (Some(start), false) => {
                intervals.push((start, time));
                since = None;
            }
            _ => {}
        }
    }
    if let Some(start) = since {
        intervals.push((start, end));
    }
    intervals
}

/// Shield protection modes as a state chart: one lane per context, queue and mode that was
/// on at some point, a bar while it is on (modes are states, not quantities). `None` when no
/// mode changed.
fn mode_chart(report: &Report) -> Option<String> {
    let escape = crate::svg::escape;
    let end = report.duration_ns.max(1);
    let mut lanes = Vec::new();
    for track in report.plots.series.modes.iter().take(LINES_MAX) {
        for (index, (bit, name)) in crate::appliance::MODE_BITS.iter().enumerate() {
            let on = on_intervals(&track.changes, *bit, end);
            if !on.is_empty() {
                let label = format!("{} q{} · {name}", track.context, track.queue);
                lanes.push((label, STATE_COLOURS[index], on));
            }
        }
    }
    if lanes.is_empty() {
        return None;
    }
    let plot_width = STATE_WIDTH - STATE_LABEL - 30.0;
    let x = |ns: u64| STATE_LABEL + plot_width * ns as f64 / end as f64;
    let height = STATE_TOP + STATE_LANE * lanes.len() as f64 + 40.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{STATE_WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {STATE_WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\
         <text x=\"{}\" y=\"18\" font-size=\"15\" text-anchor=\"middle\">Shield protection modes \
         (bar: mode on)</text>",
        STATE_WIDTH / 2.0
    );
    for (row, (label, colour, on)) in lanes.iter().enumerate() {
        let y = STATE_TOP + STATE_LANE * row as f64;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{STATE_LABEL}\" y=\"{}\" width=\"{plot_width}\" height=\"{}\" fill=\"#f2f2f2\"/>",
            STATE_LABEL - 8.0,
            y + 14.0,
            escape(label),
            y + 3.0,
            STATE_LANE - 6.0
        );
        for &(from, to) in on {
            let _ = write!(
                svg,
                "<rect class=\"on\" x=\"{:.1}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{colour}\">\
                 <title>{} on {:.3} s – {:.3} s</title></rect>",
                x(from),
                y + 3.0,
                (x(to) - x(from)).max(1.0),
                STATE_LANE - 6.0,
                escape(label),
                seconds(from),
                seconds(to)
            );
        }
    }
    let axis = STATE_TOP + STATE_LANE * lanes.len() as f64 + 4.0;
    for tick in 0..=4u64 {
        let ns = end * tick / 4;
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#999\"/>\
             <text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{4:.2}</text>",
            x(ns),
            axis,
            axis + 5.0,
            axis + 18.0,
            seconds(ns)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">virtual time (s)</text></svg>",
        STATE_LABEL + plot_width / 2.0,
        axis + 34.0
    );
    Some(svg)
}

/// Each real server's share of the packets forwarded in each bucket.
fn share_plot(report: &Report) -> Chart {
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
        .map(|(server, counts)| Series {
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
fn active_plot(report: &Report) -> Chart {
    let series = &report.plots.series;
    let lines = series
        .active
        .iter()
        .take(LINES_MAX)
        .map(|(server, values)| Series {
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
fn connect_plot(report: &Report) -> Chart {
    let bucket_ns = report.plots.series.bucket_ns.max(1);
    let mut by_bucket: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for &(time, connect) in &report.plots.connect_samples {
        by_bucket.entry(time / bucket_ns).or_default().push(connect);
    }
    let mut lines: Vec<Series> = ["p50", "p90", "p99"]
        .iter()
        .map(|name| Series {
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

fn plot(title: &str, y_desc: &str, lines: Vec<Series>) -> Chart {
    Chart {
        title: title.into(),
        y_desc: y_desc.into(),
        series: lines,
        y_range: None,
    }
}

/// Draw one plot as an SVG document (x: virtual seconds from 0 to `duration_s`).
pub fn svg(plot: &Chart, duration_s: f64) -> anyhow::Result<String> {
    let axes = Axes {
        x_desc: "virtual time (s)",
        x_range: Some((0.0, duration_s.max(1e-3))),
        x_label: &|v| format!("{v:.2}"),
        markers: false,
    };
    svg_with(plot, &axes)
}

/// The plots' data.
pub fn plots(report: &Report) -> Vec<Chart> {
    vec![
        verdict_plot(report),
        share_plot(report),
        active_plot(report),
        connect_plot(report),
    ]
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1000px}\
pre{background:#f6f6f6;padding:1em;white-space:pre-wrap;font-size:12px}\
figure{margin:1.5em 0}.pass{color:#2a7d2a}.fail{color:#b22222}\
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}\
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}\
tbody tr:nth-child(even){background:#fafafa}";

/// Whether a table cell holds a number (right-aligned): `49266`, `0.9672`, `4.004 / 4.207`.
fn numeric(cell: &str) -> bool {
    !cell.is_empty()
        && cell
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '/' | ' ' | '-' | '%'))
        && cell.chars().any(|c| c.is_ascii_digit())
}

fn table_cells(line: &str) -> Vec<&str> {
    let line = line.trim().trim_start_matches('|').trim_end_matches('|');
    line.split('|').map(str::trim).collect()
}

/// A Markdown table (header, `|---|` rule, rows) as an HTML `<table>`.
fn table_html(lines: &[&str]) -> String {
    let escape = crate::svg::escape;
    let mut html = String::from("<table>\n<thead><tr>");
    for cell in table_cells(lines[0]) {
        let _ = write!(html, "<th>{}</th>", escape(cell));
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for line in lines.iter().skip(2) {
        html.push_str("<tr>");
        for cell in table_cells(line) {
            let class = if numeric(cell) { " class=\"num\"" } else { "" };
            let text = escape(cell.trim_matches('`'));
            let _ = write!(html, "<td{class}>{text}</td>");
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody></table>\n");
    html
}

/// The report's Markdown ([`crate::report::markdown`]: `##` headings, pipe tables, fenced
/// blocks, plain lines) as HTML: real `<table>`s, fenced blocks as `<pre>`. The `#` title is
/// left out (the page has its own).
fn markdown_html(markdown: &str) -> String {
    let escape = crate::svg::escape;
    let lines: Vec<&str> = markdown.lines().collect();
    let mut html = String::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        if line.starts_with("```") {
            let end = lines[index + 1..]
                .iter()
                .position(|l| l.starts_with("```"))
                .map_or(lines.len(), |p| index + 1 + p);
            let _ = writeln!(
                html,
                "<pre>{}</pre>",
                escape(&lines[index + 1..end].join("\n"))
            );
            index = end + 1;
            continue;
        }
        if line.starts_with('|') {
            let end = lines[index..]
                .iter()
                .position(|l| !l.starts_with('|'))
                .map_or(lines.len(), |p| index + p);
            if end - index >= 2 && lines[index + 1].starts_with("|-") {
                html.push_str(&table_html(&lines[index..end]));
                index = end;
                continue;
            }
        }
        if let Some(heading) = line.strip_prefix("## ") {
            let _ = writeln!(html, "<h2>{}</h2>", escape(heading));
        } else if let Some(heading) = line.strip_prefix("### ") {
            let _ = writeln!(html, "<h3>{}</h3>", escape(heading));
        } else if !line.trim().is_empty() && !line.starts_with("# ") {
            let _ = writeln!(html, "<p>{}</p>", escape(line));
        }
        index += 1;
    }
    html
}

/// The whole page.
pub fn page(report: &Report, measured: Option<&Measured>) -> anyhow::Result<String> {
    let escape = crate::svg::escape;
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
    for (index, plot) in plots(report).into_iter().enumerate() {
        if index == 1 {
            // After the verdicts: the protection modes that explain them.
            match mode_chart(report) {
                Some(chart) => {
                    let _ = writeln!(html, "<figure>{chart}</figure>");
                }
                None => html.push_str("<p>Shield protection modes: no mode changed.</p>\n"),
            }
        }
        if plot.series.is_empty() {
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
    html.push_str(&markdown_html(&crate::report::markdown(report, measured)));
    html.push_str("</body></html>\n");
    Ok(html)
}
