//! `[cpu]` in a scenario: the appliance's CPU model settings (RX ring, cost profile) and
//! the cost profiles themselves (`lbsim`, `linux`, a file, or a table of the user's own),
//! with the path classes a packet is charged for. The model that uses them is
//! `engine::cpu`.
//!
//! Not here: serving packets (`engine::cpu`), measuring profiles (`sim profile calibrate`,
//! `sim kernel calibrate`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datapath::packet::PacketMeta;
use datapath::pipeline::PacketOutcome;
use datapath::verdict::{Stage, Verdict};
use serde::{Deserialize, Serialize};

/// Default RX ring size (descriptors per queue), a common NIC default.
pub const DEFAULT_RX_RING: u32 = 1024;
/// Largest RX ring a scenario may ask for.
pub const MAX_RX_RING: u32 = 1 << 20;

/// The bundled `lbsim` profile: lbsim's own datapath cost (`sim cpu calibrate`).
const LBSIM_PROFILE: &str = include_str!("../../profiles/lbsim.toml");
/// The bundled `linux` profile: the kernel's cost (`sim kernel calibrate`).
const LINUX_PROFILE: &str = include_str!("../../profiles/linux.toml");

/// `[cpu]`: the CPU model of the appliance (one CPU per receive queue).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CpuSpec {
    /// `lbsim`, `linux`, or a profile file (relative to the scenario).
    pub profile: Option<String>,
    /// A cost table written in the scenario (instead of `profile`).
    pub ns: Option<CostTable>,
    /// RX ring descriptors per queue.
    #[serde(default = "default_rx_ring")]
    pub rx_ring: u32,
}

fn default_rx_ring() -> u32 {
    DEFAULT_RX_RING
}

/// Nanoseconds of CPU per packet, by the path it takes. Only `parse` is required; a missing
/// path costs what the path it extends costs (see [`CostTable::resolved`]).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CostTable {
    /// Decided at parse or by the IP layer (invalid, martian, not for us), or no stage.
    pub parse: f64,
    /// Dropped or passed by the shield without a reply (netdev drop, allow-list accept).
    pub shield_drop: Option<f64>,
    /// A SYN answered with a cookie SYN-ACK (synproxy).
    pub syn_cookie: Option<f64>,
    /// Classified by the flow table, or passed through every stage undecided.
    pub flows: Option<f64>,
    /// Extra per flow rule evaluated before the one that matched (mangle MARK per rule).
    pub flow_rule: Option<f64>,
    /// Forwarded by the director over an existing connection (conntrack + DNAT forward).
    pub director: Option<f64>,
    /// A director connection created (first packet of a connection).
    pub new_connection: Option<f64>,
    /// Decided by the NAT stage (MASQUERADE / SNAT / DNAT rules).
    pub nat: Option<f64>,
}

/// The path a packet took, as a cost profile prices it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathClass {
    /// See [`CostTable::parse`].
    Parse,
    /// See [`CostTable::shield_drop`].
    ShieldDrop,
    /// See [`CostTable::syn_cookie`].
    SynCookie,
    /// See [`CostTable::flows`].
    Flows,
    /// See [`CostTable::director`].
    Director,
    /// See [`CostTable::new_connection`].
    NewConnection,
    /// See [`CostTable::nat`].
    Nat,
}

impl PathClass {
    /// Every class, in report order.
    pub const ALL: [PathClass; 7] = [
        Self::Parse,
        Self::ShieldDrop,
        Self::SynCookie,
        Self::Flows,
        Self::Director,
        Self::NewConnection,
        Self::Nat,
    ];

    /// Stable name (the profile key).
    pub fn name(self) -> &'static str {
        match self {
            Self::Parse => "parse",
            Self::ShieldDrop => "shield_drop",
            Self::SynCookie => "syn_cookie",
            Self::Flows => "flows",
            Self::Director => "director",
            Self::NewConnection => "new_connection",
            Self::Nat => "nat",
        }
    }

    /// The class of a packet the pipeline decided.
    pub fn of_outcome(outcome: &PacketOutcome) -> Self {
        match (outcome.stage, outcome.verdict) {
            (Stage::Parse | Stage::Ip, _) => Self::Parse,
            (Stage::Shield, Verdict::Reply) => Self::SynCookie,
            (Stage::Shield, _) => Self::ShieldDrop,
            (Stage::Director, _) if matches!(outcome.director, Some((_, true))) => {
                Self::NewConnection
            }
            (Stage::Director, _) => Self::Director,
            (Stage::Nat, _) => Self::Nat,
            (Stage::Flows | Stage::Forward, _) => Self::Flows,
        }
    }

    /// The class charged to a packet deferred to the shared stages (see the module doc).
    pub fn of_deferred(meta: &PacketMeta) -> Self {
        if meta.proto == Some(6) && meta.tcp_flags & 0x12 == 0x02 {
            Self::NewConnection
        } else {
            Self::Director
        }
    }
}

impl CostTable {
    /// Every path's cost, missing ones filled in: `shield_drop`, `flows` and `nat` cost
    /// `parse`; `syn_cookie` costs `shield_drop`; `director` costs `flows`;
    /// `new_connection` costs `director`; `flow_rule` costs nothing.
    pub fn resolved(&self) -> BTreeMap<PathClass, f64> {
        let shield = self.shield_drop.unwrap_or(self.parse);
        let flows = self.flows.unwrap_or(self.parse);
        let director = self.director.unwrap_or(flows);
        [
            (PathClass::Parse, self.parse),
            (PathClass::ShieldDrop, shield),
            (PathClass::SynCookie, self.syn_cookie.unwrap_or(shield)),
            (PathClass::Flows, flows),
            (PathClass::Director, director),
            (
                PathClass::NewConnection,
                self.new_connection.unwrap_or(director),
            ),
            (PathClass::Nat, self.nat.unwrap_or(self.parse)),
        ]
        .into_iter()
        .collect()
    }

    /// The first negative or non-finite cost: its key and what is wrong.
    pub fn invalid(&self) -> Option<(&'static str, String)> {
        self.check().err().map(|message| {
            let key = message
                .strip_prefix("ns.")
                .and_then(|rest| rest.split(':').next())
                .and_then(|key| Self::KEYS.iter().copied().find(|k| *k == key))
                .unwrap_or("parse");
            (key, message)
        })
    }

    /// The keys of a table.
    const KEYS: [&'static str; 8] = [
        "parse",
        "shield_drop",
        "syn_cookie",
        "flows",
        "flow_rule",
        "director",
        "new_connection",
        "nat",
    ];

    /// The first negative or non-finite cost, named.
    fn check(&self) -> Result<(), String> {
        let named = [
            ("parse", Some(self.parse)),
            ("shield_drop", self.shield_drop),
            ("syn_cookie", self.syn_cookie),
            ("flows", self.flows),
            ("flow_rule", self.flow_rule),
            ("director", self.director),
            ("new_connection", self.new_connection),
            ("nat", self.nat),
        ];
        for (name, value) in named {
            if let Some(value) = value
                && !(value.is_finite() && value >= 0.0)
            {
                return Err(format!(
                    "ns.{name}: {value} is not a cost (ns ≥ 0 expected)"
                ));
            }
        }
        if self.parse <= 0.0 {
            return Err("ns.parse: must be positive (every packet costs something)".into());
        }
        Ok(())
    }
}

/// A cost profile file: what it is, where its figures come from, the table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CostProfile {
    /// Its name in reports.
    pub name: String,
    /// How the figures were obtained (command, machine, date).
    #[serde(default)]
    pub source: String,
    /// Relative spread of repeated calibrations per path (max−min over median), if measured.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spread: BTreeMap<String, f64>,
    /// The costs.
    pub ns: CostTable,
}

impl CostProfile {
    /// Parse a profile file's text (`origin` names it in errors).
    pub fn parse(origin: &str, text: &str) -> Result<Self, String> {
        let profile: Self = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        profile.ns.check().map_err(|e| format!("{origin}: {e}"))?;
        Ok(profile)
    }

    /// The profile a `[cpu]` table names: a bundled one, a file, or its inline table.
    pub fn of_spec(spec: &CpuSpec, base_dir: &Path) -> Result<Self, String> {
        match (&spec.profile, &spec.ns) {
            (Some(_), Some(_)) => Err("give either `profile` or `[cpu.ns]`, not both".into()),
            (None, None) => Err("`profile` (lbsim, linux or a file) or `[cpu.ns]` needed".into()),
            (None, Some(table)) => {
                table.check()?;
                let name = "scenario".into();
                let (source, spread) = ("written in the scenario".into(), BTreeMap::new());
                Ok(Self {
                    name,
                    source,
                    spread,
                    ns: *table,
                })
            }
            (Some(name), None) => Self::named(name, base_dir),
        }
    }

    /// A bundled profile by name, else a profile file relative to `base_dir`.
    pub fn named(name: &str, base_dir: &Path) -> Result<Self, String> {
        match name {
            "lbsim" => Self::parse("bundled profile lbsim", LBSIM_PROFILE),
            "linux" => Self::parse("bundled profile linux", LINUX_PROFILE),
            file => {
                let path: PathBuf = base_dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "`{file}`: not a bundled profile (lbsim, linux) and cannot read {}: {e}",
                        path.display()
                    )
                })?;
                Self::parse(&path.display().to_string(), &text)
            }
        }
    }
}
