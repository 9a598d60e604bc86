//! keepalived.conf in and out.
//!
//! Read: `virtual_server IP PORT`, `virtual_server fwmark N`, `virtual_server group NAME`
//! with `virtual_server_group` (addresses, `IP PORT` and `fwmark N` entries), `lb_algo` /
//! `lvs_sched`, `lb_kind` / `lvs_method` (NAT, DR, TUN), `protocol`,
//! `persistence_timeout`, `persistence_granularity`, the scheduler flags (`sh-port`, ...),
//! `sorry_server`, and `real_server IP [PORT]` with `weight`, `uthreshold`, `lthreshold`,
//! `lvs_method`, `inhibit_on_failure` and its health checks (`TCP_CHECK`, `HTTP_GET`,
//! `SSL_GET`, `MISC_CHECK`, `DNS_CHECK`, ...), kept as data. `vrrp_instance` blocks are read
//! and listed with their `virtual_ipaddress` entries. Comments start with `#` or `!`;
//! braces nest; `include` and every other keyword is a located warning.

use datapath::director::config::{DirectorConfig, RealConfig};
use datapath::director::dest::Forward;

use super::ipvsadm::{normalise_forward, persistence_seconds, socket};
use super::{HealthCheck, Imported, VrrpInstance, director_name, located, scheduler};
use crate::diagnostics::LocatedError as ConfigError;

/// One statement: its words, its line, and its block (if it has braces).
#[derive(Debug, Clone)]
pub struct Node {
    /// The words before the block.
    pub words: Vec<String>,
    /// 1-based line of the first word.
    pub line: usize,
    /// The statements in its braces.
    pub block: Option<Vec<Node>>,
}

/// Parse the text into statements; unbalanced braces are located errors.
pub fn parse(file: &str, text: &str) -> Result<Vec<Node>, ConfigError> {
    let mut stack: Vec<(Node, Vec<Node>)> = Vec::new();
    let mut current: Vec<Node> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split(['#', '!']).next().unwrap_or("");
        let spaced = content.replace('{', " { ").replace('}', " } ");
        let mut words: Vec<String> = Vec::new();
        for token in spaced.split_whitespace() {
            match token {
                "{" => {
                    let words = std::mem::take(&mut words);
                    let node = if words.is_empty() {
                        // A brace on its own line opens the block of the previous statement.
                        match current.pop() {
                            Some(prev) if prev.block.is_none() => prev,
                            _ => {
                                return Err(located(
                                    file,
                                    line,
                                    "`{` without a statement before it",
                                ));
                            }
                        }
                    } else {
                        Node {
                            words,
                            line,
                            block: None,
                        }
                    };
                    stack.push((node, std::mem::take(&mut current)));
                }
                "}" => {
                    if !words.is_empty() {
                        current.push(Node {
                            words: std::mem::take(&mut words),
                            line,
                            block: None,
                        });
                    }
                    let Some((mut node, parent)) = stack.pop() else {
                        return Err(located(file, line, "`}` closes no block"));
                    };
                    node.block = Some(std::mem::replace(&mut current, parent));
                    current.push(node);
                }
                word => words.push(word.to_string()),
            }
        }
        if !words.is_empty() {
            current.push(Node {
                words,
                line,
                block: None,
            });
        }
    }
    if let Some((node, _)) = stack.last() {
        return Err(located(
            file,
            node.line,
            format!("`{}` block is never closed", node.words.join(" ")),
        ));
    }
    Ok(current)
}

/// Import a keepalived.conf.
pub fn import(file: &str, text: &str, into: &mut Imported) -> Result<(), ConfigError> {
    let nodes = parse(file, text)?;
    let mut groups: Vec<(String, Vec<Node>)> = Vec::new();
    for node in &nodes {
        if node.words[0] == "virtual_server_group" {
            groups.push((
                node.words.get(1).cloned().unwrap_or_default(),
                node.block.clone().unwrap_or_default(),
            ));
        }
    }
    for node in &nodes {
        let text = node.words.join(" ");
        match node.words[0].as_str() {
            "virtual_server" => virtual_server(file, node, &groups, into)?,
            "virtual_server_group" => {}
            "vrrp_instance" => vrrp(node, into),
            "include" => into.warn(
                file,
                node.line,
                &text,
                "`include` is not followed: import the included files too (sim import FILE...)",
            ),
            _ => into.warn(
                file,
                node.line,
                &text,
                format!(
                    "`{}` does not describe the load balancer's datapath: ignored",
                    node.words[0]
                ),
            ),
        }
    }
    Ok(())
}

fn vrrp(node: &Node, into: &mut Imported) {
    let mut instance = VrrpInstance {
        name: node.words.get(1).cloned().unwrap_or_default(),
        settings: Vec::new(),
        addresses: Vec::new(),
    };
    for child in node.block.iter().flatten() {
        if child.words[0] == "virtual_ipaddress" {
            for entry in child.block.iter().flatten() {
                instance.addresses.push(entry.words.join(" "));
            }
        } else if child.block.is_none() {
            instance
                .settings
                .push((child.words[0].clone(), child.words[1..].join(" ")));
        }
    }
    into.vrrp.push(instance);
}

/// The services a `virtual_server` line names: (proto-less address, port) or a mark.
fn service_keys(
    file: &str,
    node: &Node,
    groups: &[(String, Vec<Node>)],
) -> Result<Vec<ServiceKey>, ConfigError> {
    let w = &node.words;
    let bad = || {
        located(
            file,
            node.line,
            format!(
                "`{}`: expected `virtual_server IP PORT`, `fwmark N` or `group NAME`",
                w.join(" ")
            ),
        )
    };
    match w.get(1).map(String::as_str) {
        Some("fwmark") => {
            let mark = w.get(2).and_then(|m| m.parse().ok()).ok_or_else(bad)?;
            Ok(vec![(None, Some(mark))])
        }
        Some("group") => {
            let name = w.get(2).ok_or_else(bad)?;
            let members = groups.iter().find(|(n, _)| n == name).ok_or_else(|| {
                located(
                    file,
                    node.line,
                    format!("virtual_server_group `{name}` is not defined"),
                )
            })?;
            members.1.iter().map(|m| group_member(file, m)).collect()
        }
        Some(ip) => {
            let port = w
                .get(2)
                .map_or(Some(0), |p| p.parse().ok())
                .ok_or_else(bad)?;
            let ip = ip.parse().map_err(|_| bad())?;
            Ok(vec![(Some(std::net::SocketAddr::new(ip, port)), None)])
        }
        None => Err(bad()),
    }
}

fn group_member(file: &str, node: &Node) -> Result<ServiceKey, ConfigError> {
    let w = &node.words;
    if w[0] == "fwmark" {
        let mark = w.get(1).and_then(|m| m.parse().ok());
        return mark
            .map(|m| (None, Some(m)))
            .ok_or_else(|| located(file, node.line, "`fwmark` needs a number"));
    }
    if w[0].contains('-') && !w[0].contains(':') {
        return Err(located(
            file,
            node.line,
            format!(
                "address range `{}` in a virtual_server_group: list the addresses one by one",
                w[0]
            ),
        ));
    }
    let port = w.get(1).map_or(Some(0), |p| p.parse().ok());
    match (w[0].parse(), port) {
        (Ok(ip), Some(port)) => Ok((Some(std::net::SocketAddr::new(ip, port)), None)),
        _ => Err(located(
            file,
            node.line,
            format!("`{}` is not `IP PORT` or `fwmark N`", w.join(" ")),
        )),
    }
}

fn virtual_server(
    file: &str,
    node: &Node,
    groups: &[(String, Vec<Node>)],
    into: &mut Imported,
) -> Result<(), ConfigError> {
    let keys = service_keys(file, node, groups)?;
    let mut template = DirectorConfig {
        name: String::new(),
        vip: None,
        port: None,
        proto: Some("tcp".into()),
        fwmark: None,
        scheduler: None,
        flags: Vec::new(),
        persistence: None,
        persistence_netmask: None,
        forward: Some(Forward::Nat),
        real: Vec::new(),
    };
    let mut reals = Vec::new();
    for child in node.block.iter().flatten() {
        service_setting(file, child, &mut template, &mut reals, into)?;
    }
    // The checker's polling interval belongs to the service: each check keeps it.
    let delay_loop = node
        .block
        .iter()
        .flatten()
        .filter(|c| c.words[0] == "delay_loop")
        .find_map(|c| c.words.get(1).cloned());
    for (addr, mark) in keys {
        let mut director = template.clone();
        director.vip = addr.map(|a| a.ip());
        director.port = addr.map(|a| a.port());
        director.fwmark = mark;
        if mark.is_some() {
            director.proto = None;
        }
        director.name = director_name(&director);
        if director.scheduler.is_none() {
            director.scheduler = scheduler("wlc");
        }
        for (real, checks) in &reals {
            let mut real: RealConfig = real.clone();
            if let Some(a) =
                socket(&real.addr).filter(|a| a.port() == 0 && !real.addr.ends_with(":0"))
            {
                real.addr =
                    std::net::SocketAddr::new(a.ip(), director.port.unwrap_or(0)).to_string();
            }
            for check in checks {
                let mut settings = check.settings.clone();
                if let Some(delay) = delay_loop.as_ref().filter(|_| !settings.is_empty()) {
                    settings.insert(0, ("delay_loop".to_string(), delay.clone()));
                }
                into.checks.push(HealthCheck {
                    director: director.name.clone(),
                    real: real.addr.clone(),
                    settings,
                    ..check.clone()
                });
            }
            director.real.push(real);
        }
        normalise_forward(&mut director);
        if into.config.director.iter().any(|d| d.name == director.name) {
            return Err(located(
                file,
                node.line,
                format!("virtual service {} defined twice", director.name),
            ));
        }
        if let Some(sorry) = into.sorry_servers.iter_mut().find(|(n, _)| n.is_empty()) {
            sorry.0 = director.name.clone();
        }
        into.config.director.push(director);
    }
    into.sorry_servers.retain(|(n, _)| !n.is_empty());
    Ok(())
}

fn forward(file: &str, node: &Node) -> Result<Forward, ConfigError> {
    match node.words.get(1).map(|s| s.to_ascii_uppercase()).as_deref() {
        Some("NAT") => Ok(Forward::Nat),
        Some("DR") => Ok(Forward::Dr),
        Some("TUN") => Ok(Forward::Tun),
        _ => Err(located(
            file,
            node.line,
            format!("`{}`: expected NAT, DR or TUN", node.words.join(" ")),
        )),
    }
}

type Real = (RealConfig, Vec<HealthCheck>);

/// A service a `virtual_server` names: VIP:PORT, or a firewall mark.
type ServiceKey = (Option<std::net::SocketAddr>, Option<u32>);

fn service_setting(
    file: &str,
    node: &Node,
    d: &mut DirectorConfig,
    reals: &mut Vec<Real>,
    into: &mut Imported,
) -> Result<(), ConfigError> {
    let arg = node.words.get(1).cloned().unwrap_or_default();
    let bad = |what: &str| {
        located(
            file,
            node.line,
            format!("`{}`: {what}", node.words.join(" ")),
        )
    };
    match node.words[0].as_str() {
        "lb_algo" | "lvs_sched" => {
            d.scheduler = Some(scheduler(&arg).ok_or_else(|| bad("unknown scheduler"))?)
        }
        "lb_kind" | "lvs_method" => d.forward = Some(forward(file, node)?),
        "protocol" => match arg.to_ascii_uppercase().as_str() {
            "TCP" => d.proto = Some("tcp".into()),
            "UDP" => d.proto = Some("udp".into()),
            _ => return Err(bad("the appliance balances TCP or UDP")),
        },
        "persistence_timeout" => {
            let secs: u64 = if arg.is_empty() {
                360
            } else {
                arg.parse().map_err(|_| bad("not a number of seconds"))?
            };
            d.persistence = Some(format!("{secs}s"));
        }
        "persistence_granularity" => d.persistence_netmask = Some(arg),
        "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" => {
            d.flags.push(node.words[0].clone())
        }
        "real_server" => reals.push(real_server(file, node, into)?),
        "sorry_server" => into
            .sorry_servers
            .push((String::new(), node.words[1..].join(" "))),
        "delay_loop" => {} // kept with the checks (`[[health_check]]` detect / recover)
        other => into.warn(
            file,
            node.line,
            &node.words.join(" "),
            format!("`{other}` is not modelled by the director: ignored"),
        ),
    }
    Ok(())
}

fn real_server(file: &str, node: &Node, into: &mut Imported) -> Result<Real, ConfigError> {
    let w = &node.words;
    let ip: std::net::IpAddr = w
        .get(1)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| located(file, node.line, "`real_server` needs an address"))?;
    let port = match w.get(2) {
        Some(p) => p
            .parse()
            .map_err(|_| located(file, node.line, format!("`{p}` is not a port")))?,
        None => 0,
    };
    let addr = std::net::SocketAddr::new(ip, port);
    let mut real = RealConfig {
        addr: if w.get(2).is_some() {
            addr.to_string()
        } else {
            ip.to_string()
        },
        weight: Some(1),
        forward: None,
        upper_threshold: None,
        lower_threshold: None,
        mac: None,
    };
    let mut checks = Vec::new();
    for child in node.block.iter().flatten() {
        let arg = child.words.get(1).cloned().unwrap_or_default();
        let num = |what: &str| -> Result<u32, ConfigError> {
            arg.parse()
                .map_err(|_| located(file, child.line, format!("`{what}` needs a number")))
        };
        match child.words[0].as_str() {
            "weight" => {
                real.weight = Some(
                    i32::try_from(num("weight")?)
                        .map_err(|_| located(file, child.line, "weight above 2147483647"))?,
                )
            }
            "uthreshold" => real.upper_threshold = Some(num("uthreshold")?).filter(|&x| x != 0),
            "lthreshold" => real.lower_threshold = Some(num("lthreshold")?).filter(|&x| x != 0),
            "lvs_method" | "lb_kind" => real.forward = Some(forward(file, child)?),
            "inhibit_on_failure" => checks.push(HealthCheck {
                director: String::new(),
                real: String::new(),
                kind: "inhibit_on_failure".into(),
                settings: vec![],
            }),
            kind if child.block.is_some()
                && (kind.ends_with("_CHECK") || kind.ends_with("_GET")) =>
            {
                let mut settings = Vec::new();
                flatten(child.block.iter().flatten(), "", &mut settings);
                checks.push(HealthCheck {
                    director: String::new(),
                    real: String::new(),
                    kind: kind.to_string(),
                    settings,
                });
            }
            other => into.warn(
                file,
                child.line,
                &child.words.join(" "),
                format!("`{other}` is not modelled for a real server: ignored"),
            ),
        }
    }
    Ok((real, checks))
}

fn flatten<'a>(
    nodes: impl Iterator<Item = &'a Node>,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) {
    for node in nodes {
        let key = format!("{prefix}{}", node.words[0]);
        match &node.block {
            Some(block) => flatten(block.iter(), &format!("{key}."), out),
            None => out.push((key, node.words[1..].join(" "))),
        }
    }
}

/// keepalived.conf `virtual_server` blocks for the appliance's directors, each real server
/// with its `[[health_check]]` as a checker block.
pub fn export(
    directors: &[DirectorConfig],
    checks: &[super::health::HealthCheckConfig],
    notes: &mut Vec<String>,
) -> anyhow::Result<String> {
    let mut out =
        String::from("# Virtual servers exported by lbsim (sim export --to keepalived).\n");
    for d in directors {
        let head = match (d.fwmark, d.vip) {
            (Some(mark), _) => format!("fwmark {mark}"),
            (None, Some(vip)) => format!("{vip} {}", d.port.unwrap_or(0)),
            _ => anyhow::bail!("director {}: neither vip nor fwmark", d.name),
        };
        out.push_str(&format!("\nvirtual_server {head} {{\n"));
        out.push_str(&format!(
            "    lb_algo {}\n",
            d.scheduler.map_or("wlc", |s| s.name())
        ));
        out.push_str(&format!(
            "    lb_kind {}\n",
            kind(d.forward.unwrap_or(Forward::Nat))
        ));
        if d.fwmark.is_none() {
            out.push_str(&format!(
                "    protocol {}\n",
                d.proto.as_deref().unwrap_or("tcp").to_ascii_uppercase()
            ));
        }
        for flag in &d.flags {
            out.push_str(&format!("    {flag}\n"));
        }
        if let Some(p) = &d.persistence {
            let secs = persistence_seconds(p).ok_or_else(|| {
                anyhow::anyhow!(
                    "director {}: persistence {p:?} is not whole seconds",
                    d.name
                )
            })?;
            out.push_str(&format!("    persistence_timeout {secs}\n"));
            if let Some(mask) = &d.persistence_netmask {
                out.push_str(&format!(
                    "    persistence_granularity {}\n",
                    super::ipvsadm::dotted(mask)
                ));
            }
        }
        for real in &d.real {
            let addr = socket(&real.addr).ok_or_else(|| {
                anyhow::anyhow!("director {}: bad real server {:?}", d.name, real.addr)
            })?;
            out.push_str(&format!(
                "    real_server {} {} {{\n        weight {}\n",
                addr.ip(),
                addr.port(),
                real.weight.unwrap_or(1)
            ));
            if let Some(f) = real.forward {
                out.push_str(&format!("        lvs_method {}\n", kind(f)));
            }
            if let Some(x) = real.upper_threshold {
                out.push_str(&format!("        uthreshold {x}\n"));
            }
            if let Some(y) = real.lower_threshold {
                out.push_str(&format!("        lthreshold {y}\n"));
            }
            if real.mac.is_some() {
                notes.push(format!(
                    "director {}: real server {addr}: `mac` has no keepalived form",
                    d.name
                ));
            }
            if let Some(check) = super::health_export::of(checks, &d.name, &real.addr) {
                out.push_str(&super::health_export::keepalived_block(check, notes));
            }
            out.push_str("    }\n");
        }
        out.push_str("}\n");
    }
    Ok(out)
}

fn kind(forward: Forward) -> &'static str {
    match forward {
        Forward::Nat => "NAT",
        Forward::Dr => "DR",
        Forward::Tun => "TUN",
    }
}
