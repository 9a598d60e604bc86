//! `sim plan` on the bundled SYN-flood scenario: a 5-point flood-rate sweep whose
//! deterministic part is snapshotted, sweep points equal to independent runs, the cores
//! arithmetic against a doubled calibration, and `plan.html` opened in headless Chromium
//! (screenshot) with every inline SVG holding drawn lines.

mod browser_support;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use sim::cli::plan::sweep::{SweepTarget, SweepValue};
use sim::cli::plan::{self, Plan, PlanOptions, render};
use sim::run::{RunOptions, run_scenario};
use sim::scenario::{self, LoadedScenario, TrafficSpec};

const SWEEP: &str = "flood.rate=10k..1M";
const DURATION_NS: u64 = 300_000_000;

fn synflood() -> LoadedScenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/synflood.toml");
    scenario::load(&path).expect("bundled scenario loads")
}

fn the_plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let loaded = synflood();
        let options = PlanOptions {
            sweeps: plan::parse_sweeps(&loaded, &[SWEEP.to_string()], 5).unwrap(),
            duration: Some(DURATION_NS),
            cores: Some(2),
        };
        plan::plan(&loaded, &options).expect("plan runs")
    })
}

#[test]
fn deterministic_part_is_snapshotted() {
    let plan = the_plan();
    assert_eq!(plan.deterministic.points.len(), 5);
    insta::assert_snapshot!(render::deterministic_json(plan));
}

#[test]
fn a_sweep_point_equals_an_independent_run() {
    let plan = the_plan();
    let loaded = synflood();
    let mut point = loaded.clone();
    for spec in point.scenario.traffic.iter_mut().map(|t| t.get_mut()) {
        if let TrafficSpec::SynFlood(flood) = spec {
            flood.rate = scenario::Rate(10_000);
        }
    }
    point.scenario.duration = scenario::DurationNs(DURATION_NS);
    let options = RunOptions {
        threads: 2,
        collect: Default::default(),
    };
    let output = run_scenario(&point, options, &|_| {}).unwrap();
    let outcome = sim::cli::plan::outcome::from_report(&point.scenario, &output.report);
    assert_eq!(
        plan.deterministic.points[0].settings,
        [SweepValue::Number(10_000)]
    );
    assert_eq!(plan.deterministic.points[0].outcome, outcome);
}

#[test]
fn doubling_the_measured_cost_doubles_the_cores_asked_for() {
    let plan = the_plan();
    let mut doubled = plan.measured.calibration.clone();
    for cost in doubled.classes.values_mut() {
        cost.ns_per_packet *= 2.0;
    }
    let shield: Vec<u64> = plan
        .measured
        .points
        .iter()
        .map(|p| p.memory.shield_bytes)
        .collect();
    let again = plan::measure_points(&plan.deterministic, &shield, &doubled, 2);
    for (single, double) in plan.measured.points.iter().zip(&again) {
        assert!(single.cores_needed > 0.0);
        let expected = 2.0 * single.cores_needed;
        assert!(
            (double.cores_needed - expected).abs() <= 1e-9 * expected,
            "point {}: {} cores, doubled cost gives {}",
            single.index,
            single.cores_needed,
            double.cores_needed
        );
        assert_eq!(double.memory, single.memory);
    }
    // More flood, more cores.
    let cores: Vec<f64> = plan
        .measured
        .points
        .iter()
        .map(|p| p.cores_needed)
        .collect();
    assert!(cores.windows(2).all(|w| w[0] < w[1]), "{cores:?}");
}

#[test]
fn sweep_keys_modify_the_loaded_scenario() {
    let loaded = synflood();
    let texts = [
        "legit.rate=200",
        "director.web.scheduler=mh",
        "conntrack.capacity=1k",
        "queues=3",
        "syn_flood.rate=7k",
    ]
    .map(String::from);
    let sweeps = plan::parse_sweeps(&loaded, &texts, 5).unwrap();
    assert_eq!(sweeps[1].target, SweepTarget::Scheduler("web".into()));
    let settings: Vec<SweepValue> = sweeps.iter().map(|s| s.values[0].clone()).collect();
    let point = plan::point_scenario(&loaded, &sweeps, &settings, Some(DURATION_NS));
    let scenario = &point.scenario;
    let rates: Vec<(String, u64)> = scenario
        .traffic
        .iter()
        .map(|t| match t.get_ref() {
            TrafficSpec::TcpClients(s) => ("tcp_clients".into(), s.rate.0),
            TrafficSpec::SynFlood(s) => ("syn_flood".into(), s.rate.0),
            other => (other.kind().into(), 0),
        })
        .collect();
    assert_eq!(
        rates,
        [("tcp_clients".into(), 200), ("syn_flood".into(), 7000)]
    );
    let director = &scenario.appliance.director[0];
    assert_eq!(
        serde_json::to_value(director.scheduler).unwrap(),
        serde_json::json!("mh")
    );
    let shield = scenario.appliance.shield.as_ref().unwrap();
    assert_eq!(shield.session_table_capacity, Some(1000));
    assert_eq!(scenario.queues, 3);
    assert_eq!(scenario.duration.0, DURATION_NS);
    // The original is untouched.
    assert_eq!(loaded.scenario.queues, 2);
    let error = plan::parse_sweeps(&loaded, &["director.nope.scheduler=rr".into()], 5);
    assert!(error.unwrap_err().to_string().contains("addresses nothing"));
}

/// `(svg count, svgs without drawn lines)`.
fn svg_content(html: &str) -> (usize, Vec<usize>) {
    let mut empty = Vec::new();
    let svgs: Vec<&str> = html
        .split("<svg")
        .skip(1)
        .map(|rest| rest.split("</svg>").next().unwrap_or(""))
        .collect();
    for (index, svg) in svgs.iter().enumerate() {
        let drawn = attribute_values(svg, "<polyline", "points=\"")
            .chain(attribute_values(svg, "<path", "d=\""))
            .any(|value| value.split_whitespace().count() >= 2);
        if !drawn {
            empty.push(index);
        }
    }
    (svgs.len(), empty)
}

fn attribute_values<'a>(
    svg: &'a str,
    tag: &'a str,
    attribute: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    svg.split(tag).skip(1).filter_map(move |element| {
        let element = element.split('>').next()?;
        let start = element.find(attribute)? + attribute.len();
        element[start..].split('"').next()
    })
}

#[test]
fn plan_html_renders_in_headless_chromium() {
    let plan = the_plan();
    let dir = std::env::temp_dir().join(format!("lbsim-plan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    plan::write(plan, &dir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["deterministic", "measured"]);
    assert!(
        std::fs::read_to_string(dir.join("plan.md"))
            .unwrap()
            .contains("## Answer")
    );
    let page = dir.join("plan.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let (svgs, empty) = svg_content(&html);
    assert_eq!(svgs, 7, "one SVG per plot");
    assert!(empty.is_empty(), "SVGs without drawn lines: {empty:?}");
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains(" src="));
    let Some(browser) = browser_support::browser_or_skip() else {
        return;
    };
    let png = dir.join("plan.png");
    let profile = dir.join("chromium-profile");
    browser_support::screenshot(&browser, &page, &png, &profile, (1200, 2000));
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "screenshot is a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1200, 2000));
    // A blank 1200×2000 page compresses to a few kB; text and plots take far more.
    assert!(
        bytes.len() > 40_000,
        "screenshot is {} bytes: nothing rendered?",
        bytes.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sim_plan_command_writes_the_three_files() {
    let dir = std::env::temp_dir().join(format!("lbsim-plan-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/synflood.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .arg("plan")
        .arg(&scenario)
        .args([
            "--sweep",
            "flood.rate=5k,10k",
            "--duration",
            "150ms",
            "--cores",
            "4",
        ])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Every point meets the [expect] SLOs, up to flood.rate = 10k"),
        "{stdout}"
    );
    assert!(stdout.contains("core budget 4"), "{stdout}");
    for file in ["plan.json", "plan.md", "plan.html"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_sim"))
        .arg("plan")
        .arg(&scenario)
        .args(["--sweep", "flood.speed=1..2"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown sweep key `flood.speed`"));
    let _ = std::fs::remove_dir_all(&dir);
}
