//! Every file in `scenarios/invalid/` is rejected with a `file:line:col: message` error; the
//! messages are snapshots.

use std::path::{Path, PathBuf};

fn invalid_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/invalid")
}

#[test]
fn invalid_scenarios_are_rejected_with_their_location() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(invalid_dir())
        .expect("scenarios/invalid exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected the invalid examples, found {files:?}"
    );
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let shown = Path::new("scenarios/invalid").join(path.file_name().unwrap());
        let error =
            sim::scenario::parse(&shown, &text).expect_err(&format!("{name} must be rejected"));
        let message = error.to_string();
        assert!(
            error.line > 0 && error.column > 0,
            "{message} has no location"
        );
        insta::assert_snapshot!(format!("invalid_{name}"), message);
    }
}

#[test]
fn bad_values_in_sources_are_located_at_their_key() {
    let text = "name = \"x\"\nseed = 1\nduration = \"1s\"\n\n[[traffic]]\nkind = \"udp_flood\"\nfrom = \"n\"\nrate = \"5 parsecs\"\ndst = \"192.0.2.1\"\n";
    let error = sim::scenario::parse(Path::new("t.toml"), text).unwrap_err();
    assert_eq!((error.line, error.column), (8, 8));
    assert!(
        error
            .message
            .starts_with("traffic[0].rate: `5 parsecs`: invalid rate \"5 parsecs\""),
        "{error}"
    );
}

/// The `[[events]]` example of `scenarios/README.md` names a director and a real server that
/// `scenarios/synflood.toml` has: appended to it, the scenario loads (a dangling name would be
/// a located error).
#[test]
fn the_readme_event_example_names_a_real_server_of_synflood() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("scenarios/README.md")).unwrap();
    let start = readme.find("[[events]]").expect("an events example");
    let example: String = readme[start..]
        .lines()
        .take_while(|line| !line.is_empty())
        .filter(|line| !line.starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(example.contains("kind = \"weight\""), "{example}");
    let synflood = std::fs::read_to_string(root.join("scenarios/synflood.toml")).unwrap();
    let text = format!("{synflood}\n{example}");
    let path = root.join("scenarios/synflood-with-event.toml");
    if let Err(error) = sim::scenario::parse(&path, &text) {
        panic!("the README example does not fit synflood: {error}");
    }
    let dangling = format!(
        "{synflood}\n{}",
        example.replace("10.0.1.3:80\"", "10.0.1.4:80\"")
    );
    let error = sim::scenario::parse(&path, &dangling).unwrap_err();
    assert!(error.message.starts_with("events[0].server"), "{error}");
}
