//! Nothing is left behind: a topology is removed when dropped, when a panic unwinds through
//! it, when `sim kernel up` gets SIGTERM, and — after a SIGKILL, which no process survives
//! to clean up — by `sim kernel cleanup`, also for a traced `sim diff` killed mid-run
//! (nothing it started runs on in its namespaces).

mod kernel_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use datapath::packet::builder::PacketBuilder;
use kernel_support::{data, kernel_tests_enabled, lock, own_namespaces, write_pcap};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sim::kernel::topology::{Topology, list_namespaces, processes_in};

fn start_up() -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["kernel", "up"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sim kernel up");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the up line");
    let names: Vec<String> = line
        .strip_prefix("up ")
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 3, "{line}");
    (child, names)
}

fn existing(names: &[String]) -> Vec<String> {
    let all = list_namespaces().expect("ip netns list");
    names.iter().filter(|n| all.contains(n)).cloned().collect()
}

#[test]
fn dropping_a_topology_removes_its_namespaces() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let before = own_namespaces();
    let topology = Topology::create().expect("topology");
    let names = topology.namespaces().to_vec();
    assert_eq!(existing(&names), names);
    let links = topology
        .exec(&topology.lb_ns(), &["ip", "-o", "link", "show"], None)
        .expect("ip link");
    assert!(links.contains("lbc@") && links.contains("lbs@"), "{links}");
    drop(topology);
    assert!(existing(&names).is_empty());
    assert_eq!(own_namespaces(), before);
}

#[test]
fn a_panic_unwinding_through_a_topology_removes_it() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let before = own_namespaces();
    let result = std::panic::catch_unwind(|| {
        let _topology = Topology::create().expect("topology");
        panic!("mid-run failure");
    });
    assert!(result.is_err());
    assert_eq!(own_namespaces(), before);
}

#[test]
fn sigterm_makes_a_running_topology_clean_up() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let (mut child, names) = start_up();
    assert_eq!(existing(&names), names);
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130));
    assert!(existing(&names).is_empty(), "left: {:?}", existing(&names));
}

#[test]
fn sim_kernel_cleanup_removes_what_a_killed_run_left() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let (mut child, names) = start_up();
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert_eq!(
        existing(&names),
        names,
        "a SIGKILLed run cannot clean up itself"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["kernel", "cleanup"])
        .output()
        .expect("sim kernel cleanup");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for name in &names {
        assert!(text.contains(&format!("removed {name}")), "{text}");
    }
    assert!(existing(&names).is_empty());
}

#[test]
fn sim_kernel_cleanup_removes_what_a_killed_traced_diff_left() {
    if !kernel_tests_enabled() {
        return;
    }
    let _guard = lock();
    let frames: Vec<Vec<u8>> = (0..400u16)
        .map(|i| {
            PacketBuilder::eth()
                .ipv4([10, 1, 1, 1].into(), [192, 0, 2, 10].into())
                .udp(1000 + i, 53)
                .build()
        })
        .collect();
    let pcap = write_pcap("slow-diff.pcap", &frames);
    let out = pcap.with_file_name("slow-diff-report");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["diff", "--appliance"])
        .arg(data("shield-lists.toml"))
        .arg(&pcap)
        .args(["--gap-us", "20000", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .spawn()
        .expect("start sim diff");
    let lb = format!("lbsim-{}-0-lb", child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    let traced = || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &lb,
                "nft",
                "list",
                "table",
                "netdev",
                "lbsim_trace",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    while !traced() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(traced(), "the run in {lb} never started tracing");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert!(processes_in(&lb).is_empty(), "processes outlive the run");
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["kernel", "cleanup"])
        .output()
        .expect("sim kernel cleanup");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(&format!("removed {lb}")), "{text}");
    assert!(existing(&[lb]).is_empty());
}
