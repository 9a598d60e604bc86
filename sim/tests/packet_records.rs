//! One per-packet record schema for `sim replay`, `sim run` and `sim diff` (`--packets`): the
//! three commands run on the same capture through the same appliance, and
//! - every record has exactly the keys `docs/packet-records.md` lists for that command (the
//!   packet's, the decision's, and the command's own);
//! - a key shared by two commands has the same JSON type in both (`flow` is a name
//!   everywhere, `rule` a number);
//! - the same packet gets the same packet fields and the same decision from all three.
//!
//! The `sim diff` part needs the kernel side (root, nft; see `kernel_support`).

mod kernel_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

const APPLIANCE: &str = "scenarios/appliances/game.toml";
const CAPTURE: &str = "pcaps/gen/conversation-game.pcap";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sim-records-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `sim ARGS` and parses the JSON lines it wrote to `out` (`None`: stdout).
fn records(args: &[&str], out: Option<&Path>) -> Vec<Map<String, Value>> {
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(args)
        .current_dir(repository())
        .env("CI", "1")
        .output()
        .unwrap();
    assert!(
        output.status.code().is_some_and(|c| c == 0 || c == 1),
        "sim {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = match out {
        Some(path) => std::fs::read_to_string(path).unwrap(),
        None => String::from_utf8(output.stdout).unwrap(),
    };
    let parsed: Vec<Map<String, Value>> = text
        .lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(map)) => map,
            other => panic!("sim {args:?}: not a JSON object: {line} ({other:?})"),
        })
        .collect();
    assert!(!parsed.is_empty(), "sim {args:?} wrote no record");
    parsed
}

/// The keys of one section (`## …` heading containing `marker`) of the records page.
fn documented(marker: &str) -> BTreeSet<String> {
    let page = std::fs::read_to_string(repository().join("docs/packet-records.md")).unwrap();
    let lines: Vec<&str> = page.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with("## ") && l.contains(marker))
        .unwrap_or_else(|| panic!("docs/packet-records.md has no section {marker}"));
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(key, _)| key.to_string()))
        .collect()
}

fn keys(record: &Map<String, Value>) -> BTreeSet<String> {
    record.keys().cloned().collect()
}

fn union(parts: &[&BTreeSet<String>]) -> BTreeSet<String> {
    parts.iter().flat_map(|p| p.iter().cloned()).collect()
}

/// `null`, `bool`, `number`, `string`, `array` or `object`.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Per key, the JSON types it takes (null aside) over all records.
fn types(
    records: &[Map<String, Value>],
) -> std::collections::BTreeMap<String, BTreeSet<&'static str>> {
    let mut out: std::collections::BTreeMap<String, BTreeSet<&'static str>> = Default::default();
    for record in records {
        for (key, value) in record {
            let entry = out.entry(key.clone()).or_default();
            if !value.is_null() {
                entry.insert(kind(value));
            }
        }
    }
    out
}

fn assert_keys(command: &str, records: &[Map<String, Value>], expected: &BTreeSet<String>) {
    for (index, record) in records.iter().enumerate() {
        assert_eq!(
            &keys(record),
            expected,
            "{command} record {index} has other keys than docs/packet-records.md lists: {record:?}"
        );
    }
}

/// Same types for the keys two commands share (a key null everywhere in one says nothing).
fn assert_same_types(a: (&str, &[Map<String, Value>]), b: (&str, &[Map<String, Value>])) {
    let (ta, tb) = (types(a.1), types(b.1));
    for (key, kinds) in &ta {
        if let Some(other) = tb.get(key)
            && !kinds.is_empty()
            && !other.is_empty()
        {
            assert_eq!(
                kinds, other,
                "`{key}`: {} writes {kinds:?}, {} {other:?}",
                a.0, b.0
            );
        }
    }
}

const PACKET_FIELDS: [&str; 11] = [
    "len",
    "vlan",
    "src",
    "dst",
    "proto",
    "sport",
    "dport",
    "tcp_flags",
    "icmp_type",
    "ttl",
    "invalid",
];
const DECISION_FIELDS: [&str; 5] = ["stage", "verdict", "reason", "flow", "rule"];

fn pick(record: &Map<String, Value>, fields: &[&str]) -> Vec<Value> {
    fields.iter().map(|f| record[*f].clone()).collect()
}

/// `sim run` of a scenario that replays the capture through the appliance.
fn run_records(dir: &Path) -> Vec<Map<String, Value>> {
    let scenario = dir.join("records.toml");
    let repo = repository().canonicalize().unwrap();
    std::fs::write(
        &scenario,
        format!(
            "name = \"records\"\nseed = 1\nduration = \"50ms\"\n\
             [[topology.network]]\nname = \"capture\"\nprefix = \"0.0.0.0/0\"\niface = \"outside\"\n\
             [appliance]\nappliance = \"{}/{APPLIANCE}\"\n\
             [[traffic]]\nkind = \"pcap\"\nfile = \"{}/{CAPTURE}\"\nfrom = \"capture\"\ntop_speed = true\n",
            repo.display(),
            repo.display()
        ),
    )
    .unwrap();
    let run_out = dir.join("run.jsonl");
    records(
        &[
            "run",
            scenario.to_str().unwrap(),
            "-q",
            "--out",
            dir.join("report").to_str().unwrap(),
            "--packets",
            run_out.to_str().unwrap(),
        ],
        Some(&run_out),
    )
}

#[test]
fn run_replay_and_diff_write_one_record_schema() {
    let packet = documented("The packet");
    let decision = documented("The decision");
    let run_own = documented("`sim run`'s own keys");
    let diff_own = documented("`sim diff`'s own keys");
    assert!(packet.contains("ts_ns") && decision.contains("flow") && run_own.contains("queue"));
    // `file` appears only when several captures are replayed.
    let packet: BTreeSet<String> = packet.into_iter().filter(|k| k != "file").collect();

    let replay = records(
        &[
            "replay",
            "--appliance",
            APPLIANCE,
            CAPTURE,
            "--packets",
            "-",
        ],
        None,
    );
    assert_keys("sim replay", &replay, &union(&[&packet, &decision]));
    let plain = records(&["replay", CAPTURE, "--packets", "-"], None);
    assert_keys("sim replay (no appliance)", &plain, &packet);

    let dir = scratch();
    let run = run_records(&dir);
    assert_keys("sim run", &run, &union(&[&packet, &decision, &run_own]));
    assert_same_types(("sim replay", &replay), ("sim run", &run));
    // Every packet of the capture is in the run (queues interleave them), with the same
    // fields and the same decision.
    for (index, r) in replay.iter().enumerate() {
        let fields = pick(r, &PACKET_FIELDS);
        let decided: Vec<_> = run
            .iter()
            .filter(|x| pick(x, &PACKET_FIELDS) == fields)
            .map(|x| pick(x, &DECISION_FIELDS))
            .collect();
        assert!(
            decided.contains(&pick(r, &DECISION_FIELDS)),
            "replay packet {index} ({r:?}) not decided alike in the run: {decided:?}"
        );
    }
    assert!(
        replay
            .iter()
            .any(|r| r["flow"].is_string() && r["rule"].is_u64()),
        "no packet classified by a flow: the comparison says little"
    );

    if !kernel_support::kernel_tests_enabled() {
        return;
    }
    let _lock = kernel_support::lock();
    let diff = records(
        &[
            "diff",
            "--appliance",
            APPLIANCE,
            CAPTURE,
            "--kernel-backend",
            "host",
            "--out",
            dir.join("diff").to_str().unwrap(),
            "--packets",
            "-",
        ],
        None,
    );
    assert_keys("sim diff", &diff, &union(&[&packet, &decision, &diff_own]));
    assert_same_types(("sim replay", &replay), ("sim diff", &diff));
    assert_same_types(("sim run", &run), ("sim diff", &diff));
    assert_eq!(diff.len(), replay.len(), "one record per packet");
    for (index, (d, r)) in diff.iter().zip(&replay).enumerate() {
        assert_eq!(
            (
                pick(d, &PACKET_FIELDS),
                pick(d, &DECISION_FIELDS),
                &d["ts_ns"]
            ),
            (
                pick(r, &PACKET_FIELDS),
                pick(r, &DECISION_FIELDS),
                &r["ts_ns"]
            ),
            "packet {index}: sim diff and sim replay disagree"
        );
        assert!(
            d["agree"].is_boolean(),
            "packet {index} not compared: {d:?}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
