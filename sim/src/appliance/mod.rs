//! The appliance file: one TOML file (or a scenario's `[appliance]` table) holding the
//! whole pipeline configuration — `flows` (path to a flowmgr file), `[shield]`, and
//! `[[director]]` tables — and the step that builds a [`Pipeline`] from it.
//!
//! Key names are those of `../shared/DESIGN.md` §5 and are kept stable: users write them by
//! hand. Unknown keys are rejected with file, line and column.
//!
//! Not here: the stages' own validation (each stage's config type validates itself when the
//! pipeline is built); what the stages saw during a run ([`report`]).

mod check;
pub mod confio;
pub mod report;

pub use self::check::check;

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use anyhow::Context;
use datapath::director::config::DirectorConfig;
use datapath::director::{DirectorOptions, Directors};
use datapath::flows::{FlowTable, TableConfig};
use datapath::nat::config::{InterfaceAddress, NatRuleConfig};
use datapath::packet::ParseOptions;
use datapath::pipeline::{Pipeline, QaTable};
use datapath::shield::ShieldConfig;
use serde::Deserialize;

use crate::diagnostics::elements::{ElementCheck, locate_in_arrays, whole};
use crate::diagnostics::{KeyPath, LocatedError, TomlSpans};

pub use self::report::{
    ApplianceReport, FlowReport, MODE_BITS, NatReport, RealReport, ServiceReport,
    ShieldContextReport, TableReport, mode_change_words, mode_names, render_report, report,
    report_with,
};

/// The appliance configuration, as written in an appliance file or a scenario's
/// `[appliance]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    /// Another appliance file to load instead of inline tables (scenario form only).
    pub appliance: Option<PathBuf>,
    /// Path to the flowmgr file, relative to the file that names it.
    pub flows: Option<PathBuf>,
    /// `[shield]` table.
    pub shield: Option<ShieldConfig>,
    /// `[[director]]` tables.
    #[serde(default)]
    pub director: Vec<DirectorConfig>,
    /// Skip TCP/UDP/ICMP checksum verification (traffic captured with checksum offload).
    #[serde(default)]
    pub no_l4_checksum: bool,
    /// `[interfaces]`: name → `address/prefix` (MASQUERADE's source address; destinations
    /// in the network leave by that interface).
    #[serde(default)]
    pub interfaces: BTreeMap<String, InterfaceAddress>,
    /// `[[nat]]` rules (iptables-style DNAT / SNAT / MASQUERADE), in order.
    #[serde(default)]
    pub nat: Vec<NatRuleConfig>,
    /// `[qa]` table: test-only settings.
    pub qa: Option<QaConfig>,
    /// `[ip]` table: the Linux IP layer's settings (kernel defaults when absent).
    #[serde(default)]
    pub ip: datapath::ip::config::IpSettings,
    /// `[[health_check]]`: what the checker does when a real server fails its check (a
    /// scenario's `check_fail` / `check_ok` events use them).
    #[serde(default)]
    pub health_check: Vec<confio::health::HealthCheckConfig>,
    /// `[ip_vs_ftp]`: the directors' FTP helper is loaded (`modprobe ip_vs_ftp`).
    pub ip_vs_ftp: Option<FtpHelperConfig>,
}

/// `[ip_vs_ftp]`: the FTP application helper of the directors.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FtpHelperConfig {
    /// Control ports (the module's `ports` parameter), 21 by default.
    #[serde(default = "default_ftp_ports")]
    pub ports: Vec<u16>,
}

fn default_ftp_ports() -> Vec<u16> {
    datapath::director::ftp::FTP_DEFAULT_PORTS.to_vec()
}

/// `[qa]`: settings that make a run exercise rare paths deterministically.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QaConfig {
    /// `full_after = { connections = 100, known_sessions = 10, ... }`: after that many
    /// packets the named table refuses new entries as if at capacity.
    #[serde(default)]
    pub full_after: QaFullAfter,
}

/// Packets after which each table reports full (keys are [`QaTable::name`]).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QaFullAfter {
    /// Director connection table.
    pub connections: Option<u64>,
    /// Director persistence templates.
    pub persistence: Option<u64>,
    /// lblc/lblcr destination caches.
    pub lblc_cache: Option<u64>,
    /// Fragment-overlap tracker.
    pub fragments: Option<u64>,
    /// Shield known sessions.
    pub known_sessions: Option<u64>,
    /// Shield per-source rate table.
    pub source_rates: Option<u64>,
    /// NAT connection tracking (`[[nat]]` rules).
    pub conntrack: Option<u64>,
}

impl QaFullAfter {
    /// The settings present, in [`QaTable::ALL`] order.
    pub fn settings(&self) -> Vec<(QaTable, u64)> {
        let values = [
            self.connections,
            self.persistence,
            self.lblc_cache,
            self.fragments,
            self.known_sessions,
            self.source_rates,
            self.conntrack,
        ];
        QaTable::ALL
            .into_iter()
            .zip(values)
            .filter_map(|(table, packets)| Some((table, packets?)))
            .collect()
    }
}

/// First synthetic firewall mark for directors declared by VIP:port (they are found by
/// their address; the mark only lets flows name them).
pub const SYNTHETIC_DIRECTOR_MARK_BASE: u32 = 0xf000;

/// Build the pipeline an appliance configuration describes. `base_dir` resolves relative
/// paths (the directory of the file the configuration came from); `seed` keys the stages'
/// secrets (SYN cookies) so runs are reproducible; `iface_names` are the appliance's
/// interfaces in index order (empty: not known, e.g. a bare capture replay).
pub fn build_pipeline(
    config: &ApplianceConfig,
    base_dir: &Path,
    seed: u64,
    iface_names: &[&str],
) -> anyhow::Result<Pipeline> {
    if let Some(file) = &config.appliance {
        let inline = config.flows.is_some()
            || config.shield.is_some()
            || !config.director.is_empty()
            || !config.nat.is_empty()
            || !config.interfaces.is_empty()
            || config.ip_vs_ftp.is_some()
            || config.ip != datapath::ip::config::IpSettings::default();
        // `[qa]` may sit next to `appliance = "file"` in a scenario: it is not a table of
        // the appliance, it is how this run treats it.
        if inline {
            anyhow::bail!(
                "[appliance] names a file ({}) and also has inline tables: use one or the other",
                file.display()
            );
        }
        let path = base_dir.join(file);
        let mut named = ApplianceConfig::load(&path)?;
        named.no_l4_checksum |= config.no_l4_checksum;
        if config.qa.is_some() {
            named.qa = config.qa.clone();
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        return build_pipeline(&named, dir, seed, iface_names);
    }
    let options = ParseOptions {
        verify_l4_checksum: !config.no_l4_checksum,
        ..Default::default()
    };
    let mut pipeline = Pipeline::new(options).with_hash_seed(seed);
    if let Some(shield) = &config.shield {
        let shield = datapath::shield::build(shield, seed, iface_names)
            .map_err(|e| anyhow::anyhow!("[shield]: {e}"))?;
        pipeline = pipeline.with_shield(shield);
    }
    if let Some(path) = &config.flows {
        let table = load_flows(&base_dir.join(path), config, iface_names)?;
        pipeline = pipeline.with_flows(table);
    }
    if !config.director.is_empty() {
        let options = DirectorOptions {
            hash_seed: seed,
            ..DirectorOptions::default()
        };
        let mut directors = Directors::build(&config.director, options)
            .map_err(|e| anyhow::anyhow!("[[director]]: {e}"))?;
        if let Some(ftp) = &config.ip_vs_ftp {
            if ftp.ports.contains(&0) {
                anyhow::bail!("[ip_vs_ftp]: ports must be 1 to 65535");
            }
            directors = directors.with_ftp(&ftp.ports);
        }
        pipeline = pipeline.with_directors(directors);
    }
    if let Some(nat) = build_nat(config, iface_names, seed)? {
        pipeline = pipeline.with_nat(nat);
    }
    let mut ip = ip_config(config, iface_names)?;
    // Connection tracking runs for NAT, the directors (DNAT) and SYN-protected ports.
    ip.conntrack = !config.nat.is_empty()
        || !config.director.is_empty()
        || config.shield.as_ref().is_some_and(|shield| {
            shield
                .context
                .iter()
                .any(|c| !c.protected_tcp_ports.is_empty())
        });
    pipeline = pipeline.with_ip(datapath::ip::IpLayer::new(ip));
    for (table, packets) in config
        .qa
        .as_ref()
        .map(|qa| qa.full_after.settings())
        .unwrap_or_default()
    {
        pipeline.report_full_after(table, packets);
    }
    Ok(pipeline)
}

/// The IP layer's settings of an appliance (`[ip]` and the `[interfaces]` addresses).
pub fn ip_config(
    config: &ApplianceConfig,
    iface_names: &[&str],
) -> anyhow::Result<datapath::ip::IpConfig> {
    datapath::ip::config::build(&config.ip, &config.interfaces, iface_names).map_err(|e| {
        if e.at.is_empty() {
            anyhow::anyhow!("[ip]: {e}")
        } else {
            anyhow::anyhow!("ip.{e}")
        }
    })
}

/// The NAT stage of an appliance (`None` without `[[nat]]` rules). Interfaces named in
/// `[interfaces]` must be the appliance's own when those are known.
pub fn build_nat(
    config: &ApplianceConfig,
    iface_names: &[&str],
    seed: u64,
) -> anyhow::Result<Option<datapath::nat::Nat>> {
    if let Some(unknown) = config
        .interfaces
        .keys()
        .find(|name| !iface_names.is_empty() && !iface_names.contains(&name.as_str()))
    {
        anyhow::bail!(
            "[interfaces]: `{unknown}` is not one of the appliance's interfaces ({})",
            iface_names.join(", ")
        );
    }
    if config.nat.is_empty() {
        return Ok(None);
    }
    datapath::nat::config::build(&config.nat, &config.interfaces, seed)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("[[nat]] {e}"))
}

/// Director name → firewall mark for the flow table: each director's `fwmark`, or for
/// directors declared by VIP:port the first free mark from [`SYNTHETIC_DIRECTOR_MARK_BASE`].
pub fn director_marks(directors: &[DirectorConfig]) -> BTreeMap<String, u32> {
    let used: std::collections::BTreeSet<u32> = directors.iter().filter_map(|d| d.fwmark).collect();
    let mut next = SYNTHETIC_DIRECTOR_MARK_BASE;
    let mut marks = BTreeMap::new();
    for director in directors {
        let mark = director.fwmark.unwrap_or_else(|| {
            while used.contains(&next) {
                next += 1;
            }
            next += 1;
            next - 1
        });
        marks.insert(director.name.clone(), mark);
    }
    marks
}

fn load_flows(
    path: &Path,
    config: &ApplianceConfig,
    iface_names: &[&str],
) -> anyhow::Result<FlowTable> {
    let source = std::fs::read_to_string(path)
        .with_context(|| format!("reading flows file {}", path.display()))?;
    let table_config = TableConfig {
        iface_names: (!iface_names.is_empty())
            .then(|| iface_names.iter().map(|n| n.to_string()).collect()),
        director_marks: (!config.director.is_empty()).then(|| director_marks(&config.director)),
    };
    let render = |errors: Vec<datapath::flows::FlowError>| {
        let rendered =
            crate::diagnostics::render_errors(&path.display().to_string(), &source, &errors);
        anyhow::anyhow!(
            "{} error(s) in {}:\n{rendered}",
            errors.len(),
            path.display()
        )
    };
    let table = FlowTable::from_source(&source, &table_config).map_err(render)?;
    // Every `table <id>` must name a routing table the appliance declares (or main).
    let defined: Vec<u32> = config.ip.table.iter().map(|t| t.id).collect();
    if !table.table_marks().is_empty() {
        let file = datapath::flows::parse(&source).map_err(render)?;
        let undefined = datapath::flows::undefined_tables(&file, &defined);
        if !undefined.is_empty() {
            return Err(render(undefined));
        }
    }
    Ok(table)
}

impl ApplianceConfig {
    /// Load an appliance file. Unknown keys and bad values are reported with file, line and
    /// column.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if confio::detect(&text) != confio::Format::Toml {
            return confio::load_for_appliance(path, &text);
        }
        let config: Self = toml::from_str(&text).map_err(|e| {
            let nat: ElementCheck = whole::<NatRuleConfig>;
            locate_in_arrays(path, &text, &e, &[(KeyPath::root().key("nat"), nat)])
        })?;
        check(&config, &KeyPath::root(), None).map_err(|(key, message)| {
            LocatedError::at(path, &text, TomlSpans::parse(&text).span(&key), message)
        })?;
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
    fn a_named_appliance_file_is_loaded_relative_to_the_scenario() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let config = ApplianceConfig {
            appliance: Some("appliances/game.toml".into()),
            ..Default::default()
        };
        let pipeline = build_pipeline(&config, &base, 1, &[]).unwrap();
        assert!(
            pipeline.shield().is_some()
                && pipeline.flows().is_some()
                && pipeline.directors().is_some()
        );
        let both = ApplianceConfig {
            appliance: Some("appliances/game.toml".into()),
            director: config.director.clone(),
            flows: Some("x".into()),
            ..Default::default()
        };
        let error = build_pipeline(&both, &base, 1, &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("use one or the other"), "{error}");
    }

    fn write_temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lbsim-appliance-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn unknown_qa_tables_are_located() {
        let text = "[qa]\nfull_after = { connections = 1, sessions = 5 }\n";
        let path = write_temp("qa-bad.toml", text);
        let error = ApplianceConfig::load(&path).unwrap_err().to_string();
        assert!(
            error.contains(
                "qa-bad.toml:2:33: qa.full_after: unknown field `sessions`, expected one of"
            ),
            "{error}"
        );
        let path = write_temp("qa-bad2.toml", "[qa]\nfull_after = { fragments = -1 }\n");
        let error = ApplianceConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("qa-bad2.toml:2:28:"), "{error}");
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

    #[test]
    fn a_table_policy_needs_a_declared_routing_table() {
        let flows = write_temp(
            "tables.flowmgr",
            "flow a permit\n  match\nflow b table 7\n  match\n",
        );
        let with = |tables: &str| {
            let text = format!("flows = \"tables.flowmgr\"\n{tables}");
            let config: ApplianceConfig = toml::from_str(&text).unwrap();
            build_pipeline(&config, flows.parent().unwrap(), 1, &[])
        };
        let error = format!("{:#}", with("").unwrap_err());
        assert!(
            error.contains("error[undefined_table]: routing table 7 is not defined"),
            "{error}"
        );
        assert!(error.contains("tables.flowmgr:3:14"), "{error}");
        assert!(error.contains("declares no routing table"), "{error}");
        let error = format!("{:#}", with("[[ip.table]]\nid = 8\n").unwrap_err());
        assert!(
            error.contains("declared tables ([[ip.table]]): 8"),
            "{error}"
        );
        assert!(with("[[ip.table]]\nid = 7\n").is_ok());
    }

    #[test]
    fn errors_in_the_second_nat_rule_are_at_that_rule() {
        let text = "[interfaces]\ninside = \"10.0.3.1/24\"\n\n[[nat]]\nkind = \"masquerade\"\nout = \"inside\"\n\n[[nat]]\nkind = \"dnat\"\ndst = \"192.0.2.30:80\"\nto = \"10.0.3.4:8080\"\n";
        let path = write_temp("nat-second.toml", text);
        let error = ApplianceConfig::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("nat-second.toml:8:1: nat[1]: a rule with ports needs"),
            "{error}"
        );
    }
}
