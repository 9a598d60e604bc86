//! The two side-by-side workloads, each measured in one invocation:
//!
//! - `threads_2_vs_1`: a SYN flood from spoofed sources through [`run_scenario`] (engine,
//!   flood generation, pipeline) with 1 and with 2 threads over the scenario's 2 receive
//!   queues, interleaved; ratio = Mpps(2) / Mpps(1).
//! - `vs_kernel`: the same packets (denylisted sources and new TCP connections to an rr
//!   NAT director) through lbsim's pipeline and through the kernel runner's appliance
//!   (netns + veth, nft netdev denylist, nft numgen DNAT; AF_PACKET injection). Kernel time
//!   = injection time + the latency of the last packet seen leaving the LB, so it counts
//!   the injecting syscalls too (that is how the kernel receives them here). Ratio = lbsim
//!   Mpps / kernel Mpps. Without root or namespaces the workload is skipped, with the reason.
//!
//! - `director_threads_2_vs_1`: many new TCP connections (smoltcp clients, 80 and 443)
//!   through a persistent fwmark wrr service with NAT forwarding, on 2 receive queues
//!   sharing the director (see [`crate::engine::shared`]), 1 and 2 threads; ratio =
//!   Mpps(2) / Mpps(1).
//!
//! Not here: per-packet workloads ([`super::workloads`]), the kernel runner itself (only
//! its public API is called).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use datapath::packet::ParseOptions;
use datapath::packet::builder::PacketBuilder;
use datapath::pipeline::Pipeline;
use datapath::verdict::{DropReason, Stage, Verdict};

use super::measure::{Measurement, Settings};
use super::workloads::{
    BenchFrame, Expect, PipelineWorkload, director_configs, director_toml, shield_config,
};
use crate::engine::Collect;
use crate::kernel::inject::{InputPacket, MAX_PACKETS_PER_RUN, run_kernel};
use crate::kernel::outcome::Outcome;
use crate::kernel::rules::KernelRules;
use crate::run::{RunOptions, run_scenario};

/// Virtual flood rate of the threads scenario, packets per second.
const FLOOD_RATE: u64 = 2_000_000;

/// Mpps of one side and of its baseline, and how they compare.
#[derive(Clone, Debug)]
pub struct SideBySide {
    /// The measured side (2 threads; lbsim).
    pub measured: Measurement,
    /// Baseline Mpps (1 thread; the kernel).
    pub baseline_mpps: f64,
    /// `measured Mpps / baseline Mpps`.
    pub ratio: f64,
    /// What was compared, for the table.
    pub note: String,
}

fn flood_scenario(packets: usize) -> String {
    flood_scenario_on(packets, 2, "")
}

/// The SYN-flood benchmark scenario (spoofed sources at 2 Mpps of virtual time, for about
/// `packets` packets) on `queues` receive queues, with `appliance` TOML appended; also the
/// criterion engine bench's scenario.
pub fn flood_scenario_on(packets: usize, queues: u16, appliance: &str) -> String {
    let duration_us = (packets as u64 * 1_000_000).div_ceil(FLOOD_RATE).max(1);
    format!(
        r#"
name = "bench-synflood"
seed = 1
duration = "{duration_us}us"
queues = {queues}

[topology]
interfaces = ["outside", "inside"]

[[topology.network]]
name = "internet"
prefix = "0.0.0.0/0"
iface = "outside"

[[traffic]]
kind = "syn_flood"
from = "internet"
rate = "2M/s"
src = "0.0.0.0/0"
dst = "192.0.2.10:80"
{appliance}"#
    )
}

/// The appliance of `engine_synflood_cookies`: SYN cookies always on for port 80 of the VIP.
const COOKIE_APPLIANCE: &str = r#"
[appliance.shield]
syn_cookies = "on"

[[appliance.shield.context]]
dst = "192.0.2.10"
protected_tcp_ports = [80]
"#;

/// The scenario of `engine_synflood` (`cookies`: `engine_synflood_cookies`) for about
/// `packets` packets (also run under callgrind by `scripts/callgrind-check`).
pub fn engine_scenario(
    packets: usize,
    cookies: bool,
) -> anyhow::Result<crate::scenario::LoadedScenario> {
    let appliance = if cookies { COOKIE_APPLIANCE } else { "" };
    let text = flood_scenario_on(packets, 1, appliance);
    Ok(crate::scenario::parse(
        Path::new("bench-synflood.toml"),
        &text,
    )?)
}

/// `engine_synflood` (`cookies`: `engine_synflood_cookies`): the SYN-flood scenario on one
/// receive queue and one thread — flood generation, engine, full pipeline, routing of what
/// it emits — at the per-core cost the run measures itself (its shard's CPU time, as
/// `sim run` reports it; wall time would count waiting for a core on a busy machine).
pub fn engine_synflood(settings: Settings, cookies: bool) -> anyhow::Result<Measurement> {
    let loaded = engine_scenario(settings.packets, cookies)?;
    let run = || -> anyhow::Result<(Duration, usize)> {
        let options = RunOptions {
            threads: 1,
            collect: Collect::default(),
        };
        let output = run_scenario(&loaded, options, &|_| {})?;
        let cpu_ns: u64 = output.measured.queue_cpu_ns.iter().sum();
        if cpu_ns == 0 {
            anyhow::bail!("the shard's CPU time is unavailable (/proc/thread-self/schedstat)");
        }
        Ok((
            Duration::from_nanos(cpu_ns),
            output.report.totals.processed as usize,
        ))
    };
    run()?;
    let repetitions: Vec<_> = (0..settings.repetitions)
        .map(|_| run())
        .collect::<anyhow::Result<_>>()?;
    Ok(Measurement::from_repetitions(
        repetitions[0].1,
        &repetitions,
    ))
}

/// `threads_2_vs_1`: median Mpps of 2 threads against 1, interleaved repetitions.
pub fn threads_2_vs_1(settings: Settings) -> anyhow::Result<SideBySide> {
    let text = flood_scenario(settings.packets);
    let loaded = crate::scenario::parse(Path::new("bench-synflood.toml"), &text)?;
    let note = "SYN flood via run_scenario, 2 queues; baseline = 1 thread";
    scenario_2_vs_1(&loaded, settings, note)
}

/// New connections per second (virtual) of the director workload.
const DIRECTOR_RATE: u64 = 20_000;

/// The director workload's scenario for about `packets` packets (about 10 per connection).
pub fn director_scenario(packets: usize) -> String {
    let duration_us = (packets as u64 * 100_000)
        .div_ceil(DIRECTOR_RATE)
        .max(1_000);
    format!(
        r#"
name = "bench-director"
seed = 1
duration = "{duration_us}us"
queues = 2

[topology]
interfaces = ["outside", "inside"]
vips = ["192.0.2.10"]

[[topology.network]]
name = "clients"
prefix = "198.51.0.0/16"
iface = "outside"
link = {{ latency = "200us" }}

[[topology.backend]]
name = "web1"
addr = "10.0.1.2"
iface = "inside"
tcp_ports = [80, 443]
link = {{ latency = "50us" }}

[[topology.backend]]
name = "web2"
addr = "10.0.1.3"
iface = "inside"
tcp_ports = [80, 443]
link = {{ latency = "50us" }}

[appliance]
flows = "flows/web-fwmark.flowmgr"

[[appliance.director]]
name = "web"
fwmark = 80
scheduler = "wrr"
persistence = "300s"
forward = "nat"
real = [{{ addr = "10.0.1.2:0", weight = 3 }}, {{ addr = "10.0.1.3:0", weight = 1 }}]

[[traffic]]
kind = "tcp_clients"
from = "clients"
clients = 2000
rate = "{DIRECTOR_RATE}/s"
dst = "192.0.2.10:80"
ports = [80, 443]
response_bytes = 100
"#
    )
}

/// `director_threads_2_vs_1`: the director workload at 2 threads against 1.
pub fn director_threads_2_vs_1(settings: Settings) -> anyhow::Result<SideBySide> {
    let text = director_scenario(settings.packets);
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let loaded = crate::scenario::parse(&scenarios.join("bench-director.toml"), &text)?;
    let note = "new connections through a persistent fwmark service (shared director), 2 queues; baseline = 1 thread";
    scenario_2_vs_1(&loaded, settings, note)
}

/// Median Mpps of `loaded` at 2 threads against 1, interleaved repetitions.
fn scenario_2_vs_1(
    loaded: &crate::scenario::LoadedScenario,
    settings: Settings,
    note: &str,
) -> anyhow::Result<SideBySide> {
    let run = |threads| -> anyhow::Result<(Duration, usize)> {
        let options = RunOptions {
            threads,
            collect: Collect::default(),
        };
        let started = Instant::now();
        let output = run_scenario(loaded, options, &|_| {})?;
        Ok((started.elapsed(), output.report.totals.processed as usize))
    };
    run(1)?;
    run(2)?;
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..settings.repetitions {
        one.push(run(1)?);
        two.push(run(2)?);
    }
    let packets = one[0].1;
    let (one, two) = (
        Measurement::from_repetitions(packets, &one),
        Measurement::from_repetitions(packets, &two),
    );
    Ok(SideBySide {
        ratio: two.mpps() / one.mpps(),
        baseline_mpps: one.mpps(),
        measured: two,
        note: note.into(),
    })
}

const KERNEL_SHIELD: &str = "deny = [\"203.0.113.0/24\"]\n";

/// The `vs_kernel` packets: every 5th from a denylisted source (dropped), the rest SYNs of
/// new connections to the rr NAT director (forwarded).
fn kernel_frames(count: usize) -> Vec<BenchFrame> {
    (0..count)
        .map(|i| {
            let denied = i % 5 == 2;
            let source = if denied {
                Ipv4Addr::new(203, 0, 113, (i % 250) as u8 + 1)
            } else {
                Ipv4Addr::from(0x0a00_0001u32 + i as u32)
            };
            let frame = PacketBuilder::eth()
                .ipv4(source, super::workloads::VIP)
                .tcp(1024 + (i % 60_000) as u16, 80)
                .syn()
                .seq_ack(i as u32, 0)
                .mss(1460)
                .build();
            let expect = if denied {
                Expect {
                    stage: Stage::Shield,
                    verdict: Verdict::Drop(DropReason::Denylist),
                }
            } else {
                Expect {
                    stage: Stage::Director,
                    verdict: Verdict::Forward,
                }
            };
            BenchFrame { frame, expect }
        })
        .collect()
}

fn kernel_pipeline() -> anyhow::Result<Pipeline> {
    let shield = datapath::shield::build(&shield_config(KERNEL_SHIELD)?, 7, &[])
        .map_err(|e| anyhow::anyhow!("[shield]: {e}"))?;
    let directors = datapath::director::Directors::build(
        &director_configs(&director_toml(
            datapath::director::scheduler::SchedulerKind::Rr,
            80,
        ))?,
        Default::default(),
    )
    .map_err(|e| anyhow::anyhow!("[[director]]: {e}"))?;
    Ok(Pipeline::new(ParseOptions::default())
        .with_shield(shield)
        .with_directors(directors))
}

/// Why kernel runs are impossible here, if they are.
pub fn kernel_unavailable() -> Option<String> {
    crate::kernel::topology::check_environment()
        .err()
        .map(|e| format!("{e:#}"))
}

/// One kernel run: seconds spent injecting, latency of the last forwarded packet seen
/// leaving the LB (seconds), and the forwarded packets seen.
fn kernel_once(frames: &[BenchFrame], rules: &KernelRules) -> anyhow::Result<(f64, f64, usize)> {
    let packets: Vec<InputPacket> = frames
        .iter()
        .map(|f| InputPacket {
            ts_ns: 0,
            link: datapath::packet::LinkType::Ethernet,
            interface: 0,
            orig_len: u32::try_from(f.frame.len()).unwrap_or(u32::MAX),
            data: f.frame.clone(),
        })
        .collect();
    let run = run_kernel(&packets, rules, Duration::ZERO)?;
    let mut forwarded = 0;
    let mut last_latency_ns = 0;
    for packet in &run.packets {
        if let Outcome::Forward { .. } = packet.outcome {
            forwarded += 1;
            if let Some(latency_ns) = packet.latency_ns {
                last_latency_ns = latency_ns;
            }
        }
    }
    ensure!(
        run.send_failures == 0,
        "{} packets refused at send",
        run.send_failures
    );
    Ok((run.inject_sec, last_latency_ns as f64 * 1e-9, forwarded))
}

/// `vs_kernel`: lbsim Mpps / kernel Mpps on the same packets (at most
/// [`MAX_PACKETS_PER_RUN`]).
pub fn vs_kernel(settings: Settings) -> anyhow::Result<SideBySide> {
    let count = settings.packets.clamp(1, MAX_PACKETS_PER_RUN);
    let frames = kernel_frames(count);
    let expected_forwarded = frames
        .iter()
        .filter(|f| f.expect.verdict == Verdict::Forward)
        .count();
    let work = PipelineWorkload {
        build: Box::new(kernel_pipeline),
        prime: Vec::new(),
        frames: frames.clone(),
        fresh: true,
    };
    let lbsim = super::measure::measure(
        &super::workloads::Workload {
            name: "vs_kernel".into(),
            target_mpps: None,
            body: super::workloads::Body::Pipeline(work),
        },
        Settings {
            packets: count,
            ..settings
        },
    )?;
    let rules = KernelRules::compile(
        Some(&shield_config(KERNEL_SHIELD)?),
        None,
        &director_configs(&director_toml(
            datapath::director::scheduler::SchedulerKind::Rr,
            80,
        ))?,
    )?;
    let mut runs = Vec::new();
    for _ in 0..settings.repetitions.clamp(1, 3) {
        runs.push(kernel_once(&frames, &rules).context("kernel run")?);
    }
    runs.sort_by(|a, b| (a.0 + a.1).total_cmp(&(b.0 + b.1)));
    let (inject, tail, forwarded) = runs[runs.len() / 2];
    let kernel_mpps = count as f64 / (inject + tail) / 1e6;
    Ok(SideBySide {
        ratio: lbsim.mpps() / kernel_mpps,
        baseline_mpps: kernel_mpps,
        measured: lbsim,
        note: format!(
            "kernel: nft netdev deny + numgen DNAT on veth, AF_PACKET injection; median of {} runs: \
             injecting {:.1} ms + last egress {:.2} ms later; {forwarded}/{expected_forwarded} \
             expected forwards seen by the observer",
            runs.len(),
            inject * 1e3,
            tail * 1e3
        ),
    })
}
