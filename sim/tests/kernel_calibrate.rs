//! `sim kernel calibrate` on its short CI setting: every mechanism is timed on the host
//! kernel (root), the written `linux` profile loads as a cost profile with a positive,
//! plausible cost and a measured spread for every path, and no namespace is left behind.

mod kernel_support;

use std::process::Command;

use sim::engine::cpu::{CostProfile, PathClass};

#[test]
fn a_short_calibration_writes_a_usable_linux_profile() {
    if !kernel_support::kernel_tests_enabled() {
        return;
    }
    let _guard = kernel_support::lock();
    let dir = std::env::temp_dir().join(format!("sim-calibrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("linux.toml");
    let child = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args([
            "kernel",
            "calibrate",
            "--packets",
            "20000",
            "--rounds",
            "2",
            "--out",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let prefix = format!("lbsim-{}-", child.id());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let profile = CostProfile::parse("linux.toml", &text).unwrap();
    assert_eq!(profile.name, "linux");
    let measured = [
        (PathClass::Parse, profile.ns.parse),
        (PathClass::ShieldDrop, profile.ns.shield_drop.unwrap()),
        (PathClass::SynCookie, profile.ns.syn_cookie.unwrap()),
        (PathClass::Flows, profile.ns.flows.unwrap()),
        (PathClass::Director, profile.ns.director.unwrap()),
        (PathClass::NewConnection, profile.ns.new_connection.unwrap()),
        (PathClass::Nat, profile.ns.nat.unwrap()),
    ];
    for (class, ns) in measured {
        // A packet through the kernel costs more than 20 ns and less than 100 µs of CPU.
        assert!(
            (20.0..100_000.0).contains(&ns),
            "{}: {ns} ns\n{stdout}",
            class.name()
        );
        assert!(
            profile.spread.contains_key(class.name()),
            "{}",
            class.name()
        );
    }
    assert!(
        stdout.contains("synproxy") && stdout.contains("spread"),
        "{stdout}"
    );
    let left = sim::kernel::topology::list_namespaces().unwrap();
    assert!(!left.iter().any(|n| n.starts_with(&prefix)), "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
