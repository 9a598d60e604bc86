//! `sim inline SCENARIO`: the inline lab. The lbsim pipeline itself (built from the
//! scenario's `[appliance]` exactly as `sim run` builds it) runs in real time between two
//! veths, so real Linux hosts — a client namespace (curl, ping) and a backend namespace
//! with one small HTTP server per backend address and port — talk *through* lbsim's
//! shield, flows and director.
//!
//! Layout: [`plan`] derives addresses from the scenario's topology, [`netns`] creates the
//! namespaces (removed on exit, error, panic and Ctrl-C; `sim kernel cleanup` removes what
//! a SIGKILLed lab left), [`server`] runs the HTTP servers, [`hop`] does what a real hop
//! needs and the datapath does not (proxy ARP, neighbours, Ethernet rewrite), [`io`] moves
//! frames with AF_PACKET. At the end the per-stage decisions, per-flow hits, shield
//! counters and directors are printed.
//!
//! Not here: IPv6, VLANs, more than one client-side and one backend-side interface, DR and
//! tunnel forwarding, UDP services on the backends, TTL decrement. The lab is a functional
//! bench, not a fast path: one frame per `recv`/`send` system call on plain AF_PACKET
//! sockets (no `PACKET_MMAP` rings), with large forced socket buffers so bulk TCP bursts
//! wait instead of being dropped (see [`io`]).

pub mod hop;
pub mod io;
pub mod netns;
pub mod plan;
pub mod server;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use datapath::pipeline::Pipeline;
use datapath::verdict::TimeNs;

use crate::appliance::{build_pipeline, render_report, report};
use crate::scenario::units::parse_duration;
use io::{Datapath, Readers, lock, open_ports};
use netns::{LAB_BACKEND_IFACE, LAB_BACKEND_MAC, LAB_CLIENT_IFACE, LAB_CLIENT_MAC, LabNamespaces};
use plan::LabPlan;
use server::Servers;

/// Arguments of `sim inline`.
#[derive(clap::Args, Debug, Clone)]
pub struct InlineArgs {
    /// The scenario: `[topology]` gives the addresses (one client-side and one backend-side
    /// interface), `[appliance]` the pipeline. Traffic and events are not used.
    pub scenario: PathBuf,
    /// Stop after this long (e.g. `30s`); default: run until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<TimeNs>,
    /// Do not start the built-in HTTP servers (run your own with `ip netns exec`).
    #[arg(long)]
    pub no_servers: bool,
    /// Seed of the pipeline's secrets (SYN cookies); default: the scenario's.
    #[arg(long)]
    pub seed: Option<u64>,
}

static STOP: AtomicBool = AtomicBool::new(false);
static LAB_PREFIX: Mutex<Option<String>> = Mutex::new(None);

/// Ctrl-C / SIGTERM: the first asks the lab to stop (report, then clean up); a second
/// removes the namespaces at once and exits with 130.
fn install_signal_handler() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let result = ctrlc::set_handler(|| {
            if !STOP.swap(true, Ordering::SeqCst) {
                eprintln!("stopping the inline lab (again to force)");
                return;
            }
            let prefix = LAB_PREFIX.lock().ok().and_then(|p| p.clone());
            if let Some(prefix) = prefix {
                crate::kernel::topology::remove_prefix(&prefix);
            }
            eprintln!("interrupted: lab namespaces removed");
            std::process::exit(130);
        });
        if let Err(error) = result {
            eprintln!("warning: cannot install the Ctrl-C handler: {error}");
        }
    });
}

/// Run `sim inline`.
pub fn run(args: &InlineArgs) -> anyhow::Result<ExitCode> {
    let loaded = crate::scenario::load(&args.scenario).map_err(|e| anyhow::anyhow!("{e}"))?;
    let scenario = &loaded.scenario;
    let plan = LabPlan::from_scenario(scenario)?;
    let names: Vec<&str> = plan.interfaces.iter().map(String::as_str).collect();
    let seed = args.seed.unwrap_or(scenario.seed);
    let pipeline = build_pipeline(&scenario.appliance, &loaded.base_dir, seed, &names)?;
    netns::check_environment()?;
    install_signal_handler();
    STOP.store(false, Ordering::SeqCst);
    let lab = LabNamespaces::create(&plan)?;
    *LAB_PREFIX
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(lab.prefix().to_string());
    let result = run_lab(args, &plan, &lab, pipeline);
    drop(lab);
    let (text, elapsed) = result?;
    print!("{text}");
    println!(
        "inline lab stopped after {:.1} s; namespaces removed",
        elapsed.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Start servers and ports, wait for the end, stop, and return the report text.
fn run_lab(
    args: &InlineArgs,
    plan: &LabPlan,
    lab: &LabNamespaces,
    pipeline: Pipeline,
) -> anyhow::Result<(String, Duration)> {
    let servers = if args.no_servers {
        None
    } else {
        Some(Servers::start(&lab.backend_ns(), &services(plan))?)
    };
    let ports = open_ports(&lab.lab_ns(), [LAB_CLIENT_IFACE, LAB_BACKEND_IFACE])?;
    let hop = hop::Hop::new(plan, [LAB_CLIENT_MAC, LAB_BACKEND_MAC]);
    let datapath = Datapath::new(pipeline, hop, plan, ports.clone())?;
    let datapath = Arc::new(Mutex::new(datapath));
    let readers = Readers::start(&datapath, ports);
    lock(&datapath).probe_neighbours();
    announce(plan, lab, &lock(&datapath).pipeline)?;
    let started = Instant::now();
    let limit = args.duration.map(Duration::from_nanos);
    while !STOP.load(Ordering::SeqCst) && limit.is_none_or(|limit| started.elapsed() < limit) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = readers.stop();
    if let Some(servers) = servers {
        servers.stop();
    }
    let text = render_end(&lock(&datapath));
    stopped?;
    Ok((text, started.elapsed()))
}

/// Every backend address and TCP port, named.
fn services(plan: &LabPlan) -> Vec<(String, SocketAddr)> {
    let mut services = Vec::new();
    for backend in &plan.backends {
        for &port in &backend.tcp_ports {
            let address = SocketAddr::from((backend.address, port));
            services.push((backend.name.clone(), address));
        }
    }
    services
}

/// Print the plan, commands to try, and the `ready` line (what scripts wait for).
fn announce(plan: &LabPlan, lab: &LabNamespaces, pipeline: &Pipeline) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "inline lab {} up", lab.prefix())?;
    write!(out, "{}", plan.render())?;
    let client = lab.client_ns();
    writeln!(out, "try:")?;
    for service in report(pipeline).directors {
        if let Some(address) = service.key.strip_prefix("TCP").map(str::trim) {
            writeln!(out, "  ip netns exec {client} curl http://{address}/")?;
        }
    }
    if let Some(backend) = plan.backends.first() {
        writeln!(out, "  ip netns exec {client} ping {}", backend.address)?;
    }
    writeln!(out, "stop with Ctrl-C")?;
    let [cli, lb, srv] = lab.namespaces();
    writeln!(out, "ready client={cli} lab={lb} backend={srv}")?;
    out.flush().context("writing to stdout")
}

/// The end-of-run report: pipeline decisions, the appliance report, the hop, latency.
fn render_end(datapath: &Datapath) -> String {
    let mut out = String::from("Pipeline decisions:\n");
    for row in datapath.pipeline.counters().rows() {
        out.push_str(&format!(
            "  {:<9} {:<8} {:<34} {}\n",
            row.stage.name(),
            row.verdict,
            row.reason.unwrap_or_default(),
            row.count
        ));
    }
    out.push_str(&render_report(&report(&datapath.pipeline)));
    out.push_str(&datapath.hop.render());
    let latency = &datapath.latency;
    if !latency.is_empty() {
        let micros = |q: f64| latency.value_at_quantile(q) as f64 / 1e3;
        out.push_str(&format!(
            "Lab processing (frame handed to the hop → last write), {} frames: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs\n",
            latency.len(),
            micros(0.5),
            micros(0.99),
            latency.max() as f64 / 1e3
        ));
    }
    if datapath.send_failures > 0 {
        out.push_str(&format!("  send failures: {}\n", datapath.send_failures));
    }
    out
}
