//! `sim check --junit FILE` writes JUnit XML that a JUnit reader accepts, with one test
//! case per case: passes, failures (with the diff) and skips (with the reason).

use std::path::{Path, PathBuf};

use quick_junit::{NonSuccessKind, Report, TestCaseStatus};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn junit_output_parses_with_passes_failures_and_skips() {
    let directory = std::env::temp_dir().join(format!("lbsim-junit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let cases = repository().join("pcaps/cases");
    let failing = directory.join("wrong-count.toml");
    let capture = cases
        .join("../gen/icmpflood-doc.pcap")
        .canonicalize()
        .unwrap();
    std::fs::write(
        &failing,
        format!(
            "captures = [{:?}]\n\n[expect]\npackets = 3 # wrong on purpose\n",
            capture.display().to_string()
        ),
    )
    .unwrap();
    let junit = directory.join("out/junit.xml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sim"))
        .arg("check")
        .arg(cases.join("errors"))
        .arg(cases.join("gen/conversation-web.web-vip.kernel.toml"))
        .arg(&failing)
        .arg("--junit")
        .arg(&junit)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "one case fails");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let report = Report::deserialize_from_str(&xml).expect("valid JUnit XML");
    assert_eq!(report.test_suites.len(), 1);
    let suite = &report.test_suites[0];
    assert!(suite.tests >= 17, "{}", suite.tests);
    assert_eq!((suite.failures, suite.skipped), (1, 1));
    let failure = suite
        .test_cases
        .iter()
        .find(|case| {
            matches!(
                case.status,
                TestCaseStatus::NonSuccess {
                    kind: NonSuccessKind::Failure,
                    ..
                }
            )
        })
        .unwrap();
    let TestCaseStatus::NonSuccess { description, .. } = &failure.status else {
        unreachable!()
    };
    let description = description.as_ref().unwrap().as_str();
    assert!(
        description.contains("packets: expected 3, got 150"),
        "{description}"
    );
    let skip = suite
        .test_cases
        .iter()
        .find(|case| matches!(case.status, TestCaseStatus::Skipped { .. }))
        .unwrap();
    assert!(
        skip.name
            .as_str()
            .ends_with("conversation-web.web-vip.kernel")
    );
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn unknown_requirements_fail_instead_of_skipping() {
    let directory = std::env::temp_dir().join(format!("lbsim-needs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let case = directory.join("typo.toml");
    std::fs::write(
        &case,
        "captures = [\"x.pcap\"]\nneeds = [\"kernel\", \"kernell\"]\n",
    )
    .unwrap();
    let result = sim::cli::check::check_case(&case, "typo", false);
    let sim::cli::check::CaseStatus::Fail(lines) = &result.status else {
        panic!("{:?}", result.status)
    };
    assert!(
        lines[0].contains("unknown requirement `kernell`"),
        "{lines:?}"
    );
    std::fs::remove_dir_all(&directory).unwrap();
}
