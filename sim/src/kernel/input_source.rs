//! How a diff's input was made — a scenario, or captures through an appliance — so that
//! the guest kernel, running the same `sim` binary, can make the same packets again (see
//! `guest_run`).
//!
//! Not here: reading the input (see `diff::DiffInput`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

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
