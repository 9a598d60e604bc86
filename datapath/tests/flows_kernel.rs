//! The kernel accepts what the compilers emit: in a throw-away network namespace,
//! `iptables-restore --test`, `ip6tables-restore --test` and `nft -c -f -` check the
//! compiled examples and a few hundred random valid files.
//!
//! Needs root and the tools. Without them the test FAILS with the reason, unless
//! `LBSIM_SKIP_KERNEL_TESTS=1` is set, in which case it prints a skip line and passes.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use datapath::flows::{Family, FlowTable, TableConfig, compile};
use proptest::test_runner::{Config, TestRunner};

const DOC_EXAMPLES: &str = include_str!("../../scenarios/flows/doc-examples.flowmgr");
const EVERY_KEYWORD: &str = include_str!("../../scenarios/flows/every-keyword.flowmgr");
const RANDOM_FILES: u32 = 300;

/// A network namespace that is deleted when dropped.
struct Namespace(String);

impl Namespace {
    fn create(tag: &str) -> Self {
        let name = format!("lbsim-{}-flows-{tag}", std::process::id());
        run(&["ip", "netns", "add", &name], "").expect("ip netns add");
        Self(name)
    }

    fn check(&self, tool: &[&str], input: &str) -> Result<(), String> {
        let mut command = vec!["ip", "netns", "exec", &self.0];
        command.extend_from_slice(tool);
        run(&command, input)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "delete", &self.0], "");
    }
}

fn run(command: &[&str], input: &str) -> Result<(), String> {
    let mut child = Command::new(command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", command[0]))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .map_err(|error| format!("writing to {}: {error}", command[0]))?;
    let output = child
        .wait_with_output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}{}",
            command.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `None` when the kernel tests can run; otherwise why not.
fn missing_prerequisite() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not running as root".into());
    }
    for tool in ["ip", "iptables-restore", "ip6tables-restore", "nft"] {
        let found = Command::new(tool)
            .arg(if tool == "ip" { "-V" } else { "--version" })
            .output()
            .is_ok_and(|output| output.status.success());
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// Whether to go on; panics when prerequisites are missing and skipping was not asked.
fn kernel_tests_enabled() -> bool {
    if std::env::var("LBSIM_SKIP_KERNEL_TESTS").is_ok_and(|value| value == "1") {
        // Written to the stderr handle directly: libtest captures `println!`/`eprintln!`.
        let _ = std::io::stderr()
            .write_all(b"SKIPPED: flows kernel tests (LBSIM_SKIP_KERNEL_TESTS=1)\n");
        return false;
    }
    if let Some(reason) = missing_prerequisite() {
        panic!(
            "flows kernel tests need root, iproute2, iptables and nftables: {reason}. \
             Set LBSIM_SKIP_KERNEL_TESTS=1 to skip them."
        );
    }
    true
}

fn check_all(namespace: &Namespace, table: &FlowTable, source: &str) -> Result<(), String> {
    let context = |error: String| format!("{error}\n--- flow file ---\n{source}");
    namespace
        .check(
            &["iptables-restore", "--test"],
            &compile::iptables(table, Family::V4),
        )
        .map_err(context)?;
    namespace
        .check(
            &["ip6tables-restore", "--test"],
            &compile::iptables(table, Family::V6),
        )
        .map_err(context)?;
    namespace
        .check(&["nft", "-c", "-f", "-"], &compile::nft(table))
        .map_err(context)
}

#[test]
fn kernel_accepts_compiled_examples() {
    if !kernel_tests_enabled() {
        return;
    }
    let namespace = Namespace::create("examples");
    let doc = FlowTable::from_source(DOC_EXAMPLES, &TableConfig::default()).expect("valid");
    check_all(&namespace, &doc, DOC_EXAMPLES).unwrap_or_else(|error| panic!("{error}"));
    let keyword_config = TableConfig {
        iface_names: Some(vec!["eth0".into(), "eth1".into()]),
        director_marks: None,
    };
    let keywords = FlowTable::from_source(EVERY_KEYWORD, &keyword_config).expect("valid");
    check_all(&namespace, &keywords, EVERY_KEYWORD).unwrap_or_else(|error| panic!("{error}"));
}

#[test]
fn kernel_accepts_compiled_random_files() {
    if !kernel_tests_enabled() {
        return;
    }
    let namespace = Namespace::create("random");
    let mut runner = TestRunner::new(Config {
        cases: RANDOM_FILES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&common::flow_file(10), |source| {
        let table = FlowTable::from_source(&source, &common::config(true))
            .unwrap_or_else(|errors| panic!("generated file rejected: {errors:?}"));
        check_all(&namespace, &table, &source).map_err(proptest::test_runner::TestCaseError::fail)
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}
