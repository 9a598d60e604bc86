//! A corpus case: one small TOML file naming the capture(s), the appliance file, options,
//! and the expected results; and the discovery of case files under directories.
//!
//! ```toml
//! description = "the flowmgr documentation's flows on a real DNS capture"
//! captures = ["../../real/tcpdump__dns_udp.pcap"]   # relative to this file
//! appliance = "../appliances/flows-doc.toml"         # optional: no appliance = parse only
//! seed = 1                                            # SYN-cookie secrets (default 1)
//! no_l4_checksum = false                              # captures taken with offload
//! needs = []                                          # e.g. ["kernel"]: skipped, visibly
//!
//! [expect]
//! error = "..."               # expected error text (rejected config, damaged capture)
//! packets = 4
//! verdicts = ["0-3 flows pass flow=dns#1"]           # per packet, run-length encoded
//! [expect.decisions]          # Pipeline::counters().rows(): "stage verdict [reason]"
//! "flows pass" = 4
//! [expect.flows]              # per-flow hits, plus "(unclassified)"
//! [expect.backends]           # "director real conns" / "director real packets_in"
//! [expect.shield]             # "context counter", non-zero shield counters
//! ```
//!
//! Not here: running a case ([`super::execute`]) or rewriting its expectations
//! ([`super::bless`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::diagnostics::LocatedError;

/// Capabilities a case may declare in `needs`.
pub const KNOWN_NEEDS: [&str; 1] = ["kernel"];

/// Directory names under a corpus root that hold configuration, not cases.
pub const CONFIG_DIRECTORIES: [&str; 2] = ["appliances", "flows"];

/// A case file as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// What the case shows (free text).
    #[serde(default)]
    pub description: String,
    /// Capture files, relative to the case file, replayed in order through one pipeline.
    pub captures: Vec<PathBuf>,
    /// Appliance file, relative to the case file; none = parse only.
    pub appliance: Option<PathBuf>,
    /// Seed for the pipeline's secrets.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Skip L4 checksum verification.
    #[serde(default)]
    pub no_l4_checksum: bool,
    /// Capabilities the case needs (see [`KNOWN_NEEDS`]).
    #[serde(default)]
    pub needs: Vec<String>,
    /// Expected results.
    #[serde(default)]
    pub expect: Expected,
}

fn default_seed() -> u64 {
    1
}

/// Expected (or actual) results of a case. Every map is ordered, so renderings are stable.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Expected {
    /// Error text (paths relative to the case file); the actual error must contain it.
    pub error: Option<String>,
    /// Packets read from the captures.
    pub packets: u64,
    /// Per-packet verdicts, run-length encoded: `"FIRST[-LAST] LABEL"`.
    pub verdicts: Option<Vec<String>>,
    /// Pipeline decisions: `"stage verdict [reason]"` → packets.
    pub decisions: BTreeMap<String, u64>,
    /// Flow hits by flow name, and `(unclassified)`.
    pub flows: BTreeMap<String, u64>,
    /// Real servers: `"director address conns"` and `"director address packets_in"`.
    pub backends: BTreeMap<String, u64>,
    /// Non-zero shield counters: `"context counter"`.
    pub shield: BTreeMap<String, u64>,
}

/// A loaded case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Name shown in reports (path under the corpus root, without `.toml`).
    pub name: String,
    /// The case file.
    pub path: PathBuf,
    /// Directory relative paths are resolved against.
    pub dir: PathBuf,
    /// Its contents.
    pub file: CaseFile,
}

impl Case {
    /// Load a case file; errors carry file, line and column.
    pub fn load(path: &Path, name: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file: CaseFile = toml::from_str(&text)
            .map_err(|e| LocatedError::from_toml(path, &text, &e).to_string())?;
        if file.captures.is_empty() {
            return Err(format!("{}: `captures` is empty", path.display()));
        }
        Ok(Self {
            name: name.to_string(),
            path: path.to_path_buf(),
            dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            file,
        })
    }
}

/// Expand a run-length encoded verdict list into one label per packet.
pub fn expand_verdicts(runs: &[String]) -> Result<Vec<String>, String> {
    let mut labels = Vec::new();
    for run in runs {
        let (range, label) = run
            .split_once(' ')
            .ok_or_else(|| format!("verdict run `{run}`: expected `FIRST[-LAST] LABEL`"))?;
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let parse = |n: &str| {
            n.parse::<usize>()
                .map_err(|_| format!("verdict run `{run}`: bad packet index `{n}`"))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if first != labels.len() || last < first {
            return Err(format!(
                "verdict run `{run}`: expected to start at packet {}",
                labels.len()
            ));
        }
        labels.extend(std::iter::repeat_n(label.to_string(), last - first + 1));
    }
    Ok(labels)
}

/// Run-length encode per-packet labels (the inverse of [`expand_verdicts`]).
pub fn encode_verdicts<S: AsRef<str>>(labels: &[S]) -> Vec<String> {
    let mut runs = Vec::new();
    let mut start = 0;
    for index in 1..=labels.len() {
        if index < labels.len() && labels[index].as_ref() == labels[start].as_ref() {
            continue;
        }
        let label = labels[start].as_ref();
        runs.push(if index - 1 == start {
            format!("{start} {label}")
        } else {
            format!("{start}-{} {label}", index - 1)
        });
        start = index;
    }
    runs
}

/// Case files under `paths` (files or directories, searched recursively; directories named
/// in [`CONFIG_DIRECTORIES`] are skipped), as `(path, name)` sorted by name.
pub fn discover(paths: &[PathBuf]) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut found = Vec::new();
    for root in paths {
        if root.is_dir() {
            walk(root, root, &mut found)?;
        } else if root.exists() {
            let name = root.with_extension("").display().to_string();
            found.push((root.clone(), name));
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{}: no such file or directory", root.display()),
            ));
        }
    }
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found.dedup_by(|a, b| a.0 == b.0);
    Ok(found)
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<(PathBuf, String)>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !CONFIG_DIRECTORIES.contains(&file_name) {
                walk(root, &path, found)?;
            }
        } else if file_name.ends_with(".toml") {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let name = relative.with_extension("").display().to_string();
            found.push((path, name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_runs_round_trip() {
        let labels = ["a", "a", "b", "a", "c", "c", "c"];
        let runs = encode_verdicts(&labels);
        assert_eq!(runs, ["0-1 a", "2 b", "3 a", "4-6 c"]);
        assert_eq!(expand_verdicts(&runs).unwrap(), labels);
        assert!(encode_verdicts::<&str>(&[]).is_empty());
    }

    #[test]
    fn verdict_runs_must_be_contiguous() {
        let error = expand_verdicts(&["0 a".into(), "2 b".into()]).unwrap_err();
        assert!(error.contains("start at packet 1"), "{error}");
        assert!(expand_verdicts(&["x a".into()]).is_err());
        assert!(expand_verdicts(&["0".into()]).is_err());
    }
}
