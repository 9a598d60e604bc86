//! `sim plan --cpu-profile`: cores needed from the CPU model on the bundled SYN flood, for
//! both bundled profiles. Each point's answer is the first CPU count whose run meets every
//! SLO (the run with one CPU fewer does not), more flood never needs fewer CPUs, and the
//! answer is the same when asked twice (virtual time only).

use std::path::Path;

use sim::cli::plan::cpu_model::{CpuPlan, markdown, plan_cpus};
use sim::cli::plan::{self, PlanOptions};
use sim::scenario::{self, LoadedScenario, TrafficSpec};

fn synflood() -> LoadedScenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/synflood.toml");
    let mut loaded = scenario::load(&path).expect("bundled scenario loads");
    for spec in loaded.scenario.traffic.iter_mut().map(|t| t.get_mut()) {
        if let TrafficSpec::TcpClients(clients) = spec {
            clients.connections = Some(75);
        }
    }
    loaded
}

fn cpu_plan(profile: &str) -> CpuPlan {
    let loaded = synflood();
    let options = PlanOptions {
        sweeps: plan::parse_sweeps(&loaded, &["flood.rate=20k..800k".to_string()], 3).unwrap(),
        duration: Some(200_000_000),
        cores: Some(2),
    };
    plan_cpus(&loaded, &options, profile, 6).expect("cpu plan runs")
}

#[test]
fn cores_needed_come_from_the_cpu_model_for_both_profiles() {
    for profile in ["lbsim", "linux"] {
        let plan = cpu_plan(profile);
        assert_eq!(plan.profile, profile);
        assert_eq!(plan.points.len(), 3);
        let mut previous = 0;
        for point in &plan.points {
            let needed = point
                .cores_needed
                .unwrap_or_else(|| panic!("{profile}: {point:?}"));
            let last = point.runs.last().expect("runs");
            assert!(last.passed && last.cpus == needed, "{profile}: {point:?}");
            assert!(last.latency.is_some());
            for run in &point.runs[..point.runs.len() - 1] {
                assert!(!run.passed, "{profile}: {point:?}");
            }
            assert!(
                needed >= previous,
                "{profile}: more flood, fewer CPUs: {plan:?}"
            );
            previous = needed;
        }
        let text = markdown(std::slice::from_ref(&plan));
        assert!(text.contains(&format!("profile `{profile}`")), "{text}");
    }
    assert_eq!(cpu_plan("linux"), cpu_plan("linux"));
}
