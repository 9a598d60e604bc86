//! The appliance's CPU model (`[cpu]`): a SYN flood above one CPU's capacity fills the RX
//! ring (drops counted as `rx_ring_full`), legitimate clients fail more and the appliance's
//! latency grows to the ring's depth; below capacity nothing is dropped at the ring and the
//! latency is the service time. Deterministic whatever `--threads`; without `[cpu]` the
//! report has no CPU section and the appliance takes no time.

use std::path::Path;

use sim::engine::Collect;
use sim::run::{RunOptions, RunOutput, run_scenario};
use sim::scenario;

/// Cookie SYN-ACK 2 µs, new connection 2 µs: one CPU serves 500 k such packets/s.
const COSTS: &str = "\n[cpu]\nrx_ring = 256\n[cpu.ns]\nparse = 200\nshield_drop = 300\nsyn_cookie = 2000\nflows = 300\ndirector = 500\nnew_connection = 2000\n";

/// The bundled synflood scenario with one queue (or `queues`), the flood at `rate`, 300 ms,
/// a tight client timeout, and `cpu` appended.
fn scenario_text(rate: &str, queues: u16, cpu: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/synflood.toml");
    let text = std::fs::read_to_string(path).expect("bundled scenario");
    let text = text
        .replace("duration = \"1s\"", "duration = \"300ms\"")
        .replace("queues = 2", &format!("queues = {queues}"))
        .replace("rate = \"50k/s\"", &format!("rate = \"{rate}\""))
        .replace("rate = \"500/s\"", "rate = \"1000/s\"")
        .replace("connections = 475", "connections = 200")
        .replace("timeout = \"500ms\"", "timeout = \"100ms\"")
        // Cookies from the first SYN, sources that are not martian: every flood SYN costs
        // a cookie SYN-ACK.
        .replace("syn_cookies = \"auto\"", "syn_cookies = \"on\"")
        .replace("src = \"0.0.0.0/0\"", "src = \"20.0.0.0/8\"")
        .replace("ttl = [\"32-64\", 128]", "");
    // `[cpu]` must come before the array tables' end: put it after the top-level keys.
    text.replacen("[topology]", &format!("{cpu}\n[topology]"), 1)
}

fn run(text: &str, threads: usize) -> RunOutput {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/cpu-test.toml");
    let loaded = scenario::parse(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        threads,
        collect: Collect {
            records: true,
            emitted: false,
        },
    };
    run_scenario(&loaded, options, &|_| {}).expect("run")
}

fn success(output: &RunOutput) -> f64 {
    output
        .report
        .clients
        .tcp
        .as_ref()
        .expect("tcp clients")
        .success_ratio
}

#[test]
fn a_flood_above_one_cpu_fills_the_ring_and_below_it_does_not() {
    let below = run(&scenario_text("100k/s", 1, COSTS), 1);
    let above = run(&scenario_text("2M/s", 1, COSTS), 1);
    let (cpu_below, cpu_above) = (
        below.report.cpu.as_ref().expect("cpu section"),
        above.report.cpu.as_ref().expect("cpu section"),
    );
    assert_eq!(cpu_below.profile, "scenario");
    assert_eq!(below.report.totals.rx_ring_full, 0);
    assert_eq!(cpu_below.rx_ring_full, 0);
    assert!(cpu_below.utilization < 0.5, "{}", cpu_below.utilization);
    // Below capacity a cookie SYN-ACK leaves after its service time (2 µs), give or take a
    // packet ahead of it.
    let cookie = cpu_below
        .classes
        .iter()
        .find(|c| c.class.name() == "syn_cookie")
        .expect("cookie SYN-ACKs");
    assert!(
        (2_000..=2_100).contains(&cookie.latency.p50),
        "{:?}",
        cookie.latency
    );
    assert!(cookie.latency.p99 < 10_000, "{:?}", cookie.latency);

    assert!(
        above.report.totals.rx_ring_full > 100_000,
        "{:?}",
        above.report.totals
    );
    assert_eq!(above.report.totals.rx_ring_full, cpu_above.rx_ring_full);
    // The flood runs for the last 200 of the 300 ms: the CPU is busy all that time.
    assert!(cpu_above.utilization > 0.64, "{}", cpu_above.utilization);
    assert!(cpu_above.ring_max == 256, "{}", cpu_above.ring_max);
    let latency = cpu_above.latency.expect("latency");
    // A full ring of 256 packets at ≥ 2 µs each ahead: ≥ 0.5 ms.
    assert!(latency.p50 > 400_000, "{latency:?}");
    assert!(
        latency.p99 > 100 * cpu_below.latency.expect("latency").p99,
        "{latency:?}"
    );
    assert!(
        success(&above) < success(&below) - 0.2,
        "success {} above vs {} below",
        success(&above),
        success(&below)
    );
    for output in [&below, &above] {
        assert_eq!(output.report.totals.frame_imbalance(), Some(0));
        // Every record carries its appliance latency, at least one service time.
        assert!(
            output
                .merged
                .records
                .iter()
                .all(|r| r.appliance_ns.is_some_and(|ns| ns >= 200))
        );
    }
}

#[test]
fn the_cpu_model_is_deterministic_across_threads() {
    let text = scenario_text("1M/s", 2, COSTS);
    let one = run(&text, 1);
    let four = run(&text, 4);
    assert!(one.report.totals.rx_ring_full > 0);
    assert_eq!(
        sim::report::deterministic_json(&one.report),
        sim::report::deterministic_json(&four.report)
    );
    let latencies = |o: &RunOutput| -> Vec<_> {
        o.merged
            .records
            .iter()
            .map(|r| (r.time, r.queue, r.appliance_ns))
            .collect()
    };
    assert_eq!(latencies(&one), latencies(&four));
}

#[test]
fn without_cpu_the_appliance_takes_no_time_and_the_report_says_nothing() {
    let off = run(&scenario_text("2M/s", 1, ""), 1);
    assert!(off.report.cpu.is_none());
    assert_eq!(off.report.totals.rx_ring_full, 0);
    let json = sim::report::deterministic_json(&off.report);
    assert!(!json.contains("rx_ring") && !json.contains("\"cpu\""));
    assert!(off.merged.records.iter().all(|r| r.appliance_ns.is_none()));
}

#[test]
fn bad_cpu_tables_are_located_errors() {
    // (table, key named, detail, the line the error points at starts with)
    let cases = [
        (
            "\n[cpu]\nprofile = \"nope.toml\"\n",
            "cpu.profile",
            "nope.toml",
            "profile",
        ),
        (
            "\n[cpu]\nprofile = \"lbsim\"\nrx_ring = 0\n",
            "cpu.rx_ring",
            "between 1",
            "rx_ring",
        ),
        (
            "\n[cpu]\n[cpu.ns]\nparse = -3\n",
            "cpu.ns",
            "ns.parse",
            "parse",
        ),
        ("\n[cpu]\nrx_ring = 8\n", "cpu.ns", "profile", "[cpu]"),
        (
            "\n[cpu]\nprofil = \"lbsim\"\n",
            "profil",
            "unknown field",
            "profil",
        ),
    ];
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/cpu-test.toml");
    for (cpu, key, detail, line_start) in cases {
        let text = scenario_text("1k/s", 1, cpu);
        let error = scenario::parse(&path, &text).expect_err(cpu).to_string();
        let after = text.find("[cpu]").expect("cpu table");
        let offset = after + text[after..].find(line_start).expect("key line");
        let line = text[..offset].matches('\n').count() + 1;
        assert!(
            error.contains(&format!("cpu-test.toml:{line}:")),
            "{cpu}: line {line}: {error}"
        );
        assert!(
            error.contains(key) && error.contains(detail),
            "{cpu}: {error}"
        );
    }
}
