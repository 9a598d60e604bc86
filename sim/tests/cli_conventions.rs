//! CLI conventions of the `sim` binary: a closed stdout ends quietly (no panic, no exit 101),
//! the documented exit-code table holds row by row, completions and the man page are
//! generated from the CLI, and every subcommand's `--help` has examples.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sim(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sim"));
    command.args(args).current_dir(repository()).env("CI", "1");
    command
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sim-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `sim ARGS`, reads one line of its stdout, closes the pipe and waits: the exit must not
/// be a panic.
fn assert_quiet_on_closed_stdout(args: &[&str]) {
    let mut child = sim(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "{args:?} printed nothing");
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_ne!(output.status.code(), Some(101), "{args:?}: {stderr}");
    assert!(
        matches!(output.status.code(), Some(0 | 141)),
        "{args:?} exited {:?}: {stderr}",
        output.status
    );
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let out = scratch("closed");
    let out = out.to_str().unwrap();
    assert_quiet_on_closed_stdout(&["run", "scenarios/synflood.toml", "--out", out]);
    // Records to stdout: many lines, so the reader closes while sim is still writing.
    assert_quiet_on_closed_stdout(&["replay", "pcaps/gen/synflood-game.pcap", "--packets", "-"]);
    assert_quiet_on_closed_stdout(&[
        "flows",
        "eval",
        "scenarios/flows/game.flowmgr",
        "--pcap",
        "pcaps/gen/synflood-game.pcap",
    ]);
}

#[test]
fn exit_codes_follow_the_documented_table() {
    let bad = "sim/tests/data/bad-inputs";
    let rows: &[(&str, Vec<String>, i32)] = &[
        (
            "success",
            args(&["flows", "check", "scenarios/flows/game.flowmgr"]),
            0,
        ),
        (
            "damaged capture",
            args(&["replay", &format!("{bad}/truncated-record.pcap")]),
            1,
        ),
        (
            "flowmgr file with errors",
            args(&["flows", "check", &format!("{bad}/unknown-keyword.flowmgr")]),
            1,
        ),
        ("unknown subcommand", args(&["no-such-command"]), 2),
        ("unknown option", args(&["run", "--no-such-option"]), 2),
        (
            "missing capture",
            args(&["replay", "no/such/capture.pcap"]),
            2,
        ),
        ("capture is a directory", args(&["replay", "pcaps"]), 2),
        (
            "missing scenario",
            args(&["run", "no/such/scenario.toml"]),
            2,
        ),
        (
            "missing flowmgr file",
            args(&["flows", "check", "no/such/file.flowmgr"]),
            2,
        ),
        (
            "bad config",
            args(&["run", "scenarios/invalid/bad_duration.toml"]),
            2,
        ),
    ];
    for (row, arguments, expected) in rows {
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        let output = sim(&arguments).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(*expected),
            "{row}: sim {arguments:?}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let help = String::from_utf8(sim(&["--help"]).output().unwrap().stdout).unwrap();
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    for line in [
        "0    success",
        "1    failed checks",
        "2    usage or I/O error",
    ] {
        assert!(help.contains(line), "`sim --help` lacks {line:?}");
        assert!(readme.contains(line), "README lacks {line:?}");
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_cli() {
    let output = sim(&["completions", "bash"]).output().unwrap();
    assert!(output.status.success());
    let script = String::from_utf8(output.stdout).unwrap();
    for word in ["run", "diff", "replay", "complete -F"] {
        assert!(script.contains(word), "bash completion lacks {word:?}");
    }
    let output = sim(&["man"]).output().unwrap();
    assert!(output.status.success());
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH sim 1"),
        "not roff: {page:.200}"
    );
    for subcommand in [
        "sim\\-run(1)",
        "sim\\-replay(1)",
        "sim\\-diff(1)",
        "sim\\-completions(1)",
    ] {
        assert!(page.contains(subcommand), "man page lacks {subcommand:?}");
    }
    let dir = scratch("man");
    let status = sim(&["man", "--dir", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    for page in ["sim.1", "sim-run.1", "sim-flows-eval.1"] {
        assert!(dir.join(page).is_file(), "{page} not written");
    }
}

/// The subcommand names listed under "Commands:" in `sim PATH --help` (clap's own list, so
/// new subcommands are covered without touching this test; hidden ones are not listed).
fn subcommands(path: &[&str]) -> Vec<String> {
    let mut arguments = path.to_vec();
    arguments.push("--help");
    let help = String::from_utf8(sim(&arguments).output().unwrap().stdout).unwrap();
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Walks the whole command tree (`sim kernel calibrate`, `sim plan merge`, …): every command
/// with subcommands lists them, and every command's `--help` ends in examples of itself.
#[test]
fn every_subcommand_help_has_examples() {
    let mut pending: Vec<Vec<String>> = subcommands(&[])
        .into_iter()
        .map(|name| vec![name])
        .collect();
    assert!(
        pending.len() >= 14,
        "too few subcommands parsed: {pending:?}"
    );
    let mut walked = Vec::new();
    while let Some(path) = pending.pop() {
        let words: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut arguments = words.clone();
        arguments.push("--help");
        let help = String::from_utf8(sim(&arguments).output().unwrap().stdout).unwrap();
        let command = format!("sim {}", words.join(" "));
        let examples = help
            .split_once("Examples:")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("`{command} --help` has no examples"));
        assert!(
            examples.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with(&format!("{command} "))
                    || l.starts_with(&format!("sudo {command} "))
                    || l == command
            }),
            "`{command} --help`: no example runs `{command}`:{examples}"
        );
        for child in subcommands(&words) {
            let mut deeper = path.clone();
            deeper.push(child);
            pending.push(deeper);
        }
        walked.push(command);
    }
    for nested in [
        "sim kernel calibrate",
        "sim profile show",
        "sim plan merge",
        "sim flows eval",
    ] {
        assert!(
            walked.iter().any(|c| c == nested),
            "{nested} not walked: {walked:?}"
        );
    }
    let top = String::from_utf8(sim(&["--help"]).output().unwrap().stdout).unwrap();
    let check = top
        .lines()
        .find(|l| l.trim_start().starts_with("check "))
        .unwrap();
    assert!(check.ends_with("accepts new results"), "cut off: {check}");
}

/// failover with a stricter `[expect]` than the bundled one, cut right after its
/// `server_down` so stranded connections fail `legit_success_ratio_min`.
fn failing_failover() -> PathBuf {
    let text = std::fs::read_to_string(repository().join("scenarios/failover.toml")).unwrap();
    let text = text.replace(
        "legit_success_ratio_min = 0.95",
        "legit_success_ratio_min = 0.99\nmin_packets = 100",
    );
    assert!(
        text.contains("min_packets = 100"),
        "failover's [expect] moved"
    );
    let path = scratch("failing").join("failover.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The run summary ends in one PASS/FAIL line naming each failing check with its value and
/// limit; completed, failed and still-open connections are counted apart; `-q` prints that
/// line alone; piped output has no colour, `--color always` paints the verdict.
#[test]
fn run_summary_ends_in_a_verdict_line() {
    let scenario = failing_failover();
    let out = scratch("verdict");
    let (scenario, out) = (scenario.to_str().unwrap(), out.to_str().unwrap());
    let run = |extra: &[&str]| {
        let mut arguments = vec!["run", scenario, "--duration", "203ms", "--out", out];
        arguments.extend_from_slice(extra);
        let output = sim(&arguments).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let full = run(&[]);
    let stable: String = full
        .lines()
        .filter(|l| !l.starts_with("measured:") && !l.starts_with("report:"))
        .map(|l| format!("{l}\n"))
        .collect();
    insta::assert_snapshot!("run_summary_failing_failover", stable);
    assert!(
        full.contains(&format!("report: {out}/report.md\n")),
        "{full}"
    );
    let last = full.lines().last().unwrap();
    assert!(
        last.starts_with(
            "FAIL failover (seed 19): 1 of 2 checks failed: legit_success_ratio_min 0.9"
        )
    );
    assert!(!full.contains('\x1b'), "colour on a pipe: {full:?}");
    let quiet = run(&["-q"]);
    assert_eq!(quiet, format!("{last}\n"));
    let coloured = run(&["--quiet", "--color", "always"]);
    assert!(
        coloured.starts_with("\x1b[1;31mFAIL\x1b[0m failover"),
        "{coloured:?}"
    );
    let passing = sim(&["run", "scenarios/failover.toml", "-q", "--out", out])
        .output()
        .unwrap();
    assert_eq!(passing.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(passing.stdout).unwrap(),
        "PASS failover (seed 19): 1 of 1 check passed\n"
    );
}
