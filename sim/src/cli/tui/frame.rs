//! What the TUI reads of a report frame beyond its fields: the verdict totals of its time
//! series, a shield context's mode bits at an instant, and the counts a frame's rates are
//! taken against ([`RateBase`]).
//!
//! A frame is the run report itself ([`Report`]): built from the merged shard results of a
//! live run at every frame, or read back from `report.json` ([`crate::report::from_report_json`])
//! for a replay, so both sources feed the model the same type.

use datapath::TimeNs;

use crate::report::{DecisionRow, Report};

/// Cumulative packets per verdict (pass, drop, reply, forward) of a frame's time series.
pub fn verdict_totals(frame: &Report) -> [u64; 4] {
    frame.timeline.iter().fold([0; 4], |mut sum, row| {
        sum.iter_mut()
            .zip([row.pass, row.drop, row.reply, row.forward])
            .for_each(|(a, b)| *a += b);
        sum
    })
}

/// Protection-mode bits of shield context `context` at `time` (the last change at or
/// before it; in a sharded run, whichever queue changed last).
pub fn mode_bits_at(frame: &Report, context: usize, time: TimeNs) -> u8 {
    frame.appliance.shield.get(context).map_or(0, |shield| {
        shield
            .modes
            .iter()
            .take_while(|(at, _)| *at <= time)
            .last()
            .map_or(0, |(_, bits)| *bits)
    })
}

/// The decision and flow counts at the boundary before a frame, which the frame's rates are
/// taken against (a live feed keeps them for every interval; they are cheap).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateBase {
    /// Virtual time of the counts.
    pub at: TimeNs,
    /// Hits per flow, in file order.
    pub flow_hits: Vec<u64>,
    /// Decisions per (stage, verdict, reason).
    pub decisions: Vec<DecisionRow>,
}

impl RateBase {
    /// The counts of `frame` at `at`.
    pub fn of_frame(at: TimeNs, frame: &Report) -> Self {
        Self {
            at,
            flow_hits: frame.appliance.flows.iter().map(|f| f.hits).collect(),
            decisions: frame.pipeline.decisions.clone(),
        }
    }
}
