//! The whole regression corpus (`pcaps/cases`) passes, every case is small, the kernel case
//! is skipped with its reason, and `sim gen corpus` reproduces the committed generated
//! captures byte for byte.

use std::path::{Path, PathBuf};

use sim::cli::check::{CaseStatus, check_paths, render, tally};
use sim::cli::generate::{GenKind, GenSpec, corpus_specs, generate};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_whole_corpus_passes() {
    let corpus = repository().join("pcaps/cases");
    let results = check_paths(&[corpus], false).expect("corpus readable");
    let counts = tally(&results);
    assert_eq!(counts.failed, 0, "{}", render(&results));
    assert!(counts.passed >= 100, "only {} cases passed", counts.passed);
    let skipped: Vec<_> = results
        .iter()
        .filter_map(|r| match &r.status {
            CaseStatus::Skip(reason) => Some((r.name.as_str(), reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].1.starts_with("needs kernel"), "{skipped:?}");
    let text = render(&results);
    assert!(
        text.contains("SKIP  gen/conversation-web.web-vip.kernel"),
        "{text}"
    );
    let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "results come in case-name order");
}

#[test]
fn every_case_of_each_kind_is_there() {
    let corpus = repository().join("pcaps/cases");
    let cases = sim::cli::check::case::discover(&[corpus]).unwrap();
    let count = |prefix: &str| cases.iter().filter(|(_, n)| n.starts_with(prefix)).count();
    assert!(count("real/") >= 80, "real-capture cases");
    assert!(count("gen/") >= 30, "generated-capture cases");
    assert!(count("errors/config-") >= 10, "rejected-config cases");
    assert!(count("errors/capture-") >= 4, "damaged-capture cases");
}

#[test]
fn generated_corpus_is_reproduced_byte_for_byte() {
    let directory = repository().join("pcaps/gen");
    for (name, spec) in corpus_specs() {
        let committed = std::fs::read(directory.join(name)).expect(name);
        assert!(
            committed == generate(&spec),
            "{name} differs from `sim gen corpus`"
        );
        assert!(
            committed.len() < 16 * 1024,
            "{name} is {} bytes",
            committed.len()
        );
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dst = "10.10.10.10:25565".parse().unwrap();
    for kind in [
        GenKind::SynFlood,
        GenKind::UdpFlood,
        GenKind::IcmpFlood,
        GenKind::Conversation,
    ] {
        let one = generate(&GenSpec::new(kind, 42, dst));
        assert_eq!(one, generate(&GenSpec::new(kind, 42, dst)), "{kind:?}");
        assert_ne!(one, generate(&GenSpec::new(kind, 43, dst)), "{kind:?}");
    }
}

#[test]
fn sim_gen_writes_the_same_file_twice() {
    let directory = std::env::temp_dir().join(format!("lbsim-gen-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let mut outputs = Vec::new();
    for attempt in 0..2 {
        let out = directory.join(format!("flood-{attempt}.pcap"));
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_sim"))
            .args(["gen", "syn-flood", "--seed", "9", "--count", "20", "--out"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        outputs.push(std::fs::read(&out).unwrap());
    }
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0].len(), 24 + 20 * (16 + 58));
    std::fs::remove_dir_all(&directory).unwrap();
}
