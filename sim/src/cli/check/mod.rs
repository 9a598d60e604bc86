//! `sim check [PATHS...]`: regression checks over a corpus of cases (captures + appliance
//! file + expected results, see [`case`]). Every case runs in parallel (rayon); output is in
//! case-name order whatever the scheduling: a `PASS`/`FAIL`/`SKIP` line per case, the
//! differences of failed cases (counters expected → actual, and the first packets whose
//! verdict moved, decoded), and a summary. `--bless` rewrites the expectations of failing
//! cases in place; `--junit FILE` writes JUnit XML (quick-junit).
//!
//! Cases that declare `needs = ["kernel"]` also run their captures through the Linux
//! kernel with `--kernel` (root; [`crate::kernel::diff`]): an unexplained disagreement fails
//! the case. Without `--kernel` they are skipped with the reason printed; nothing is skipped
//! silently.
//!
//! `--partition K/N` checks only the cases whose name hashes to shard K (see
//! [`crate::cli::shard`]); `--shard-out DIR` keeps its results for `sim check merge`
//! ([`sharded`]).

pub mod bless;
pub mod case;
pub mod compare;
pub mod execute;
pub mod sharded;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::cli::shard::{self, Partition};
use case::{Case, KNOWN_NEEDS};

/// Default corpus directory.
pub const DEFAULT_CORPUS: &str = "pcaps/cases";

/// Arguments of `sim check`.
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CheckArgs {
    /// `sim check merge`: put shards back together.
    #[command(subcommand)]
    pub command: Option<CheckCommand>,
    /// Case files or directories of cases (searched recursively).
    #[arg(default_value = DEFAULT_CORPUS)]
    pub paths: Vec<PathBuf>,
    /// Rewrite the expectations of failing cases with their actual results.
    #[arg(long)]
    pub bless: bool,
    /// Write a JUnit XML report to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also run the kernel side of cases that declare `needs = ["kernel"]` (root: network
    /// namespaces, nftables, iptables): their packets must get the same outcome from the
    /// Linux kernel as from lbsim, or the difference must be explained.
    #[arg(long)]
    pub kernel: bool,
    /// Check only shard K of N (1-based): the cases whose name hashes to K-1 modulo N.
    /// Without the flag, also taken from LBSIM_PARTITION, a Slurm array task, a Kubernetes
    /// Indexed Job or GitLab's parallel.
    #[arg(long, value_name = "K/N", value_parser = shard::parse_partition)]
    pub partition: Option<Partition>,
    /// Write this shard's results as `check-shard-K-of-N.json` into DIR, for `sim check merge`.
    #[arg(long, value_name = "DIR")]
    pub shard_out: Option<PathBuf>,
}

/// `sim check` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum CheckCommand {
    /// Merge the shards of a partitioned `sim check`: the report, JUnit and exit code of one
    /// whole run.
    #[command(after_help = "Examples:
  sim check pcaps/cases --partition 1/2 --shard-out shards/
  sim check pcaps/cases --partition 2/2 --shard-out shards/
  sim check merge shards/ --junit junit.xml")]
    Merge(sharded::MergeArgs),
}

/// How cases are run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Rewrite the expectations of failing cases.
    pub bless: bool,
    /// Run the kernel side of `needs = ["kernel"]` cases.
    pub kernel: bool,
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaseStatus {
    /// Results as expected.
    Pass,
    /// Results differ (or the case file itself is broken); the lines say how.
    Fail(Vec<String>),
    /// Expectations were rewritten (`--bless`); the lines say what moved.
    Blessed(Vec<String>),
    /// Not run, for the reason given.
    Skip(String),
}

/// One case's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    /// Case name.
    pub name: String,
    /// Case file.
    pub path: PathBuf,
    /// Packets replayed.
    pub packets: u64,
    /// Outcome.
    pub status: CaseStatus,
    /// Wall-clock time (JUnit only; never in the text output).
    pub elapsed: Duration,
}

/// Run every case under `paths` (simulator side only); results in case-name order.
pub fn check_paths(paths: &[PathBuf], bless: bool) -> anyhow::Result<Vec<CaseResult>> {
    check_paths_with(
        paths,
        CheckOptions {
            bless,
            kernel: false,
        },
    )
}

/// Run every case under `paths` with `options`; results in case-name order.
pub fn check_paths_with(
    paths: &[PathBuf],
    options: CheckOptions,
) -> anyhow::Result<Vec<CaseResult>> {
    let cases = case::discover(paths).context("finding cases")?;
    Ok(check_cases(&cases, options))
}

/// Run these `(path, name)` cases with `options`; results in the given order.
pub fn check_cases(cases: &[(PathBuf, String)], options: CheckOptions) -> Vec<CaseResult> {
    let bar = crate::cli::shard::item_bar("sim check: cases", cases.len());
    let results = cases
        .par_iter()
        .map(|(path, name)| {
            let result = check_case_with(path, name, options);
            bar.inc(1);
            result
        })
        .collect();
    bar.finish_and_clear();
    results
}

/// Run one case file (simulator side only).
pub fn check_case(path: &std::path::Path, name: &str, bless: bool) -> CaseResult {
    check_case_with(
        path,
        name,
        CheckOptions {
            bless,
            kernel: false,
        },
    )
}

/// Run one case file with `options`.
pub fn check_case_with(path: &std::path::Path, name: &str, options: CheckOptions) -> CaseResult {
    let bless = options.bless;
    let started = Instant::now();
    let mut result = CaseResult {
        name: name.to_string(),
        path: path.to_path_buf(),
        packets: 0,
        status: CaseStatus::Pass,
        elapsed: Duration::ZERO,
    };
    result.status = match Case::load(path, name) {
        Err(error) => CaseStatus::Fail(vec![format!("  {error}")]),
        Ok(case) => match skip_reason(&case, options.kernel) {
            Some(Ok(reason)) => CaseStatus::Skip(reason),
            Some(Err(error)) => CaseStatus::Fail(vec![format!("  {error}")]),
            None => {
                let actual = execute::execute(&case);
                result.packets = actual.results.packets;
                match judge(&case, &actual, bless) {
                    CaseStatus::Pass if needs_kernel(&case) => kernel_side(&case),
                    status => status,
                }
            }
        },
    };
    result.elapsed = started.elapsed();
    result
}

fn judge(case: &Case, actual: &execute::Actual, bless: bool) -> CaseStatus {
    let differences = compare::compare(&case.file.expect, actual);
    let verdicts_missing = case.file.expect.verdicts.is_none()
        && actual
            .results
            .verdicts
            .as_ref()
            .is_some_and(|v| !v.is_empty() && v.len() <= execute::MAX_VERDICT_RUNS);
    if !bless || (differences.is_empty() && !verdicts_missing) {
        return match differences.is_empty() {
            true => CaseStatus::Pass,
            false => CaseStatus::Fail(differences),
        };
    }
    match bless::bless(&case.path, &actual.results) {
        Ok(()) => CaseStatus::Blessed(differences),
        Err(error) => CaseStatus::Fail(vec![format!("  cannot bless: {error:#}")]),
    }
}

fn needs_kernel(case: &Case) -> bool {
    case.file.needs.iter().any(|need| need == "kernel")
}

/// The kernel side of a case: the same captures through the appliance's rules on Linux
/// (`sim diff`); any unexplained disagreement fails the case.
fn kernel_side(case: &Case) -> CaseStatus {
    let Some(appliance) = &case.file.appliance else {
        return CaseStatus::Fail(vec!["  needs kernel but names no appliance".into()]);
    };
    let captures: Vec<PathBuf> = case
        .file
        .captures
        .iter()
        .map(|c| case.dir.join(c))
        .collect();
    let gap = Duration::from_micros(100);
    match crate::kernel::diff::run_diff(
        &case.dir.join(appliance),
        &captures,
        &[],
        gap,
        case.file.seed,
    ) {
        Ok(report) if report.unexplained() == 0 => CaseStatus::Pass,
        Ok(report) => {
            let lines = crate::kernel::diff::render(&report)
                .lines()
                .map(|l| format!("  kernel: {l}"))
                .collect();
            CaseStatus::Fail(lines)
        }
        Err(error) => CaseStatus::Fail(vec![format!("  kernel side: {error:#}")]),
    }
}

/// Why a case is skipped (`Ok`), or an unknown requirement (`Err`); `None` to run it.
fn skip_reason(case: &Case, kernel: bool) -> Option<Result<String, String>> {
    if let Some(unknown) = case
        .file
        .needs
        .iter()
        .find(|need| !KNOWN_NEEDS.contains(&need.as_str()))
    {
        return Some(Err(format!(
            "{}: unknown requirement `{unknown}` in `needs` (known: {})",
            case.path.display(),
            KNOWN_NEEDS.join(", ")
        )));
    }
    let need = case
        .file
        .needs
        .iter()
        .find(|need| !(kernel && *need == "kernel"))?;
    Some(Ok(format!(
        "needs {need}: run `sim check --kernel` (as root) to include the kernel side"
    )))
}

/// Counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Expectations rewritten.
    pub blessed: usize,
    /// Skipped.
    pub skipped: usize,
}

/// Count results by status.
pub fn tally(results: &[CaseResult]) -> Tally {
    let mut tally = Tally::default();
    for result in results {
        match result.status {
            CaseStatus::Pass => tally.passed += 1,
            CaseStatus::Fail(_) => tally.failed += 1,
            CaseStatus::Blessed(_) => tally.blessed += 1,
            CaseStatus::Skip(_) => tally.skipped += 1,
        }
    }
    tally
}

/// The text report: one line per case, differences under failed and blessed cases, and a
/// summary line. Deterministic (no timings).
pub fn render(results: &[CaseResult]) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for result in results {
        let name = &result.name;
        let (word, detail, lines) = match &result.status {
            CaseStatus::Pass => ("PASS", format!("{} packets", result.packets), None),
            CaseStatus::Fail(lines) => ("FAIL", format!("{}", result.path.display()), Some(lines)),
            CaseStatus::Blessed(lines) => ("BLESS", "expectations rewritten".into(), Some(lines)),
            CaseStatus::Skip(reason) => ("SKIP", reason.clone(), None),
        };
        out.push_str(&format!("{word:<5} {name:<width$}  {detail}\n"));
        for line in lines.into_iter().flatten() {
            out.push_str(line);
            out.push('\n');
        }
    }
    let t = tally(results);
    out.push_str(&format!(
        "sim check: {} passed, {} failed, {} blessed, {} skipped ({} cases)\n",
        t.passed,
        t.failed,
        t.blessed,
        t.skipped,
        results.len()
    ));
    out
}

/// The JUnit report: one test suite, one test case per case.
pub fn junit_report(results: &[CaseResult]) -> Report {
    let mut suite = TestSuite::new("sim check");
    for result in results {
        let status = match &result.status {
            CaseStatus::Pass | CaseStatus::Blessed(_) => TestCaseStatus::success(),
            CaseStatus::Fail(lines) => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message("results differ from the case's expectations");
                status.set_description(lines.join("\n"));
                status
            }
            CaseStatus::Skip(reason) => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(reason.as_str());
                status
            }
        };
        let mut test_case = TestCase::new(result.name.as_str(), status);
        test_case.set_classname(result.path.display().to_string());
        test_case.set_time(result.elapsed);
        suite.add_test_case(test_case);
    }
    let mut report = Report::new("sim check");
    report.add_test_suite(suite);
    report
}

/// Write the JUnit report of `results` to `path`.
pub fn write_junit(results: &[CaseResult], path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    junit_report(results).serialize(std::io::BufWriter::new(file))?;
    Ok(())
}

/// Exit status of a run: 1 when a case failed.
pub fn exit_code(results: &[CaseResult]) -> ExitCode {
    if tally(results).failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Run `sim check`.
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    if let Some(CheckCommand::Merge(merge)) = &args.command {
        return sharded::merge(merge);
    }
    let started = Instant::now();
    let options = CheckOptions {
        bless: args.bless,
        kernel: args.kernel,
    };
    if let Some(partition) = shard::resolve(args.partition)? {
        return sharded::run_shard(args, options, partition);
    }
    let results = check_paths_with(&args.paths, options)?;
    print!("{}", render(&results));
    if let Some(path) = &args.junit {
        write_junit(&results, path)?;
    }
    eprintln!(
        "measured: {} cases in {:.2} s wall clock",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(exit_code(&results))
}
