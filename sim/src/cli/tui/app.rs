//! The TUI's model: what is on screen (the latest report frame, rates, history), where the
//! virtual clock is and how fast it moves, which panel has the focus, how tables are sorted
//! and filtered — and the key handlers that change it. Its plain-text summary
//! ([`App::summary`]) is in [`super::text`], the frames it is fed in [`super::frame`].
//!
//! No drawing here (see [`super::view`]) and no terminal or data-source code (see
//! [`super::feed`]): the model is fed report frames ([`Report`]) and keys, so tests can drive it
//! without a terminal.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use datapath::TimeNs;

pub use super::frame::{RateBase, mode_bits_at, verdict_totals};
pub use super::units::{percentiles_text, rate_text, seconds, share};
pub use crate::appliance::{MODE_BITS, mode_names};
use crate::report::{DecisionRow, Report};

/// Rate samples kept per verdict for the sparklines.
pub const HISTORY_CAPACITY: usize = 1024;
/// Slowest speed: 2^-6 = 1/64 of real time.
pub const SPEED_EXPONENT_MIN: i32 = -6;
/// Fastest speed: 2^10 = 1024× real time.
pub const SPEED_EXPONENT_MAX: i32 = 10;
/// Verdict names, in the order of the sparklines.
pub const VERDICTS: [&str; 4] = ["pass", "drop", "reply", "forward"];

/// A key press, independent of the terminal library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A printable character.
    Char(char),
    /// Tab.
    Tab,
    /// Shift-Tab.
    BackTab,
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Arrow up.
    Up,
    /// Arrow down.
    Down,
}

/// The panels, in tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Panel {
    /// Per-flow hits.
    Flows,
    /// Shield verdicts and protection modes.
    Shield,
    /// Directors in `ipvsadm` shape.
    Director,
    /// Packets per second per verdict.
    Rates,
    /// Legitimate clients.
    Clients,
}

impl Panel {
    /// Every panel in tab order.
    pub const ALL: [Panel; 5] = [
        Panel::Flows,
        Panel::Shield,
        Panel::Director,
        Panel::Rates,
        Panel::Clients,
    ];

    /// Title shown on the panel.
    pub fn title(self) -> &'static str {
        match self {
            Panel::Flows => "Flows",
            Panel::Shield => "Shield",
            Panel::Director => "Director",
            Panel::Rates => "Rates",
            Panel::Clients => "Clients",
        }
    }

    fn index(self) -> usize {
        Panel::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// Where the frames come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A simulation running now.
    Live,
    /// The time series of a finished run (`report.json`).
    Replay,
}

/// Sort order of the flow table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowSort {
    /// File order.
    File,
    /// Hits, most first.
    Hits,
    /// Current rate, fastest first.
    Rate,
    /// Name, alphabetical.
    Name,
}

/// Sort order of the verdict table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionSort {
    /// Pipeline order (stage, verdict, reason).
    Stage,
    /// Packets, most first.
    Packets,
    /// Current rate, fastest first.
    Rate,
}

/// One line of the flow table: a flow, or one of its rules when drilled down.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowLine {
    /// Flow name, or `rule N` for a drill-down line.
    pub name: String,
    /// Policy (empty on rule lines).
    pub policy: String,
    /// Packets.
    pub hits: u64,
    /// Packets per second over the last interval (None in a replay).
    pub rate: Option<f64>,
    /// Share of all flow hits (on rule lines: of the flow's rule hits).
    pub share: f64,
    /// A drill-down line.
    pub is_rule: bool,
    /// The selected flow.
    pub selected: bool,
}

/// One line of the verdict table.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionLine {
    /// Stage.
    pub stage: String,
    /// Verdict.
    pub verdict: String,
    /// Drop reason.
    pub reason: String,
    /// Packets.
    pub packets: u64,
    /// Packets per second over the last interval (None in a replay).
    pub rate: Option<f64>,
}

/// Rates over the interval before the latest frame.
#[derive(Clone, Debug, Default)]
struct Rates {
    /// Per flow index.
    flows: Vec<f64>,
    /// Per (stage, verdict, reason).
    decisions: BTreeMap<(String, String, String), f64>,
}

/// The TUI state.
#[derive(Debug)]
pub struct App {
    /// Where frames come from.
    pub source: Source,
    /// The latest frame.
    pub view: Report,
    /// Virtual time of the latest frame.
    pub data_ns: TimeNs,
    /// Where the clock is heading: frames up to here may be shown.
    pub target_ns: TimeNs,
    /// Virtual time between frames.
    pub interval_ns: TimeNs,
    /// Speed = 2^exponent × real time.
    pub speed_exponent: i32,
    /// Paused by the user.
    pub paused: bool,
    /// The run (or replay) reached its end.
    pub finished: bool,
    /// The user asked to quit.
    pub quit: bool,
    /// The help overlay is shown.
    pub help: bool,
    /// The focused panel.
    pub focus: Panel,
    /// Flow table order.
    pub flow_sort: FlowSort,
    /// Verdict table order.
    pub decision_sort: DecisionSort,
    /// Selected line of the flow table (flows only, after sort and filter).
    pub selected_flow: usize,
    /// The user moved the focus (Tab): frames no longer pick the panel.
    pub focus_chosen: bool,
    /// Flows shown with their rules.
    pub drilled: Vec<String>,
    /// Flow-name filter (substring, case-insensitive).
    pub filter: String,
    /// Typing the filter.
    pub editing_filter: bool,
    /// What went wrong in the data source, if anything.
    pub error: Option<String>,
    /// Frames shown so far (a replay starts with one: the end-of-run tables).
    pub frames: u64,
    rates: Rates,
    history: [VecDeque<u64>; 4],
    /// Time and verdict totals of the latest sparkline sample.
    sampled: (TimeNs, [u64; 4]),
}

impl App {
    /// A model with an empty frame of `skeleton`'s scenario (name, seed, duration, queues).
    pub fn new(source: Source, skeleton: Report, interval_ns: TimeNs) -> Self {
        Self {
            source,
            view: skeleton,
            data_ns: 0,
            target_ns: 0,
            interval_ns: interval_ns.max(1),
            speed_exponent: 0,
            paused: false,
            finished: false,
            quit: false,
            help: false,
            focus: Panel::Flows,
            flow_sort: FlowSort::File,
            decision_sort: DecisionSort::Stage,
            selected_flow: 0,
            focus_chosen: false,
            drilled: Vec::new(),
            filter: String::new(),
            editing_filter: false,
            error: None,
            frames: u64::from(source == Source::Replay),
            rates: Rates::default(),
            history: Default::default(),
            sampled: (0, [0; 4]),
        }
        .with_telling_focus()
    }

    fn with_telling_focus(mut self) -> Self {
        self.pick_telling_focus();
        self
    }

    /// Focus the most telling panel for what the appliance has, unless the user chose one:
    /// the flows when there is a flowmgr file, else the shield, else the directors (an
    /// appliance without flows would open on an empty flow table). Nothing known yet (the
    /// skeleton before the first frame): the focus stays.
    fn pick_telling_focus(&mut self) {
        let appliance = &self.view.appliance;
        if self.focus_chosen {
            return;
        }
        if !appliance.flows.is_empty() {
            self.focus = Panel::Flows;
        } else if !appliance.shield.is_empty() {
            self.focus = Panel::Shield;
        } else if !appliance.directors.is_empty() {
            self.focus = Panel::Director;
        }
    }

    /// Speed as a factor of real time.
    pub fn speed(&self) -> f64 {
        2f64.powi(self.speed_exponent)
    }

    /// Speed as shown: `1x`, `4x`, `1/8x`.
    pub fn speed_label(&self) -> String {
        if self.speed_exponent >= 0 {
            format!("{}x", 1u64 << self.speed_exponent)
        } else {
            format!("1/{}x", 1u64 << -self.speed_exponent)
        }
    }

    /// Run state as shown.
    pub fn status(&self) -> &'static str {
        match (self.finished, self.paused) {
            (true, _) => "finished",
            (false, true) => "paused",
            (false, false) => "running",
        }
    }

    /// Move the clock on by `wall` of real time at the current speed (unless paused). The
    /// target never runs more than half a second of real time ahead of the data, so a pause
    /// takes effect at once even when the data source is slower than the speed asks.
    pub fn advance(&mut self, wall: Duration) {
        if self.paused || self.finished {
            return;
        }
        let step = (wall.as_nanos() as f64 * self.speed()) as TimeNs;
        let lead = ((5e8 * self.speed()) as TimeNs).max(4 * self.interval_ns);
        self.target_ns = self
            .target_ns
            .saturating_add(step)
            .min(self.data_ns.saturating_add(lead))
            .min(self.view.duration_ns);
    }

    /// Add a sparkline sample: the cumulative frames per verdict (pass, drop, reply,
    /// forward) at `now`; the rates are taken against the previous sample. Cheap: a live feed
    /// calls it at every interval.
    pub fn push_sample(&mut self, now: TimeNs, verdicts: [u64; 4]) {
        let (before_ns, before) = self.sampled;
        let elapsed = now.saturating_sub(before_ns);
        if elapsed == 0 {
            return;
        }
        let per_second = 1e9 / elapsed as f64;
        for (index, history) in self.history.iter_mut().enumerate() {
            let delta = verdicts[index].saturating_sub(before[index]);
            if history.len() == HISTORY_CAPACITY {
                history.pop_front();
            }
            history.push_back((delta as f64 * per_second) as u64);
        }
        self.sampled = (now, verdicts);
    }

    /// Show a new frame at virtual time `now`; rates are taken against `base` (the counts at
    /// the boundary before), or against the previous frame when there is none.
    pub fn push_frame(&mut self, now: TimeNs, view: Report, base: Option<&RateBase>) {
        let previous;
        let base = match base {
            Some(base) => base,
            None => {
                previous = RateBase::of_frame(self.data_ns, &self.view);
                &previous
            }
        };
        let elapsed = now.saturating_sub(base.at);
        if elapsed > 0 {
            self.rates = rates_between(base, &view, 1e9 / elapsed as f64);
        }
        self.keep_selection(|app| app.view = view);
        self.pick_telling_focus();
        self.frames += 1;
        self.data_ns = now;
        self.target_ns = self.target_ns.max(now);
        if now >= self.view.duration_ns {
            self.finished = true;
        }
    }

    /// Packets per second per verdict, oldest first (one sample per interval of a live run,
    /// per second of a replay).
    pub fn history(&self, verdict: usize) -> &VecDeque<u64> {
        &self.history[verdict]
    }

    /// Handle one key.
    pub fn on_key(&mut self, key: Key) {
        if self.editing_filter {
            self.on_filter_key(key);
            return;
        }
        if self.help {
            // Any key closes the overlay; `q` still quits.
            self.help = false;
            if key != Key::Char('q') {
                return;
            }
        }
        match key {
            Key::Char('q') => self.quit = true,
            Key::Char(' ') => self.paused = !self.paused,
            Key::Char('s' | '.') => self.step(),
            Key::Char('+' | '=') => {
                self.speed_exponent = (self.speed_exponent + 1).min(SPEED_EXPONENT_MAX)
            }
            Key::Char('-' | '_') => {
                self.speed_exponent = (self.speed_exponent - 1).max(SPEED_EXPONENT_MIN)
            }
            Key::Tab => {
                self.focus_chosen = true;
                self.focus = Panel::ALL[(self.focus.index() + 1) % Panel::ALL.len()];
            }
            Key::BackTab => {
                self.focus_chosen = true;
                let count = Panel::ALL.len();
                self.focus = Panel::ALL[(self.focus.index() + count - 1) % count];
            }
            Key::Char('o') => self.keep_selection(Self::cycle_sort),
            Key::Char('/') => self.editing_filter = true,
            Key::Char('?') => self.help = true,
            Key::Esc => self.filter.clear(),
            Key::Up | Key::Char('k') => self.selected_flow = self.selected_flow.saturating_sub(1),
            Key::Down | Key::Char('j') => self.selected_flow += 1,
            Key::Enter => self.toggle_drill(),
            _ => {}
        }
        self.clamp_selection();
    }

    fn on_filter_key(&mut self, key: Key) {
        match key {
            Key::Enter => self.editing_filter = false,
            Key::Esc => {
                self.editing_filter = false;
                self.filter.clear();
            }
            Key::Backspace => {
                self.filter.pop();
            }
            Key::Char(c) => self.filter.push(c),
            _ => {}
        }
        self.selected_flow = 0;
    }

    /// Pause, and move the clock on by one frame interval.
    fn step(&mut self) {
        self.paused = true;
        if !self.finished {
            self.target_ns = (self.data_ns + self.interval_ns).min(self.view.duration_ns);
        }
    }

    fn cycle_sort(&mut self) {
        if self.focus == Panel::Shield {
            self.decision_sort = match self.decision_sort {
                DecisionSort::Stage => DecisionSort::Packets,
                DecisionSort::Packets => DecisionSort::Rate,
                DecisionSort::Rate => DecisionSort::Stage,
            };
        } else {
            self.flow_sort = match self.flow_sort {
                FlowSort::File => FlowSort::Hits,
                FlowSort::Hits => FlowSort::Rate,
                FlowSort::Rate => FlowSort::Name,
                FlowSort::Name => FlowSort::File,
            };
        }
    }

    /// Apply `change` (a re-sort, a new frame) with the selection on the same flow, wherever
    /// the new order puts it.
    fn keep_selection(&mut self, change: impl FnOnce(&mut Self)) {
        let selected = self.visible_flows().get(self.selected_flow).copied();
        change(self);
        let visible = self.visible_flows();
        if let Some(position) = selected.and_then(|s| visible.iter().position(|&i| i == s)) {
            self.selected_flow = position;
        }
    }

    fn toggle_drill(&mut self) {
        let Some(index) = self.visible_flows().get(self.selected_flow).copied() else {
            return;
        };
        let name = self.view.appliance.flows[index].name.clone();
        if let Some(position) = self.drilled.iter().position(|n| *n == name) {
            self.drilled.remove(position);
        } else {
            self.drilled.push(name);
        }
    }

    fn clamp_selection(&mut self) {
        let count = self.visible_flows().len();
        self.selected_flow = self.selected_flow.min(count.saturating_sub(1));
    }

    /// Flow indices after filter and sort.
    fn visible_flows(&self) -> Vec<usize> {
        let needle = self.filter.to_lowercase();
        let flows = &self.view.appliance.flows;
        let mut indices: Vec<usize> = (0..flows.len())
            .filter(|&i| flows[i].name.to_lowercase().contains(&needle))
            .collect();
        let rate = |i: usize| self.rates.flows.get(i).copied().unwrap_or(0.0);
        match self.flow_sort {
            FlowSort::File => {}
            FlowSort::Hits => indices.sort_by(|a, b| flows[*b].hits.cmp(&flows[*a].hits)),
            FlowSort::Rate => indices.sort_by(|a, b| rate(*b).total_cmp(&rate(*a))),
            FlowSort::Name => indices.sort_by(|a, b| flows[*a].name.cmp(&flows[*b].name)),
        }
        indices
    }

    fn live_rate(&self, rate: f64) -> Option<f64> {
        (self.source == Source::Live).then_some(rate)
    }

    /// The flow table as shown: filtered, sorted, drilled-down flows followed by their rules.
    pub fn flow_lines(&self) -> Vec<FlowLine> {
        let flows = &self.view.appliance.flows;
        let total: u64 = flows.iter().map(|f| f.hits).sum();
        let mut lines = Vec::new();
        for (position, index) in self.visible_flows().into_iter().enumerate() {
            let flow = &flows[index];
            lines.push(FlowLine {
                name: flow.name.clone(),
                policy: flow.policy.clone(),
                hits: flow.hits,
                rate: self.live_rate(self.rates.flows.get(index).copied().unwrap_or(0.0)),
                share: share(flow.hits, total),
                is_rule: false,
                selected: position == self.selected_flow,
            });
            if self.drilled.contains(&flow.name) {
                lines.extend(
                    flow.rule_hits
                        .iter()
                        .enumerate()
                        .map(|(rule, &hits)| FlowLine {
                            name: match flow.rules.get(rule) {
                                Some(text) => format!("#{} {text}", rule + 1),
                                None => format!("rule {}", rule + 1),
                            },
                            policy: String::new(),
                            hits,
                            rate: None,
                            share: share(hits, flow.rule_hits.iter().sum()),
                            is_rule: true,
                            selected: false,
                        }),
                );
            }
        }
        lines
    }

    /// The verdict table as shown, sorted.
    pub fn decision_lines(&self) -> Vec<DecisionLine> {
        let mut lines: Vec<DecisionLine> = self
            .view
            .pipeline
            .decisions
            .iter()
            .map(|d| DecisionLine {
                stage: d.stage.to_string(),
                verdict: d.verdict.to_string(),
                reason: d.reason.clone(),
                packets: d.packets,
                rate: self.live_rate(
                    self.rates
                        .decisions
                        .get(&decision_key(d))
                        .copied()
                        .unwrap_or(0.0),
                ),
            })
            .collect();
        match self.decision_sort {
            DecisionSort::Stage => {}
            DecisionSort::Packets => lines.sort_by_key(|line| std::cmp::Reverse(line.packets)),
            DecisionSort::Rate => {
                lines.sort_by(|a, b| b.rate.unwrap_or(0.0).total_cmp(&a.rate.unwrap_or(0.0)))
            }
        }
        lines
    }

    /// One character per column of `width` over the whole run for shield context
    /// `context`: `#` where `bit` was on, `.` where off, ` ` for time not yet shown.
    pub fn mode_strip(&self, context: usize, bit: u8, width: usize) -> String {
        let duration = self.view.duration_ns.max(1);
        (0..width)
            .map(|column| {
                let time = (duration as u128 * column as u128 / width.max(1) as u128) as TimeNs;
                if time > self.data_ns {
                    ' '
                } else if mode_bits_at(&self.view, context, time) & bit != 0 {
                    '#'
                } else {
                    '.'
                }
            })
            .collect()
    }

    /// The header line: scenario, source, virtual clock, speed, state.
    pub fn header(&self) -> String {
        let source = match self.source {
            Source::Live => "live",
            Source::Replay => "replay",
        };
        format!(
            "lbsim {} · seed {} · {source} · t={} / {} · speed {} · {}",
            self.view.scenario,
            self.view.seed,
            seconds(self.data_ns),
            seconds(self.view.duration_ns),
            self.speed_label(),
            self.status()
        )
    }
}

fn decision_key(d: &DecisionRow) -> (String, String, String) {
    (d.stage.to_string(), d.verdict.to_string(), d.reason.clone())
}

fn rates_between(before: &RateBase, after: &Report, per_second: f64) -> Rates {
    let flows = after
        .appliance
        .flows
        .iter()
        .enumerate()
        .map(|(index, flow)| {
            let old = before.flow_hits.get(index).copied().unwrap_or(0);
            flow.hits.saturating_sub(old) as f64 * per_second
        })
        .collect();
    let old: BTreeMap<_, u64> = before
        .decisions
        .iter()
        .map(|d| (decision_key(d), d.packets))
        .collect();
    let decisions = after
        .pipeline
        .decisions
        .iter()
        .map(|d| {
            let key = decision_key(d);
            let delta = d
                .packets
                .saturating_sub(old.get(&key).copied().unwrap_or(0));
            (key, delta as f64 * per_second)
        })
        .collect();
    Rates { flows, decisions }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::appliance::{ApplianceReport, FlowReport};

    fn app() -> App {
        let view = Report {
            duration_ns: 1_000_000_000,
            appliance: ApplianceReport {
                flows: vec![
                    FlowReport {
                        name: "web".into(),
                        policy: "accept".into(),
                        hits: 10,
                        rule_hits: vec![6, 4],
                        rules: vec!["match dport 80".into(), "match dport 443".into()],
                    },
                    FlowReport {
                        name: "dns".into(),
                        policy: "drop".into(),
                        hits: 30,
                        rule_hits: vec![30],
                        rules: Vec::new(),
                    },
                ],
                ..ApplianceReport::default()
            },
            ..Report::default()
        };
        App::new(Source::Live, view, 10_000_000)
    }

    #[test]
    fn speed_doubles_and_halves_within_bounds() {
        let mut app = app();
        for _ in 0..20 {
            app.on_key(Key::Char('+'));
        }
        assert_eq!(app.speed_label(), "1024x");
        for _ in 0..40 {
            app.on_key(Key::Char('-'));
        }
        assert_eq!(app.speed_label(), "1/64x");
    }

    #[test]
    fn pause_stops_the_clock_and_step_moves_one_interval() {
        let mut app = app();
        app.advance(Duration::from_millis(20));
        assert_eq!(app.target_ns, 20_000_000);
        app.on_key(Key::Char(' '));
        app.advance(Duration::from_millis(20));
        assert_eq!(app.target_ns, 20_000_000);
        app.on_key(Key::Char('s'));
        assert_eq!(
            app.target_ns, 10_000_000,
            "step is relative to the data shown"
        );
        assert!(app.paused);
    }

    #[test]
    fn filter_sort_and_drill_down() {
        let mut app = app();
        app.on_key(Key::Char('o'));
        assert_eq!(app.flow_sort, FlowSort::Hits);
        let names: Vec<String> = app.flow_lines().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["dns", "web"]);
        for key in [Key::Char('/'), Key::Char('w'), Key::Enter, Key::Enter] {
            app.on_key(key);
        }
        let names: Vec<String> = app.flow_lines().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["web", "#1 match dport 80", "#2 match dport 443"]);
        assert_eq!(app.flow_lines()[1].share, 0.6);
    }

    #[test]
    fn help_overlay_swallows_one_key() {
        let mut app = app();
        app.on_key(Key::Char('?'));
        assert!(app.help);
        app.on_key(Key::Char(' '));
        assert!(!app.help && !app.paused);
    }
}
