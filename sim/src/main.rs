//! The `sim` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// lbsim: a deterministic simulator and test bench for an L4 load-balancer pipeline.
#[derive(Parser, Debug)]
#[command(name = "sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Parse every packet of one or more captures and print a tcpreplay-style summary.
    Replay(sim::cli::replay::ReplayArgs),
    /// Check, compile and evaluate flowmgr (flow manager) files.
    Flows(sim::cli::flows::FlowsArgs),
    /// LVS director tools (`which`: the real server a new connection would get).
    Director(sim::cli::director::DirectorArgs),
    /// Run a scenario in virtual time and write its report.
    Run {
        #[command(flatten)]
        args: sim::cli::run::RunArgs,
        /// Then run the scenario's open-loop traffic through the Linux kernel and diff
        /// (`sim diff SCENARIO`; root).
        #[arg(long)]
        kernel: bool,
    },
    /// Kernel runner lab commands (check, cleanup, rules, up).
    Kernel(sim::kernel::KernelArgs),
    /// Run captures through the simulator and the Linux kernel and diff per-packet verdicts.
    Diff(sim::kernel::diff::DiffArgs),
    /// Run the lbsim pipeline live between two veths: real curl/ping through it (root).
    Inline(sim::cli::inline::InlineArgs),
    /// Capacity planning: sweep a scenario and report cores, memory and the first broken constraint.
    Plan(sim::cli::plan::PlanArgs),
    /// Watch a scenario run live, or replay a finished run's report.json, in a terminal UI.
    Tui(sim::cli::tui::TuiArgs),
    /// Check a corpus of cases (captures + appliance + expected results); `--bless` accepts.
    Check(sim::cli::check::CheckArgs),
    /// Write deterministic synthetic captures (floods, conversations, malformed packets).
    Gen(sim::cli::generate::GenArgs),
    /// Benchmark the workloads end to end: ns/packet, Mpps, targets, lbsim vs kernel, 2 vs 1 threads.
    Bench(sim::cli::bench::BenchArgs),
}

fn main() -> ExitCode {
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
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
