//! Smoke test of the real terminal UI in tmux: `sim run scenarios/synflood.toml --tui` starts,
//! draws, takes keys, quits with `q`, exits 0 and leaves the terminal restored (no alternate
//! screen, the run's summary printed on the normal screen).
//!
//! tmux is required: the test fails when it is missing, unless `LBSIM_SKIP_TMUX=1`.

use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

fn tmux(args: &[&str]) -> String {
    let output = Command::new("tmux").args(args).output().expect("tmux runs");
    assert!(
        output.status.success(),
        "tmux {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn capture(target: &str) -> String {
    tmux(&["capture-pane", "-p", "-t", target])
}

/// Poll the pane until `needle` shows (or 60 s pass).
fn wait_for(target: &str, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let screen = capture(target);
        if screen.contains(needle) {
            return screen;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{needle:?} never showed; screen:\n{screen}"
        );
        sleep(Duration::from_millis(100));
    }
}

struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

/// Whether tmux runs; without it the tests fail unless `LBSIM_SKIP_TMUX=1`.
fn tmux_available() -> bool {
    if Command::new("tmux").arg("-V").output().is_err() {
        if std::env::var_os("LBSIM_SKIP_TMUX").is_some_and(|v| v == "1") {
            eprintln!("tmux missing: skipped because LBSIM_SKIP_TMUX=1");
            return false;
        }
        panic!("tmux is not installed: install it (apt-get install tmux) or set LBSIM_SKIP_TMUX=1");
    }
    true
}

/// On a terminal the verdict is coloured (green PASS); a non-empty `NO_COLOR` turns that
/// off (<https://no-color.org>), `--color always` wins over it.
#[test]
fn the_verdict_is_coloured_on_a_terminal_unless_no_color() {
    if !tmux_available() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::temp_dir().join(format!("lbsim-colour-tmux-{}", std::process::id()));
    let name = format!("lbsim-colour-{}", std::process::id());
    let sim = format!(
        "{} run scenarios/failover.toml -q --out {}",
        env!("CARGO_BIN_EXE_sim"),
        out.display()
    );
    let command = format!(
        "cd {} && {sim} && NO_COLOR=1 {sim} && NO_COLOR=1 {sim} --color always; echo DONE; sleep 600",
        root.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "120",
        "-y",
        "20",
        "sh",
        "-c",
        &command,
    ]);
    let session = Session(name.clone());
    let target = format!("{name}:0.0");
    wait_for(&target, "DONE");
    let screen = tmux(&["capture-pane", "-p", "-e", "-t", &target]);
    let verdicts: Vec<&str> = screen
        .lines()
        .filter(|l| l.contains("failover (seed"))
        .collect();
    assert_eq!(verdicts.len(), 3, "{screen}");
    // tmux re-renders the colour as its own SGR sequence: look for green (32) and none.
    assert!(
        verdicts[0].contains("32m") && verdicts[0].contains("PASS"),
        "{screen:?}"
    );
    assert!(
        verdicts[1].starts_with("PASS") && !verdicts[1].contains('\x1b'),
        "{screen:?}"
    );
    assert!(verdicts[2].contains("32m"), "{screen:?}");
    drop(session);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn sim_run_tui_in_tmux_quits_cleanly_and_restores_the_terminal() {
    if !tmux_available() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::temp_dir().join(format!("lbsim-tui-tmux-{}", std::process::id()));
    let name = format!("lbsim-tui-{}", std::process::id());
    let command = format!(
        "cd {} && {} run scenarios/synflood.toml --tui --out {}; echo EXIT=$?; sleep 600",
        root.display(),
        env!("CARGO_BIN_EXE_sim"),
        out.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "120",
        "-y",
        "40",
        "sh",
        "-c",
        &command,
    ]);
    let session = Session(name.clone());
    let target = format!("{name}:0.0");
    wait_for(&target, "lbsim synflood · seed 7 · live");
    let alternate = tmux(&["display", "-p", "-t", &target, "#{alternate_on}"]);
    assert_eq!(
        alternate.trim(),
        "1",
        "the TUI draws on the alternate screen"
    );
    wait_for(&target, "Prot LocalAddress:Port Scheduler");
    tmux(&["send-keys", "-t", &target, " "]);
    wait_for(&target, "paused");
    tmux(&["send-keys", "-t", &target, "?"]);
    wait_for(&target, "this help (any key closes it)");
    tmux(&["send-keys", "-t", &target, "Escape"]);
    // Tab only once the help is gone: an Escape followed at once by Tab reads as Alt+Tab.
    let started = Instant::now();
    while capture(&target).contains("this help (any key closes it)") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "help never closed"
        );
        sleep(Duration::from_millis(100));
    }
    // synflood's flows have hits: the TUI focuses the flows panel; Tab moves on.
    let screen = wait_for(&target, "> Flows");
    assert!(screen.contains("director web"), "{screen}");
    tmux(&["send-keys", "-t", &target, "Tab"]);
    wait_for(&target, "> Shield");
    tmux(&["send-keys", "-t", &target, "Tab"]);
    let screen = wait_for(&target, "> Director");
    assert!(
        screen.contains("Prot LocalAddress:Port Scheduler"),
        "{screen}"
    );
    tmux(&["resize-window", "-t", &target, "-x", "80", "-y", "24"]);
    wait_for(&target, " Flows │ Shield │ Director │ Rates │ Clients");
    tmux(&["send-keys", "-t", &target, "q"]);
    let screen = wait_for(&target, "EXIT=");
    assert!(screen.contains("EXIT=0"), "sim exited non-zero:\n{screen}");
    assert!(screen.contains("scenario synflood (seed 7)"), "{screen}");
    assert!(
        !screen.contains("Rates"),
        "the TUI is gone from the screen:\n{screen}"
    );
    assert_eq!(
        tmux(&["display", "-p", "-t", &target, "#{alternate_on}"]).trim(),
        "0",
        "left the alternate screen"
    );
    assert_eq!(
        tmux(&["display", "-p", "-t", &target, "#{cursor_flag}"]).trim(),
        "1",
        "cursor visible again"
    );
    assert!(out.join("report.json").exists(), "the report was written");
    drop(session);
    let _ = std::fs::remove_dir_all(&out);
}
