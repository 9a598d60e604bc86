//! `sim kernel calibrate`: the host kernel's CPU cost per packet of each mechanism the
//! kernel runner compiles the appliance to, saved as the `linux` cost profile of the CPU
//! model ([`crate::engine::cpu`]).
//!
//! For each mechanism: a topology with one small appliance's rules (compiled by the runner's
//! own compiler, installed as `sim diff` installs them), RPS steering every packet the LB's
//! client-side veth receives to one CPU (the *LB CPU*), the replies and forwarded packets'
//! receivers steered to another (and dropped at their ingress, so nothing answers back), and
//! an injector thread pinned to that other CPU sending a prepared batch through an
//! AF_PACKET socket as fast as it can. The cost is the LB CPU's packet-processing time
//! during the injection — its irq + softirq time in `/proc/stat` plus its `ksoftirqd`
//! thread's run time (schedstat) — less its rate during an idle interval just before (other
//! work's softirqs), over the packets it processed (sent minus its backlog drops in
//! `/proc/net/softnet_stat`; a run where that CPU did not see the packets fails: RPS not
//! effective). Rounds repeat; the profile keeps the median and the spread
//! ((max − min) / median).
//!
//! `/proc/stat` counts in clock ticks (10 ms): a round must last long enough (hundreds of
//! milliseconds) for a figure to mean something; `--packets` sets it. On a busy machine the
//! idle-rate subtraction is what limits the precision: the spread says how much.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use datapath::packet::builder::PacketBuilder;

use super::inject::Lab;
use super::topology::{CLIENT_IFACE, CLIENT_MAC, LB_CLIENT_IFACE, LB_CLIENT_MAC, SERVER_IFACE};
use crate::appliance::ApplianceConfig;
use crate::engine::cpu::{CostProfile, CostTable};

/// Arguments of `sim kernel calibrate`.
#[derive(clap::Args, Debug, Clone)]
pub struct CalibrateArgs {
    /// Packets injected per mechanism and round.
    #[arg(long, default_value_t = 300_000)]
    pub packets: usize,
    /// Rounds per mechanism (the median is kept, the spread reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The CPU the LB's packets are steered to (default: the last one).
    #[arg(long)]
    pub lb_cpu: Option<usize>,
    /// The CPU of the injector and of the receivers (default: the first one other than the
    /// LB CPU).
    #[arg(long)]
    pub injector_cpu: Option<usize>,
    /// Where to write the profile.
    #[arg(long, default_value = "reports/calibrate/linux.toml")]
    pub out: PathBuf,
}

/// One kernel mechanism to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    /// A frame with a bad IPv4 header checksum: dropped by the IP layer (`parse`).
    IpDrop,
    /// The shield's denylist: nft netdev ingress drop (`shield_drop`).
    NetdevDrop,
    /// The shield's allow-list: nft netdev accept, then plain forwarding (`flows`).
    AllowForward,
    /// nft synproxy answering a SYN with a cookie SYN-ACK (`syn_cookie`).
    Synproxy,
    /// A NAT director's first packet: conntrack entry + DNAT + forward (`new_connection`).
    DnatNew,
    /// A NAT director's packets of known connections: conntrack hit + DNAT (`director`).
    DnatEstablished,
    /// `[[nat]]` MASQUERADE of known flows (`nat`).
    Masquerade,
}

impl Mechanism {
    /// Every mechanism, in calibration order.
    pub const ALL: [Mechanism; 7] = [
        Self::IpDrop,
        Self::NetdevDrop,
        Self::AllowForward,
        Self::Synproxy,
        Self::DnatNew,
        Self::DnatEstablished,
        Self::Masquerade,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::IpDrop => "ip_drop",
            Self::NetdevDrop => "netdev_drop",
            Self::AllowForward => "allow_forward",
            Self::Synproxy => "synproxy",
            Self::DnatNew => "dnat_new",
            Self::DnatEstablished => "dnat_established",
            Self::Masquerade => "masquerade",
        }
    }

    /// The cost profile key it measures.
    pub fn profile_key(self) -> &'static str {
        match self {
            Self::IpDrop => "parse",
            Self::NetdevDrop => "shield_drop",
            Self::AllowForward => "flows",
            Self::Synproxy => "syn_cookie",
            Self::DnatNew => "new_connection",
            Self::DnatEstablished => "director",
            Self::Masquerade => "nat",
        }
    }

    /// The appliance whose rules make this mechanism.
    fn appliance(self) -> &'static str {
        match self {
            Self::IpDrop => "",
            Self::NetdevDrop => "[shield]\ndeny = [\"203.0.113.0/24\"]\n",
            Self::AllowForward => {
                "[shield]\n[[shield.context]]\ndst = \"10.0.1.2\"\nallow_src = [\"198.51.100.0/24\"]\n"
            }
            Self::Synproxy => {
                "[shield]\nsyn_cookies = \"on\"\n[[shield.context]]\ndst = \"192.0.2.10\"\nprotected_tcp_ports = [80]\n"
            }
            Self::DnatNew | Self::DnatEstablished => {
                "[[director]]\nname = \"web\"\nvip = \"192.0.2.10\"\nport = 80\nproto = \"tcp\"\nscheduler = \"rr\"\nforward = \"nat\"\nreal = [{ addr = \"10.0.1.2:80\", weight = 1 }]\n\
                 [[director]]\nname = \"dns\"\nvip = \"192.0.2.10\"\nport = 53\nproto = \"udp\"\nscheduler = \"rr\"\nforward = \"nat\"\nreal = [{ addr = \"10.0.1.2:53\", weight = 1 }]\n"
            }
            Self::Masquerade => {
                "[interfaces]\ninside = \"10.0.3.1/24\"\n[[nat]]\nkind = \"masquerade\"\nout = \"inside\"\nsrc = \"198.51.100.0/24\"\n"
            }
        }
    }

    /// Frame `i` of the batch (Ethernet addresses of the client side).
    fn frame(self, i: usize) -> Vec<u8> {
        let client =
            |base: [u8; 4]| Ipv4Addr::from(u32::from(Ipv4Addr::from(base)) + (i % 200) as u32 + 1);
        let port = 1024 + (i / 200 % 60_000) as u16;
        let eth = || PacketBuilder::eth().macs(CLIENT_MAC, LB_CLIENT_MAC);
        let vip = Ipv4Addr::new(192, 0, 2, 10);
        let server = Ipv4Addr::new(10, 0, 1, 2);
        match self {
            Self::IpDrop => {
                let mut frame = eth()
                    .ipv4(client([198, 51, 100, 0]), server)
                    .udp(port, 9)
                    .payload(&[0; 18])
                    .build();
                // Break the IPv4 header checksum (bytes 24..26 of the frame).
                frame[24] ^= 0xff;
                frame
            }
            Self::NetdevDrop => eth()
                .ipv4(client([203, 0, 113, 0]), server)
                .tcp(port, 8080)
                .seq_ack(1, 1)
                .build(),
            Self::AllowForward => eth()
                .ipv4(client([198, 51, 100, 0]), server)
                .tcp(port, 8080)
                .seq_ack(1, 1)
                .build(),
            Self::Synproxy | Self::DnatNew => eth()
                .ipv4(client([198, 51, 100, 0]), vip)
                .tcp(port, 80)
                .syn()
                .seq_ack(i as u32, 0)
                .mss(1460)
                .build(),
            // 64 flows, over and over: conntrack knows them after the first round.
            Self::DnatEstablished => eth()
                .ipv4(Ipv4Addr::new(198, 51, 100, 1 + (i % 64) as u8), vip)
                .udp(5000, 53)
                .payload(&[0; 18])
                .build(),
            Self::Masquerade => eth()
                .ipv4(
                    Ipv4Addr::new(198, 51, 100, 1 + (i % 64) as u8),
                    Ipv4Addr::new(10, 0, 3, 2),
                )
                .udp(5000, 9)
                .payload(&[0; 18])
                .build(),
        }
    }
}

/// One mechanism's rounds.
#[derive(Clone, Debug)]
pub struct Measured {
    /// ns of LB CPU per processed packet, per round.
    pub rounds: Vec<f64>,
    /// Packets the LB CPU's backlog dropped (all rounds).
    pub backlog_drops: u64,
    /// Mean injection rate (packets per second).
    pub injected_pps: f64,
}

impl Measured {
    /// Median over rounds.
    pub fn median(&self) -> f64 {
        let mut sorted = self.rounds.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
    }

    /// (max − min) / median.
    pub fn spread(&self) -> f64 {
        let max = self.rounds.iter().copied().fold(f64::MIN, f64::max);
        let min = self.rounds.iter().copied().fold(f64::MAX, f64::min);
        let median = self.median();
        if median > 0.0 {
            (max - min) / median
        } else {
            0.0
        }
    }
}

/// Packet-processing time of `cpu` so far, ns: its irq + softirq time in `/proc/stat`
/// (softirqs run at interrupt exit, in clock ticks) plus the run time of its `ksoftirqd`
/// thread (softirqs deferred to it, ns from its schedstat). Other processes' system time
/// on that CPU is not in it.
fn softirq_ns(cpu: usize) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let label = format!("cpu{cpu}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(label.as_str()))
        .with_context(|| format!("no {label} in /proc/stat"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq
    let ticks = fields.get(5).copied().unwrap_or(0) + fields.get(6).copied().unwrap_or(0);
    Ok(ticks as f64 * ns_per_tick() + ksoftirqd_ns(cpu)? as f64)
}

/// Run time (ns) of `ksoftirqd/<cpu>`.
fn ksoftirqd_ns(cpu: usize) -> anyhow::Result<u64> {
    let name = format!("ksoftirqd/{cpu}");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let path = entry.path();
        let is_it = std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == name);
        if is_it {
            let stat = std::fs::read_to_string(path.join("schedstat"))?;
            let ns = stat.split_whitespace().next().context("empty schedstat")?;
            return Ok(ns.parse()?);
        }
    }
    bail!("no {name} thread in /proc")
}

/// Packets `cpu`'s backlog dropped so far (`/proc/net/softnet_stat`, second column, one
/// line per CPU).
pub fn backlog_drops(cpu: usize) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/net/softnet_stat")?;
    let line = text
        .lines()
        .nth(cpu)
        .context("no such CPU in softnet_stat")?;
    let field = line
        .split_whitespace()
        .nth(1)
        .context("short softnet_stat")?;
    Ok(u64::from_str_radix(field, 16)?)
}

/// Packets `cpu` processed so far (`/proc/net/softnet_stat`, first column).
fn processed(cpu: usize) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/net/softnet_stat")?;
    let line = text
        .lines()
        .nth(cpu)
        .context("no such CPU in softnet_stat")?;
    let field = line
        .split_whitespace()
        .next()
        .context("empty softnet_stat")?;
    Ok(u64::from_str_radix(field, 16)?)
}

/// Nanoseconds per clock tick of `/proc/stat`.
fn ns_per_tick() -> f64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    1e9 / hz as f64
}

/// Steer what `iface` in `ns` receives to the CPUs of `mask` (RPS).
fn steer(lab: &Lab, ns: &str, iface: &str, mask: u64) -> anyhow::Result<()> {
    let script = format!("echo {mask:x} > /sys/class/net/{iface}/queues/rx-0/rps_cpus");
    lab.topology()
        .exec(ns, &["sh", "-c", &script], None)
        .with_context(|| format!("RPS on {ns}/{iface} (needs CONFIG_RPS)"))
        .map(drop)
}

/// Drop everything `iface` in `ns` receives (the receivers: nothing answers back).
fn sink(lab: &Lab, ns: &str, iface: &str) -> anyhow::Result<()> {
    let table = format!(
        "table netdev lbsim_sink {{\n chain in {{\n  type filter hook ingress device {iface} priority -500; policy drop;\n }}\n}}\n"
    );
    lab.topology()
        .exec(ns, &["nft", "-f", "-"], Some(&table))
        .map(drop)
}

/// Send `count` frames cycling through `batch` from the client namespace, on a thread
/// pinned to `cpu`, one every `gap` at most (`None`: as fast as it can); returns how many
/// the socket took and how long it took.
fn blast(
    ns: &str,
    cpu: usize,
    batch: &[Vec<u8>],
    count: usize,
    gap: Option<Duration>,
) -> anyhow::Result<(u64, Duration)> {
    let (ns, batch) = (ns.to_string(), batch.to_vec());
    let handle = std::thread::spawn(move || -> anyhow::Result<(u64, Duration)> {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .context("pinning the injector")?;
        let (mut tx, _rx) = super::wire::open_channel(&ns, CLIENT_IFACE)?;
        let started = Instant::now();
        let mut sent = 0u64;
        for (index, frame) in batch.iter().cycle().take(count).enumerate() {
            if let Some(gap) = gap {
                let due = started + gap * index as u32;
                while Instant::now() < due {
                    std::hint::spin_loop();
                }
            }
            if matches!(tx.send_to(frame, None), Some(Ok(()))) {
                sent += 1;
            }
        }
        Ok((sent, started.elapsed()))
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("injector thread panicked"))?
}

/// The CPUs to use: (LB CPU, injector CPU).
fn cpus(args: &CalibrateArgs) -> anyhow::Result<(usize, usize)> {
    let online = std::thread::available_parallelism().map_or(1, usize::from);
    if online < 2 {
        bail!("calibration needs two CPUs (the LB's and the injector's); this machine has one");
    }
    let lb = args.lb_cpu.unwrap_or(online - 1);
    let injector = args.injector_cpu.unwrap_or(if lb == 0 { 1 } else { 0 });
    if lb == injector || lb >= online || injector >= online {
        bail!("--lb-cpu {lb} and --injector-cpu {injector}: two different CPUs below {online}");
    }
    Ok((lb, injector))
}

/// A topology with one mechanism's rules, steered and sunk, and its frames.
pub struct Setup {
    lab: Lab,
    /// The CPU the LB's packets are processed on.
    pub lb_cpu: usize,
    injector_cpu: usize,
    batch: Vec<Vec<u8>>,
}

impl Setup {
    /// Build it (and warm it up: conntrack entries of the known flows, neighbours).
    pub fn new(mechanism: Mechanism, args: &CalibrateArgs) -> anyhow::Result<Self> {
        let (lb_cpu, injector_cpu) = cpus(args)?;
        let config: ApplianceConfig = toml::from_str(mechanism.appliance())
            .with_context(|| format!("{} appliance", mechanism.name()))?;
        let backend = super::backend::Backend::Host;
        let rules = super::simulate::build_on(backend, &config, Path::new("."), 1)?.1;
        let lab = Lab::start(&rules)?;
        let topology = lab.topology();
        let (cli, lb, srv) = (topology.client_ns(), topology.lb_ns(), topology.server_ns());
        for address in ["10.0.1.2", "10.0.3.2"] {
            topology.route_to_server(address)?;
        }
        steer(&lab, &lb, LB_CLIENT_IFACE, 1 << lb_cpu)?;
        for (ns, iface) in [(&cli, CLIENT_IFACE), (&srv, SERVER_IFACE)] {
            steer(&lab, ns, iface, 1 << injector_cpu)?;
            sink(&lab, ns, iface)?;
        }
        let batch: Vec<Vec<u8>> = (0..4096).map(|i| mechanism.frame(i)).collect();
        let setup = Self {
            lab,
            lb_cpu,
            injector_cpu,
            batch,
        };
        setup.send(setup.batch.len(), None)?;
        Ok(setup)
    }

    /// Send `count` frames of the batch (see [`blast`]).
    pub fn send(&self, count: usize, gap: Option<Duration>) -> anyhow::Result<(u64, Duration)> {
        let ns = self.lab.topology().client_ns();
        blast(&ns, self.injector_cpu, &self.batch, count, gap)
    }
}

/// Time one mechanism.
pub fn measure(mechanism: Mechanism, args: &CalibrateArgs) -> anyhow::Result<Measured> {
    let setup = Setup::new(mechanism, args)?;
    let lb_cpu = setup.lb_cpu;
    let mut rounds = Vec::with_capacity(args.rounds);
    let mut drops_total = 0;
    let mut rates = Vec::new();
    for _ in 0..args.rounds {
        let (idle_ns, idle) = {
            let (before, started) = (softirq_ns(lb_cpu)?, Instant::now());
            std::thread::sleep(Duration::from_millis(300));
            (softirq_ns(lb_cpu)? - before, started.elapsed())
        };
        let (busy_before, drops_before) = (softirq_ns(lb_cpu)?, backlog_drops(lb_cpu)?);
        let processed_before = processed(lb_cpu)?;
        let (sent, took) = setup.send(args.packets, None)?;
        // Let the backlog drain.
        std::thread::sleep(Duration::from_millis(20));
        let busy_ns = softirq_ns(lb_cpu)? - busy_before;
        let drops = backlog_drops(lb_cpu)? - drops_before;
        let seen = processed(lb_cpu)? - processed_before;
        if seen < (sent - drops.min(sent)) * 9 / 10 {
            bail!(
                "CPU {lb_cpu} processed {seen} packets of {sent} sent: RPS steering is not effective here"
            );
        }
        rates.push(sent as f64 / took.as_secs_f64());
        drops_total += drops;
        let window = (took + Duration::from_millis(20)).as_secs_f64();
        let background = idle_ns * window / idle.as_secs_f64();
        let processed = sent.saturating_sub(drops).max(1);
        rounds.push(((busy_ns - background) / processed as f64).max(0.0));
    }
    Ok(Measured {
        rounds,
        backlog_drops: drops_total,
        injected_pps: rates.iter().sum::<f64>() / rates.len().max(1) as f64,
    })
}

/// The profile of measured mechanisms.
pub fn profile(measured: &BTreeMap<Mechanism, Measured>, args: &CalibrateArgs) -> CostProfile {
    let get = |m: Mechanism| {
        let median = measured.get(&m).map(Measured::median)?;
        Some((median * 10.0).round() / 10.0)
    };
    let ns = CostTable {
        parse: get(Mechanism::IpDrop).unwrap_or(1.0).max(1.0),
        shield_drop: get(Mechanism::NetdevDrop),
        syn_cookie: get(Mechanism::Synproxy),
        flows: get(Mechanism::AllowForward),
        flow_rule: None,
        director: get(Mechanism::DnatEstablished),
        new_connection: get(Mechanism::DnatNew),
        nat: get(Mechanism::Masquerade),
    };
    let machine = crate::stats::Machine::detect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    CostProfile {
        name: "linux".into(),
        source: format!(
            "sim kernel calibrate: {} packets x {} rounds per mechanism, kernel {}, {} ({} CPUs); median of rounds",
            args.packets,
            args.rounds,
            kernel.trim(),
            machine.cpu_model,
            machine.nproc
        ),
        spread: measured
            .iter()
            .map(|(m, r)| {
                (
                    m.profile_key().to_string(),
                    (r.spread() * 1000.0).round() / 1000.0,
                )
            })
            .collect(),
        ns,
    }
}

/// Run `sim kernel calibrate`.
pub fn run(args: &CalibrateArgs) -> anyhow::Result<()> {
    if args.packets == 0 || args.rounds == 0 {
        bail!("--packets and --rounds must be positive");
    }
    super::topology::install_signal_cleanup();
    let mut measured = BTreeMap::new();
    for mechanism in Mechanism::ALL {
        let result = measure(mechanism, args)
            .with_context(|| format!("calibrating {}", mechanism.name()))?;
        let rounds: Vec<String> = result.rounds.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "{:<17} -> {:<15} {:>8.0} ns/packet (rounds {}; spread {:.1}%; injected {:.0} pps; backlog drops {})",
            mechanism.name(),
            mechanism.profile_key(),
            result.median(),
            rounds.join(", "),
            result.spread() * 100.0,
            result.injected_pps,
            result.backlog_drops
        );
        measured.insert(mechanism, result);
    }
    let profile = profile(&measured, args);
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let text = toml::to_string(&profile)?;
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
