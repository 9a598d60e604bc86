//! The number formats the TUI's panels and its text summary share (shares, seconds,
//! rates, latency percentiles).
//!
//! Not here: any panel or text layout (`view`, `text`).

use datapath::TimeNs;

use crate::stats::Percentiles;

/// `part / whole`, 0 when `whole` is 0.
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// `1.234s`.
pub fn seconds(ns: TimeNs) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

/// A rate as shown: `12.3k`, or `-` when unknown (replays).
pub fn rate_text(rate: Option<f64>) -> String {
    match rate {
        None => "-".into(),
        Some(r) if r >= 1e6 => format!("{:.1}M", r / 1e6),
        Some(r) if r >= 1e3 => format!("{:.1}k", r / 1e3),
        Some(r) => format!("{r:.0}"),
    }
}

/// `p50 1.234 p90 … p99 … max …` in milliseconds.
pub fn percentiles_text(p: &Percentiles) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    format!(
        "p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.max)
    )
}
