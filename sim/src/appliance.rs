//! The appliance file: one TOML file (or a scenario's `[appliance]` table) holding the
//! whole pipeline configuration — `flows` (path to a flowmgr file), `[shield]`, and
//! `[[director]]` tables — and the step that builds a [`Pipeline`] from it.
//!
//! Key names are those of `../shared/DESIGN.md` §5 and are kept stable: users write them by
//! hand. Unknown keys are rejected with file, line and column.
//!
//! Not here: the stages' own validation (each stage's config type validates itself when the
//! pipeline is built).

use std::path::{Path, PathBuf};

use datapath::packet::ParseOptions;
use datapath::pipeline::Pipeline;
use serde::Deserialize;

/// The appliance configuration, as written in an appliance file or a scenario's
/// `[appliance]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    /// Another appliance file to load instead of inline tables (scenario form only).
    pub appliance: Option<PathBuf>,
    /// Path to the flowmgr file, relative to the file that names it.
    pub flows: Option<PathBuf>,
    /// `[shield]` table (typed when the shield stage is wired in).
    pub shield: Option<toml::Value>,
    /// `[[director]]` tables (typed when the director stage is wired in).
    #[serde(default)]
    pub director: Vec<toml::Value>,
    /// Skip TCP/UDP/ICMP checksum verification (traffic captured with checksum offload).
    #[serde(default)]
    pub no_l4_checksum: bool,
}

/// Build the pipeline an appliance configuration describes. `base_dir` resolves relative
/// paths (the directory of the file the configuration came from); `seed` keys the stages'
/// secrets (SYN cookies) so runs are reproducible; `iface_names` are the appliance's
/// interfaces in index order.
pub fn build_pipeline(
    config: &ApplianceConfig,
    _base_dir: &Path,
    _seed: u64,
    _iface_names: &[&str],
) -> anyhow::Result<Pipeline> {
    let options = ParseOptions {
        verify_l4_checksum: !config.no_l4_checksum,
        ..Default::default()
    };
    Ok(Pipeline::new(options))
}
