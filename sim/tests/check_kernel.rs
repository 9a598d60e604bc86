//! `sim check --kernel`: cases that need the kernel run it (root), and are skipped with a
//! visible reason without the flag.

use std::process::Command;

const CASE: &str = "../pcaps/cases/gen/conversation-web.web-vip.kernel.toml";

fn sim(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn kernel_cases_are_skipped_visibly_without_the_flag() {
    let (code, out) = sim(&["check", CASE]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("SKIP") && out.contains("sim check --kernel"),
        "{out}"
    );
}

#[test]
fn kernel_cases_agree_with_the_kernel() {
    if std::env::var("LBSIM_SKIP_KERNEL_TESTS").as_deref() == Ok("1")
        && std::env::var("CI").is_err()
    {
        eprintln!("SKIPPED: kernel side (LBSIM_SKIP_KERNEL_TESTS=1)");
        return;
    }
    let before = namespaces();
    let (code, out) = sim(&["check", CASE, "--kernel"]);
    assert_eq!(
        code, 0,
        "the kernel side must agree (needs root, iproute2, nftables):\n{out}"
    );
    assert!(out.contains("PASS") && out.contains("1 passed"), "{out}");
    assert_eq!(namespaces(), before, "no namespace left behind");
}

fn namespaces() -> String {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut lines: Vec<&str> = text.lines().filter(|l| l.starts_with("lbsim-")).collect();
    lines.sort_unstable();
    lines.join("\n")
}
