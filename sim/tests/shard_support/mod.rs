//! Helpers of the shard tests: running `sim`, scratch directories, a corpus copy with one
//! broken case, and comparing the deterministic parts of two runs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `sim` binary under test.
pub fn sim_binary() -> &'static str {
    env!("CARGO_BIN_EXE_sim")
}

/// `sim ARGS` in the repository, without inherited partition variables.
pub fn sim(args: &[&str]) -> Output {
    sim_env(args, &[])
}

/// `sim ARGS` with extra environment variables.
pub fn sim_env(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(sim_binary());
    command.args(args).current_dir(repository());
    for name in [
        "LBSIM_PARTITION",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_COUNT",
        "JOB_COMPLETION_INDEX",
        "JOB_COMPLETIONS",
        "CI_NODE_INDEX",
        "CI_NODE_TOTAL",
    ] {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    command.output().expect("sim runs")
}

/// Stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics with stderr unless `out` exited 0.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} exited {:?}:\n{}\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// A fresh directory unique to this process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sim-shard-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// A copy of `pcaps/` (and `scenarios/`, whose flows some appliances include) under `dir`;
/// the copy's case corpus directory.
pub fn copy_corpus(dir: &Path) -> PathBuf {
    copy_tree(&repository().join("pcaps"), &dir.join("pcaps"));
    copy_tree(&repository().join("scenarios"), &dir.join("scenarios"));
    dir.join("pcaps/cases")
}

/// Make one case of the corpus fail (its expected packet count off by one).
pub fn break_one_case(corpus: &Path) {
    let case = corpus.join("gen/synflood-web.web-vip.toml");
    let text = std::fs::read_to_string(&case).unwrap();
    assert!(text.contains("packets = 150"));
    std::fs::write(&case, text.replace("packets = 150", "packets = 151")).unwrap();
}

/// A JUnit file without its `time="…"` attributes (wall clock, the only part that differs).
pub fn junit_without_times(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(" time=\"") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 7..];
        rest = &after[after.find('"').unwrap() + 1..];
    }
    out.push_str(rest);
    assert!(out.contains("<testcase"), "{out}");
    out
}

/// The deterministic part of plan.json, as written.
pub fn deterministic_json(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("plan.json")).unwrap();
    let start = text
        .find("\n  \"deterministic\": ")
        .expect("deterministic key");
    let end = text.find("\n  \"measured\": ").expect("measured key");
    text[start..end].to_string()
}

/// plan.md's deterministic section.
pub fn deterministic_markdown(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("plan.md")).unwrap();
    let start = text.find("## Simulated outcomes").unwrap();
    let end = text.find("## Cores and memory").unwrap();
    text[start..end].to_string()
}

/// Two plan directories agree byte for byte in their deterministic parts.
pub fn assert_same_plan(single: &Path, merged: &Path) {
    let (a, b) = (deterministic_json(single), deterministic_json(merged));
    assert!(a.len() > 1000, "{a}");
    assert!(
        a == b,
        "deterministic part of plan.json differs:\n{a}\n---\n{b}"
    );
    assert_eq!(
        deterministic_markdown(single),
        deterministic_markdown(merged)
    );
    for file in ["plan.json", "plan.md", "plan.html"] {
        assert!(merged.join(file).exists(), "{file}");
    }
}

/// The YAML documents of `path` as JSON values, parsed by PyYAML (`python3 -c`); `None`
/// (test skipped, said on stderr) without python3-yaml outside CI.
pub fn yaml_documents(path: &Path) -> Option<Vec<serde_json::Value>> {
    let script = "import json, sys, yaml\n\
                  json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output();
    match out {
        Ok(out) if out.status.success() => Some(serde_json::from_slice(&out.stdout).unwrap()),
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named") => {
            missing_tool("python3-yaml")
        }
        Ok(out) => panic!("{} is not valid YAML: {}", path.display(), stderr(&out)),
        Err(_) => missing_tool("python3"),
    }
}

/// Skip (or fail under CI=true) for a missing tool.
pub fn missing_tool<T>(tool: &str) -> Option<T> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and {tool} is missing (apt-get install {tool})"
    );
    eprintln!("skipped: {tool} is missing");
    None
}
