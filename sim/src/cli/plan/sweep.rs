//! Sweep specifications (`--sweep KEY=RANGE`) and applying one sweep point to a loaded
//! [`Scenario`] in memory (never by editing the file's text).
//!
//! Keys: `<traffic name or kind>.rate` (a source's packet, connection or request rate),
//! `queues` (alias `threads`: the receive queues, one pipeline shard each),
//! `director.<name>.scheduler`, `shield.session_table_capacity` (alias
//! `conntrack.capacity`), `shield.source_table_capacity` and `seed` (a seed study: every
//! integer of `a..b`, up to [`MAX_SEEDS`]). Ranges: `a..b` (log steps,
//! `--points` of them; every integer for `queues`), `a..b/step` (linear), or a list
//! `a,b,c`; numbers take `k`, `M`, `G` suffixes. Not here: running the points (see
//! [`super::run_points`]).

use std::fmt;

use datapath::director::scheduler::SchedulerKind;
use serde::{Deserialize, Serialize};

use crate::scenario::units::parse_rate;
use crate::scenario::{MAX_QUEUES, Rate, Scenario, TrafficSpec};
use crate::svg::human;

/// Most points one sweep (all keys together) may have, not counting seeds.
pub const MAX_SWEEP_POINTS: usize = 400;

/// Most seeds a seed study (`--sweep seed=a..b`) may have.
pub const MAX_SEEDS: usize = 100_000;

/// What a sweep key changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SweepTarget {
    /// The rate of every traffic source with this name, or else of this kind (a pcap source
    /// gets a fixed `pps`; a client source's `connections`/`requests` total stays as written).
    TrafficRate(String),
    /// The scenario's receive queues (pipeline shards).
    Queues,
    /// The scheduler of the named director.
    Scheduler(String),
    /// The shield's known-session table capacity.
    SessionTableCapacity,
    /// The shield's per-source table capacity.
    SourceTableCapacity,
    /// The scenario's seed (a seed study).
    Seed,
}

/// One value of a sweep key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SweepValue {
    /// A number (rate, queues, capacity).
    Number(u64),
    /// A name (scheduler).
    Name(String),
}

impl SweepValue {
    /// The number, for numeric keys.
    pub fn number(&self) -> Option<u64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Name(_) => None,
        }
    }
}

impl fmt::Display for SweepValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => f.write_str(&human(*n)),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// One `--sweep KEY=RANGE`, expanded.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// The key as written.
    pub key: String,
    /// What it changes.
    pub target: SweepTarget,
    /// Its values, in sweep order.
    pub values: Vec<SweepValue>,
}

impl Sweep {
    /// Whether its values are numbers (it can be a plot's x axis).
    pub fn is_numeric(&self) -> bool {
        !matches!(self.target, SweepTarget::Scheduler(_))
    }
}

fn target_of(key: &str) -> Result<SweepTarget, String> {
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["queues"] | ["threads"] => Ok(SweepTarget::Queues),
        ["seed"] => Ok(SweepTarget::Seed),
        ["shield", "session_table_capacity"] | ["conntrack", "capacity"] => {
            Ok(SweepTarget::SessionTableCapacity)
        }
        ["shield", "source_table_capacity"] => Ok(SweepTarget::SourceTableCapacity),
        ["director", name, "scheduler"] => Ok(SweepTarget::Scheduler(name.to_string())),
        [source, "rate"] => Ok(SweepTarget::TrafficRate(source.to_string())),
        _ => Err(format!(
            "unknown sweep key `{key}` (expected <traffic>.rate, queues, director.<name>.scheduler, \
             shield.session_table_capacity, conntrack.capacity, shield.source_table_capacity or seed)"
        )),
    }
}

/// Parse `KEY=RANGE`; `points` is the number of log steps for `a..b` on rate and capacity
/// keys.
pub fn parse_sweep(text: &str, points: usize) -> Result<Sweep, String> {
    let (key, range) = text
        .split_once('=')
        .ok_or_else(|| format!("sweep `{text}`: expected KEY=RANGE, e.g. flood.rate=100k..20M"))?;
    let (key, range) = (key.trim(), range.trim());
    let target = target_of(key)?;
    let values = match &target {
        SweepTarget::Scheduler(_) => schedulers(range)?,
        SweepTarget::Queues => numbers(range, None)?,
        SweepTarget::Seed => seeds(range)?,
        _ => numbers(range, Some(points))?,
    };
    if values.is_empty() {
        return Err(format!("sweep `{text}`: no values"));
    }
    if target == SweepTarget::Queues
        && values
            .iter()
            .any(|v| !(1..=u64::from(MAX_QUEUES)).contains(&v.number().unwrap_or(0)))
    {
        return Err(format!("sweep `{text}`: queues must be 1..={MAX_QUEUES}"));
    }
    Ok(Sweep {
        key: key.to_string(),
        target,
        values,
    })
}

fn schedulers(range: &str) -> Result<Vec<SweepValue>, String> {
    range
        .split(',')
        .map(|name| {
            let name = name.trim();
            serde_json::from_value::<SchedulerKind>(serde_json::Value::String(name.into()))
                .map(|_| SweepValue::Name(name.to_string()))
                .map_err(|_| format!("unknown scheduler `{name}`"))
        })
        .collect()
}

/// Seeds: `a..b` (every integer, both included), `a..b/step` or `a,b,c`; 0 allowed.
fn seeds(range: &str) -> Result<Vec<SweepValue>, String> {
    let values: Vec<u64> = match range.split_once("..") {
        None => range.split(',').map(number).collect::<Result<_, _>>()?,
        Some((low, high)) => {
            let (high, step) = match high.split_once('/') {
                Some((high, step)) => (high, number(step)?),
                None => (high, 1),
            };
            let (low, high) = (number(low)?, number(high)?);
            if low > high || step == 0 {
                return Err(format!(
                    "seeds `{range}`: expected low <= high and a positive step"
                ));
            }
            let count = (high - low) / step + 1;
            if count > MAX_SEEDS as u64 {
                return Err(format!(
                    "seeds `{range}`: {count} seeds (at most {MAX_SEEDS})"
                ));
            }
            (low..=high).step_by(step as usize).collect()
        }
    };
    Ok(values.into_iter().map(SweepValue::Number).collect())
}

fn number(text: &str) -> Result<u64, String> {
    parse_rate(text.trim())
}

/// Expand a numeric range: `a..b` log steps (`log_points` of them) or every integer when
/// `log_points` is `None`; `a..b/step` linear; `a,b,c` as listed.
fn numbers(range: &str, log_points: Option<usize>) -> Result<Vec<SweepValue>, String> {
    let Some((low, high)) = range.split_once("..") else {
        let values: Result<Vec<u64>, String> = range.split(',').map(number).collect();
        return Ok(values?.into_iter().map(SweepValue::Number).collect());
    };
    let (high, step) = match high.split_once('/') {
        Some((high, step)) => (high, Some(number(step)?)),
        None => (high, None),
    };
    let (low, high) = (number(low)?, number(high)?);
    if low > high || low == 0 {
        return Err(format!("range `{range}`: expected 0 < low <= high"));
    }
    let values: Vec<u64> = match (step, log_points) {
        (Some(0), _) => return Err(format!("range `{range}`: step must be positive")),
        (Some(step), _) => (low..=high).step_by(step as usize).collect(),
        (None, None) => (low..=high).collect(),
        (None, Some(points)) => log_steps(low, high, points),
    };
    if values.len() > MAX_SWEEP_POINTS {
        return Err(format!(
            "range `{range}` has {} values (at most {MAX_SWEEP_POINTS})",
            values.len()
        ));
    }
    Ok(values.into_iter().map(SweepValue::Number).collect())
}

/// `points` values from `low` to `high` (both included) evenly spaced on a log scale,
/// rounded to three significant digits, duplicates removed.
pub fn log_steps(low: u64, high: u64, points: usize) -> Vec<u64> {
    if points <= 1 || low == high {
        return vec![low];
    }
    let ratio = high as f64 / low as f64;
    let mut values: Vec<u64> = (0..points)
        .map(|i| {
            let exact = low as f64 * ratio.powf(i as f64 / (points - 1) as f64);
            round_significant(exact, 3).clamp(low, high)
        })
        .collect();
    values.dedup();
    values
}

/// `value` rounded to `digits` significant digits (at least 1).
pub fn round_significant(value: f64, digits: i32) -> u64 {
    if value < 1.0 {
        return 1;
    }
    let magnitude = 10f64.powi(value.log10().floor() as i32 - digits + 1);
    ((value / magnitude).round() * magnitude).round() as u64
}

/// Check that every key addresses something in the scenario.
pub fn check_targets(scenario: &Scenario, sweeps: &[Sweep]) -> Result<(), String> {
    for sweep in sweeps {
        let found = match &sweep.target {
            SweepTarget::TrafficRate(selector) => scenario
                .traffic
                .iter()
                .any(|t| matches_source(t.get_ref(), selector)),
            SweepTarget::Queues | SweepTarget::Seed => true,
            SweepTarget::Scheduler(name) => {
                scenario.appliance.director.iter().any(|d| &d.name == name)
            }
            SweepTarget::SessionTableCapacity | SweepTarget::SourceTableCapacity => {
                scenario.appliance.shield.is_some()
            }
        };
        if !found {
            return Err(format!(
                "sweep key `{}` addresses nothing in scenario `{}` (no such traffic source, \
                 director or [appliance.shield])",
                sweep.key, scenario.name
            ));
        }
    }
    Ok(())
}

fn source_name(spec: &TrafficSpec) -> Option<&str> {
    match spec {
        TrafficSpec::Pcap(s) => s.name.as_deref(),
        TrafficSpec::SynFlood(s)
        | TrafficSpec::AckFlood(s)
        | TrafficSpec::UdpFlood(s)
        | TrafficSpec::IcmpFlood(s) => s.name.as_deref(),
        TrafficSpec::TcpClients(s) => s.name.as_deref(),
        TrafficSpec::UdpClients(s) => s.name.as_deref(),
        TrafficSpec::FtpClients(s) => s.name.as_deref(),
    }
}

/// A source matches a selector by name; by kind only when no source has that name.
fn matches_source(spec: &TrafficSpec, selector: &str) -> bool {
    source_name(spec) == Some(selector) || spec.kind() == selector
}

fn set_rate(spec: &mut TrafficSpec, rate: u64) {
    match spec {
        TrafficSpec::Pcap(s) => {
            s.pps = Some(Rate(rate));
            s.speed = None;
            s.top_speed = false;
        }
        TrafficSpec::SynFlood(s)
        | TrafficSpec::AckFlood(s)
        | TrafficSpec::UdpFlood(s)
        | TrafficSpec::IcmpFlood(s) => s.rate = Rate(rate),
        TrafficSpec::TcpClients(s) => s.rate = Rate(rate),
        TrafficSpec::UdpClients(s) => s.rate = Rate(rate),
        TrafficSpec::FtpClients(s) => s.rate = Rate(rate),
    }
}

/// Apply one value of one sweep key to the scenario.
pub fn apply(scenario: &mut Scenario, target: &SweepTarget, value: &SweepValue) {
    match (target, value) {
        (SweepTarget::TrafficRate(selector), SweepValue::Number(rate)) => {
            let by_name = scenario
                .traffic
                .iter()
                .any(|t| source_name(t.get_ref()) == Some(selector.as_str()));
            for spec in scenario.traffic.iter_mut().map(|t| t.get_mut()) {
                let hit = if by_name {
                    source_name(spec) == Some(selector.as_str())
                } else {
                    spec.kind() == selector
                };
                if hit {
                    set_rate(spec, *rate);
                }
            }
        }
        (SweepTarget::Seed, SweepValue::Number(seed)) => scenario.seed = *seed,
        (SweepTarget::Queues, SweepValue::Number(queues)) => {
            scenario.queues = u16::try_from(*queues).unwrap_or(MAX_QUEUES);
        }
        (SweepTarget::Scheduler(name), SweepValue::Name(kind)) => {
            let kind = serde_json::from_value(serde_json::Value::String(kind.clone())).ok();
            for director in &mut scenario.appliance.director {
                if &director.name == name {
                    director.scheduler = kind;
                }
            }
        }
        (SweepTarget::SessionTableCapacity, SweepValue::Number(n)) => {
            if let Some(shield) = &mut scenario.appliance.shield {
                shield.session_table_capacity = Some(*n as usize);
            }
        }
        (SweepTarget::SourceTableCapacity, SweepValue::Number(n)) => {
            if let Some(shield) = &mut scenario.appliance.shield {
                shield.source_table_capacity = Some(*n as usize);
            }
        }
        _ => {}
    }
}

/// Every combination of the sweeps' values; the first key varies fastest, so consecutive
/// points walk its axis.
pub fn combinations(sweeps: &[Sweep]) -> Result<Vec<Vec<SweepValue>>, String> {
    let total: usize = sweeps.iter().map(|s| s.values.len()).product();
    let seeds: usize = sweeps
        .iter()
        .filter(|s| s.target == SweepTarget::Seed)
        .map(|s| s.values.len())
        .product();
    if total / seeds.max(1) > MAX_SWEEP_POINTS || total > MAX_SEEDS {
        return Err(format!(
            "the sweep has {total} points (at most {MAX_SWEEP_POINTS} per seed, \
             {MAX_SEEDS} in all)"
        ));
    }
    let points = (0..total)
        .map(|mut index| {
            sweeps
                .iter()
                .map(|sweep| {
                    let value = sweep.values[index % sweep.values.len()].clone();
                    index /= sweep.values.len();
                    value
                })
                .collect()
        })
        .collect();
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_range_has_round_values_and_both_ends() {
        let sweep = parse_sweep("flood.rate=100k..20M", 5).unwrap();
        let values: Vec<String> = sweep.values.iter().map(|v| v.to_string()).collect();
        assert_eq!(values, ["100k", "376k", "1.41M", "5.32M", "20M"]);
        assert_eq!(sweep.target, SweepTarget::TrafficRate("flood".into()));
    }

    #[test]
    fn linear_lists_and_queues() {
        let linear = parse_sweep("tcp_clients.rate=100..500/200", 5).unwrap();
        assert_eq!(linear.values, [100, 300, 500].map(SweepValue::Number));
        let list = parse_sweep("conntrack.capacity=1k,64k", 5).unwrap();
        assert_eq!(list.values, [1000, 64000].map(SweepValue::Number));
        assert_eq!(list.target, SweepTarget::SessionTableCapacity);
        let queues = parse_sweep("queues=1..4", 2).unwrap();
        assert_eq!(queues.values, [1, 2, 3, 4].map(SweepValue::Number));
        assert!(parse_sweep("queues=0..2", 2).is_err());
    }

    #[test]
    fn schedulers_are_checked() {
        let sweep = parse_sweep("director.web.scheduler=rr,wlc,mh", 5).unwrap();
        assert_eq!(sweep.values.len(), 3);
        assert!(!sweep.is_numeric());
        let error = parse_sweep("director.web.scheduler=rr,fastest", 5).unwrap_err();
        assert_eq!(error, "unknown scheduler `fastest`");
        assert!(parse_sweep("nonsense", 5).is_err());
        assert!(parse_sweep("a.b.c=1", 5).is_err());
    }

    #[test]
    fn seeds_are_every_integer() {
        let sweep = parse_sweep("seed=0..999", 5).unwrap();
        assert_eq!(sweep.target, SweepTarget::Seed);
        assert_eq!(sweep.values.len(), 1000);
        assert_eq!(sweep.values[0], SweepValue::Number(0));
        assert!(sweep.is_numeric());
        assert_eq!(parse_sweep("seed=7,9", 5).unwrap().values.len(), 2);
        assert!(parse_sweep("seed=1..1000000", 5).is_err());
        let rates = parse_sweep("flood.rate=1..400/1", 5).unwrap();
        assert_eq!(rates.values.len(), 400);
        assert_eq!(
            combinations(&[rates.clone(), parse_sweep("seed=1..2", 5).unwrap()])
                .unwrap()
                .len(),
            800
        );
        assert!(combinations(&[rates, sweep]).is_err());
    }

    #[test]
    fn combinations_walk_the_first_key_fastest() {
        let sweeps = [
            parse_sweep("flood.rate=1k,2k", 5).unwrap(),
            parse_sweep("queues=1..2", 5).unwrap(),
        ];
        let points = combinations(&sweeps).unwrap();
        let rendered: Vec<String> = points
            .iter()
            .map(|p| {
                p.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        assert_eq!(rendered, ["1k/1", "2k/1", "1k/2", "2k/2"]);
    }
}
