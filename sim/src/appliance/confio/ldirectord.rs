//! ldirectord.cf in and out.
//!
//! Read as ldirectord's own parser does: a `virtual=` (or `virtual6=`) line at the start of a
//! line opens a virtual service (`ADDR:PORT`, `[V6]:PORT` or a firewall mark); the lines
//! indented by a tab or four spaces under it are its options: `real=IP[->IP][:PORT]
//! gate|masq|ipip [WEIGHT] ["REQUEST", "RECEIVE"] [l:N] [u:N]` (a range adds one real
//! server per address), `scheduler`, `persistent`, `netmask`, `protocol`, `schedflags`,
//! `fallback` (the sorry server), and the check settings (`checktype`, `service`,
//! `checkport`, `request`, `receive`, `checktimeout`, `negotiatetimeout`, `checkinterval`,
//! `failurecount`, `quiescent`, ...), kept as data per real server. Unindented lines
//! outside a virtual service are the global settings; the check defaults among them
//! (`checktimeout`, `checkinterval`, `failurecount`, `quiescent`, ...) apply to every
//! service. ldirectord's defaults apply: scheduler `wrr`, protocol `tcp` (`udp` on port 53),
//! `quiescent = no`, weight 1. Unknown keys are located warnings; values ldirectord itself
//! refuses are located errors.

use std::net::{IpAddr, SocketAddr};

use datapath::director::config::{DirectorConfig, RealConfig};
use datapath::director::dest::Forward;

use super::ipvsadm::{normalise_forward, persistence_seconds, socket};
use super::{HealthCheck, Imported, director_name, located, scheduler};
use crate::diagnostics::LocatedError as ConfigError;

/// Global keys that are check defaults (copied into every service's checks).
const CHECK_DEFAULTS: &[&str] = &[
    "checktimeout",
    "negotiatetimeout",
    "connecttimeout",
    "checkinterval",
    "checkcount",
    "failurecount",
    "quiescent",
];

/// Per-service keys kept as check data.
const CHECK_KEYS: &[&str] = &[
    "checktype",
    "checkcommand",
    "checkport",
    "checktimeout",
    "negotiatetimeout",
    "connecttimeout",
    "checkinterval",
    "checkcount",
    "failurecount",
    "quiescent",
    "service",
    "request",
    "receive",
    "httpmethod",
    "virtualhost",
    "login",
    "passwd",
    "database",
    "secret",
];

/// Global keys ldirectord knows that do not concern the datapath.
const GLOBAL_IGNORED: &[&str] = &[
    "autoreload",
    "callback",
    "logfile",
    "execute",
    "fork",
    "supervised",
    "readdquiescent",
    "emailalert",
    "emailalertfreq",
    "emailalertstatus",
    "emailalertfrom",
    "cleanstop",
    "maintenancedir",
    "smtp",
    "fallbackcommand",
];

/// Whether `key` is an ldirectord.cf key that can start a file (format detection).
pub fn is_key(key: &str) -> bool {
    key == "virtual"
        || key == "virtual6"
        || key == "fallback"
        || CHECK_DEFAULTS.contains(&key)
        || GLOBAL_IGNORED.contains(&key)
}

/// One `virtual=` block being read.
struct Service {
    line: usize,
    director: DirectorConfig,
    /// Real servers with their lines.
    reals: Vec<(RealConfig, usize)>,
    checks: Vec<(String, String)>,
    fallback: Option<String>,
}

/// Import an ldirectord.cf.
pub fn import(file: &str, text: &str, into: &mut Imported) -> Result<(), ConfigError> {
    let mut globals: Vec<(String, String)> = Vec::new();
    let mut services: Vec<Service> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim_start().starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let content = raw.split('#').next().unwrap_or("").replace('\t', "    ");
        let indented = content.starts_with("    ");
        let Some((key, value)) = content.trim().split_once('=') else {
            return Err(located(
                file,
                line,
                format!("`{}`: expected `key = value`", content.trim()),
            ));
        };
        let (key, value) = (key.trim(), unquote(value.trim()));
        if indented {
            let Some(service) = services.last_mut() else {
                return Err(located(
                    file,
                    line,
                    format!("`{key}` is indented but no `virtual=` line comes before it"),
                ));
            };
            option(file, line, raw, key, value, service, into)?;
        } else if key == "virtual" || key == "virtual6" {
            services.push(virtual_line(file, line, key, value)?);
        } else if CHECK_DEFAULTS.contains(&key) || key == "fallback" {
            globals.push((key.to_string(), value.to_string()));
        } else if GLOBAL_IGNORED.contains(&key) {
            into.warn(
                file,
                line,
                raw,
                format!("`{key}` is about the daemon, not the datapath: ignored"),
            );
        } else {
            into.warn(
                file,
                line,
                raw,
                format!("`{key}` is not an ldirectord setting: ignored"),
            );
        }
    }
    for service in services {
        finish_service(file, service, &globals, into)?;
    }
    Ok(())
}

/// `"text"` → `text`.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// A port number or one of the service names ldirectord configurations usually use.
fn port(text: &str) -> Option<u16> {
    text.parse().ok().or(match text {
        "http" | "www" => Some(80),
        "https" => Some(443),
        "ftp" => Some(21),
        "smtp" => Some(25),
        "domain" => Some(53),
        "pop3" | "pop-3" => Some(110),
        "imap" | "imap2" => Some(143),
        "ldap" => Some(389),
        "ldaps" => Some(636),
        "imaps" => Some(993),
        "pop3s" => Some(995),
        "mysql" => Some(3306),
        "pgsql" | "postgresql" => Some(5432),
        "sip" => Some(5060),
        "ssh" => Some(22),
        _ => None,
    })
}

fn virtual_line(file: &str, line: usize, key: &str, value: &str) -> Result<Service, ConfigError> {
    let bad = |why: &str| located(file, line, format!("`{key}={value}`: {why}"));
    let head = value.split_whitespace().next().unwrap_or("");
    let mut director = DirectorConfig {
        name: String::new(),
        vip: None,
        port: None,
        proto: Some("tcp".into()),
        fwmark: None,
        scheduler: scheduler("wrr"),
        flags: Vec::new(),
        persistence: None,
        persistence_netmask: None,
        forward: None,
        real: Vec::new(),
    };
    if let Ok(mark) = head.parse::<u32>() {
        director.fwmark = Some(mark);
        director.proto = None;
    } else {
        let (host, port_text) = head
            .rsplit_once(':')
            .ok_or_else(|| bad("invalid address for virtual server"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = host
            .parse()
            .map_err(|_| bad("the address must be numeric (host names are not resolved)"))?;
        if ip.is_ipv6() != (key == "virtual6") {
            return Err(bad(if ip.is_ipv6() {
                "an IPv6 address needs `virtual6`"
            } else {
                "`virtual6` needs an IPv6 address"
            }));
        }
        let port = port(port_text).ok_or_else(|| bad("unknown port or service name"))?;
        director.vip = Some(ip);
        director.port = Some(port);
        if port == 53 {
            director.proto = Some("udp".into());
        }
    }
    Ok(Service {
        line,
        director,
        reals: Vec::new(),
        checks: Vec::new(),
        fallback: None,
    })
}

fn option(
    file: &str,
    line: usize,
    raw: &str,
    key: &str,
    value: &str,
    service: &mut Service,
    into: &mut Imported,
) -> Result<(), ConfigError> {
    let bad = |why: &str| located(file, line, format!("`{key}={value}`: {why}"));
    let d = &mut service.director;
    match key {
        "real" | "real6" => {
            // ldirectord 4.12 drops the thresholds of a real server that also has
            // request/receive strings (seen with its own parser: `-x 0 -y 0`).
            let quirk = value.contains('"')
                && value
                    .split_whitespace()
                    .any(|w| w.starts_with("l:") || w.starts_with("u:"));
            if quirk {
                into.warn(file, line, raw, "ldirectord ignores l:/u: thresholds after request/receive strings: read without thresholds, as ldirectord does");
            }
            for mut real in reals(value).map_err(|why| bad(&why))? {
                if quirk {
                    real.upper_threshold = None;
                    real.lower_threshold = None;
                }
                service.reals.push((real, line));
            }
        }
        "scheduler" => {
            d.scheduler = Some(scheduler(value).ok_or_else(|| bad("unknown scheduler"))?)
        }
        "persistent" => {
            let secs: u64 = value.parse().map_err(|_| bad("not a number of seconds"))?;
            d.persistence = Some(format!("{secs}s"));
        }
        "netmask" => d.persistence_netmask = Some(value.to_string()),
        "schedflags" => d.flags = value.split(',').map(|f| f.trim().to_string()).collect(),
        "protocol" => match (value, d.fwmark.is_some()) {
            ("fwm", true) => {}
            ("tcp" | "udp", false) => d.proto = Some(value.to_string()),
            (_, true) => {
                return Err(bad(
                    "protocol must be fwm if the virtual service is a fwmark (a number)",
                ));
            }
            (_, false) => {
                return Err(bad(
                    "protocol must be tcp or udp if the virtual service is an address and port",
                ));
            }
        },
        "fallback" | "fallback6" => service.fallback = Some(value.to_string()),
        "ops" if value == "no" => {}
        k if CHECK_KEYS.contains(&k) => service.checks.push((k.to_string(), value.to_string())),
        _ => into.warn(
            file,
            line,
            raw,
            format!("`{key}` is not modelled for a virtual service: ignored"),
        ),
    }
    Ok(())
}

/// The real servers of one `real=` value (several for an `A->B` range).
fn reals(value: &str) -> Result<Vec<RealConfig>, String> {
    let mut words = value.split_whitespace();
    let target = words.next().ok_or("no real server")?;
    let (hosts, port) = match target.rsplit_once(':') {
        Some((hosts, _)) if !hosts.ends_with(']') && hosts.contains(':') => (target, None),
        Some((hosts, p)) => (hosts, Some(port(p).ok_or(format!("unknown port `{p}`"))?)),
        None => (target, None),
    };
    let (first, last) = hosts.split_once("->").unwrap_or((hosts, hosts));
    let parse = |h: &str| -> Result<IpAddr, String> {
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("`{h}` is not an address (host names are not resolved)"))
    };
    let (first, last) = (parse(first)?, parse(last)?);
    let forward = match words.next() {
        Some("gate") => Forward::Dr,
        Some("masq") => Forward::Nat,
        Some("ipip") => Forward::Tun,
        _ => return Err("forward method must be gate, masq or ipip".into()),
    };
    let mut real = RealConfig {
        addr: String::new(),
        weight: Some(1),
        forward: Some(forward),
        upper_threshold: None,
        lower_threshold: None,
        mac: None,
    };
    let rest: Vec<&str> = words.collect();
    let mut rest = rest.as_slice();
    if let Some(w) = rest.first().and_then(|w| w.parse::<u32>().ok()) {
        real.weight = Some(i32::try_from(w).map_err(|_| "weight above 2147483647")?);
        rest = &rest[1..];
    }
    if rest.first().is_some_and(|w| w.starts_with('"')) {
        // "request", "receive": the check's strings, kept by the caller's check data.
        let end = rest
            .iter()
            .skip(1)
            .position(|w| w.ends_with('"'))
            .map_or(rest.len(), |i| i + 2);
        rest = &rest[end.min(rest.len())..];
    }
    for word in rest {
        if let Some(n) = word.strip_prefix("l:") {
            real.lower_threshold = Some(n.parse().map_err(|_| format!("bad threshold `{word}`"))?);
        } else if let Some(n) = word.strip_prefix("u:") {
            real.upper_threshold = Some(n.parse().map_err(|_| format!("bad threshold `{word}`"))?);
        } else {
            return Err(format!("invalid real server line, around `{word}`"));
        }
    }
    addresses(first, last)?
        .into_iter()
        .map(|ip| {
            Ok(RealConfig {
                addr: SocketAddr::new(ip, port.unwrap_or(0)).to_string(),
                ..real.clone()
            })
        })
        .collect()
}

/// The most real servers one `real=A->B` range may add (a /22).
const MAX_RANGE: u32 = 1024;

/// Every address from `first` to `last` (IPv4 ranges only, as ldirectord).
fn addresses(first: IpAddr, last: IpAddr) -> Result<Vec<IpAddr>, String> {
    if first == last {
        return Ok(vec![first]);
    }
    match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) if u32::from(a) <= u32::from(b) => {
            let count = u32::from(b) - u32::from(a);
            if count >= MAX_RANGE {
                return Err(format!(
                    "a range of {} real servers: lbsim reads at most {MAX_RANGE} per line",
                    u64::from(count) + 1
                ));
            }
            Ok((u32::from(a)..=u32::from(b))
                .map(|n| IpAddr::V4(n.into()))
                .collect())
        }
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            Err("invalid range: the first address must not be above the last".into())
        }
        _ => Err("address ranges are for IPv4 only".into()),
    }
}

fn finish_service(
    file: &str,
    service: Service,
    globals: &[(String, String)],
    into: &mut Imported,
) -> Result<(), ConfigError> {
    let mut director = service.director;
    let port = director.port.unwrap_or(0);
    for (mut real, _) in service.reals {
        if let Some(a) = socket(&real.addr).filter(|a| a.port() == 0) {
            real.addr = SocketAddr::new(a.ip(), port).to_string();
        }
        director.real.push(real);
    }
    director.forward = director.real.first().and_then(|r| r.forward);
    normalise_forward(&mut director);
    director.name = director_name(&director);
    if into.config.director.iter().any(|d| d.name == director.name) {
        return Err(located(
            file,
            service.line,
            format!("duplicate virtual server {}", director.name),
        ));
    }
    // Globals first (as `global.KEY`), then the service's own: ldirectord's timeouts fall
    // back from one to the other in a fixed order (see `health`).
    let mut settings: Vec<(String, String)> = globals
        .iter()
        .filter(|(k, _)| k != "fallback")
        .map(|(k, v)| (format!("global.{k}"), v.clone()))
        .collect();
    settings.extend(service.checks.iter().cloned());
    let kind = settings
        .iter()
        .find(|(k, _)| k == "checktype")
        .map_or("negotiate".to_string(), |(_, v)| v.clone());
    for real in &director.real {
        into.checks.push(HealthCheck {
            director: director.name.clone(),
            real: real.addr.clone(),
            kind: format!("ldirectord {kind}"),
            settings: settings.clone(),
        });
    }
    let fallback = service.fallback.or_else(|| {
        globals
            .iter()
            .find(|(k, _)| k == "fallback")
            .map(|(_, v)| v.clone())
    });
    if let Some(fallback) = fallback {
        into.sorry_servers.push((director.name.clone(), fallback));
    }
    into.config.director.push(director);
    Ok(())
}

/// ldirectord.cf for the appliance's directors, with their `[[health_check]]`; `notes` gets
/// what is lost.
pub fn export(
    directors: &[DirectorConfig],
    checks: &[super::health::HealthCheckConfig],
    notes: &mut Vec<String>,
) -> anyhow::Result<String> {
    let mut out = String::from(
        "# Virtual services exported by lbsim (sim export --to ldirectord).\n# checktype = on: a service without [[health_check]]; add its checks before use.\nquiescent = no\n",
    );
    for d in directors {
        let head = match (d.fwmark, d.vip) {
            (Some(mark), _) if d.real.iter().any(|r| r.addr.starts_with('[')) => {
                format!("virtual6 = {mark}")
            }
            (Some(mark), _) => format!("virtual = {mark}"),
            (None, Some(IpAddr::V6(vip))) => format!("virtual6 = [{vip}]:{}", d.port.unwrap_or(0)),
            (None, Some(vip)) => format!("virtual = {vip}:{}", d.port.unwrap_or(0)),
            _ => anyhow::bail!("director {}: neither vip nor fwmark", d.name),
        };
        out.push_str(&format!("\n{head}\n"));
        for real in &d.real {
            out.push_str(&real_line(d, real, notes)?);
        }
        out.push_str(&format!(
            "\tscheduler = {}\n",
            d.scheduler.map_or("wlc", |s| s.name())
        ));
        if !d.flags.is_empty() {
            out.push_str(&format!("\tschedflags = {}\n", d.flags.join(",")));
        }
        out.push_str(&format!(
            "\tprotocol = {}\n",
            if d.fwmark.is_some() {
                "fwm"
            } else {
                d.proto.as_deref().unwrap_or("tcp")
            }
        ));
        if let Some(p) = &d.persistence {
            let secs = persistence_seconds(p).ok_or_else(|| {
                anyhow::anyhow!(
                    "director {}: persistence {p:?} is not whole seconds",
                    d.name
                )
            })?;
            out.push_str(&format!("\tpersistent = {secs}\n"));
            if let Some(mask) = &d.persistence_netmask {
                out.push_str(&format!("\tnetmask = {}\n", super::ipvsadm::dotted(mask)));
            }
        }
        out.push_str(&super::health_export::ldirectord_lines(d, checks, notes));
    }
    Ok(out)
}

fn real_line(
    d: &DirectorConfig,
    real: &RealConfig,
    notes: &mut Vec<String>,
) -> anyhow::Result<String> {
    let addr = socket(&real.addr)
        .ok_or_else(|| anyhow::anyhow!("director {}: bad real server {:?}", d.name, real.addr))?;
    let method = match real.forward.or(d.forward).unwrap_or(Forward::Nat) {
        Forward::Nat => "masq",
        Forward::Dr => "gate",
        Forward::Tun => "ipip",
    };
    let host = match addr {
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
        SocketAddr::V4(a) => a.ip().to_string(),
    };
    let key = if addr.is_ipv6() { "real6" } else { "real" };
    let mut line = format!(
        "\t{key} = {host}:{} {method} {}",
        addr.port(),
        real.weight.unwrap_or(1)
    );
    if let Some(y) = real.lower_threshold.filter(|&y| y != 0) {
        line.push_str(&format!(" l:{y}"));
    }
    if let Some(x) = real.upper_threshold.filter(|&x| x != 0) {
        line.push_str(&format!(" u:{x}"));
    }
    if real.mac.is_some() {
        notes.push(format!(
            "director {}: real server {addr}: `mac` has no ldirectord form",
            d.name
        ));
    }
    line.push('\n');
    Ok(line)
}
