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

#[test]
fn parse_seeds() {
    assert!(replay("parse", sim::fuzzing::parse_frame) >= 100);
}

#[test]
fn capture_seeds() {
    assert!(replay("capture", sim::fuzzing::read_capture) >= 50);
}

#[test]
fn flowmgr_seeds() {
    assert!(replay("flowmgr", sim::fuzzing::flowmgr) >= 4);
}

#[test]
fn config_seeds() {
    assert!(replay("config", sim::fuzzing::config) >= 10);
}

#[test]
fn pipeline_seeds() {
    assert!(replay("pipeline", sim::fuzzing::pipeline) >= 50);
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
            [
                "parse",
                "capture",
                "flowmgr",
                "config",
                "pipeline",
                "import_keepalived",
                "import_ipvsadm",
                "import_iptables",
                "import_ldirectord",
                "import_nft"
            ]
            .contains(&name.as_str()),
            "fuzz/regressions/{name}: no such target, so nothing replays it"
        );
    }
}

#[test]
fn import_seeds() {
    assert!(replay("import_keepalived", sim::fuzzing::import_keepalived) >= 3);
    assert!(replay("import_ipvsadm", sim::fuzzing::import_ipvsadm) >= 2);
    assert!(replay("import_iptables", sim::fuzzing::import_iptables) >= 5);
    assert!(replay("import_ldirectord", sim::fuzzing::import_ldirectord) >= 3);
    assert!(replay("import_nft", sim::fuzzing::import_nft) >= 4);
}
