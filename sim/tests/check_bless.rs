//! A changed flow rule makes `sim check` fail with a readable diff naming the flow and the
//! packets whose verdict moved; `--bless` then accepts the change, keeping the case file's
//! comments and other keys.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A copy of `gen/conversation-ssh-lan.flows-doc` with its appliance and flow file beside
/// it; the capture stays where it is (named by absolute path).
fn copy_case(directory: &Path) -> PathBuf {
    let root = repository();
    let case_text =
        std::fs::read_to_string(root.join("pcaps/cases/gen/conversation-ssh-lan.flows-doc.toml"))
            .unwrap();
    let capture = root.join("pcaps/gen/conversation-ssh-lan.pcap");
    let capture = capture.canonicalize().unwrap();
    let mut case: toml_edit::DocumentMut = case_text.parse().unwrap();
    case["captures"] =
        toml_edit::value(toml_edit::Array::from_iter([capture.display().to_string()]));
    case["appliance"] = toml_edit::value("appliance.toml");
    let case_text = format!("# copied for the bless test\n{case}");
    let appliance = std::fs::read_to_string(root.join("pcaps/cases/appliances/flows-doc.toml"))
        .unwrap()
        .replace(
            "../../../scenarios/flows/doc-examples.flowmgr",
            "doc.flowmgr",
        );
    std::fs::write(directory.join("appliance.toml"), appliance).unwrap();
    std::fs::copy(
        root.join("scenarios/flows/doc-examples.flowmgr"),
        directory.join("doc.flowmgr"),
    )
    .unwrap();
    let path = directory.join("case.toml");
    std::fs::write(&path, case_text).unwrap();
    path
}

fn sim_check(arguments: &[&str], case: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sim"))
        .arg("check")
        .args(arguments)
        .arg(case)
        .output()
        .unwrap()
}

#[test]
fn a_changed_rule_fails_with_a_readable_diff_then_bless_accepts_it() {
    let directory = std::env::temp_dir().join(format!("lbsim-bless-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let case = copy_case(&directory);
    let before = sim_check(&[], &case);
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stdout)
    );

    let flows = directory.join("doc.flowmgr");
    let text = std::fs::read_to_string(&flows).unwrap();
    let changed = text.replace(
        "match proto tcp dst 192.168.0.1 dstport 22",
        "match proto tcp dst 192.168.0.1 dstport 2222",
    );
    assert_ne!(text, changed);
    std::fs::write(&flows, changed).unwrap();

    let failed = sim_check(&[], &case);
    assert_eq!(failed.status.code(), Some(1));
    let stdout = String::from_utf8(failed.stdout).unwrap();
    let shown = stdout.replace(&directory.display().to_string(), "TMP");
    insta::assert_snapshot!(shown);
    assert!(
        stdout.contains("    ssh "),
        "the diff names the flow: {stdout}"
    );
    assert!(
        stdout.contains("#0 tcp 192.168.0.7:") && stdout.contains("> 192.168.0.1:22 [S] → expected flows pass flow=ssh#2, got flows drop flow_deny flow=alltherest#1"),
        "the diff names the packets: {stdout}"
    );

    let blessed = sim_check(&["--bless"], &case);
    assert!(
        blessed.status.success(),
        "{}",
        String::from_utf8_lossy(&blessed.stdout)
    );
    assert!(String::from_utf8_lossy(&blessed.stdout).starts_with("BLESS "));
    let after = sim_check(&[], &case);
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stdout)
    );
    let case_text = std::fs::read_to_string(&case).unwrap();
    assert!(case_text.starts_with("# copied for the bless test\ndescription = "));
    assert!(case_text.contains("ssh = 0"), "{case_text}");
    std::fs::remove_dir_all(&directory).unwrap();
}
