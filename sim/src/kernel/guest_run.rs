//! The kernel side of a diff on the guest backend: the host writes a job (how to rebuild
//! the diff's input: the scenario or the appliance and captures, with absolute paths), boots
//! the guest kernel (see `guest`) with an init body that loads the modules the rules need
//! and runs this same `sim` binary's hidden `sim kernel guest-run --job JOB --out FILE`.
//! Inside the guest that command rebuilds the input, compiles the rules for the guest
//! ([`Backend::Guest`]: directors as IPVS services), builds the usual topology, injects,
//! observes exactly as on the host (`inject::Lab`; no nft trace: the guest's nf_tables
//! has no ip / ip6 / netdev family), then lists IPVS (`ipvsadm -L -n`, `--stats --exact`,
//! `-Lcn`: after one 2 s estimator tick, which is when 6.1 publishes the per-CPU
//! counters) before the namespaces go, and writes it
//! all as JSON into the guest's `$OUT` — a host directory.
//!
//! Not here: booting (see `guest::boot`), the comparison (see `diff`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::backend::Backend;
use super::guest::Guest;
use super::inject::{KernelRun, Lab, SETTLE_TIME};
use super::input_source::{DiffInput, InputSource};
use super::rules::KernelRules;
use super::simulate::build_on;

/// Modules every guest run loads (`modprobe -d`: the guest cannot load on demand, its
/// `/lib/modules` is the host's). Directors add `ip_vs` and their schedulers.
const BASE_MODULES: &[&str] = &[
    "ipv6",
    "veth",
    "af_packet",
    "nfnetlink",
    "nf_conntrack",
    "x_tables",
    "ip_tables",
    "iptable_mangle",
    "ip6_tables",
    "ip6table_mangle",
    "xt_mark",
    "xt_tcpudp",
    "xt_conntrack",
];

/// Longer than the 6.1 IPVS estimator's period (2 s), which publishes the counters.
const STATS_TICK: Duration = Duration::from_millis(2_200);

static JOBS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// What the guest runs: the input to rebuild and the injection gap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestJob {
    /// How to rebuild the diff's input (absolute paths).
    pub source: InputSource,
    /// Gap between injected packets, ns.
    pub gap_ns: u64,
    /// Packets the host has: the guest must rebuild as many.
    pub packets: usize,
    /// On a split run, which packets the guest injects (those a director handled).
    pub selected: Option<Vec<bool>>,
}

/// What the guest sends back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestResult {
    /// The guest's `uname -r`.
    pub release: String,
    /// The kernel run, as on the host.
    pub run: KernelRun,
    /// `ipvsadm -L -n` at the end of the run.
    pub ipvs_list: String,
    /// `ipvsadm -L -n --stats --exact`.
    pub ipvs_stats: String,
    /// `ipvsadm -Lcn`.
    pub ipvs_connections: String,
}

/// The `sim` binary the guest runs: `LBSIM_SIM_BIN`, else this executable when it is
/// `sim`, else `sim` next to the directory of this executable (a test binary in
/// `target/debug/deps` runs `target/debug/sim`).
pub fn sim_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LBSIM_SIM_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the sim binary")?;
    if exe.file_stem().is_some_and(|s| s == "sim") {
        return Ok(exe);
    }
    let sibling = exe.parent().and_then(Path::parent).map(|d| d.join("sim"));
    match sibling {
        Some(path) if path.is_file() => Ok(path),
        _ => bail!(
            "the guest kernel runs the `sim` binary: not found next to {} (set LBSIM_SIM_BIN)",
            exe.display()
        ),
    }
}

/// The init body: load the modules, run `sim kernel guest-run`.
fn body(rules: &KernelRules, sim: &Path, job: &Path) -> String {
    let mut modules: Vec<&str> = BASE_MODULES.to_vec();
    modules.extend(rules.ipvs.modules.iter().map(String::as_str));
    if !rules.ipvs.modules.is_empty() {
        modules.push("xt_ipvs");
    }
    format!(
        "load_modules {} || exit 97\nexec {} kernel guest-run --job {} --out \"$OUT/result.json\"",
        modules.join(" "),
        sim.display(),
        job.display()
    )
}

/// Host side: run the kernel half of a diff inside the guest and read its result.
pub fn run_in_guest(
    input: &DiffInput,
    rules: &KernelRules,
    gap: Duration,
    selected: Option<Vec<bool>>,
) -> anyhow::Result<GuestResult> {
    let job = GuestJob {
        source: input.source.absolute()?,
        gap_ns: u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX),
        packets: input.packets.len(),
        selected,
    };
    let path = std::env::temp_dir().join(format!(
        "lbsim-guest-job-{}-{}.json",
        std::process::id(),
        JOBS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, serde_json::to_string(&job)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let output = Guest::default().run(&body(rules, &sim_binary()?, &path));
    let _ = std::fs::remove_file(&path);
    let output = output?;
    let Some(text) = output.file("result.json").filter(|_| output.status == 0) else {
        bail!(
            "the guest run failed (status {}): {}\nconsole tail:\n{}",
            output.status,
            output.stderr.trim(),
            tail(&output.console, 15)
        );
    };
    serde_json::from_str(text).context("reading the guest's result")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Guest side (`sim kernel guest-run`): rebuild the input, run it through this kernel with
/// the guest's rules, list IPVS, write the result to `out`.
pub fn guest_main(job: &Path, out: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(job).with_context(|| format!("reading {}", job.display()))?;
    let job: GuestJob = serde_json::from_str(&text)?;
    let input = DiffInput::from_source(&job.source)?;
    if input.packets.len() != job.packets {
        bail!(
            "the guest rebuilt {} packets, the host has {}",
            input.packets.len(),
            job.packets
        );
    }
    let (_, rules) = build_on(
        Backend::Guest,
        &input.appliance,
        &input.base_dir,
        input.seed,
    )?;
    let lab = Lab::start(&rules)?;
    let gap = Duration::from_nanos(job.gap_ns);
    let run = match &job.selected {
        Some(selected) => lab.run_traced_selected(&input.packets, &rules, gap, selected)?,
        None => lab.run_traced(&input.packets, &rules, gap, SETTLE_TIME)?,
    };
    // Linux 6.1 sums the per-CPU IPVS counters into what `--stats` shows from its rate
    // estimator's timer, every 2 s (`estimation_timer` → `ip_vs_read_cpu_stats`): wait for
    // one tick so the listing has every packet of the run.
    std::thread::sleep(STATS_TICK);
    let topology = lab.topology();
    let lb = topology.lb_ns();
    let ipvsadm = |args: &[&str]| -> anyhow::Result<String> {
        if rules.ipvs.commands.is_empty() {
            return Ok(String::new());
        }
        let mut full = vec!["ipvsadm"];
        full.extend_from_slice(args);
        topology.exec(&lb, &full, None)
    };
    let result = GuestResult {
        release: std::fs::read_to_string("/proc/sys/kernel/osrelease")?
            .trim()
            .to_string(),
        run,
        ipvs_list: ipvsadm(&["-L", "-n"])?,
        ipvs_stats: ipvsadm(&["-L", "-n", "--stats", "--exact"])?,
        ipvs_connections: ipvsadm(&["-L", "-c", "-n"])?,
    };
    std::fs::write(out, serde_json::to_string(&result)?)
        .with_context(|| format!("writing {}", out.display()))
}
