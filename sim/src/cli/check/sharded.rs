//! `sim check … --partition K/N` and `sim check merge SHARD…`: a corpus checked as N shards
//! (Slurm array, Kubernetes Indexed Job, CI matrix) and put back together.
//!
//! A shard discovers the whole corpus, checks the cases whose name hashes to it (see
//! [`Partition::owns_key`]: adding a case never moves another), prints and exits like a
//! `sim check` of those cases, and with `--shard-out DIR` writes `check-shard-K-of-N.json`:
//! every result of its cases. The shards' definition covers the sorted list of every case
//! name and the options, so shards of another corpus, version or `--kernel` setting are
//! refused. The merge prints the text report of the whole corpus on stdout, writes its JUnit
//! and exits as the single run would (1 when a case failed); the per-shard summary goes to
//! stderr, so stdout is byte for byte the single run's.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::{CaseResult, CheckArgs, CheckOptions, case, check_cases, exit_code, render, tally};
use crate::cli::shard::{self, Envelope, Partition};

/// Arguments of `sim check merge`.
#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// Shard files, or directories holding `check-shard-K-of-N.json` files.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Write the JUnit XML report of the whole corpus to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Wait up to this long for every shard to appear (e.g. `30m`), showing shards done.
    #[arg(long, value_parser = parse_wait)]
    pub wait: Option<Duration>,
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    crate::scenario::units::parse_duration(text).map(Duration::from_nanos)
}

/// What a check shard holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckShard {
    /// Every case name of the corpus, so the merge can tell a complete set of shards.
    pub corpus: Vec<String>,
    /// This shard's results, in case-name order.
    pub results: Vec<CaseResult>,
}

fn definition(names: &[String], options: CheckOptions) -> String {
    let spec = serde_json::json!([
        env!("CARGO_PKG_VERSION"),
        names,
        options.kernel,
        options.bless
    ]);
    format!("{:016x}", shard::stable_hash(spec.to_string().as_bytes()))
}

/// Check one shard of the corpus: print and exit like `sim check` of its cases; with
/// `--shard-out`, write its shard file (a `.failed` one if the corpus cannot be read).
pub fn run_shard(
    args: &CheckArgs,
    options: CheckOptions,
    partition: Partition,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let cases = case::discover(&args.paths).context("finding cases");
    let names: Vec<String> = match &cases {
        Ok(cases) => cases.iter().map(|(_, name)| name.clone()).collect(),
        Err(_) => Vec::new(),
    };
    let paths: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
    let mut envelope = Envelope::new(
        "check",
        definition(&names, options),
        format!("sim check {} ({} cases)", paths.join(" "), names.len()),
        partition,
    );
    let cases = match cases {
        Ok(cases) => cases,
        Err(error) => {
            envelope.error = Some(format!("{error:#}"));
            if let Some(dir) = &args.shard_out {
                shard::write_shard::<CheckShard>(dir, &envelope, None)?;
            }
            return Err(error);
        }
    };
    let mine: Vec<(PathBuf, String)> = cases
        .into_iter()
        .filter(|(_, name)| partition.owns_key(name))
        .collect();
    let results = check_cases(&mine, options);
    print!("{}", render(&results));
    if let Some(path) = &args.junit {
        super::write_junit(&results, path)?;
    }
    envelope.items = results.len();
    envelope.total_items = names.len();
    envelope.wall_ms = started.elapsed().as_millis() as u64;
    if let Some(dir) = &args.shard_out {
        let code = exit_code(&results);
        let body = CheckShard {
            corpus: names,
            results,
        };
        let path = shard::write_shard(dir, &envelope, Some(&body))?;
        eprintln!(
            "shard {partition}: {} of {} cases in {:.2} s: {}",
            envelope.items,
            envelope.total_items,
            envelope.wall_ms as f64 / 1e3,
            path.display()
        );
        return Ok(code);
    }
    Ok(exit_code(&results))
}

/// The `sim check merge` command.
pub fn merge(args: &MergeArgs) -> anyhow::Result<ExitCode> {
    let paths = shard::wait_for_shards("check", &args.shards, args.wait)?;
    let complete = shard::collect::<CheckShard>("check", &paths)?;
    let corpus = &complete.shards[0].2.corpus;
    let mut results: Vec<CaseResult> = Vec::with_capacity(corpus.len());
    for (path, envelope, body) in &complete.shards {
        if let Some(stray) = body
            .results
            .iter()
            .find(|r| !envelope.partition.owns_key(&r.name))
        {
            bail!(
                "{}: case `{}` does not belong to shard {}",
                path.display(),
                stray.name,
                envelope.partition
            );
        }
        results.extend(body.results.iter().cloned());
    }
    // The single run's order: by name (discovery sorts so).
    results.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<&String> = results.iter().map(|r| &r.name).collect();
    if names.len() != corpus.len() || names.iter().zip(corpus).any(|(a, b)| *a != b) {
        bail!(
            "the shards hold {} cases, the corpus has {}: a shard file was edited or cut short",
            names.len(),
            corpus.len()
        );
    }
    print!("{}", render(&results));
    if let Some(path) = &args.junit {
        super::write_junit(&results, path)?;
    }
    for (path, envelope, body) in &complete.shards {
        let t = tally(&body.results);
        let failed = if t.failed > 0 {
            format!(", {} FAILED", t.failed)
        } else {
            String::new()
        };
        eprintln!(
            "shard {}: {} cases{failed} in {:.2} s ({})",
            envelope.partition,
            envelope.items,
            envelope.wall_ms as f64 / 1e3,
            path.display()
        );
    }
    Ok(exit_code(&results))
}
