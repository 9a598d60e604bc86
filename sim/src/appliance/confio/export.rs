//! An appliance out to the files an operator installs: keepalived.conf `virtual_server`
//! blocks and ldirectord.cf `virtual=` blocks (with their health checks), `ipvsadm-restore` input, `iptables-restore` input (the flows as flowmgr installs
//! them in the mangle table, the `[[nat]]` rules in the nat table) and an `nft -f` ruleset
//! (the same, in `inet lbsim_flows` and `ip lbsim_nat`). What a format cannot carry (the
//! shield, flows in keepalived, …) is listed in the notes, never dropped silently.

use std::fmt::Write as _;
use std::path::Path;

use datapath::flows::{Family, FlowTable, TableConfig, compile};
use datapath::nat::NatAction;
use datapath::nat::config::{NatKind, NatRuleConfig};

use super::{ipvsadm, keepalived, ldirectord};
use crate::appliance::{ApplianceConfig, director_marks};

/// An export target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// keepalived.conf `virtual_server` blocks.
    Keepalived,
    /// ldirectord.cf `virtual=` blocks.
    Ldirectord,
    /// `ipvsadm-restore` input.
    Ipvsadm,
    /// `iptables-restore` input (mangle flows + nat).
    Iptables,
    /// `nft -f` ruleset (flows + nat).
    Nft,
}

/// The exported text and the notes on what it leaves out.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The file's text.
    pub text: String,
    /// What the format cannot carry.
    pub notes: Vec<String>,
}

/// Export an appliance; `base_dir` resolves its `flows` path.
pub fn export(
    config: &ApplianceConfig,
    base_dir: &Path,
    to: ExportFormat,
) -> anyhow::Result<Exported> {
    let mut notes = Vec::new();
    if config.shield.is_some() {
        notes.push("[shield] has no equivalent in this format: not exported".into());
    }
    let text = match to {
        ExportFormat::Keepalived | ExportFormat::Ldirectord | ExportFormat::Ipvsadm => {
            if config.flows.is_some() || !config.nat.is_empty() {
                notes.push("flows and [[nat]] are firewall rules: export them with --to iptables or --to nft".into());
            }
            match to {
                ExportFormat::Keepalived => {
                    keepalived::export(&config.director, &config.health_check, &mut notes)?
                }
                ExportFormat::Ldirectord => {
                    ldirectord::export(&config.director, &config.health_check, &mut notes)?
                }
                _ => {
                    if !config.health_check.is_empty() {
                        notes.push("[[health_check]] is the checker's (keepalived, ldirectord): export them with --to keepalived or --to ldirectord".into());
                    }
                    ipvsadm::export(&config.director, &mut notes)?
                }
            }
        }
        ExportFormat::Iptables | ExportFormat::Nft => {
            if !config.director.is_empty() {
                notes.push("[[director]] tables are IPVS services: export them with --to ipvsadm or --to keepalived".into());
            }
            let table = flow_table(config, base_dir)?;
            if to == ExportFormat::Iptables {
                let mut out = table
                    .as_ref()
                    .map(|t| compile::iptables(t, Family::V4))
                    .unwrap_or_default();
                out.push_str(&iptables_nat(&config.nat));
                out
            } else {
                let mut out = table.as_ref().map(compile::nft).unwrap_or_default();
                out.push_str(&nft_nat(&config.nat));
                out
            }
        }
    };
    Ok(Exported { text, notes })
}

fn flow_table(config: &ApplianceConfig, base_dir: &Path) -> anyhow::Result<Option<FlowTable>> {
    let Some(path) = &config.flows else {
        return Ok(None);
    };
    let path = base_dir.join(path);
    let source =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let table_config = TableConfig {
        iface_names: None,
        director_marks: (!config.director.is_empty()).then(|| director_marks(&config.director)),
    };
    FlowTable::from_source(&source, &table_config)
        .map(Some)
        .map_err(|errors| {
            anyhow::anyhow!(
                "{} error(s) in {}:\n{}",
                errors.len(),
                path.display(),
                crate::diagnostics::render_errors(&path.display().to_string(), &source, &errors)
            )
        })
}

fn proto_name(proto: Option<u8>) -> Option<&'static str> {
    proto.map(|p| {
        if p == datapath::packet::ip_proto::UDP {
            "udp"
        } else {
            "tcp"
        }
    })
}

/// The nat table of `iptables-restore` input for `[[nat]]` rules (empty without rules).
pub fn iptables_nat(rules: &[NatRuleConfig]) -> String {
    if rules.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
    );
    for rule in rules {
        let chain = if rule.kind == NatKind::Dnat {
            "PREROUTING"
        } else {
            "POSTROUTING"
        };
        let mut line = format!("-A {chain}");
        if let Some(src) = rule.src {
            let _ = write!(line, " -s {src}");
        }
        if let Some(dst) = rule.dst {
            let _ = write!(line, " -d {}", dst.network);
        }
        if let Some(out) = &rule.out {
            let _ = write!(line, " -o {out}");
        }
        if let Some(p) = proto_name(rule.proto) {
            let _ = write!(line, " -p {p}");
            if let Some(port) = rule.dst.and_then(|d| d.port) {
                let _ = write!(line, " -m {p} --dport {port}");
            }
        }
        let _ = writeln!(line, " -j {}", iptables_target(rule));
        out.push_str(&line);
    }
    out.push_str("COMMIT\n");
    out
}

fn iptables_target(rule: &NatRuleConfig) -> String {
    match rule.action {
        NatAction::Dnat { address, port } => {
            let to = port.map_or(address.to_string(), |p| {
                std::net::SocketAddr::new(address, p).to_string()
            });
            format!("DNAT --to-destination {to}")
        }
        NatAction::Snat {
            address,
            ports: None,
        } => format!("SNAT --to-source {address}"),
        NatAction::Snat {
            address,
            ports: Some((a, b)),
        } => format!("SNAT --to-source {}:{a}-{b}", host(address)),
        NatAction::Masquerade { ports: None } => "MASQUERADE".into(),
        NatAction::Masquerade {
            ports: Some((a, b)),
        } => format!("MASQUERADE --to-ports {a}-{b}"),
    }
}

fn host(address: std::net::IpAddr) -> String {
    match address {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// An `nft -f` table `ip lbsim_nat` for `[[nat]]` rules (IPv4; empty without rules).
pub fn nft_nat(rules: &[NatRuleConfig]) -> String {
    if rules.is_empty() {
        return String::new();
    }
    let mut pre = String::new();
    let mut post = String::new();
    for rule in rules {
        let mut line = String::from("\t\t");
        if let Some(src) = rule.src {
            let _ = write!(line, "ip saddr {src} ");
        }
        if let Some(dst) = rule.dst {
            let _ = write!(line, "ip daddr {} ", dst.network);
        }
        if let Some(out) = &rule.out {
            let _ = write!(line, "oifname \"{out}\" ");
        }
        if let Some(p) = proto_name(rule.proto) {
            match rule.dst.and_then(|d| d.port) {
                Some(port) => {
                    let _ = write!(line, "{p} dport {port} ");
                }
                None => {
                    let _ = write!(line, "meta l4proto {p} ");
                }
            }
        }
        line.push_str("counter ");
        line.push_str(&match rule.action {
            NatAction::Dnat { address, port } => match port {
                Some(p) => format!("dnat to {address}:{p}"),
                None => format!("dnat to {address}"),
            },
            NatAction::Snat {
                address,
                ports: None,
            } => format!("snat to {address}"),
            NatAction::Snat {
                address,
                ports: Some((a, b)),
            } => format!("snat to {address}:{a}-{b}"),
            NatAction::Masquerade { ports: None } => "masquerade".into(),
            NatAction::Masquerade {
                ports: Some((a, b)),
            } => format!("masquerade to :{a}-{b}"),
        });
        line.push('\n');
        if rule.kind == NatKind::Dnat {
            pre.push_str(&line)
        } else {
            post.push_str(&line)
        }
    }
    format!(
        "table ip lbsim_nat\ndelete table ip lbsim_nat\ntable ip lbsim_nat {{\n\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n{pre}\t}}\n\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n{post}\t}}\n}}\n"
    )
}
