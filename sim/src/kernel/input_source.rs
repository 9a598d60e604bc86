//! A diff's input ([`DiffInput`]: the appliance and the packets) and how it was made
//! ([`InputSource`]: a scenario, or captures through an appliance), so that the guest
//! kernel, running the same `sim` binary, can make the same packets again (see
//! `guest_run`).
//!
//! Not here: running it (see `diff`, `backend_diff`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::inject::{InputPacket, read_inputs};
use super::scenario_input;
use crate::appliance::ApplianceConfig;

/// How a diff's input was made (so that the guest kernel can make it again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputSource {
    /// A scenario's open-loop traffic.
    Scenario {
        /// The scenario file.
        path: PathBuf,
        /// The seed asked for.
        seed: Option<u64>,
        /// The packet cap.
        max_packets: usize,
    },
    /// Captures through an appliance file.
    Captures {
        /// The appliance file.
        appliance: PathBuf,
        /// The captures.
        files: Vec<PathBuf>,
        /// The seed.
        seed: u64,
        /// The packet cap.
        max_packets: usize,
    },
}

impl InputSource {
    /// The same source with absolute paths.
    pub fn absolute(&self) -> anyhow::Result<Self> {
        let absolute = |p: &Path| {
            std::fs::canonicalize(p).with_context(|| format!("locating {}", p.display()))
        };
        Ok(match self {
            Self::Scenario {
                path,
                seed,
                max_packets,
            } => Self::Scenario {
                path: absolute(path)?,
                seed: *seed,
                max_packets: *max_packets,
            },
            Self::Captures {
                appliance,
                files,
                seed,
                max_packets,
            } => Self::Captures {
                appliance: absolute(appliance)?,
                files: files
                    .iter()
                    .map(|f| absolute(f))
                    .collect::<Result<_, _>>()?,
                seed: *seed,
                max_packets: *max_packets,
            },
        })
    }
}

/// What to diff: an appliance and packets.
#[derive(Debug)]
pub struct DiffInput {
    /// How it was made.
    pub source: InputSource,
    /// What it is (for the report).
    pub subject: String,
    /// The appliance configuration.
    pub appliance: ApplianceConfig,
    /// Directory its relative paths start from.
    pub base_dir: PathBuf,
    /// The packets.
    pub packets: Vec<InputPacket>,
    /// Seed of the simulator's secrets.
    pub seed: u64,
    /// Inputs left out.
    pub notes: Vec<String>,
}

impl DiffInput {
    /// Captures through an appliance file (at most `max_packets`).
    pub fn captures(
        appliance: &Path,
        files: &[PathBuf],
        seed: u64,
        max_packets: usize,
    ) -> anyhow::Result<Self> {
        let mut packets = read_inputs(files)?;
        let mut notes = Vec::new();
        if packets.len() > max_packets {
            notes.push(format!(
                "capped at the first {max_packets} of {} packets",
                packets.len()
            ));
            packets.truncate(max_packets);
        }
        Ok(Self {
            source: InputSource::Captures {
                appliance: appliance.to_path_buf(),
                files: files.to_vec(),
                seed,
                max_packets,
            },
            subject: files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
            appliance: ApplianceConfig::load(appliance)?,
            base_dir: appliance.parent().unwrap_or(Path::new(".")).to_path_buf(),
            packets,
            seed,
            notes,
        })
    }

    /// A scenario's appliance and open-loop traffic.
    pub fn scenario(path: &Path, seed: Option<u64>, max_packets: usize) -> anyhow::Result<Self> {
        let loaded = crate::scenario::load(path)?;
        let input = scenario_input::collect(&loaded, max_packets)?;
        Ok(Self {
            source: InputSource::Scenario {
                path: path.to_path_buf(),
                seed,
                max_packets,
            },
            subject: path.display().to_string(),
            appliance: loaded.scenario.appliance.clone(),
            base_dir: loaded.base_dir.clone(),
            packets: input.packets,
            seed: seed.unwrap_or(loaded.scenario.seed),
            notes: input.notes,
        })
    }

    /// Rebuild an input from its source (what the guest kernel does).
    pub fn from_source(source: &InputSource) -> anyhow::Result<Self> {
        match source {
            InputSource::Scenario {
                path,
                seed,
                max_packets,
            } => Self::scenario(path, *seed, *max_packets),
            InputSource::Captures {
                appliance,
                files,
                seed,
                max_packets,
            } => Self::captures(appliance, files, *seed, *max_packets),
        }
    }
}
