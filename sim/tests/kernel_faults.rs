//! Kernel runner faults: a missing or failing tool, and injection errors, give a clear
//! error and leave no namespace behind. (Killed mid-run: `kernel_cleanup.rs`.)
//!
//! The `sim kernel up` cases run the binary with a `PATH` made of chosen tools (symlinks to
//! the real ones, or a fake that fails) and then look for namespaces carrying the child's
//! run prefix (`lbsim-<pid>-`): none may remain.

mod kernel_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use datapath::packet::LinkType;
use kernel_support::{kernel_tests_enabled, lock, own_namespaces};
use sim::kernel::inject::{InputPacket, MAX_PACKETS_PER_RUN, run_kernel};
use sim::kernel::rules::KernelRules;
use sim::kernel::topology::{Topology, list_namespaces};
use sim::kernel::wire::{Port, inject};

/// A fresh directory for a `PATH`: `real` tools linked to the installed ones, `fakes`
/// written as scripts that print their name and fail.
fn tool_dir(name: &str, real: &[&str], fakes: &[&str]) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("lbsim-kernel-faults-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for tool in real {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is installed"));
        std::os::unix::fs::symlink(found, dir.join(tool)).unwrap();
    }
    for tool in fakes {
        let path = dir.join(tool);
        let script = format!("#!/bin/sh\necho \"{tool}: simulated failure\" >&2\nexit 1\n");
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// `sim kernel up [--appliance game.toml]` with `PATH=path`; returns its output and the
/// namespaces of its run prefix still present after it exited.
fn kernel_up(path: &Path, with_appliance: bool) -> (Output, Vec<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sim"));
    command
        .args(["kernel", "up"])
        .env("PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if with_appliance {
        let appliance =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/appliances/game.toml");
        command.arg("--appliance").arg(appliance);
    }
    let child = command.spawn().expect("start sim");
    let prefix = format!("lbsim-{}-", child.id());
    let output = child.wait_with_output().expect("sim exits");
    let left: Vec<String> = list_namespaces()
        .expect("ip netns list")
        .into_iter()
        .filter(|name| name.starts_with(&prefix))
        .collect();
    (output, left)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_path_without_nft_is_refused_before_anything_is_built() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let path = tool_dir("no-nft", &["ip", "sh", "iptables-restore"], &[]);
    let (output, left) = kernel_up(&path, false);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("error: `nft` is not installed"),
        "{}",
        stderr(&output)
    );
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_path_without_ip_is_refused_with_the_package_to_install() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let path = tool_dir("no-ip", &["sh", "nft", "iptables-restore"], &[]);
    let (output, left) = kernel_up(&path, false);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("`ip netns` is unavailable (install iproute2)"),
        "{}",
        stderr(&output)
    );
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn nft_failing_after_the_topology_is_built_removes_the_topology() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let path = tool_dir(
        "bad-nft",
        &["ip", "sh", "sysctl", "iptables-restore"],
        &["nft"],
    );
    let (output, left) = kernel_up(&path, true);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("nft -f -") && message.contains("nft: simulated failure"),
        "{message}"
    );
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn iptables_restore_failing_after_the_topology_is_built_removes_the_topology() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let path = tool_dir(
        "bad-iptables",
        &["ip", "sh", "sysctl", "nft"],
        &["iptables-restore"],
    );
    let (output, left) = kernel_up(&path, true);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("iptables-restore") && message.contains("simulated failure"),
        "{message}"
    );
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn rules_the_kernel_rejects_fail_the_run_and_leave_nothing() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let before = own_namespaces();
    let rules = KernelRules {
        shield_nft: "table netdev lbsim { this is not nft }\n".into(),
        ..KernelRules::default()
    };
    let error = run_kernel(&[frame(vec![0; 60])], &rules, Duration::ZERO)
        .expect_err("nft rejects the rules");
    let message = format!("{error:#}");
    assert!(message.contains("nft -f -` failed"), "{message}");
    assert_eq!(own_namespaces(), before);
}

#[test]
fn too_many_packets_are_refused_before_any_namespace_exists() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let before = own_namespaces();
    let packets = vec![frame(Vec::new()); MAX_PACKETS_PER_RUN + 1];
    let error = run_kernel(&packets, &KernelRules::default(), Duration::ZERO)
        .expect_err("too many packets");
    assert!(
        error
            .to_string()
            .contains("a kernel run holds at most 65535"),
        "{error}"
    );
    assert_eq!(own_namespaces(), before);
}

#[test]
fn injecting_into_a_missing_namespace_or_interface_is_a_clear_error() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let before = own_namespaces();
    let missing = format!("lbsim-{}-absent", std::process::id());
    let error = inject(
        &[port(&missing, "lbc")],
        vec![(0, vec![0; 60])],
        Duration::ZERO,
    )
    .expect_err("no such namespace");
    assert!(
        format!("{error:#}").contains(&format!("opening network namespace {missing}")),
        "{error:#}"
    );
    let topology = Topology::create().expect("topology");
    let error = inject(
        &[port(&topology.client_ns(), "eth9")],
        vec![(0, vec![0; 60])],
        Duration::ZERO,
    )
    .expect_err("no such interface");
    assert!(
        error.to_string().contains("no interface eth9 in namespace"),
        "{error:#}"
    );
    drop(topology);
    assert_eq!(own_namespaces(), before);
}

fn frame(data: Vec<u8>) -> InputPacket {
    InputPacket {
        ts_ns: 0,
        link: LinkType::Ethernet,
        interface: 0,
        orig_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
        data,
    }
}

fn port(ns: &str, iface: &str) -> Port {
    Port {
        ns: ns.to_string(),
        iface: iface.to_string(),
    }
}
