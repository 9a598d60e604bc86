//! SVG charts with plotters' SVG backend (text becomes SVG `<text>`, so no font library is
//! needed), shared by `report.html` ([`crate::report_html`]) and `plan.html`
//! ([`crate::cli::plan`]); plus HTML escaping and the `1.5k` / `2M` number format of their axes.
//!
//! Not here: which charts a page draws (each page builds its [`Chart`]s).

use plotters::prelude::*;

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

/// `1500000` → `1.5M`, `20000` → `20k`, `7` → `7`.
pub fn human(n: u64) -> String {
    let (scale, suffix) = match n {
        1_000_000_000.. => (1e9, "G"),
        1_000_000.. => (1e6, "M"),
        1_000.. => (1e3, "k"),
        _ => return n.to_string(),
    };
    let text = format!("{:.2}", n as f64 / scale);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
