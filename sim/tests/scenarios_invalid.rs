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
fn bad_values_in_sources_are_located_at_their_table() {
    let text = "name = \"x\"\nseed = 1\nduration = \"1s\"\n\n[[traffic]]\nkind = \"udp_flood\"\nfrom = \"n\"\nrate = \"5 parsecs\"\ndst = \"192.0.2.1\"\n";
    let error = sim::scenario::parse(Path::new("t.toml"), text).unwrap_err();
    assert_eq!((error.line, error.column), (5, 1));
    assert!(
        error.message.contains("invalid rate \"5 parsecs\""),
        "{error}"
    );
}
