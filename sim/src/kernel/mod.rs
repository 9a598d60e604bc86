//! The kernel runner: the same appliance on the real Linux kernel. A [`topology`] of
//! network namespaces and veths, [`rules`] compiled from the simulator's own tables (nft
//! netdev ingress for the shield lists, nft synproxy for protected ports, the flowmgr
//! compiler's iptables-restore output for flows, nft DNAT by numgen (rr) or jhash (sh, dh,
//! mh) for NAT directors, nft `nat` dnat / snat / masquerade for `[[nat]]` rules (`ip` and
//! `ip6` tables), conntrack
//! un-NATing the replies), AF_PACKET packet I/O
//! ([`wire`]), injection and per-packet kernel outcomes ([`inject`]), the kernel rule that
//! decided each packet from nftables trace events ([`trace`], [`nftrace`]), the simulator's side
//! with its per-packet cost ([`simulate`]), a scenario's open-loop traffic
//! ([`scenario_input`]), one outcome vocabulary for both ([`outcome`]) and the per-packet
//! [`diff`] (`sim diff`, `sim run --kernel`).
//!
//! `sim kernel check|cleanup|rules|up` are the lab commands. Everything runs in namespaces
//! this runner creates, never in the host namespace.
//!
//! 802.1Q frames are injected tagged (the shield's nft chain matches `vlan id`); this
//! kernel has no 8021q sub-interfaces, so the LB clears the tag after the shield.
//!
//! IPv6 packets are injected too (tagged in the flow label; the topology has IPv6
//! addresses and routes; IPv6 directors are `ip6` DNAT maps; SYN cookies of IPv6 contexts
//! the ip6tables `SYNPROXY` target, as this kernel's nft synproxy checks IPv6 checksums
//! with the IPv4 function; IPv6 `[[nat]]` rules an `ip6` nat table; fwmark directors
//! DNAT-by-mark maps in the table of their real servers' family), unless a fwmark or
//! IPv6 director has no kernel counterpart (tun, mixed families; direct routing is plain
//! forwarding).
//!
//! Two backends ([`backend`]): the host's kernel (above), or a guest kernel with real IPVS
//! ([`guest`]: user-mode Linux 6.1; [`guest_run`]: the kernel side of a diff run inside it
//! by this same binary; [`backend_diff`]: choosing the backend, the split per feature, and
//! the director comparison with `ipvsadm`'s listings).
//!
//! Not here: VLAN sub-interfaces (neither kernel has 8021q loaded), QinQ injection, the
//! inline lab mode.

pub mod backend;
pub mod backend_diff;
pub mod calibrate;
pub mod diff;
pub mod guest;
pub mod guest_run;
pub mod inject;
pub mod input_source;
pub mod known;
pub mod nftrace;
pub mod outcome;
pub mod rules;
pub mod saturation;
pub mod scenario_input;
pub mod simulate;
pub mod tag;
pub mod topology;
pub mod trace;
pub mod wire;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::appliance::ApplianceConfig;

/// Arguments of `sim kernel`.
#[derive(clap::Args, Debug, Clone)]
pub struct KernelArgs {
    #[command(subcommand)]
    command: KernelCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum KernelCommand {
    /// Check that kernel runs are possible here (root, namespaces, nft, iptables).
    #[command(after_help = "Examples:
  sudo sim kernel check
  sudo sim kernel check && sudo sim diff scenarios/synflood.toml")]
    Check,
    /// Remove namespaces left by kernel runs whose process is gone.
    #[command(after_help = "Examples:
  sudo sim kernel cleanup
  sudo sim kernel cleanup --force    # also namespaces of live runs")]
    Cleanup {
        /// Remove every `lbsim-` namespace, even of live processes.
        #[arg(long)]
        force: bool,
    },
    /// Print the kernel rules an appliance compiles to, and the per-feature mechanisms.
    #[command(after_help = "Examples:
  sim kernel rules --appliance scenarios/appliances/game.toml
  sim kernel rules --appliance scenarios/appliances/game.toml --backend guest")]
    Rules {
        /// The appliance file.
        #[arg(long, value_name = "APPLIANCE.toml")]
        appliance: PathBuf,
        /// The kernel the rules are for (`guest`: directors as `ipvsadm` commands).
        #[arg(long, value_enum, default_value_t = backend::Backend::Host)]
        backend: backend::Backend,
    },
    /// Inside the guest kernel: run a diff's kernel side (see `guest_run`).
    #[command(hide = true)]
    GuestRun {
        /// The job file the host wrote.
        #[arg(long)]
        job: PathBuf,
        /// Where to write the result.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the topology with an appliance's rules and keep it until Ctrl-C (prints the
    /// namespace names, e.g. for `ip netns exec` by hand).
    #[command(after_help = "Examples:
  sudo sim kernel up --appliance scenarios/appliances/game.toml
  sudo ip netns list    # in another terminal, while it is up")]
    Up {
        /// The appliance file.
        #[arg(long, value_name = "APPLIANCE.toml")]
        appliance: Option<PathBuf>,
    },
    /// Measure the kernel's CPU cost per packet of each mechanism (netdev drop, allow-list
    /// forward, synproxy, conntrack + DNAT, MASQUERADE) and write the `linux` cost profile
    /// of the CPU model.
    #[command(after_help = "Examples:
  sudo sim kernel calibrate
  sudo sim kernel calibrate --packets 300000 --rounds 3 --out sim/profiles/linux.toml")]
    Calibrate(calibrate::CalibrateArgs),
    /// Where one CPU starts dropping under a SYN flood: the CPU model's prediction (the
    /// ramp scenario at each rate) and the host kernel's synproxy on one CPU, on one plot.
    #[command(after_help = "Examples:
  sudo sim kernel saturation
  sudo sim kernel saturation --scenario scenarios/cpu-ramp.toml")]
    Saturation(saturation::SaturationArgs),
    /// Inside the guest kernel: run a director-oracle job file (see `guest::driver`).
    #[command(hide = true)]
    GuestDrive {
        /// The job (JSON, written by the host).
        #[arg(long)]
        job: PathBuf,
        /// Where to write the results (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Inside the guest kernel: play the FTP comparison's script through IPVS with
    /// `ip_vs_ftp` (see `guest::ftp_run`).
    #[command(hide = true)]
    GuestFtp {
        /// Where to write the result (JSON).
        #[arg(long)]
        out: PathBuf,
        /// Through the fwmark service with persistence (else the port-21 service).
        #[arg(long)]
        fwmark: bool,
    },
}

/// Compile an appliance file's kernel rules (host backend).
pub fn rules_for(path: &Path) -> anyhow::Result<rules::KernelRules> {
    rules_on(backend::Backend::Host, path)
}

/// Compile an appliance file's kernel rules for a backend.
pub fn rules_on(backend: backend::Backend, path: &Path) -> anyhow::Result<rules::KernelRules> {
    let config = ApplianceConfig::load(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(simulate::build_on(backend, &config, base, 1)?.1)
}

/// Run `sim kernel ...`.
pub fn run(args: &KernelArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        KernelCommand::Check => {
            topology::check_environment()?;
            println!(
                "ok: root, network namespaces, ip, nft and iptables-restore are available (sim diff --kernel-backend host, sim check --kernel, sim kernel calibrate)"
            );
            for line in optional_checks() {
                println!("{line}");
            }
        }
        KernelCommand::Cleanup { force } => {
            let removed = topology::cleanup_leftovers(*force)?;
            for name in &removed {
                println!("removed {name}");
            }
            println!("{} namespace(s) removed", removed.len());
        }
        KernelCommand::Rules { appliance, backend } => {
            let rules = rules_on(*backend, appliance)?;
            let sections = [
                ("shield (nft -f)", &rules.shield_nft),
                ("flows (iptables-restore)", &rules.flows_iptables),
                ("flows (ip6tables-restore)", &rules.flows_ip6tables),
                ("directors (nft -f)", &rules.director_nft),
                ("synproxy (nft -f)", &rules.synproxy_nft),
                (
                    "synproxy IPv6 (ip6tables-restore --noflush)",
                    &rules.synproxy_ip6tables,
                ),
                ("nat (nft -f)", &rules.nat_nft),
                (
                    "directors (ipvsadm, in the guest)",
                    &rules.ipvs.commands.join("\n"),
                ),
                ("host kernel only", &rules.host_only.join("\n")),
            ];
            for (title, text) in sections.iter().filter(|(_, text)| !text.is_empty()) {
                println!("## {title}\n{text}");
            }
            print!("## features\n{}", rules.render_features());
        }
        KernelCommand::Up { appliance } => up(appliance.as_deref())?,
        KernelCommand::Calibrate(calibrate_args) => calibrate::run(calibrate_args)?,
        KernelCommand::Saturation(saturation_args) => saturation::run(saturation_args)?,
        KernelCommand::GuestRun { job, out } => guest_run::guest_main(job, out)?,
        KernelCommand::GuestDrive { job, out } => guest::driver::drive(job, out)?,
        KernelCommand::GuestFtp { out, fwmark } => {
            let service = if *fwmark {
                guest::ftp::Service::Fwmark
            } else {
                guest::ftp::Service::Port
            };
            guest::ftp_run::drive(out, service)?
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn up(appliance: Option<&Path>) -> anyhow::Result<()> {
    topology::install_signal_cleanup();
    let rules = appliance.map(rules_for).transpose()?;
    let topology = topology::Topology::create()?;
    if let Some(rules) = &rules {
        rules.install(&topology)?;
        if let Err(error) = rules.install_ipv6(&topology) {
            eprintln!("warning: IPv6 flows not installed: {error:#}");
        }
    }
    println!("up {}", topology.namespaces().join(" "));
    use std::io::Write;
    std::io::stdout().flush()?;
    loop {
        std::thread::park();
    }
}

/// What the other kernel-side commands need beyond [`topology::check_environment`]: one
/// `ok:` or `missing:` line each, naming the command that needs it (`sim kernel check`).
fn optional_checks() -> Vec<String> {
    let guest = match guest::boot::Guest::check() {
        Ok(()) => "ok: the guest kernel can start (sim diff --kernel-backend guest: real IPVS)"
            .to_string(),
        Err(why) => format!(
            "missing: the guest kernel cannot start here ({why}): sim diff uses the host kernel's nft stand-ins for directors"
        ),
    };
    // `sim inline` needs what the host backend needs (checked above) plus ethtool, to switch
    // the veths' checksum offload off; its own check lives in the front-end above this layer.
    let ethtool = std::process::Command::new("ethtool")
        .arg("--version")
        .output()
        .map_err(|e| format!("starting `ethtool` (is it installed?): {e}"))
        .and_then(|out| {
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("`ethtool --version` exited with {}", out.status))
            }
        });
    let inline = match ethtool {
        Ok(()) => "ok: ethtool and ip netns (sim inline)".to_string(),
        Err(why) => format!(
            "missing: sim inline cannot run: `ethtool` is needed to switch veth checksum offload off (install ethtool): {why}"
        ),
    };
    vec![guest, inline]
}
