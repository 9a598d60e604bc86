//! Production configurations in and out: keepalived.conf, ldirectord.cf, `ipvsadm-save -n`
//! dumps and ipvsadm scripts, `iptables-save` files and nft rulesets (text or JSON) become an [`ApplianceConfig`] (plus a flowmgr
//! text when the firewall marks or filter rules need flows); an appliance becomes the files
//! an operator installs (see [`export`]).
//!
//! Each file's format is found from its content ([`detect`]), never from its name. Anything
//! that does not map onto the appliance is a located [`Warning`] (file:line, the rule text,
//! why) — nothing is dropped silently; text that cannot be read at all is a located error.
//! Several files import into one appliance (keepalived.conf for the directors, iptables-save
//! for the marks that feed them): flows are rendered once every file is read, so a mark
//! rule finds its director whatever the file order.
//!
//! Not here: building the pipeline (the parent module does it from the returned config).

pub mod export;
pub mod health;
pub mod health_export;
pub mod iptables;
pub mod ipvsadm;
pub mod keepalived;
pub mod ldirectord;
pub mod nft;
pub mod toml_out;

use std::fmt;
use std::path::{Path, PathBuf};

use datapath::director::config::DirectorConfig;
use datapath::director::scheduler::SchedulerKind;

use super::ApplianceConfig;
use crate::diagnostics::LocatedError as ConfigError;

/// A file format this module reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// lbsim's own appliance TOML.
    Toml,
    /// keepalived.conf (`virtual_server`, `vrrp_instance`).
    Keepalived,
    /// `ipvsadm-save -n` output or a script of `ipvsadm` commands.
    Ipvsadm,
    /// `iptables-save` / `iptables-restore` input.
    Iptables,
    /// ldirectord.cf (`virtual=`, `real=`).
    Ldirectord,
    /// An nft ruleset: `nft list ruleset` text or `nft -j list ruleset` JSON.
    Nft,
}

impl Format {
    /// The name used by `sim import` and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Toml => "appliance TOML",
            Self::Keepalived => "keepalived.conf",
            Self::Ipvsadm => "ipvsadm",
            Self::Iptables => "iptables-save",
            Self::Ldirectord => "ldirectord.cf",
            Self::Nft => "nft ruleset",
        }
    }
}

/// Find a file's format from its content: the first meaningful line decides.
pub fn detect(text: &str) -> Format {
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('!') {
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        let key = line.split('=').next().unwrap_or("").trim();
        if line.contains('=') && ldirectord::is_key(key) {
            return Format::Ldirectord;
        }
        if line.starts_with('{') && text.contains("\"nftables\"") {
            return Format::Nft;
        }
        return match first {
            "table" | "flush" | "add" | "define" | "insert" | "delete" if nft::looks_like(line) => {
                Format::Nft
            }
            "*filter" | "*nat" | "*mangle" | "*raw" | "*security" => Format::Iptables,
            _ if first.starts_with('*') || first.starts_with(':') => Format::Iptables,
            "-A" | "-E" | "-a" | "-e" | "-C" | "-D" | "-d" | "ipvsadm" | "--set" => Format::Ipvsadm,
            "global_defs"
            | "vrrp_instance"
            | "vrrp_sync_group"
            | "virtual_server"
            | "virtual_server_group"
            | "vrrp_script"
            | "include"
            | "static_ipaddress"
            | "static_routes" => Format::Keepalived,
            _ => Format::Toml,
        };
    }
    Format::Toml
}

/// Something in a production file that the appliance does not model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The line's text (trimmed).
    pub text: String,
    /// Why it does not map.
    pub why: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: warning: {}\n    | {}",
            self.file, self.line, self.why, self.text
        )
    }
}

/// A health check of a real server, kept as data (keepalived `TCP_CHECK`, `HTTP_GET`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// The director's name.
    pub director: String,
    /// The real server (`addr:port`).
    pub real: String,
    /// `TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `MISC_CHECK`, ...
    pub kind: String,
    /// Its settings in file order (`connect_timeout 3`, `retry 2`, `url.path /`, ...).
    pub settings: Vec<(String, String)>,
}

/// A `vrrp_instance`: listed, its virtual addresses become the appliance's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpInstance {
    /// The instance name.
    pub name: String,
    /// `state`, `interface`, `virtual_router_id`, `priority`, ... as written.
    pub settings: Vec<(String, String)>,
    /// `virtual_ipaddress` entries (address, optionally `/prefix`).
    pub addresses: Vec<String>,
}

/// What a firewall rule does once it is a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowPolicy {
    /// mangle `MARK --set-mark N`: the director with that mark (or `table N`).
    Mark(u32),
    /// filter `ACCEPT`.
    Permit,
    /// filter `DROP` / `REJECT`.
    Deny,
    /// A chain of `RETURN`s only (flowmgr's `skip`).
    Skip,
}

/// One flow produced from a firewall rule: a policy and its `match` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRule {
    /// Flow name (unique, ≤ 27 characters).
    pub name: String,
    /// What the flow does.
    pub policy: FlowPolicy,
    /// Its lines in order: `match proto tcp dst 192.0.2.0/24 dstport 80`, `ignore …`.
    pub lines: Vec<String>,
    /// Where it came from (`file:line`), written as a comment.
    pub origin: String,
}

/// The result of importing one or more files.
#[derive(Clone, Debug, Default)]
pub struct Imported {
    /// The appliance (`flows` is left unset: see [`Imported::flows`]).
    pub config: ApplianceConfig,
    /// Flows from firewall rules, in order.
    pub flow_rules: Vec<FlowRule>,
    /// Warnings, in file then line order.
    pub warnings: Vec<Warning>,
    /// Health checks, kept as data.
    pub checks: Vec<HealthCheck>,
    /// `vrrp_instance` blocks.
    pub vrrp: Vec<VrrpInstance>,
    /// `sorry_server` per director name.
    pub sorry_servers: Vec<(String, String)>,
    /// Each file read and its format.
    pub files: Vec<(String, Format)>,
    /// Where each `[[nat]]` rule came from (file, line, text), parallel to `config.nat`.
    pub nat_origins: Vec<(String, usize, String)>,
}

impl Imported {
    /// Record a warning.
    pub fn warn(&mut self, file: &str, line: usize, text: &str, why: impl Into<String>) {
        self.warnings.push(Warning {
            file: file.to_string(),
            line,
            text: text.trim().to_string(),
            why: why.into(),
        });
    }

    /// The flowmgr text of [`Imported::flow_rules`] (`None` without any): a mark flow
    /// names the director that has the mark, or `table N` when none has it.
    pub fn flows(&self) -> Option<String> {
        if self.flow_rules.is_empty() {
            return None;
        }
        let marks = crate::appliance::director_marks(&self.config.director);
        let mut out = String::from("# Flows imported from firewall rules (sim import).\n");
        let mut names = std::collections::BTreeSet::new();
        for rule in &self.flow_rules {
            let mut name = rule.name.clone();
            let mut n = 1;
            while !names.insert(name.clone()) {
                n += 1;
                name = format!("{}-{n}", rule.name);
            }
            let policy = match rule.policy {
                FlowPolicy::Permit => "permit".to_string(),
                FlowPolicy::Deny => "deny".to_string(),
                FlowPolicy::Skip => "skip".to_string(),
                FlowPolicy::Mark(mark) => match mark_policy(&marks, mark) {
                    Some(policy) => policy,
                    None => continue,
                },
            };
            out.push_str(&format!("\nflow {name} {policy}    # {}\n", rule.origin));
            for line in &rule.lines {
                out.push_str(&format!("   {line}\n"));
            }
        }
        Some(out)
    }

    /// Every warning, one per paragraph (what `sim import` and the loaders print).
    pub fn render_warnings(&self) -> String {
        self.warnings.iter().map(|w| format!("{w}\n")).collect()
    }
}

/// Import one file's text (of the given format) into `into`.
pub fn import_text(
    file: &str,
    text: &str,
    format: Format,
    into: &mut Imported,
) -> Result<(), ConfigError> {
    into.files.push((file.to_string(), format));
    match format {
        Format::Keepalived => keepalived::import(file, text, into),
        Format::Ipvsadm => ipvsadm::import(file, text, into),
        Format::Iptables => iptables::import(file, text, into),
        Format::Ldirectord => ldirectord::import(file, text, into),
        Format::Nft => nft::import(file, text, into),
        Format::Toml => Err(located(
            file,
            1,
            "an appliance TOML file, not a production configuration",
        )),
    }
}

/// Import production files (each format detected) into one appliance; errors are located.
/// Call [`finish`] once every file (and any base) is in.
pub fn import_files(paths: &[PathBuf]) -> anyhow::Result<Imported> {
    let mut imported = Imported::default();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let name = path.display().to_string();
        import_text(&name, &text, detect(&text), &mut imported)?;
    }
    Ok(imported)
}

/// The flow policy for a firewall mark: the director that has it, `table N` for flowmgr's
/// table marks (0x10000 + N), `None` when nothing uses it.
fn mark_policy(marks: &std::collections::BTreeMap<String, u32>, mark: u32) -> Option<String> {
    if let Some((name, _)) = marks.iter().find(|(_, m)| **m == mark) {
        return Some(format!("director {name}"));
    }
    (mark > TABLE_MARK_BASE && mark <= TABLE_MARK_BASE + u32::from(u16::MAX))
        .then(|| format!("table {}", mark - TABLE_MARK_BASE))
}

/// flowmgr's `table N` sets mark `TABLE_MARK_BASE + N`.
const TABLE_MARK_BASE: u32 = 0x10000;

/// Checks once every file is read: marks without a director, addresses from VRRP; the
/// `[[health_check]]` tables of the imported checks.
pub fn finish(imported: &mut Imported) {
    imported.config.health_check = health::from_imported(&imported.checks);
    let marks: Vec<(u32, String)> = imported
        .flow_rules
        .iter()
        .filter_map(|r| match r.policy {
            FlowPolicy::Mark(m) => Some((m, r.origin.clone())),
            _ => None,
        })
        .collect();
    let directors = crate::appliance::director_marks(&imported.config.director);
    for (mark, origin) in marks {
        if mark_policy(&directors, mark).is_none() {
            let (file, line) = split_origin(&origin);
            imported.warn(
                &file,
                line,
                &format!("--set-mark {mark:#x}"),
                format!("no virtual service uses firewall mark {mark:#x} (import its keepalived.conf or ipvsadm dump too): flow left out"),
            );
        }
    }
    for vrrp in &imported.vrrp {
        for address in &vrrp.addresses {
            let words: Vec<&str> = address.split_whitespace().collect();
            let (Some(addr), Some(dev)) = (
                words.first(),
                words
                    .iter()
                    .position(|w| *w == "dev")
                    .and_then(|i| words.get(i + 1)),
            ) else {
                continue;
            };
            if let Ok(net) = addr
                .parse::<ipnet::IpNet>()
                .or_else(|_| addr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            {
                imported
                    .config
                    .interfaces
                    .entry(dev.to_string())
                    .or_insert(datapath::nat::config::InterfaceAddress(net));
            }
        }
    }
    let missing: Vec<(String, usize, String, String)> = imported
        .config
        .nat
        .iter()
        .zip(&imported.nat_origins)
        .filter(|(rule, _)| rule.kind == datapath::nat::config::NatKind::Masquerade)
        .filter_map(|(rule, (file, line, text))| {
            let out = rule.out.as_ref()?;
            (!imported.config.interfaces.contains_key(out))
                .then(|| (file.clone(), *line, text.clone(), out.clone()))
        })
        .collect();
    for (file, line, text, out) in missing {
        imported.warn(&file, line, &text, format!("MASQUERADE needs the address of `{out}`: add `[interfaces] {out} = \"ADDR/PREFIX\"` (a base appliance TOML, or a keepalived virtual_ipaddress `dev {out}`)"));
    }
}

fn split_origin(origin: &str) -> (String, usize) {
    match origin.rsplit_once(':') {
        Some((file, line)) => (file.to_string(), line.parse().unwrap_or(0)),
        None => (origin.to_string(), 0),
    }
}

/// A located error.
pub fn located(file: &str, line: usize, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: file.into(),
        line,
        column: 1,
        length: 0,
        message: message.into(),
    }
}

/// The director name sim import gives a service: `fwm-N`, or `tcp-VIP-PORT` (`:` of an
/// IPv6 address written `_`).
pub fn director_name(director: &DirectorConfig) -> String {
    match (director.fwmark, director.vip) {
        (Some(mark), _) => format!("fwm-{mark}"),
        (None, Some(vip)) => format!(
            "{}-{}-{}",
            director.proto.as_deref().unwrap_or("tcp"),
            vip.to_string().replace(':', "_"),
            director.port.unwrap_or(0)
        ),
        (None, None) => director.name.clone(),
    }
}

/// A scheduler from its ipvsadm name.
pub fn scheduler(name: &str) -> Option<SchedulerKind> {
    use SchedulerKind::*;
    [Rr, Wrr, Lc, Wlc, Sed, Nq, Sh, Dh, Mh, Lblc, Lblcr, Fo, Ovf]
        .into_iter()
        .find(|kind| kind.name() == name.to_ascii_lowercase())
}

/// Load a production file for the appliance loader: the config, with the flows (if any)
/// written next to a per-content cache file so the pipeline builder reads them like any
/// flows file. Warnings go to stderr.
pub fn load_for_appliance(path: &Path, text: &str) -> anyhow::Result<ApplianceConfig> {
    let mut imported = Imported::default();
    let name = path.display().to_string();
    import_text(&name, text, detect(text), &mut imported)?;
    finish(&mut imported);
    eprint!("{}", imported.render_warnings());
    let mut config = imported.config.clone();
    if let Some(flows) = imported.flows() {
        let dir = std::env::temp_dir().join(format!("lbsim-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let stem = path
            .file_name()
            .map_or("imported".into(), |n| n.to_string_lossy().into_owned());
        let file = dir.join(format!("{stem}.flowmgr"));
        std::fs::write(&file, flows)?;
        config.flows = Some(file);
    }
    Ok(config)
}

/// The flowmgr text of a firewall file (iptables-save or an nft ruleset) for `sim flows`,
/// its mark flows naming the directors of `marks` (name → firewall mark), and the warnings;
/// `None` when the text is neither format.
pub fn firewall_flows(
    file: &str,
    text: &str,
    marks: &std::collections::BTreeMap<String, u32>,
) -> Result<Option<(String, String)>, ConfigError> {
    let format = detect(text);
    if !matches!(format, Format::Iptables | Format::Nft) {
        return Ok(None);
    }
    let mut imported = Imported::default();
    for (name, mark) in marks {
        imported.config.director.push(DirectorConfig {
            name: name.clone(),
            vip: None,
            port: None,
            proto: None,
            fwmark: Some(*mark),
            scheduler: None,
            flags: Vec::new(),
            persistence: None,
            persistence_netmask: None,
            forward: None,
            real: Vec::new(),
        });
    }
    import_text(file, text, format, &mut imported)?;
    finish(&mut imported);
    let flows = imported.flows().unwrap_or_default();
    Ok(Some((flows, imported.render_warnings())))
}

/// Split a line into words, keeping `"quoted strings"` whole.
pub fn words(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let end = if let Some(stripped) = rest.strip_prefix('"') {
            stripped.find('"').map_or(rest.len(), |i| i + 2)
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        out.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
    out
}
