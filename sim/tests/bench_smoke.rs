//! `sim bench --json --quick` on a few workloads: one JSON object per line per workload,
//! in the order asked, with positive finite figures (no timing assertions), the comparison
//! fields on the side-by-side workloads, the real-time factor of the line-rate scenario,
//! and a skip reason instead of figures when the kernel is unavailable. An unknown workload
//! is an error naming the known ones.

use std::process::Command;

use serde_json::Value;

const WORKLOADS: [&str; 10] = [
    "parse",
    "deny_drop",
    "cookie_ack_proxy",
    "schedule_mh",
    "replay_file",
    "threads_2_vs_1",
    "director_threads_2_vs_1",
    "vs_kernel",
    "engine_synflood",
    "realtime_10g_1t",
];

fn positive(row: &Value, key: &str) -> f64 {
    let value = row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {row}"));
    assert!(value.is_finite() && value > 0.0, "{key} = {value} in {row}");
    value
}

fn check_row(row: &Value, name: &str) {
    assert_eq!(row["workload"], name, "{row}");
    if let Some(reason) = row.get("skipped") {
        assert_eq!(
            name, "vs_kernel",
            "only the kernel comparison may be skipped"
        );
        assert!(!reason.as_str().unwrap_or_default().is_empty(), "{row}");
        assert!(
            row["ns_per_packet"].is_null() && row["mpps"].is_null(),
            "{row}"
        );
        return;
    }
    assert!(row["packets"].as_u64().unwrap_or_default() > 0, "{row}");
    let (ns, mpps) = (positive(row, "ns_per_packet"), positive(row, "mpps"));
    assert!((ns * mpps - 1_000.0).abs() < 1e-6, "{row}");
    if matches!(
        name,
        "threads_2_vs_1" | "director_threads_2_vs_1" | "vs_kernel"
    ) {
        let (ratio, baseline) = (positive(row, "ratio"), positive(row, "baseline_mpps"));
        assert!(
            (ratio * baseline - mpps).abs() < 1e-9 * mpps.max(1.0),
            "{row}"
        );
        assert!(row["met"].is_boolean(), "{row}");
    }
    if matches!(name, "parse" | "replay_file" | "engine_synflood") {
        positive(row, "target_mpps");
        assert!(row["met"].is_boolean(), "{row}");
    }
    if name == "realtime_10g_1t" {
        // The real-time factor is the ratio; one thread has no target.
        let factor = positive(row, "realtime_factor");
        assert_eq!(row["ratio"].as_f64(), Some(factor), "{row}");
        assert!(
            row["rss_growth_mib"].as_f64().is_some_and(|m| m >= 0.0),
            "{row}"
        );
        assert!(
            row["target_ratio"].is_null() && row["met"].is_null(),
            "{row}"
        );
        let note = row["note"].as_str().unwrap_or_default();
        assert!(
            note.contains("scenarios/linerate.toml on 1 thread(s)"),
            "{row}"
        );
    }
    if name == "deny_drop" {
        // A whole-pipeline row: the denylist target is the stage's (criterion).
        assert!(
            row["target_mpps"].is_null() && row["met"].is_null(),
            "{row}"
        );
    }
}

#[test]
fn json_lines_have_the_documented_shape() {
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args([
            "bench",
            "--json",
            "--quick",
            "--packets",
            "4096",
            "--workloads",
        ])
        .arg(WORKLOADS.join(","))
        .output()
        .expect("sim runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let rows: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(rows.len(), WORKLOADS.len(), "{stdout}");
    for (row, name) in rows.iter().zip(WORKLOADS) {
        check_row(row, name);
    }
}

#[test]
fn an_unknown_workload_is_an_error_naming_the_known_ones() {
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["bench", "--json", "--quick", "--workloads", "parse,nope"])
        .output()
        .expect("sim runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown workload `nope`") && stderr.contains("schedule_ovf"),
        "{stderr}"
    );
}
