//! `sim kernel saturation`: where a one-CPU appliance starts dropping under a SYN flood,
//! predicted by the CPU model and measured on the host kernel, on one plot.
//!
//! Simulated side: the ramp scenario (`scenarios/cpu-ramp.toml`: one queue, SYN cookies on,
//! `[cpu]` with a cost profile) run once per rate of the ramp, the flood's rate replaced and
//! the RX ring set to the kernel's `net.core.netdev_max_backlog` (a veth with RPS queues
//! packets in the target CPU's backlog, not a NIC ring); its drop ratio is `rx_ring_full`
//! over the SYNs that reached the appliance. Kernel side: the same SYNs, paced at each
//! rate from an injector pinned to one CPU, against nft synproxy with every packet of the
//! LB's client-side veth steered to another CPU (RPS, as `sim kernel calibrate` sets it
//! up); its drop ratio is that CPU's backlog drops (`/proc/net/softnet_stat`) over the
//! SYNs sent. The saturation point of each side is the first rate whose drop ratio exceeds
//! 1 %. The injector is one thread sending one frame per system call: a rate it cannot
//! reach is reported as the rate it achieved.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::calibrate::{CalibrateArgs, Mechanism};
use crate::engine::Collect;
use crate::run::{RunOptions, run_scenario};
use crate::scenario::{self, Rate, TrafficSpec};

/// Arguments of `sim kernel saturation`.
#[derive(clap::Args, Debug, Clone)]
pub struct SaturationArgs {
    /// The ramp scenario (one queue, `[cpu]`, a `syn_flood` source).
    #[arg(long, default_value = "scenarios/cpu-ramp.toml")]
    pub scenario: PathBuf,
    /// The ramp: flood rates in packets per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "50000,100000,200000,300000,400000,600000,800000,1200000,2000000,3000000"
    )]
    pub rates: Vec<u64>,
    /// Kernel injection time per rate.
    #[arg(long, default_value_t = 300)]
    pub step_ms: u64,
    /// Skip the kernel side (simulated curve only; no root needed).
    #[arg(long)]
    pub no_kernel: bool,
    /// Output directory (`saturation.md`, `.json`, `.svg`).
    #[arg(long, default_value = "reports/cpu-ramp")]
    pub out: PathBuf,
}

/// One rate of the ramp on one side.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Step {
    /// Rate asked for (pps).
    pub rate: u64,
    /// Rate achieved (pps; the kernel injector may fall short).
    pub achieved: f64,
    /// Dropped / offered.
    pub drop_ratio: f64,
    /// Appliance latency p50 / p99 (ns; simulated side only).
    pub latency_p50: Option<u64>,
    /// p99.
    pub latency_p99: Option<u64>,
}

/// Both curves and their saturation points.
#[derive(Clone, Debug, Serialize)]
pub struct Saturation {
    /// Profile the simulation used.
    pub profile: String,
    /// RX ring / backlog size used.
    pub rx_ring: u32,
    /// Simulated steps.
    pub simulated: Vec<Step>,
    /// Kernel steps (empty with `--no-kernel`).
    pub kernel: Vec<Step>,
    /// First simulated achieved rate dropping more than 1 %.
    pub simulated_point: Option<f64>,
    /// First kernel achieved rate dropping more than 1 %.
    pub kernel_point: Option<f64>,
}

/// Drops begin: the first step above 1 % drops (its achieved rate).
pub fn saturation_point(steps: &[Step]) -> Option<f64> {
    steps
        .iter()
        .find(|s| s.drop_ratio > 0.01)
        .map(|s| s.achieved)
}

fn backlog_limit() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1000)
}

/// The simulated curve: the scenario at each rate.
pub fn simulate(path: &Path, rates: &[u64], rx_ring: u32) -> anyhow::Result<(String, Vec<Step>)> {
    let loaded = scenario::load(path)?;
    let profile = loaded
        .scenario
        .cpu
        .as_ref()
        .and_then(|c| c.profile.clone())
        .context("the ramp scenario needs a `[cpu]` profile")?;
    let mut steps = Vec::new();
    for &rate in rates {
        let mut point = loaded.clone();
        if let Some(cpu) = point.scenario.cpu.as_mut() {
            cpu.rx_ring = rx_ring;
        }
        for spec in point.scenario.traffic.iter_mut().map(|t| t.get_mut()) {
            if let TrafficSpec::SynFlood(flood) = spec {
                flood.rate = Rate(rate);
            }
        }
        let options = RunOptions {
            threads: 1,
            collect: Collect::default(),
        };
        let report = run_scenario(&point, options, &|_| {})?.report;
        let ring = report.totals.rx_ring_full;
        let offered = report.totals.processed + ring;
        let seconds = report.duration_ns as f64 / 1e9;
        let latency = report.cpu.as_ref().and_then(|c| c.latency);
        steps.push(Step {
            rate,
            achieved: offered as f64 / seconds,
            drop_ratio: ring as f64 / offered.max(1) as f64,
            latency_p50: latency.map(|l| l.p50),
            latency_p99: latency.map(|l| l.p99),
        });
    }
    Ok((profile, steps))
}

/// The kernel curve: paced SYNs against synproxy on one CPU.
pub fn kernel(rates: &[u64], step: Duration) -> anyhow::Result<Vec<Step>> {
    let args = CalibrateArgs {
        packets: 1,
        rounds: 1,
        lb_cpu: None,
        injector_cpu: None,
        out: PathBuf::new(),
    };
    let setup = super::calibrate::Setup::new(Mechanism::Synproxy, &args)?;
    let mut steps = Vec::new();
    for &rate in rates {
        let drops_before = super::calibrate::backlog_drops(setup.lb_cpu)?;
        let count = (rate as f64 * step.as_secs_f64()) as usize;
        let gap = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let (sent, took) = setup.send(count, Some(gap))?;
        std::thread::sleep(Duration::from_millis(20));
        let drops = super::calibrate::backlog_drops(setup.lb_cpu)? - drops_before;
        steps.push(Step {
            rate,
            achieved: sent as f64 / took.as_secs_f64().max(1e-9),
            drop_ratio: drops as f64 / sent.max(1) as f64,
            latency_p50: None,
            latency_p99: None,
        });
    }
    Ok(steps)
}

fn render(result: &Saturation) -> String {
    let mut md = format!(
        "# Saturation of one CPU under a SYN flood\n\nprofile `{}` · RX ring / backlog {}\n\n| rate asked | simulated pps | simulated drops | latency p50 / p99 µs | kernel pps | kernel drops |\n|---|---|---|---|---|---|\n",
        result.profile, result.rx_ring
    );
    for (index, sim) in result.simulated.iter().enumerate() {
        let kernel = result.kernel.get(index);
        let latency = match (sim.latency_p50, sim.latency_p99) {
            (Some(a), Some(b)) => format!("{:.1} / {:.1}", a as f64 / 1e3, b as f64 / 1e3),
            _ => "-".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2}% | {latency} | {} | {} |",
            sim.rate,
            sim.achieved,
            sim.drop_ratio * 100.0,
            kernel.map_or("-".into(), |k| format!("{:.0}", k.achieved)),
            kernel.map_or("-".into(), |k| format!("{:.2}%", k.drop_ratio * 100.0)),
        );
    }
    let point = |p: Option<f64>| p.map_or("not reached".into(), |p| format!("{p:.0} pps"));
    let _ = writeln!(
        md,
        "\nDrops begin (> 1 %): simulated {}, kernel {}.",
        point(result.simulated_point),
        point(result.kernel_point)
    );
    if let (Some(s), Some(k)) = (result.simulated_point, result.kernel_point) {
        let _ = writeln!(md, "Predicted / measured: {:.2}.", s / k);
    }
    md
}

fn plot(result: &Saturation) -> anyhow::Result<String> {
    use crate::svg::{Axes, Chart, Series, human, svg_with};
    let curve = |name: &str, steps: &[Step]| Series {
        name: name.into(),
        points: steps
            .iter()
            .map(|s| (s.achieved, s.drop_ratio * 100.0))
            .collect(),
    };
    let mut series = vec![curve(
        &format!("simulated ({})", result.profile),
        &result.simulated,
    )];
    if !result.kernel.is_empty() {
        series.push(curve("kernel", &result.kernel));
    }
    let chart = Chart {
        title: "drops vs SYN rate, one CPU".into(),
        y_desc: "dropped %".into(),
        series,
        y_range: Some((0.0, 100.0)),
    };
    let label = |x: f64| human(x.max(0.0) as u64);
    let axes = Axes {
        x_desc: "SYN/s reaching the appliance",
        x_range: None,
        x_label: &label,
        markers: true,
    };
    svg_with(&chart, &axes)
}

/// Run `sim kernel saturation`.
pub fn run(args: &SaturationArgs) -> anyhow::Result<()> {
    let rx_ring = backlog_limit();
    let (profile, simulated) = simulate(&args.scenario, &args.rates, rx_ring)?;
    let kernel = if args.no_kernel {
        Vec::new()
    } else {
        super::topology::install_signal_cleanup();
        kernel(&args.rates, Duration::from_millis(args.step_ms.max(10)))?
    };
    let result = Saturation {
        profile,
        rx_ring,
        simulated_point: saturation_point(&simulated),
        kernel_point: saturation_point(&kernel),
        simulated,
        kernel,
    };
    std::fs::create_dir_all(&args.out)?;
    let md = render(&result);
    std::fs::write(args.out.join("saturation.md"), &md)?;
    std::fs::write(
        args.out.join("saturation.json"),
        serde_json::to_string_pretty(&result)? + "\n",
    )?;
    std::fs::write(args.out.join("saturation.svg"), plot(&result)?)?;
    print!("{md}");
    println!("wrote {}", args.out.join("saturation.svg").display());
    Ok(())
}
