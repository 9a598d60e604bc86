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

/// A configuration error located in its file.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// 1-based line and column of a byte offset in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Turn a TOML deserialisation error into a located [`ConfigError`].
pub fn locate_toml_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let (line, column) = error
        .span()
        .map_or((1, 1), |span| line_column(text, span.start));
    ConfigError {
        path: path.display().to_string(),
        line,
        column,
        message: error.message().trim().to_string(),
    }
}

impl ApplianceConfig {
    /// Load an appliance file. Unknown keys and bad values are reported with file, line and
    /// column.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let config: Self = toml::from_str(&text).map_err(|e| locate_toml_error(path, &text, &e))?;
        if config.appliance.is_some() {
            anyhow::bail!(
                "{}: `appliance = ...` belongs in a scenario's [appliance] table, not in an appliance file",
                path.display()
            );
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = 2\n  c = 3";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, text.find('=').unwrap()), (1, 3));
        assert_eq!(line_column(text, text.find('c').unwrap()), (3, 3));
        assert_eq!(line_column(text, text.rfind('2').unwrap()), (2, 6));
    }

    #[test]
    fn unknown_keys_are_located() {
        let dir = std::env::temp_dir().join(format!("lbsim-appliance-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "flows = \"x.flowmgr\"\nshields = 3\n").unwrap();
        let error = ApplianceConfig::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("bad.toml:2:1: unknown field `shields`"),
            "{error}"
        );
    }
}
