//! The `scenario` fuzz target: a scenario file is parsed, validated, built and run for a
//! few virtual milliseconds, and its summary and reports are rendered. Bad input must be a
//! located error; a valid scenario must run with every frame counted once.
//!
//! Structure-aware: [`mutate`] (the target's libFuzzer custom mutator) reads the input as a
//! TOML document and changes one thing in it (a value, a deleted key or element, a
//! duplicated `[[traffic]]`, a value copied to another key, a key added), so most inputs
//! stay valid TOML and many stay valid scenarios that reach the engine. Seeds are the
//! bundled `scenarios/*.toml`; relative paths resolve from `scenarios/`.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::engine::Collect;
use crate::run::{RunOptions, run_scenario};
use crate::scenario::{DurationNs, Scenario, TrafficSpec, units::Rate};

/// Virtual time a fuzzed scenario runs at most.
pub const MAX_FUZZ_DURATION_NS: u64 = 4_000_000;
/// Receive queues at most (each queue is a pipeline and an engine).
const MAX_FUZZ_QUEUES: u16 = 2;
/// Packets (connections, sessions) per second of one source at most: with
/// [`MAX_FUZZ_DURATION_NS`] a few hundred packets per source.
const MAX_FUZZ_RATE: u64 = 100_000;
/// Clients of one source at most (each is a smoltcp host).
const MAX_FUZZ_CLIENTS: u32 = 16;
/// Plays of a capture at most.
const MAX_FUZZ_LOOPS: u32 = 2;
/// Largest file a fuzzed scenario may name (flowmgr files, appliances, captures).
const MAX_FUZZ_FILE: u64 = 2 << 20;

/// The target's body: never panics; an error names a line and column of the input.
pub fn scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if !files_are_safe(text) {
        return;
    }
    let path = scenarios_dir().join("fuzz.toml");
    let mut loaded = match crate::scenario::parse(&path, text) {
        Ok(loaded) => loaded,
        Err(error) => {
            assert!(error.line >= 1 && error.column >= 1, "{error}");
            let _ = error.to_string();
            return;
        }
    };
    cap(&mut loaded.scenario);
    let options = RunOptions {
        threads: 1,
        collect: Collect {
            records: true,
            emitted: true,
        },
    };
    let Ok(output) = run_scenario(&loaded, options, &|_| {}) else {
        return;
    };
    assert_eq!(
        output.report.totals.frame_imbalance().unwrap_or(0),
        0,
        "every frame ends in exactly one counted outcome"
    );
    let _ = crate::run::summary(&output.report, &output.measured);
    let _ = crate::run::verdict_line(&output.report, true);
    let _ = crate::report::markdown(&output.report, Some(&output.measured));
    let _ = crate::report::deterministic_json(&output.report);
    let _ = crate::report_html::page(&output.report, Some(&output.measured));
}

/// `scenarios/` of this repository: where the seeds' relative paths point.
fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// Every string of the document that names an existing path (relative to `scenarios/`)
/// names a small regular file or a directory inside this repository: a fuzzed scenario
/// never reads `/dev/zero`, a FIFO or a huge file (a harness limit, not the tool's).
fn files_are_safe(text: &str) -> bool {
    let Ok(table) = toml::from_str::<Table>(text) else {
        return true;
    };
    let base = scenarios_dir();
    let Ok(root) = base.join("..").canonicalize() else {
        return false;
    };
    let mut strings = Vec::new();
    collect_strings(&Value::Table(table), &mut strings);
    strings.iter().all(|s| {
        let path = base.join(s);
        let Ok(meta) = std::fs::metadata(&path) else {
            return true;
        };
        let inside = path.canonicalize().is_ok_and(|p| p.starts_with(&root));
        inside && (meta.is_dir() || (meta.is_file() && meta.len() <= MAX_FUZZ_FILE))
    })
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Table(table) => {
            for (key, v) in table {
                out.push(key.clone());
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}

/// Keep one execution fast: a few virtual milliseconds, two queues, bounded rates,
/// clients and capture plays (`sim run --duration` shortens a run the same way).
fn cap(scenario: &mut Scenario) {
    scenario.duration = DurationNs(scenario.duration.0.min(MAX_FUZZ_DURATION_NS));
    scenario.queues = scenario.queues.min(MAX_FUZZ_QUEUES);
    let rate = |rate: &mut Rate| rate.0 = rate.0.min(MAX_FUZZ_RATE);
    for source in &mut scenario.traffic {
        match source.get_mut() {
            TrafficSpec::Pcap(spec) => {
                spec.loops = spec.loops.min(MAX_FUZZ_LOOPS);
                if let Some(pps) = &mut spec.pps {
                    rate(pps);
                }
            }
            TrafficSpec::SynFlood(spec)
            | TrafficSpec::AckFlood(spec)
            | TrafficSpec::UdpFlood(spec)
            | TrafficSpec::IcmpFlood(spec) => rate(&mut spec.rate),
            TrafficSpec::TcpClients(spec) => {
                rate(&mut spec.rate);
                spec.clients = spec.clients.min(MAX_FUZZ_CLIENTS);
            }
            TrafficSpec::UdpClients(spec) => {
                rate(&mut spec.rate);
                spec.clients = spec.clients.min(MAX_FUZZ_CLIENTS);
            }
            TrafficSpec::FtpClients(spec) => {
                rate(&mut spec.rate);
                spec.clients = spec.clients.min(MAX_FUZZ_CLIENTS);
            }
        }
    }
}

/// The custom mutator: change one thing in the input read as a TOML document and return
/// the new size; `bytes` (libFuzzer's own byte mutator) for one input in eight, for input
/// that is not TOML, and when the result would not fit in `max_size`.
pub fn mutate(
    data: &mut [u8],
    size: usize,
    max_size: usize,
    seed: u32,
    bytes: impl FnOnce(&mut [u8], usize, usize) -> usize,
) -> usize {
    let mut rng = SplitMix(u64::from(seed) ^ 0x9e37_79b9_7f4a_7c15);
    let table = (rng.below(8) != 0)
        .then(|| std::str::from_utf8(&data[..size.min(data.len())]).ok())
        .flatten()
        .and_then(|text| toml::from_str::<Table>(text).ok());
    let Some(mut table) = table else {
        return bytes(data, size, max_size);
    };
    mutate_table(&mut table, &mut rng);
    match toml::to_string(&table) {
        Ok(text) if text.len() <= max_size.min(data.len()) => {
            data[..text.len()].copy_from_slice(text.as_bytes());
            text.len()
        }
        _ => bytes(data, size, max_size),
    }
}

/// One structural change to `table`.
pub fn mutate_table(table: &mut Table, rng: &mut SplitMix) {
    let mut root = Value::Table(std::mem::take(table));
    let mut paths = Vec::new();
    node_paths(&root, &mut Vec::new(), &mut paths);
    if paths.is_empty() {
        if let Value::Table(t) = &mut root {
            t.insert("name".into(), Value::String("fuzz".into()));
        }
    } else {
        let path = paths[rng.below(paths.len())].clone();
        match rng.below(8) {
            0 => delete(&mut root, &path),
            1 => duplicate(&mut root, &path),
            2 => {
                let from = paths[rng.below(paths.len())].clone();
                if let Some(value) = node(&mut root, &from).cloned()
                    && let Some(target) = node(&mut root, &path)
                {
                    *target = value;
                }
            }
            3 => insert_key(&mut root, &path, rng),
            _ => {
                if let Some(target) = node(&mut root, &path) {
                    *target = new_value(target, rng);
                }
            }
        }
    }
    if let Value::Table(t) = root {
        *table = t;
    }
}

/// A step into a TOML value.
#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn node_paths(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    let children: Vec<(Step, &Value)> = match value {
        Value::Table(t) => t.iter().map(|(k, v)| (Step::Key(k.clone()), v)).collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (Step::Index(i), v))
            .collect(),
        _ => return,
    };
    for (step, child) in children {
        prefix.push(step);
        out.push(prefix.clone());
        node_paths(child, prefix, out);
        prefix.pop();
    }
}

fn node<'v>(mut value: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    for step in path {
        value = match (value, step) {
            (Value::Table(t), Step::Key(k)) => t.get_mut(k)?,
            (Value::Array(a), Step::Index(i)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

fn delete(root: &mut Value, path: &[Step]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    match (node(root, parent), last) {
        (Some(Value::Table(t)), Step::Key(k)) => {
            t.remove(k);
        }
        (Some(Value::Array(a)), Step::Index(i)) if *i < a.len() => {
            a.remove(*i);
        }
        _ => {}
    }
}

/// An array element appended again (a second `[[traffic]]`, `[[topology.network]]` …).
fn duplicate(root: &mut Value, path: &[Step]) {
    let Some((Step::Index(i), parent)) = path.split_last() else {
        return;
    };
    if let Some(Value::Array(a)) = node(root, parent)
        && let Some(item) = a.get(*i).cloned()
    {
        a.push(item);
    }
}

/// Keys of the scenario and appliance schema worth adding where they are missing.
const KEYS: &[&str] = &[
    "loss_ppm",
    "duplicate_ppm",
    "reorder_ppm",
    "reorder_delay",
    "corrupt_ppm",
    "bandwidth",
    "latency",
    "start",
    "stop",
    "burst",
    "persistence",
    "persistence_netmask",
    "weight",
    "upper_threshold",
    "lower_threshold",
    "queues",
    "connections",
    "requests",
    "sessions",
    "timeout",
    "also",
    "udp_ports",
    "tcp_ports",
    "ftp",
    "service_time",
    "src_ports",
    "dst_ports",
    "ttl",
    "payload",
    "loops",
    "speed",
    "pps",
    "top_speed",
    "rewrite",
    "src",
    "director",
    "server",
    "host",
    "mode",
    "at",
    "flags",
    "fwmark",
    "port",
    "vip",
    "proto",
    "scheduler",
    "forward",
    "sorry",
    "deny",
    "allow_src",
    "syn_cookies",
    "surge",
    "unmatched_drop",
    "ttl_filter",
    "session_table_capacity",
    "source_table_capacity",
    "no_l4_checksum",
    "flows",
    "appliance",
    "cpu",
    "ip_vs_ftp",
    "name",
    "from",
    "dst",
    "clients",
    "rate",
    "files",
    "modes",
    "response_bytes",
    "iface",
    "addr",
    "prefix",
];

fn insert_key(root: &mut Value, path: &[Step], rng: &mut SplitMix) {
    let parent = &path[..path.len() - 1];
    let key = KEYS[rng.below(KEYS.len())];
    let value = new_value(&Value::String(String::new()), rng);
    match node(root, path) {
        Some(Value::Table(t)) => {
            t.insert(key.into(), value);
        }
        _ => {
            if let Some(Value::Table(t)) = node(root, parent) {
                t.insert(key.into(), value);
            }
        }
    }
}

/// Strings a scenario's keys take: durations, rates, bandwidths, addresses, port and TTL
/// ranges, names of the bundled scenarios' things, enum words.
const STRINGS: &[&str] = &[
    "0s",
    "1ns",
    "1ms",
    "3ms",
    "1h",
    "18446744073709551615ns",
    "-1s",
    "1.5ms",
    "0ms",
    "0/s",
    "1/s",
    "100k/s",
    "1G/s",
    "0bit/s",
    "1bit/s",
    "100Gbit/s",
    "0.0.0.0",
    "255.255.255.255",
    "192.0.2.10",
    "192.0.2.10:80",
    "192.0.2.10:0",
    "[2001:db8::1]:80",
    "2001:db8::1",
    "::",
    "10.0.1.2:80",
    "10.0.1.2",
    "0.0.0.0/0",
    "::/0",
    "192.0.2.10/32",
    "198.51.100.0/24",
    "10.0.1.0/31",
    "0-65535",
    "65535-0",
    "1-1",
    "32-64",
    "outside",
    "inside",
    "clients",
    "internet",
    "web",
    "web1",
    "web2",
    "rr",
    "wrr",
    "lc",
    "wlc",
    "sh",
    "dh",
    "mh",
    "lblc",
    "lblcr",
    "sed",
    "nq",
    "fo",
    "ovf",
    "nat",
    "dr",
    "tun",
    "auto",
    "on",
    "off",
    "tcp",
    "udp",
    "icmp",
    "pcap",
    "syn_flood",
    "ack_flood",
    "udp_flood",
    "icmp_flood",
    "tcp_clients",
    "udp_clients",
    "ftp_clients",
    "server_down",
    "server_up",
    "check_fail",
    "check_ok",
    "weight",
    "mode",
    "link",
    "passive",
    "active",
    "extended",
    "",
];

/// A new value for a node: a nearby or extreme number, a word of [`STRINGS`], a flipped
/// boolean, or now and then a value of another type.
fn new_value(old: &Value, rng: &mut SplitMix) -> Value {
    let pick = |rng: &mut SplitMix| Value::String(STRINGS[rng.below(STRINGS.len())].into());
    if rng.below(10) == 0 {
        return match rng.below(4) {
            0 => Value::Integer(rng.below(70_000) as i64),
            1 => Value::Boolean(true),
            2 => Value::Array(vec![old.clone(), old.clone()]),
            _ => pick(rng),
        };
    }
    match old {
        Value::Integer(i) => {
            let choices = [
                0,
                1,
                -1,
                i.saturating_add(1),
                i.saturating_sub(1),
                i.saturating_mul(2),
                i / 2,
                i64::MAX,
                i64::MIN,
                255,
                256,
                65_535,
                65_536,
                4_294_967_295,
                4_294_967_296,
                1_000_000,
                1_000_001,
            ];
            Value::Integer(choices[rng.below(choices.len())])
        }
        Value::Float(f) => {
            let choices = [0.0, -1.0, 1.0, 0.5, f64::NAN, f64::INFINITY, f * 2.0, 1e300];
            Value::Float(choices[rng.below(choices.len())])
        }
        Value::Boolean(b) => Value::Boolean(!b),
        Value::String(s) if rng.below(3) == 0 && s.bytes().any(|b| b.is_ascii_digit()) => {
            Value::String(renumber(s, rng))
        }
        Value::Array(a) if !a.is_empty() && rng.below(2) == 0 => {
            let mut a = a.clone();
            let i = rng.below(a.len());
            a[i] = new_value(&a[i], rng);
            Value::Array(a)
        }
        _ => pick(rng),
    }
}

/// `s` with its first run of digits replaced by another number (`"1ms"` → `"65536ms"`).
fn renumber(s: &str, rng: &mut SplitMix) -> String {
    let start = s.find(|c: char| c.is_ascii_digit()).unwrap_or(0);
    let len = s[start..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(s.len() - start);
    let numbers = [
        "0",
        "1",
        "2",
        "9",
        "255",
        "256",
        "65535",
        "65536",
        "4294967296",
        "99999999999999999999",
    ];
    format!(
        "{}{}{}",
        &s[..start],
        numbers[rng.below(numbers.len())],
        &s[start + len..]
    )
}

/// A small deterministic generator (splitmix64) seeded by libFuzzer's mutation seed.
pub struct SplitMix(pub u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mutations of a bundled scenario stay TOML (the mutator's point) and change it.
    #[test]
    fn mutations_stay_toml_and_change_the_input() {
        let seed = std::fs::read(scenarios_dir().join("synflood.toml")).unwrap();
        let (mut changed, mut toml) = (0, 0);
        for round in 0..200u32 {
            let mut data = seed.clone();
            data.resize(seed.len() * 2, 0);
            let size = mutate(&mut data, seed.len(), seed.len() * 2, round, |_, s, _| s);
            let text = std::str::from_utf8(&data[..size]).unwrap();
            toml += usize::from(toml::from_str::<Table>(text).is_ok());
            changed += usize::from(data[..size] != seed[..]);
        }
        assert!(toml >= 190, "{toml}");
        assert!(changed >= 150, "{changed}");
    }

    /// A scenario naming a device or a file outside the repository is not run.
    #[test]
    fn files_outside_the_repository_are_refused() {
        assert!(!files_are_safe("flows = \"/dev/zero\""));
        assert!(!files_are_safe("flows = \"../../../../../../etc/passwd\""));
        assert!(files_are_safe("flows = \"flows/game.flowmgr\""));
        assert!(files_are_safe("flows = \"no/such/file\""));
    }
}
