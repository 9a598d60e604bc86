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

use std::collections::BTreeMap;

use anyhow::Context;
use datapath::director::config::DirectorConfig;
use datapath::director::{DirectorOptions, Directors};
use datapath::flows::{FlowTable, TableConfig};
use datapath::nat::config::{InterfaceAddress, NatRuleConfig};
use datapath::packet::ParseOptions;
use datapath::pipeline::{Pipeline, QaTable, SharedStages};
use datapath::shield::ShieldConfig;
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
            || !config.interfaces.is_empty();
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
        let directors = Directors::build(&config.director, options)
            .map_err(|e| anyhow::anyhow!("[[director]]: {e}"))?;
        pipeline = pipeline.with_directors(directors);
    }
    if let Some(nat) = build_nat(config, iface_names, seed)? {
        pipeline = pipeline.with_nat(nat);
    }
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
    FlowTable::from_source(&source, &table_config).map_err(|errors| {
        let rendered =
            crate::diagnostics::render_errors(&path.display().to_string(), &source, &errors);
        anyhow::anyhow!(
            "{} error(s) in {}:\n{rendered}",
            errors.len(),
            path.display()
        )
    })
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

    const QA_APPLIANCE: &str = r#"
[qa]
full_after = { connections = 2, known_sessions = 100 }

[[director]]
name = "web"
vip = "192.0.2.10"
port = 80
proto = "tcp"
scheduler = "rr"
forward = "nat"
real = [{ addr = "10.0.1.2:80", weight = 1 }]
"#;

    fn write_temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lbsim-appliance-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn qa_full_after_makes_the_table_overflow_and_the_report_shows_it() {
        use datapath::packet::LinkType;
        use datapath::packet::builder::PacketBuilder;
        let path = write_temp("qa.toml", QA_APPLIANCE);
        let config = ApplianceConfig::load(&path).unwrap();
        let mut pipeline = build_pipeline(&config, Path::new("."), 1, &[]).unwrap();
        for client in 1..=3u8 {
            let frame = PacketBuilder::eth()
                .ipv4([198, 51, 100, client].into(), [192, 0, 2, 10].into())
                .tcp(1000, 80)
                .syn()
                .build();
            let len = frame.len() as u32;
            pipeline.process(u64::from(client), 0, LinkType::Ethernet, frame, len);
        }
        let report = report(&pipeline);
        let row = &report.tables[0];
        assert_eq!(
            (row.name, row.entries, row.overflows, row.full_after),
            ("connections", Some(2), 1, Some(2))
        );
        let text = render_report(&report);
        assert!(
            text.contains("connections             2/1048576           1  drop new (conn_table_full) [qa: full after 2 packets]"),
            "{text}"
        );
        // The shield table is not configured: its setting is ignored, not reported.
        assert_eq!(report.tables.len(), 1);
    }

    const QA_EVERY_TABLE: &str = r#"
[qa]
full_after = { connections = 6, persistence = 5, lblc_cache = 0, fragments = 0, known_sessions = 2, source_rates = 0 }

[shield]
syn_cookies = "off"
surge = "on"
[[shield.context]]
dst = "192.0.2.10"
protected_tcp_ports = [80]

[[director]]
name = "web"
vip = "192.0.2.20"
port = 80
proto = "tcp"
scheduler = "lblc"
persistence = "60s"
forward = "nat"
real = [{ addr = "10.0.1.2:80", weight = 1 }]
"#;

    /// Every table of `[qa] full_after` overflows in one run, and the report lists each
    /// with its policy, counter and setting.
    #[test]
    fn every_qa_table_shows_in_the_report() {
        use datapath::packet::LinkType;
        use datapath::packet::builder::PacketBuilder;
        let path = write_temp("qa-every.toml", QA_EVERY_TABLE);
        let config = ApplianceConfig::load(&path).unwrap();
        let mut pipeline = build_pipeline(&config, Path::new("."), 1, &[]).unwrap();
        let mut fragment = PacketBuilder::eth()
            .ipv4([198, 51, 100, 9].into(), [192, 0, 2, 99].into())
            .udp(1000, 53)
            .build();
        fragment[20] = 0x20; // more fragments
        fragment[24..26].fill(0);
        let sum = datapath::packet::checksum::field_bytes(datapath::packet::checksum::partial(
            &fragment[14..34],
        ));
        fragment[24..26].copy_from_slice(&sum);
        let syn = |client: u8, port: u16, vip: u8| {
            PacketBuilder::eth()
                .ipv4([198, 51, 100, client].into(), [192, 0, 2, vip].into())
                .tcp(port, 80)
                .syn()
                .build()
        };
        // Packets 2-4 to the protected VIP (.10): one session, then the table is full.
        // Packets 5-7 to the director's VIP (.20): a connection and its template (not
        // cached: lblc full), a new client (template table full), a new connection of the
        // first client (connection table full).
        let frames = vec![
            fragment,
            syn(1, 1000, 10),
            syn(2, 1000, 10),
            syn(3, 1000, 10),
            syn(1, 1000, 20),
            syn(2, 1000, 20),
            syn(1, 2000, 20),
        ];
        for (index, frame) in frames.into_iter().enumerate() {
            let len = frame.len() as u32;
            pipeline.process(index as u64, 0, LinkType::Ethernet, frame, len);
        }
        let report = report(&pipeline);
        let rows: Vec<_> = report
            .tables
            .iter()
            .map(|t| (t.name, t.overflows, t.full_after))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("connections", 1, Some(6)),
                ("persistence", 1, Some(5)),
                ("lblc_cache", 1, Some(0)),
                ("fragments", 1, Some(0)),
                ("known_sessions", 2, Some(2)),
                ("source_rates", 3, Some(0)),
            ],
            "{}",
            render_report(&report)
        );
    }

    #[test]
    fn unknown_qa_tables_are_located() {
        let text = "[qa]\nfull_after = { connections = 1, sessions = 5 }\n";
        let path = write_temp("qa-bad.toml", text);
        let error = ApplianceConfig::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("qa-bad.toml:2:33: unknown field `sessions`, expected one of"),
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
}

/// What the appliance's stages saw, for reports: per-context shield counters and mode
/// timelines, per-flow and per-rule hits, and the directors in `ipvsadm -L -n --stats`
/// shape. Deterministic: every collection is ordered.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct ApplianceReport {
    /// Shield contexts, in configuration order (default context first per instance).
    pub shield: Vec<ShieldContextReport>,
    /// Flows in file order.
    pub flows: Vec<FlowReport>,
    /// IP packets no flow claimed.
    pub unclassified: u64,
    /// Virtual services with their real servers (what `ipvsadm -L -n --stats` shows).
    pub directors: Vec<ServiceReport>,
    /// NAT rules with their hits and the tracking table's counters (absent without NAT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatReport>,
    /// Bounded tables that overflowed or were made full by `[qa] full_after`, in
    /// [`QaTable::ALL`] order (none: the key is left out).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableReport>,
}

/// The NAT stage: connections per rule (like `iptables -t nat -L -v`) and conntrack.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct NatReport {
    /// `rule N (kind)` → connections it translated, in rule order.
    pub rules: Vec<(String, u64)>,
    /// Packets translated through tracked connections.
    pub tracked: u64,
    /// Tracking entries created.
    pub created: u64,
    /// New connections refused: table full.
    pub overflows: u64,
    /// New connections refused: no free source port (or a DNAT reply tuple taken).
    pub port_exhausted: u64,
}

impl NatReport {
    fn of(nat: &datapath::nat::Nat) -> Self {
        let rules = nat
            .rules()
            .iter()
            .zip(&nat.counters.rule_hits)
            .enumerate()
            .map(|(index, (rule, hits))| {
                let kind = match rule.action {
                    datapath::nat::NatAction::Dnat { .. } => "dnat",
                    datapath::nat::NatAction::Snat { .. } => "snat",
                    datapath::nat::NatAction::Masquerade { .. } => "masquerade",
                };
                (format!("rule {} ({kind})", index + 1), *hits)
            })
            .collect();
        let conntrack = &nat.conntrack.counters;
        Self {
            rules,
            tracked: nat.counters.tracked,
            created: conntrack.created,
            overflows: conntrack.overflows,
            port_exhausted: conntrack.port_exhausted,
        }
    }

    fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.rules.iter_mut().zip(&other.rules) {
            mine.1 += theirs.1;
        }
        self.tracked += other.tracked;
        self.created += other.created;
        self.overflows += other.overflows;
        self.port_exhausted += other.port_exhausted;
    }
}

/// One bounded table's occupancy and overflow.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct TableReport {
    /// The table ([`QaTable::name`]).
    pub name: &'static str,
    /// Entries now (`None` where the table does not expose it).
    pub entries: Option<usize>,
    /// Capacity (per service for lblc caches).
    pub capacity: usize,
    /// New entries the overflow policy handled.
    pub overflows: u64,
    /// The overflow policy, in words.
    pub policy: &'static str,
    /// `[qa] full_after` setting, in packets.
    pub full_after: Option<u64>,
}

fn table_reports(pipeline: &Pipeline, shared: Option<&SharedStages>) -> Vec<TableReport> {
    let shared_directors = shared.and_then(SharedStages::directors);
    let shared_nat = shared.and_then(SharedStages::nat);
    let mut rows = Vec::new();
    let mut row = |table: QaTable, entries, capacity, overflows, policy| {
        rows.push(TableReport {
            name: table.name(),
            entries,
            capacity,
            overflows,
            policy,
            full_after: None,
        });
    };
    if let Some(directors) = pipeline.directors().or(shared_directors) {
        let table = directors.table();
        let drop_new = "drop new (conn_table_full)";
        row(
            QaTable::Connections,
            Some(table.connection_count),
            table.connection_capacity,
            table.counters.connection_overflows,
            drop_new,
        );
        row(
            QaTable::Persistence,
            Some(table.template_count),
            table.template_capacity,
            table.counters.template_overflows,
            drop_new,
        );
        row(
            QaTable::LocalityCache,
            Some(directors.locality_cache_entries()),
            datapath::director::scheduler::LBLC_CACHE_CAPACITY,
            directors.locality_cache_overflows(),
            "schedule without caching",
        );
    }
    row(
        QaTable::Fragments,
        None,
        datapath::packet::fragments::FRAGMENT_TRACKER_CAPACITY,
        pipeline.counters().fragments.untracked,
        "pass unchecked (untracked)",
    );
    if let Some(shield) = pipeline.shield() {
        let stats = shield.table_stats();
        row(
            QaTable::KnownSessions,
            Some(stats.sessions),
            stats.sessions_capacity,
            stats.sessions_refused,
            "reclaim expired, evict half-open, else drop (table_full)",
        );
        row(
            QaTable::SourceRates,
            Some(stats.sources),
            stats.sources_capacity,
            stats.sources_evicted,
            "evict least recently seen",
        );
    }
    if let Some(nat) = pipeline.nat().or(shared_nat) {
        row(
            QaTable::Conntrack,
            Some(nat.conntrack.len()),
            nat.conntrack.capacity(),
            nat.conntrack.counters.overflows,
            "drop new (table_full)",
        );
    }
    for (table, packets, _) in pipeline.report_full_settings() {
        if let Some(found) = rows.iter_mut().find(|r| r.name == table.name()) {
            found.full_after = Some(packets);
        }
    }
    rows.retain(|r| r.overflows > 0 || r.full_after.is_some());
    rows
}

fn merge_tables(mine: &mut Vec<TableReport>, theirs: &[TableReport]) {
    for row in theirs {
        match mine.iter_mut().find(|r| r.name == row.name) {
            Some(found) => {
                found.overflows += row.overflows;
                found.entries = found.entries.zip(row.entries).map(|(a, b)| a + b);
            }
            None => mine.push(row.clone()),
        }
    }
    let order = |name: &str| QaTable::ALL.iter().position(|t| t.name() == name);
    mine.sort_by_key(|r| order(r.name));
}

/// One virtual service.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct ServiceReport {
    /// Director name.
    pub name: String,
    /// `TCP 192.0.2.10:80` or `FWM 80`.
    pub key: String,
    /// Scheduler.
    pub scheduler: String,
    /// Real servers in list order.
    pub reals: Vec<RealReport>,
}

/// One real server.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct RealReport {
    /// Address.
    pub address: String,
    /// `Masq`, `Route` or `Tunnel`.
    pub forward: &'static str,
    /// Weight.
    pub weight: i32,
    /// ActiveConn.
    pub active: u64,
    /// InActConn.
    pub inactive: u64,
    /// Connections scheduled.
    pub connections: u64,
    /// Packets client → server.
    pub packets_in: u64,
    /// Packets server → client.
    pub packets_out: u64,
}

impl ApplianceReport {
    /// Add the report of another shard of the same appliance (same configuration, so the
    /// same contexts, flows and services in the same order). Counters add up; mode
    /// timelines are concatenated in shard order.
    pub fn merge(&mut self, other: &Self) {
        let empty = self.shield.is_empty() && self.flows.is_empty() && self.directors.is_empty();
        if empty && self.nat.is_none() {
            *self = other.clone();
            return;
        }
        match (&mut self.nat, &other.nat) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.nat = Some(theirs.clone()),
            _ => {}
        }
        for (mine, theirs) in self.shield.iter_mut().zip(&other.shield) {
            for (name, value) in &theirs.counters {
                if name != "mode_bits" {
                    *mine.counters.entry(name.clone()).or_default() += value;
                }
            }
            mine.modes.extend(&theirs.modes);
            mine.modes.sort_unstable();
        }
        for (mine, theirs) in self.flows.iter_mut().zip(&other.flows) {
            mine.hits += theirs.hits;
            mine.rule_hits
                .iter_mut()
                .zip(&theirs.rule_hits)
                .for_each(|(a, b)| *a += b);
        }
        self.unclassified += other.unclassified;
        merge_tables(&mut self.tables, &other.tables);
        for (mine, theirs) in self.directors.iter_mut().zip(&other.directors) {
            for (a, b) in mine.reals.iter_mut().zip(&theirs.reals) {
                a.active += b.active;
                a.inactive += b.inactive;
                a.connections += b.connections;
                a.packets_in += b.packets_in;
                a.packets_out += b.packets_out;
            }
        }
    }
}

fn service_reports(directors: &datapath::director::Directors) -> Vec<ServiceReport> {
    directors
        .services()
        .iter()
        .map(|service| ServiceReport {
            name: service.spec.name.clone(),
            key: service.spec.key.to_string(),
            scheduler: service.spec.scheduler.name().to_string(),
            reals: service
                .dests
                .linked()
                .map(|(_, real)| RealReport {
                    address: real.address.to_string(),
                    forward: real.forward.ipvsadm_name(),
                    weight: real.weight,
                    active: u64::from(real.active),
                    inactive: u64::from(real.inactive),
                    connections: real.stats.connections,
                    packets_in: real.stats.packets_in,
                    packets_out: real.stats.packets_out,
                })
                .collect(),
        })
        .collect()
}

/// One shield context.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct ShieldContextReport {
    /// Context name, e.g. `shield/192.0.2.10 vlan 100`.
    pub name: String,
    /// Non-zero counters by name.
    pub counters: BTreeMap<String, u64>,
    /// Protection-mode changes: (virtual ns, status bits: 0x1 SYN cookies, 0x2 TTL filter,
    /// 0x4 unmatched drop, 0x8 surge). In a sharded run, the changes of every queue in time
    /// order (each queue measures its own share of the traffic).
    pub modes: Vec<(u64, u8)>,
}

/// One flow's hits.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct FlowReport {
    /// Flow name.
    pub name: String,
    /// Policy as written.
    pub policy: String,
    /// Packets the flow claimed.
    pub hits: u64,
    /// Packets each rule decided (1-based order).
    pub rule_hits: Vec<u64>,
}

/// Collect the report of a pipeline's stages.
pub fn report(pipeline: &Pipeline) -> ApplianceReport {
    report_with(pipeline, None)
}

/// [`report`] of a pipeline whose shared stages (directors, NAT) are in `shared`.
pub fn report_with(pipeline: &Pipeline, shared: Option<&SharedStages>) -> ApplianceReport {
    let mut report = ApplianceReport::default();
    if let Some(shield) = pipeline.shield() {
        for context in shield.contexts() {
            let counters = shield.counters(context).entries();
            let counters = counters.into_iter().filter(|(_, v)| *v > 0).collect();
            let modes = shield
                .mode_timeline(context)
                .iter()
                .map(|m| (m.time_ns, m.bits))
                .collect();
            report.shield.push(ShieldContextReport {
                name: shield.context_name(context),
                counters,
                modes,
            });
        }
    }
    if let Some(flows) = pipeline.flows() {
        for (index, flow) in flows.table.flows().iter().enumerate() {
            let rules = flow.first_rule..flow.first_rule + flow.rule_count;
            report.flows.push(FlowReport {
                name: flow.name.clone(),
                policy: flow.policy.to_string(),
                hits: flows.counters.flow_hits[index],
                rule_hits: flows.counters.rule_hits[rules].to_vec(),
            });
        }
        report.unclassified = flows.counters.unclassified;
    }
    let directors = pipeline
        .directors()
        .or(shared.and_then(SharedStages::directors));
    report.directors = directors.map(service_reports).unwrap_or_default();
    let nat = pipeline.nat().or(shared.and_then(SharedStages::nat));
    report.nat = nat.map(NatReport::of);
    report.tables = table_reports(pipeline, shared);
    report
}

fn render_tables(tables: &[TableReport]) -> String {
    let mut out = String::new();
    if tables.is_empty() {
        return out;
    }
    out.push_str("Tables:     table            entries/capacity   overflows  policy\n");
    for table in tables {
        let entries = table.entries.map_or("-".to_string(), |e| e.to_string());
        let qa = table
            .full_after
            .map_or(String::new(), |n| format!(" [qa: full after {n} packets]"));
        out.push_str(&format!(
            "  {:<16} {:>8}/{:<9} {:>9}  {}{qa}\n",
            table.name, entries, table.capacity, table.overflows, table.policy
        ));
    }
    out
}

/// Render the report as text (after a replay or run summary).
pub fn render_report(report: &ApplianceReport) -> String {
    let mut out = String::new();
    for context in &report.shield {
        let modes: Vec<String> = context
            .modes
            .iter()
            .map(|(t, bits)| format!("{:.3}s→{bits:#x}", *t as f64 / 1e9))
            .collect();
        out.push_str(&format!(
            "Shield {}: modes [{}]\n",
            context.name,
            modes.join(" ")
        ));
        for (name, value) in &context.counters {
            out.push_str(&format!("  {name:<34} {value}\n"));
        }
    }
    if !report.flows.is_empty() {
        out.push_str(
            "Flowmgr:    flow                         policy               hits  rule hits\n",
        );
        for flow in &report.flows {
            let rules: Vec<String> = flow.rule_hits.iter().map(u64::to_string).collect();
            out.push_str(&format!(
                "  {:<28} {:<18} {:>6}  [{}]\n",
                flow.name,
                flow.policy,
                flow.hits,
                rules.join(", ")
            ));
        }
        out.push_str(&format!("  (unclassified: {})\n", report.unclassified));
    }
    if let Some(nat) = &report.nat {
        out.push_str(&format!(
            "NAT: {} tracked packets, conntrack created {} overflows {} port exhausted {}\n",
            nat.tracked, nat.created, nat.overflows, nat.port_exhausted
        ));
        for (rule, hits) in &nat.rules {
            out.push_str(&format!("  {rule:<28} {hits:>8}\n"));
        }
    }
    if !report.directors.is_empty() {
        out.push_str("Directors:  (ipvsadm -L -n shape, with --stats counters)\n");
        out.push_str("  Prot LocalAddress:Port Scheduler\n    -> RemoteAddress:Port           Forward Weight ActiveConn InActConn    Conns   InPkts  OutPkts\n");
    }
    for service in &report.directors {
        out.push_str(&format!(
            "  {} {} ({})\n",
            service.key, service.scheduler, service.name
        ));
        for r in &service.reals {
            out.push_str(&format!(
                "    -> {:<28} {:<7} {:<6} {:<10} {:<9} {:>8} {:>8} {:>8}\n",
                r.address,
                r.forward,
                r.weight,
                r.active,
                r.inactive,
                r.connections,
                r.packets_in,
                r.packets_out
            ));
        }
    }
    out.push_str(&render_tables(&report.tables));
    out
}
