//! The `sim` command line.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// The exit-code table, shown after `sim --help` and in the README.
const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    failed checks: a scenario's [expect] failed, a corpus regression, an unexplained
       kernel disagreement, a damaged capture or a flowmgr file with errors
  2    usage or I/O error: bad arguments, a missing capture, scenario or flowmgr file,
       an invalid configuration
  141  stdout was closed by its reader (e.g. `| head`): output stops quietly

Examples:
  sim run scenarios/synflood.toml
  sim replay capture.pcap --packets - | head
  sim completions bash > /etc/bash_completion.d/sim";

/// lbsim: a deterministic simulator and test bench for an L4 load-balancer pipeline.
#[derive(Parser, Debug)]
#[command(name = "sim", version, about, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse every packet of one or more captures and print a tcpreplay-style summary.
    #[command(after_help = "Examples:
  sim replay pcaps/gen/synflood-web.pcap
  sim replay capture.pcapng.gz --packets - | head
  sim replay a.pcap b.pcap --json")]
    Replay(sim::cli::replay::ReplayArgs),
    /// Check, compile and evaluate flowmgr (flow manager) files.
    #[command(after_help = "Examples:
  sim flows check scenarios/flows/game.flowmgr
  sim flows eval scenarios/flows/game.flowmgr --packet 'tcp 198.51.100.7:40000 > 10.10.10.10:25565' --explain
  sim flows eval scenarios/flows/game.flowmgr --pcap pcaps/gen/synflood-game.pcap")]
    Flows(sim::cli::flows::FlowsArgs),
    /// LVS director tools (`which`: the real server a new connection would get).
    #[command(after_help = "Examples:
  sim director which --appliance pcaps/cases/appliances/director-web.toml --packet 'tcp 198.51.100.7:40000 > 192.0.2.10:80 mark 80'")]
    Director(sim::cli::director::DirectorArgs),
    /// Run a scenario in virtual time and write its report.
    #[command(after_help = "Examples:
  sim run scenarios/synflood.toml
  sim run scenarios/synflood.toml --duration 500ms --seed 3 --packets packets.jsonl
  sim run scenarios/failover.toml --tui")]
    Run {
        #[command(flatten)]
        args: sim::cli::run::RunArgs,
        /// Then run the scenario's open-loop traffic through the Linux kernel and diff
        /// (`sim diff SCENARIO`; root).
        #[arg(long)]
        kernel: bool,
    },
    /// Kernel runner lab commands (check, cleanup, rules, up).
    #[command(after_help = "Examples:
  sim kernel check
  sim kernel rules --appliance pcaps/cases/appliances/web-vip.toml
  sudo sim kernel cleanup")]
    Kernel(sim::kernel::KernelArgs),
    /// Run captures through the simulator and the Linux kernel and diff per-packet verdicts.
    #[command(after_help = "Examples:
  sudo sim diff scenarios/synflood.toml
  sudo sim diff --appliance pcaps/cases/appliances/web-vip.toml pcaps/gen/synflood-web.pcap")]
    Diff(sim::kernel::diff::DiffArgs),
    /// Run the lbsim pipeline live between two veths: real curl/ping through it (root).
    #[command(after_help = "Examples:
  sudo sim inline scenarios/synflood.toml --duration 30s")]
    Inline(sim::cli::inline::InlineArgs),
    /// Capacity planning: sweep a scenario and report cores, memory and the first broken constraint.
    #[command(after_help = "Examples:
  sim plan scenarios/synflood.toml --sweep flood.rate=100k..20M
  sim plan scenarios/synflood.toml --sweep queues=1..4 --duration 500ms
  sim plan scenarios/failover.toml --sweep seed=1..1000 --duration 50ms
  sim plan scenarios/synflood.toml --sweep flood.rate=100k..20M --partition 2/4 --shard-out shards/
  sim plan merge shards/ --out plan/")]
    Plan(sim::cli::plan::PlanArgs),
    /// Watch a scenario run live, or replay a finished run's report.json, in a terminal UI.
    #[command(after_help = "Examples:
  sim tui scenarios/synflood.toml
  sim tui reports/synflood/report.json --paused")]
    Tui(sim::cli::tui::TuiArgs),
    /// Check a corpus of cases (captures, appliance, expected results); `--bless` accepts new results.
    #[command(after_help = "Examples:
  sim check pcaps/cases
  sim check pcaps/cases --junit junit.xml
  sim check pcaps/cases --bless
  sim check pcaps/cases --partition 2/4 --shard-out shards/
  sim check merge shards/ --junit junit.xml")]
    Check(sim::cli::check::CheckArgs),
    /// Write deterministic synthetic captures (floods, conversations, malformed packets).
    #[command(after_help = "Examples:
  sim gen syn-flood --count 1000 -o flood.pcap
  sim gen syn-flood --dst 192.0.2.10:80 --rate 100000 -o web-flood.pcap")]
    Gen(sim::cli::generate::GenArgs),
    /// Import keepalived.conf / ipvsadm / iptables-save files into an appliance TOML (+ flows).
    #[command(after_help = "Examples:
  sim import keepalived.conf --out appliance.toml
  sim import ipvsadm-save.txt iptables-save.txt --out imported/")]
    Import(sim::cli::confio::ImportArgs),
    /// Export an appliance as keepalived.conf, ipvsadm-restore, iptables-restore or nft input.
    #[command(after_help = "Examples:
  sim export scenarios/appliances/game.toml --to ipvsadm
  sim export scenarios/appliances/game.toml --to iptables --out rules.v4")]
    Export(sim::cli::confio::ExportArgs),
    /// Benchmark the workloads end to end: ns/packet, Mpps, targets, lbsim vs kernel, 2 vs 1 threads.
    #[command(after_help = "Examples:
  sim bench --quick
  sim bench --workloads parse,syn_cookie --json")]
    Bench(sim::cli::bench::BenchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(sim::cli::docs::CompletionsArgs),
    /// Print the man page, generated from this command line (`--dir`: one page per command).
    Man(sim::cli::docs::ManArgs),
}

/// Exit status when the reader of stdout went away (128 + SIGPIPE, as a shell reports a tool
/// killed by SIGPIPE).
const CLOSED_STDOUT: u8 = 141;

/// `print!` panics when stdout's reader has gone (`sim run … | head -1`). Resetting SIGPIPE
/// would need `unsafe` in main; instead every such panic, from any subcommand, ends the
/// process quietly here, before the default hook prints anything.
fn end_quietly_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(i32::from(CLOSED_STDOUT));
        }
        default_hook(info);
    }));
}

/// Whether an error is a write to a closed pipe (`write_all` on stdout returns it as an error).
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    end_quietly_on_closed_stdout();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => sim::cli::replay::run(&args),
        Command::Flows(args) => sim::cli::flows::run(&args),
        Command::Director(args) => sim::cli::director::run(&args),
        Command::Run { args, kernel } => sim::cli::run::run(&args).and_then(|code| {
            if !kernel || code != std::process::ExitCode::SUCCESS {
                return Ok(code);
            }
            sim::kernel::diff::run_after_simulation(&args.scenario, args.seed, args.out.as_deref())
        }),
        Command::Kernel(args) => sim::kernel::run(&args),
        Command::Diff(args) => sim::kernel::diff::run(&args),
        Command::Inline(args) => sim::cli::inline::run(&args),
        Command::Plan(args) => sim::cli::plan::run(&args),
        Command::Tui(args) => sim::cli::tui::run(&args),
        Command::Check(args) => sim::cli::check::run(&args),
        Command::Gen(args) => sim::cli::generate::run(&args),
        Command::Bench(args) => sim::cli::bench::run(&args),
        Command::Completions(args) => sim::cli::docs::completions(Cli::command(), &args),
        Command::Man(args) => sim::cli::docs::man(Cli::command(), &args),
        Command::Import(args) => sim::cli::confio::run_import(&args),
        Command::Export(args) => sim::cli::confio::run_export(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::from(CLOSED_STDOUT),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
