//! Simulator vs Linux kernel over random flow files: from a fixed seed, [`FILES`] random
//! flowmgr files (permit / deny / skip / no policy; match and ignore rules over proto, src,
//! dst, srcport, dstport and icmptype, with `not`), each with [`PACKETS_PER_FILE`] random
//! packets drawn from the addresses and ports the rules use. Each file runs through the
//! simulator's pipeline and through its `iptables-restore` output in one kernel lab (the
//! mangle table is replaced between files); every packet must get the same outcome, or a
//! difference listed in `sim/src/kernel/known-differences.toml`. Runs are traced
//! (nftables trace events), as `sim diff` runs them: every packet must have its trace.

mod kernel_support;

use std::path::Path;
use std::time::{Duration, Instant};

use kernel_support::random_flows::{Draw, flow_file, frame, inputs};
use kernel_support::{kernel_tests_enabled, lock, own_namespaces};
use sim::appliance::ApplianceConfig;
use sim::kernel::diff::{KNOWN_DIFFERENCES, compare, parse_explanations};
use sim::kernel::inject::{InputPacket, Lab, TraceStatus};
use sim::kernel::rules::KernelRules;
use sim::kernel::simulate::{build, simulate};

/// Random flow files per run.
const FILES: usize = 300;
/// Random packets per flow file.
const PACKETS_PER_FILE: usize = 40;
/// The generators' seed.
const SEED: u64 = 0x1b51_f10e;
const GAP: Duration = Duration::from_micros(200);
/// Observation time after a file's last packet (forwarding takes microseconds here).
const SETTLE: Duration = Duration::from_millis(60);

/// One file's disagreements (unexplained ones), rendered for the failure message.
fn check_file(
    lab: &Lab,
    dir: &Path,
    index: usize,
    text: &str,
    packets: &[InputPacket],
) -> (u64, Option<String>) {
    let flows = dir.join(format!("random-{index}.flowmgr"));
    std::fs::write(&flows, text).expect("write flow file");
    let appliance = dir.join(format!("random-{index}.toml"));
    let toml = format!("flows = \"random-{index}.flowmgr\"\n");
    std::fs::write(&appliance, toml).expect("write appliance");
    let config = ApplianceConfig::load(&appliance).expect("generated flow file is valid");
    let (mut pipeline, rules) = build(&config, dir, 1).expect("appliance builds");
    let sim = simulate(&mut pipeline, packets);
    if let Err(error) = lab.reload_flows(&rules) {
        panic!("file {index}:\n{text}\n{}\n{error:#}", rules.flows_iptables);
    }
    let kernel = lab
        .run_traced(packets, &rules, GAP, SETTLE)
        .expect("kernel run");
    assert_eq!(kernel.trace, TraceStatus::On, "file {index}: traced");
    let untraced = kernel
        .packets
        .iter()
        .filter(|p| p.last_hook.is_none())
        .count();
    assert_eq!(untraced, 0, "file {index}: every packet has a trace");
    let explanations = parse_explanations(KNOWN_DIFFERENCES).expect("known differences");
    let report = compare(&sim, &kernel, &rules, &explanations);
    let (compared, _) = report.totals();
    let mut problems = String::new();
    for (why, count) in &report.not_injected {
        problems.push_str(&format!("  {count} packet(s) not injected: {why}\n"));
    }
    for d in report
        .disagreements
        .iter()
        .filter(|d| d.explained_by.is_none())
    {
        problems.push_str(&format!(
            "  #{} {}\n    simulator: {} ({})\n    kernel:    {} ({})\n",
            d.ordinal, d.decode, d.simulator, d.simulator_rule, d.kernel, d.kernel_rule
        ));
    }
    let failure = (!problems.is_empty()).then(|| {
        format!(
            "file {index}:\n{text}iptables-restore input:\n{}\n{problems}",
            rules.flows_iptables
        )
    });
    (compared, failure)
}

#[test]
fn random_flow_files_agree_with_the_kernel_packet_by_packet() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("lbsim-random-flows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let before = own_namespaces();
    let mut draw = Draw::new(SEED);
    let mut failures = Vec::new();
    let mut compared = 0;
    {
        let lab = Lab::start(&KernelRules::default()).expect("lab starts");
        for index in 0..FILES {
            let text = flow_file(&mut draw);
            let packets = inputs((0..PACKETS_PER_FILE).map(|_| frame(&mut draw)).collect());
            let (count, failure) = check_file(&lab, &dir, index, &text, &packets);
            compared += count;
            failures.extend(failure);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(own_namespaces(), before, "namespaces left behind");
    eprintln!(
        "{FILES} random flow files × {PACKETS_PER_FILE} packets: {compared} compared, {} file(s) with unexplained disagreements, {:.1} s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(compared, (FILES * PACKETS_PER_FILE) as u64);
}
