//! Sharding work over batch engines: `--partition K/N` (1-based, as cargo-nextest's
//! `--partition count:K/N`), or the engines' own variables when the flag is absent, and the
//! self-describing shard files that `sim plan merge` / `sim check merge` put back together.
//!
//! Where `K/N` comes from, first match wins: `--partition`; `LBSIM_PARTITION=K/N` (a CI
//! matrix sets it); Slurm job arrays (`SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN + 1` of
//! `SLURM_ARRAY_TASK_COUNT`); Kubernetes Indexed Jobs (`JOB_COMPLETION_INDEX + 1` of
//! `JOB_COMPLETIONS`, which the manifest sets to `spec.completions`); GitLab's `parallel:`
//! (`CI_NODE_INDEX` of `CI_NODE_TOTAL`).
//!
//! A shard file is JSON: [`Envelope`] (tool, version, the digest of the work's definition,
//! `K/N`, how many items it holds of how many) around the tool's own body. A shard that
//! errors leaves a `.failed` file instead, so the merge names it. Not here: what a shard's
//! items are (sweep points in [`super::plan`], cases in [`super::check`]).

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Format tag of every shard file.
pub const FORMAT: &str = "lbsim-shard/1";

/// One share of the work: `index` of `count`, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Partition {
    /// This shard, `1..=count`.
    pub index: usize,
    /// Shards in all.
    pub count: usize,
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Partition {
    /// Whether item `position` (0-based, in the work's order) belongs to this shard: every
    /// `count`-th item starting at `index - 1`, so neighbouring sweep points (similar cost)
    /// land on different shards.
    pub fn owns_position(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }

    /// Whether the item named `key` belongs to this shard: SipHash-1-3 (zero keys) of the
    /// name, modulo `count`. Stable across machines, versions and corpus growth (adding a
    /// case never moves the others).
    pub fn owns_key(&self, key: &str) -> bool {
        (stable_hash(key.as_bytes()) % self.count as u64) as usize == self.index - 1
    }

    /// File name of this shard's result for `tool` (`plan-shard-2-of-4.json`).
    pub fn file_name(&self, tool: &str) -> String {
        format!("{tool}-shard-{}-of-{}.json", self.index, self.count)
    }
}

/// SipHash-1-3 with zero keys: the same on every machine and run.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hasher = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    hasher.write(bytes);
    hasher.finish()
}

/// Parse `K/N` (1 <= K <= N).
pub fn parse_partition(text: &str) -> Result<Partition, String> {
    let bad = || format!("partition `{text}`: expected K/N with 1 <= K <= N, e.g. 2/4");
    let (k, n) = text.trim().split_once('/').ok_or_else(bad)?;
    let index: usize = k.trim().parse().map_err(|_| bad())?;
    let count: usize = n.trim().parse().map_err(|_| bad())?;
    if index == 0 || index > count {
        return Err(bad());
    }
    Ok(Partition { index, count })
}

/// The partition from `--partition`, else from the batch engine's environment (see the
/// module doc); `None` to do all the work. Says on stderr where an inherited one came from.
pub fn resolve(flag: Option<Partition>) -> anyhow::Result<Option<Partition>> {
    if flag.is_some() {
        return Ok(flag);
    }
    let found = from_env(&|name| std::env::var(name).ok())?;
    if let Some((partition, source)) = &found {
        eprintln!("partition {partition} from {source}");
    }
    Ok(found.map(|(p, _)| p))
}

/// The partition the environment (`var`) describes, and which variables said so.
pub fn from_env(
    var: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<(Partition, &'static str)>> {
    let number = |name: &str| -> anyhow::Result<Option<usize>> {
        var(name)
            .map(|v| v.trim().parse::<usize>())
            .transpose()
            .with_context(|| format!("{name}: not a number"))
    };
    if let Some(text) = var("LBSIM_PARTITION") {
        let partition =
            parse_partition(&text).map_err(|e| anyhow::anyhow!("LBSIM_PARTITION: {e}"))?;
        return Ok(Some((partition, "LBSIM_PARTITION")));
    }
    let sources: [(&str, &str, &str, usize, &'static str); 3] = [
        (
            "SLURM_ARRAY_TASK_ID",
            "SLURM_ARRAY_TASK_COUNT",
            "SLURM_ARRAY_TASK_MIN",
            0,
            "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT",
        ),
        (
            "JOB_COMPLETION_INDEX",
            "JOB_COMPLETIONS",
            "",
            1,
            "JOB_COMPLETION_INDEX/JOB_COMPLETIONS",
        ),
        (
            "CI_NODE_INDEX",
            "CI_NODE_TOTAL",
            "",
            0,
            "CI_NODE_INDEX/CI_NODE_TOTAL",
        ),
    ];
    for (id_var, count_var, min_var, offset, source) in sources {
        let Some(id) = number(id_var)? else { continue };
        let count = number(count_var)?.with_context(|| {
            format!("{id_var} is set but {count_var} is not: cannot tell how many shards there are")
        })?;
        // Slurm arrays may start anywhere (`--array=0-3`, `--array=1-4`).
        let min = if min_var.is_empty() {
            None
        } else {
            number(min_var)?
        };
        let index = match min {
            Some(min) => id.checked_sub(min).map(|i| i + 1),
            None => Some(id + offset),
        };
        let partition = index
            .map(|index| Partition { index, count })
            .filter(|p| p.index >= 1 && p.index <= p.count)
            .with_context(|| {
                format!(
                    "{id_var}={id} does not make a shard of {count_var}={count} (arrays must be \
                     contiguous, e.g. --array=1-{count})"
                )
            })?;
        return Ok(Some((partition, source)));
    }
    Ok(None)
}

/// What every shard file says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`FORMAT`].
    pub format: String,
    /// `plan` or `check`.
    pub tool: String,
    /// The `sim` version that wrote it.
    pub version: String,
    /// Digest of the work's definition (scenario, sweeps, duration / corpus, options): shards
    /// of one piece of work share it.
    pub definition: String,
    /// What the work is, in words (named in errors).
    pub description: String,
    /// Which shard.
    pub partition: Partition,
    /// Items in this shard.
    pub items: usize,
    /// Items in all shards.
    pub total_items: usize,
    /// Wall time of this shard, ms (measured, not deterministic).
    pub wall_ms: u64,
    /// Why the shard failed (a `.failed` file), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Envelope {
    /// A new envelope for this build of `sim`.
    pub fn new(tool: &str, definition: String, description: String, partition: Partition) -> Self {
        Self {
            format: FORMAT.into(),
            tool: tool.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            definition,
            description,
            partition,
            items: 0,
            total_items: 0,
            wall_ms: 0,
            error: None,
        }
    }
}

/// A shard file: the envelope and the tool's body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardFile<B> {
    /// About the shard.
    pub shard: Envelope,
    /// The results (absent in a `.failed` file).
    pub body: Option<B>,
}

/// Write a shard's result (or, with `body` `None`, its failure) into `dir`.
pub fn write_shard<B: Serialize>(
    dir: &Path,
    envelope: &Envelope,
    body: Option<&B>,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut path = dir.join(envelope.partition.file_name(&envelope.tool));
    if body.is_none() {
        path.set_extension("failed");
    }
    let text = serde_json::to_string(&serde_json::json!({ "shard": envelope, "body": body }))?;
    // Write then rename: a merge waiting on the directory never reads half a file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text + "\n")
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The shard files named by `inputs` (files, or directories holding `TOOL-shard-*.json` and
/// `.failed` files).
pub fn shard_paths(tool: &str, inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let prefix = format!("{tool}-shard-");
    let mut paths = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let entries = std::fs::read_dir(input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.starts_with(&prefix)
                        && (name.ends_with(".json") || name.ends_with(".failed"))
                })
                .collect();
            found.sort();
            paths.extend(found);
        } else if input.exists() {
            paths.push(input.clone());
        } else {
            bail!("{}: no such shard file or directory", input.display());
        }
    }
    Ok(paths)
}

fn read_shard<B: DeserializeOwned>(tool: &str, path: &Path) -> anyhow::Result<ShardFile<B>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: ShardFile<B> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a `sim {tool}` shard file ({FORMAT})",
            path.display()
        )
    })?;
    if file.shard.format != FORMAT || file.shard.tool != tool {
        bail!(
            "{}: a `{}` shard ({}), not a `sim {tool}` one ({FORMAT})",
            path.display(),
            file.shard.tool,
            file.shard.format
        );
    }
    Ok(file)
}

/// Shards checked to be exactly one complete piece of work, in shard order.
#[derive(Debug)]
pub struct Complete<B> {
    /// The first shard's envelope (definition, description, count).
    pub envelope: Envelope,
    /// Per shard: its file and body.
    pub shards: Vec<(PathBuf, Envelope, B)>,
}

/// Read the shard files, refuse any of another version or definition, a duplicate, a
/// failed or missing shard, and return them in shard order.
pub fn collect<B: DeserializeOwned>(tool: &str, paths: &[PathBuf]) -> anyhow::Result<Complete<B>> {
    if paths.is_empty() {
        bail!("no `sim {tool}` shard files found (expected {tool}-shard-K-of-N.json files)");
    }
    let mut by_index: BTreeMap<usize, (PathBuf, Envelope, Option<B>)> = BTreeMap::new();
    let mut first: Option<(PathBuf, Envelope)> = None;
    for path in paths {
        let file: ShardFile<B> = read_shard(tool, path)?;
        let envelope = file.shard;
        if let Some((first_path, first)) = &first {
            same_work(first_path, first, path, &envelope)?;
        } else {
            first = Some((path.clone(), envelope.clone()));
        }
        let index = envelope.partition.index;
        if let Some((other, _, _)) = by_index.get(&index) {
            bail!(
                "shard {} appears twice: {} and {} (each shard must be merged once)",
                envelope.partition,
                other.display(),
                path.display()
            );
        }
        by_index.insert(index, (path.clone(), envelope, file.body));
    }
    let (_, envelope) = first.expect("paths is not empty");
    let count = envelope.partition.count;
    let missing: Vec<String> = (1..=count)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    let failed: Vec<String> = by_index
        .values()
        .filter(|(_, e, body)| body.is_none() || e.error.is_some())
        .map(|(path, e, _)| {
            let why = e.error.as_deref().unwrap_or("no results");
            format!("shard {} failed ({}): {why}", e.partition, path.display())
        })
        .collect();
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    if !missing.is_empty() {
        bail!(
            "shard{} {} of `{}` missing ({} of {count} present): re-run {} with --partition K/N",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            envelope.description,
            by_index.len(),
            if missing.len() > 1 { "them" } else { "it" },
        );
    }
    let shards = by_index
        .into_values()
        .map(|(path, e, body)| (path, e, body.expect("failed shards refused above")))
        .collect();
    Ok(Complete { envelope, shards })
}

fn same_work(
    first_path: &Path,
    first: &Envelope,
    path: &Path,
    other: &Envelope,
) -> anyhow::Result<()> {
    let differs = |what: &str, a: &str, b: &str| {
        anyhow::anyhow!(
            "{} is a shard of other work than {}: {what} `{b}` vs `{a}` (merge only the shards \
             of one run)",
            path.display(),
            first_path.display()
        )
    };
    if other.version != first.version {
        return Err(differs("sim version", &first.version, &other.version));
    }
    if other.definition != first.definition {
        return Err(differs(
            "definition",
            &format!("{} ({})", first.description, first.definition),
            &format!("{} ({})", other.description, other.definition),
        ));
    }
    if other.partition.count != first.partition.count {
        return Err(differs(
            "shard count",
            &first.partition.count.to_string(),
            &other.partition.count.to_string(),
        ));
    }
    Ok(())
}

/// With `wait`, poll `inputs` until every shard of the work is present (finished or
/// failed), showing shards done / total; then the shard files. Without, the files now.
pub fn wait_for_shards(
    tool: &str,
    inputs: &[PathBuf],
    wait: Option<Duration>,
) -> anyhow::Result<Vec<PathBuf>> {
    let Some(limit) = wait else {
        return shard_paths(tool, inputs);
    };
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} shards ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("sim {tool} merge: waiting"));
    let mut reported = usize::MAX;
    loop {
        let paths = shard_paths(tool, inputs).unwrap_or_default();
        let count = paths
            .iter()
            .find_map(|p| read_shard::<serde_json::Value>(tool, p).ok())
            .map(|f| f.shard.partition.count);
        if let Some(count) = count {
            bar.set_length(count as u64);
            bar.set_position(paths.len() as u64);
            if bar.is_hidden() && paths.len() != reported {
                eprintln!("sim {tool} merge: {}/{count} shards done", paths.len());
                reported = paths.len();
            }
            if paths.len() >= count {
                bar.finish_and_clear();
                return Ok(paths);
            }
        }
        if started.elapsed() >= limit {
            bar.finish_and_clear();
            // Merge what is there: the error names the missing shards.
            return shard_paths(tool, inputs);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether progress bars are drawn: only when stderr is a terminal and `CI` is not set (logs
/// of CI runs and redirected stderr stay free of bar redraws).
pub fn progress_visible() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// A points-done bar for one shard's own work (hidden unless [`progress_visible`]).
pub fn item_bar(what: &str, total: usize) -> indicatif::ProgressBar {
    if !progress_visible() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

/// A spinner with elapsed time for a step of unknown length (hidden unless
/// [`progress_visible`]); clear it with `finish_and_clear`.
pub fn step_spinner(what: &str) -> indicatif::ProgressBar {
    if !progress_visible() {
        return indicatif::ProgressBar::hidden();
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    spinner.set_message(what.to_string());
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn partitions_parse_and_refuse_nonsense() {
        assert_eq!(parse_partition("2/4"), Ok(Partition { index: 2, count: 4 }));
        for bad in ["0/4", "5/4", "2", "a/b", "1/0"] {
            assert!(parse_partition(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn engines_variables_give_the_partition() {
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        let (p, _) = from_env(&slurm).unwrap().unwrap();
        assert_eq!(p, Partition { index: 3, count: 4 });
        let k8s = env(&[("JOB_COMPLETION_INDEX", "0"), ("JOB_COMPLETIONS", "3")]);
        assert_eq!(
            from_env(&k8s).unwrap().unwrap().0,
            Partition { index: 1, count: 3 }
        );
        let gitlab = env(&[("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "2")]);
        assert_eq!(
            from_env(&gitlab).unwrap().unwrap().0,
            Partition { index: 2, count: 2 }
        );
        let variable_first = env(&[
            ("LBSIM_PARTITION", "1/2"),
            ("CI_NODE_INDEX", "2"),
            ("CI_NODE_TOTAL", "2"),
        ]);
        assert_eq!(
            from_env(&variable_first).unwrap().unwrap().0,
            Partition { index: 1, count: 2 }
        );
        assert!(from_env(&env(&[])).unwrap().is_none());
        let no_count = env(&[("JOB_COMPLETION_INDEX", "1")]);
        assert!(format!("{:#}", from_env(&no_count).unwrap_err()).contains("JOB_COMPLETIONS"));
        let sparse = env(&[
            ("SLURM_ARRAY_TASK_ID", "9"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ]);
        assert!(from_env(&sparse).is_err());
    }

    #[test]
    fn every_item_has_exactly_one_shard() {
        for count in 1..6 {
            for position in 0..50 {
                let key = format!("case-{position}");
                let owners = |f: &dyn Fn(&Partition) -> bool| {
                    (1..=count)
                        .filter(|&index| f(&Partition { index, count }))
                        .count()
                };
                assert_eq!(owners(&|p| p.owns_position(position)), 1);
                assert_eq!(owners(&|p| p.owns_key(&key)), 1);
            }
        }
        // The case hash is fixed: a different one would move cases between shards.
        assert_eq!(stable_hash(b"real/game-syn"), stable_hash(b"real/game-syn"));
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
    }
}
