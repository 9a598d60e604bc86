//! Every fuzz seed (`fuzz/seeds/<target>/`) and every input that once crashed a target
//! (`fuzz/regressions/<target>/`) replayed through the target's body on stable Rust.

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for path in paths {
            let data = std::fs::read(&path).unwrap();
            body(&data);
            count += 1;
        }
    }
    count
}

/// A fuzz target: its name (a `[[bin]]` of `fuzz/Cargo.toml`), its body, and how many
/// seeds and regressions it has at least.
type Target = (&'static str, fn(&[u8]), usize);

/// Every fuzz target.
const TARGETS: [Target; 11] = [
    ("parse", sim::fuzzing::parse_frame, 100),
    ("capture", sim::fuzzing::read_capture, 50),
    ("flowmgr", sim::fuzzing::flowmgr, 4),
    ("config", sim::fuzzing::config, 10),
    ("pipeline", sim::fuzzing::pipeline, 50),
    ("scenario", sim::fuzzing::scenario, 0),
    ("import_keepalived", sim::fuzzing::import_keepalived, 3),
    ("import_ipvsadm", sim::fuzzing::import_ipvsadm, 2),
    ("import_iptables", sim::fuzzing::import_iptables, 5),
    ("import_ldirectord", sim::fuzzing::import_ldirectord, 3),
    ("import_nft", sim::fuzzing::import_nft, 4),
];

/// Every seed and every regression input of every target.
#[test]
fn seeds_and_regressions_replay() {
    for (name, body, at_least) in TARGETS {
        let count = replay(name, body);
        assert!(count >= at_least, "{name}: {count} inputs");
    }
}

/// Every input a fuzzer once kept (crash, timeout, slow unit, out-of-memory) lives under
/// `fuzz/regressions/<target>/`, where the tests above replay it: none lies elsewhere in
/// `fuzz/` (two slow lblc units once did, replayed by nothing).
#[test]
fn no_fuzz_artifact_is_left_outside_the_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let prefixes = ["crash-", "timeout-", "slow-unit-", "oom-", "leak-"];
    let stray: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| prefixes.iter().any(|p| name.starts_with(p)))
        .collect();
    assert!(
        stray.is_empty(),
        "move to fuzz/regressions/<target>/: {stray:?}"
    );
    let regressions = root.join("regressions");
    for target in std::fs::read_dir(&regressions).unwrap() {
        let name = target.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(target, ..)| *target == name),
            "fuzz/regressions/{name}: no such target, so nothing replays it"
        );
    }
}

/// The list above names every `[[bin]]` of `fuzz/Cargo.toml` and every target
/// `scripts/fuzz` runs by default, so a new target's regressions cannot go unreplayed.
#[test]
fn every_target_is_replayed_and_fuzzed_by_default() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).unwrap();
    let mut bins: Vec<&str> = manifest
        .lines()
        .filter_map(|line| line.strip_prefix("name = \""))
        .filter_map(|rest| rest.strip_suffix('"'))
        .filter(|name| *name != "lbsim-fuzz")
        .collect();
    let script = std::fs::read_to_string(root.join("scripts/fuzz")).unwrap();
    let defaults = script
        .lines()
        .find_map(|line| line.split_once("|| targets=("))
        .map(|(_, list)| list.trim_end_matches(')'))
        .expect("scripts/fuzz's default target list");
    let mut defaults: Vec<&str> = defaults.split_whitespace().collect();
    let mut known: Vec<&str> = TARGETS.iter().map(|(name, ..)| *name).collect();
    bins.sort_unstable();
    defaults.sort_unstable();
    known.sort_unstable();
    assert_eq!(bins, known, "fuzz/Cargo.toml's targets and this file's");
    assert_eq!(
        defaults, known,
        "scripts/fuzz's default targets and this file's"
    );
}

/// The scenario target's seeds are the bundled scenarios (valid and invalid): each runs
/// (capped to a few virtual milliseconds) or fails with a located error.
#[test]
fn scenario_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut count = 0;
    for dir in [root.clone(), root.join("invalid")] {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            sim::fuzzing::scenario(&std::fs::read(&path).unwrap());
            count += 1;
        }
    }
    assert!(count >= 30, "{count}");
}
