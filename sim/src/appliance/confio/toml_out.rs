//! The appliance TOML text of an [`Imported`] configuration (what `sim import` writes):
//! `flows`, `[interfaces]`, `[[director]]` and `[[nat]]` tables in the hand-written style,
//! and, as comments, what the appliance keeps only as data (VRRP instances, health checks,
//! sorry servers).

use std::fmt::Write as _;

use datapath::director::config::DirectorConfig;
use datapath::nat::NatAction;
use datapath::nat::config::{NatKind, NatRuleConfig};

use super::{Imported, ipvsadm::socket};

/// A TOML basic string.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key: bare when it can be, quoted otherwise.
fn key(text: &str) -> String {
    let bare = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare { text.to_string() } else { quoted(text) }
}

/// The TOML text; `flows_file` is the flowmgr path written in `flows = …`.
pub fn render(imported: &Imported, flows_file: Option<&str>) -> String {
    let mut out = String::from("# Appliance imported by `sim import` from:\n");
    for (file, format) in &imported.files {
        let _ = writeln!(out, "#   {} ({})", comment_text(file), format.name());
    }
    comments(imported, &mut out);
    if let Some(flows) = flows_file {
        let _ = writeln!(out, "\nflows = {}", quoted(flows));
    }
    if !imported.config.interfaces.is_empty() {
        out.push_str("\n[interfaces]\n");
        for (name, address) in &imported.config.interfaces {
            let _ = writeln!(out, "{} = {}", key(name), quoted(&address.0.to_string()));
        }
    }
    for director in &imported.config.director {
        out.push('\n');
        out.push_str(&director_table(director));
    }
    for rule in &imported.config.nat {
        out.push('\n');
        out.push_str(&nat_table(rule));
    }
    for check in &imported.config.health_check {
        out.push('\n');
        out.push_str(&health_table(check));
    }
    out
}

/// One `[[health_check]]` table.
pub fn health_table(h: &super::health::HealthCheckConfig) -> String {
    let mut out = String::from("[[health_check]]\n");
    if let Some(director) = &h.director {
        let _ = writeln!(out, "director = {}", quoted(director));
    }
    let _ = writeln!(out, "server = {}", quoted(&h.server.to_string()));
    if !h.kind.is_empty() {
        let _ = writeln!(out, "kind = {}", quoted(&h.kind));
    }
    let on_failure = match h.on_failure {
        super::health::OnFailure::Remove => "remove",
        super::health::OnFailure::Quiesce => "quiesce",
    };
    let _ = writeln!(out, "on_failure = \"{on_failure}\"");
    let _ = writeln!(out, "detect = {}", quoted(&h.detect));
    let _ = writeln!(out, "recover = {}", quoted(&h.recover));
    if !h.settings.is_empty() {
        let items: Vec<String> = h.settings.iter().map(|s| quoted(s)).collect();
        let _ = writeln!(out, "settings = [{}]", items.join(", "));
    }
    out
}

/// A comment line's text: control characters escaped (TOML comments cannot hold them).
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn comments(imported: &Imported, out: &mut String) {
    let mut lines = String::new();
    comment_lines(imported, &mut lines);
    for line in lines.lines() {
        let _ = writeln!(out, "{}", comment_text(line));
    }
}

fn comment_lines(imported: &Imported, out: &mut String) {
    for vrrp in &imported.vrrp {
        let settings: Vec<String> = vrrp
            .settings
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            out,
            "# vrrp_instance {}: {}; addresses {}",
            vrrp.name,
            settings.join(", "),
            vrrp.addresses.join(" ")
        );
    }
    for check in &imported.checks {
        let settings: Vec<String> = check
            .settings
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            out,
            "# check {} {} {}: {}",
            check.director,
            check.real,
            check.kind,
            settings.join(", ")
        );
    }
    for (director, server) in &imported.sorry_servers {
        let _ = writeln!(out, "# sorry_server of {director}: {server}");
    }
}

/// One `[[director]]` table.
pub fn director_table(d: &DirectorConfig) -> String {
    let mut out = String::from("[[director]]\n");
    let _ = writeln!(out, "name = {}", quoted(&d.name));
    if let Some(vip) = d.vip {
        let _ = writeln!(out, "vip = {}", quoted(&vip.to_string()));
    }
    if let Some(port) = d.port {
        let _ = writeln!(out, "port = {port}");
    }
    if let Some(proto) = &d.proto {
        let _ = writeln!(out, "proto = {}", quoted(proto));
    }
    if let Some(mark) = d.fwmark {
        let _ = writeln!(out, "fwmark = {mark}");
    }
    if let Some(s) = d.scheduler {
        let _ = writeln!(out, "scheduler = {}", quoted(s.name()));
    }
    if !d.flags.is_empty() {
        let flags: Vec<String> = d.flags.iter().map(|f| quoted(f)).collect();
        let _ = writeln!(out, "flags = [{}]", flags.join(", "));
    }
    if let Some(p) = &d.persistence {
        let _ = writeln!(out, "persistence = {}", quoted(p));
    }
    if let Some(m) = &d.persistence_netmask {
        let _ = writeln!(out, "persistence_netmask = {}", quoted(m));
    }
    if let Some(f) = d.forward {
        let _ = writeln!(out, "forward = {}", quoted(forward_name(f)));
    }
    let reals: Vec<String> = d.real.iter().map(real_inline).collect();
    let _ = writeln!(out, "real = [\n{}\n]", reals.join(",\n"));
    out
}

fn forward_name(f: datapath::director::dest::Forward) -> &'static str {
    use datapath::director::dest::Forward;
    match f {
        Forward::Nat => "nat",
        Forward::Dr => "dr",
        Forward::Tun => "tun",
    }
}

fn real_inline(r: &datapath::director::config::RealConfig) -> String {
    let mut parts = vec![format!("addr = {}", quoted(&r.addr))];
    if let Some(w) = r.weight {
        parts.push(format!("weight = {w}"));
    }
    if let Some(f) = r.forward {
        parts.push(format!("forward = {}", quoted(forward_name(f))));
    }
    if let Some(x) = r.upper_threshold {
        parts.push(format!("upper_threshold = {x}"));
    }
    if let Some(y) = r.lower_threshold {
        parts.push(format!("lower_threshold = {y}"));
    }
    if let Some(mac) = &r.mac {
        parts.push(format!("mac = {}", quoted(mac)));
    }
    format!("  {{ {} }}", parts.join(", "))
}

/// One `[[nat]]` table.
pub fn nat_table(rule: &NatRuleConfig) -> String {
    let mut out = String::from("[[nat]]\n");
    let kind = match rule.kind {
        NatKind::Dnat => "dnat",
        NatKind::Snat => "snat",
        NatKind::Masquerade => "masquerade",
    };
    let _ = writeln!(out, "kind = {}", quoted(kind));
    if let Some(p) = rule.proto {
        let name = if p == datapath::packet::ip_proto::UDP {
            "udp"
        } else {
            "tcp"
        };
        let _ = writeln!(out, "proto = {}", quoted(name));
    }
    if let Some(src) = rule.src {
        let _ = writeln!(out, "src = {}", quoted(&src.to_string()));
    }
    if let Some(dst) = rule.dst {
        let text = match dst.port {
            Some(port) => std::net::SocketAddr::new(dst.network.addr(), port).to_string(),
            None => dst.network.to_string(),
        };
        let _ = writeln!(out, "dst = {}", quoted(&text));
    }
    if let Some(o) = &rule.out {
        let _ = writeln!(out, "out = {}", quoted(o));
    }
    match rule.action {
        NatAction::Dnat { address, port } => {
            let to = port.map_or(address.to_string(), |p| {
                std::net::SocketAddr::new(address, p).to_string()
            });
            let _ = writeln!(out, "to = {}", quoted(&to));
        }
        NatAction::Snat { address, ports } => {
            let to = match ports {
                Some((a, b)) => format!("{}:{a}-{b}", socket_host(address)),
                None => address.to_string(),
            };
            let _ = writeln!(out, "to = {}", quoted(&to));
        }
        NatAction::Masquerade {
            ports: Some((a, b)),
        } => {
            let _ = writeln!(out, "ports = {}", quoted(&format!("{a}-{b}")));
        }
        NatAction::Masquerade { ports: None } => {}
    }
    out
}

fn socket_host(address: std::net::IpAddr) -> String {
    match address {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// Whether `text` is `addr:port` (used by callers checking a real server's form).
pub fn has_port(text: &str) -> bool {
    socket(text).is_some_and(|a| a.port() != 0)
}
