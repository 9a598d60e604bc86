//! `ipvsadm-save -n` dumps and scripts of `ipvsadm` commands in, `ipvsadm-restore` input
//! out.
//!
//! Read: `-A`/`-E` (service: `-t|-u VIP:PORT` or `-f MARK`, `-s`, `-p [SECS]`, `-M`, `-b`),
//! `-a`/`-e` (real server: `-r ADDR[:PORT]`, `-g|-i|-m`, `-w`, `-x`, `-y`), `-D`, `-d`,
//! `-C`; a leading `ipvsadm` word is allowed. Options the appliance does not model
//! (`--pe`, `-O`, `--set`, tunnel types, SCTP) are located warnings. As with ipvsadm, a
//! real server without a forwarding option is direct routing (`-g`) and a real server of a
//! VIP:PORT service without a port takes the service's port.

use std::net::{IpAddr, SocketAddr};

use datapath::director::config::{DirectorConfig, RealConfig, parse_duration};
use datapath::director::dest::Forward;

use super::{Imported, director_name, located, scheduler, words};
use crate::diagnostics::LocatedError as ConfigError;

/// Import an ipvsadm dump or script.
pub fn import(file: &str, text: &str, into: &mut Imported) -> Result<(), ConfigError> {
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let mut tokens = words(content);
        if tokens.first() == Some(&"ipvsadm") {
            tokens.remove(0);
        }
        command(file, line, raw, &tokens, into)?;
    }
    Ok(())
}

/// The parsed options of one ipvsadm command.
#[derive(Default)]
struct Options {
    service: Option<(Option<String>, Option<SocketAddr>, Option<u32>)>,
    scheduler: Option<String>,
    persistence: Option<Option<u64>>,
    netmask: Option<String>,
    flags: Vec<String>,
    real: Option<String>,
    forward: Option<Forward>,
    weight: Option<i32>,
    upper: Option<u32>,
    lower: Option<u32>,
}

fn command(
    file: &str,
    line: usize,
    raw: &str,
    tokens: &[&str],
    into: &mut Imported,
) -> Result<(), ConfigError> {
    let Some((&verb, rest)) = tokens.split_first() else {
        return Ok(());
    };
    match verb {
        "-A" | "--add-service" | "-E" | "--edit-service" => {
            let options = parse_options(file, line, raw, rest, into)?;
            add_service(file, line, verb, options, into)
        }
        "-a" | "--add-server" | "-e" | "--edit-server" => {
            let options = parse_options(file, line, raw, rest, into)?;
            add_real(file, line, raw, verb, options, into)
        }
        "-D" | "--delete-service" => {
            let options = parse_options(file, line, raw, rest, into)?;
            let name = service_name(file, line, &options)?;
            into.config.director.retain(|d| d.name != name);
            Ok(())
        }
        "-d" | "--delete-server" => {
            let options = parse_options(file, line, raw, rest, into)?;
            let name = service_name(file, line, &options)?;
            let real = options.real.unwrap_or_default();
            if let Some(d) = into.config.director.iter_mut().find(|d| d.name == name) {
                d.real.retain(|r| r.addr != real);
            }
            Ok(())
        }
        "-C" | "--clear" => {
            into.config.director.clear();
            Ok(())
        }
        "--set" | "-R" | "-S" | "-L" | "-l" | "-Z" | "--start-daemon" | "--stop-daemon" => {
            into.warn(
                file,
                line,
                raw,
                format!("`{verb}` does not describe a virtual service: ignored"),
            );
            Ok(())
        }
        other => Err(located(
            file,
            line,
            format!("`{other}` is not an ipvsadm command (expected -A, -E, -a, -e, -D, -d, -C)"),
        )),
    }
}

fn value<'a>(
    file: &str,
    line: usize,
    option: &str,
    iter: &mut std::iter::Peekable<std::slice::Iter<'a, &'a str>>,
) -> Result<&'a str, ConfigError> {
    iter.next()
        .copied()
        .ok_or_else(|| located(file, line, format!("`{option}` needs a value")))
}

fn number<T: std::str::FromStr>(
    file: &str,
    line: usize,
    option: &str,
    text: &str,
) -> Result<T, ConfigError> {
    text.parse().map_err(|_| {
        located(
            file,
            line,
            format!("`{option} {text}`: not a number in range"),
        )
    })
}

fn parse_options(
    file: &str,
    line: usize,
    raw: &str,
    rest: &[&str],
    into: &mut Imported,
) -> Result<Options, ConfigError> {
    let mut o = Options::default();
    let mut iter = rest.iter().peekable();
    while let Some(&option) = iter.next() {
        match option {
            "-t" | "--tcp-service" | "-u" | "--udp-service" => {
                let text = value(file, line, option, &mut iter)?;
                let addr = socket(text)
                    .ok_or_else(|| located(file, line, format!("`{text}` is not VIP:PORT")))?;
                let proto = if option.starts_with("-t") || option == "--tcp-service" {
                    "tcp"
                } else {
                    "udp"
                };
                o.service = Some((Some(proto.into()), Some(addr), None));
            }
            "-f" | "--fwmark-service" => {
                let mark = number(file, line, option, value(file, line, option, &mut iter)?)?;
                o.service = Some((None, None, Some(mark)));
            }
            "-s" | "--scheduler" => {
                o.scheduler = Some(value(file, line, option, &mut iter)?.into())
            }
            "-p" | "--persistent" => {
                let secs = match iter.peek() {
                    Some(next) if !next.starts_with('-') => {
                        Some(number(file, line, option, iter.next().unwrap_or(&""))?)
                    }
                    _ => None,
                };
                o.persistence = Some(secs);
            }
            "-M" | "--netmask" => o.netmask = Some(value(file, line, option, &mut iter)?.into()),
            "-b" | "--sched-flags" => {
                o.flags = value(file, line, option, &mut iter)?
                    .split(',')
                    .map(str::to_string)
                    .collect();
            }
            "-r" | "--real-server" => o.real = Some(value(file, line, option, &mut iter)?.into()),
            "-g" | "--gatewaying" => o.forward = Some(Forward::Dr),
            "-i" | "--ipip" => o.forward = Some(Forward::Tun),
            "-m" | "--masquerading" => o.forward = Some(Forward::Nat),
            "-w" | "--weight" => {
                o.weight = Some(number(
                    file,
                    line,
                    option,
                    value(file, line, option, &mut iter)?,
                )?)
            }
            "-x" | "--u-threshold" => {
                o.upper = Some(number(
                    file,
                    line,
                    option,
                    value(file, line, option, &mut iter)?,
                )?)
            }
            "-y" | "--l-threshold" => {
                o.lower = Some(number(
                    file,
                    line,
                    option,
                    value(file, line, option, &mut iter)?,
                )?)
            }
            "-6" | "--ipv6" | "-n" | "--numeric" => {}
            "--tun-type" if iter.peek().is_some_and(|t| **t == "ipip") => {
                iter.next(); // the default tunnel, the one the director models
            }
            "--pe" | "--tun-type" | "--tun-port" | "--tun-nocsum" | "--tun-csum"
            | "--tun-remcsum" => {
                let _ = iter.next_if(|v| !v.starts_with('-'));
                into.warn(
                    file,
                    line,
                    raw,
                    format!("`{option}` is not modelled by the director: ignored"),
                );
            }
            "-O" | "--ops" => into.warn(
                file,
                line,
                raw,
                "one-packet scheduling (`-O`) is not modelled: ignored",
            ),
            "--sctp-service" => {
                return Err(located(
                    file,
                    line,
                    "SCTP services are not supported by the appliance",
                ));
            }
            other => {
                return Err(located(
                    file,
                    line,
                    format!("unknown ipvsadm option `{other}`"),
                ));
            }
        }
    }
    Ok(o)
}

/// `VIP:PORT`, `[V6]:PORT`, or an address alone (port 0).
pub fn socket(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0)))
        .or_else(|| {
            let (ip, port) = text.rsplit_once(':')?;
            Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
        })
}

fn service_config(options: &Options) -> DirectorConfig {
    let (proto, addr, mark) = options.service.clone().unwrap_or_default();
    let mut director = DirectorConfig {
        name: String::new(),
        vip: addr.map(|a| a.ip()),
        port: addr.map(|a| a.port()),
        proto,
        fwmark: mark,
        scheduler: None,
        flags: Vec::new(),
        persistence: None,
        persistence_netmask: None,
        forward: None,
        real: Vec::new(),
    };
    director.name = director_name(&director);
    director
}

fn service_name(file: &str, line: usize, options: &Options) -> Result<String, ConfigError> {
    if options.service.is_none() {
        return Err(located(file, line, "no service given (-t, -u or -f)"));
    }
    Ok(service_config(options).name)
}

fn add_service(
    file: &str,
    line: usize,
    verb: &str,
    options: Options,
    into: &mut Imported,
) -> Result<(), ConfigError> {
    let name = service_name(file, line, &options)?;
    let new = service_config(&options);
    let existing = into.config.director.iter().position(|d| d.name == name);
    let index = match (existing, verb.starts_with("-E") || verb == "--edit-service") {
        (Some(i), true) => i,
        (None, true) => {
            return Err(located(
                file,
                line,
                format!("`-E`: service {name} was not added"),
            ));
        }
        (Some(_), false) => return Err(located(file, line, format!("service {name} added twice"))),
        (None, false) => {
            into.config.director.push(new);
            into.config.director.len() - 1
        }
    };
    let director = &mut into.config.director[index];
    let sched = options.scheduler.as_deref().unwrap_or("wlc");
    director.scheduler = Some(
        scheduler(sched)
            .ok_or_else(|| located(file, line, format!("unknown scheduler `{sched}`")))?,
    );
    director.flags = options.flags;
    director.persistence = options
        .persistence
        .map(|secs| format!("{}s", secs.unwrap_or(300)));
    director.persistence_netmask = options.netmask;
    Ok(())
}

fn add_real(
    file: &str,
    line: usize,
    raw: &str,
    verb: &str,
    options: Options,
    into: &mut Imported,
) -> Result<(), ConfigError> {
    let name = service_name(file, line, &options)?;
    let Some(text) = options.real.as_deref() else {
        return Err(located(file, line, "a real server needs `-r ADDR[:PORT]`"));
    };
    let Some(director) = into.config.director.iter_mut().find(|d| d.name == name) else {
        into.warn(
            file,
            line,
            raw,
            format!("real server of service {name}, which is not defined: ignored"),
        );
        return Ok(());
    };
    let mut addr =
        socket(text).ok_or_else(|| located(file, line, format!("`{text}` is not ADDR[:PORT]")))?;
    if addr.port() == 0 && !text.contains("]:") && text.matches(':').count() != 1 {
        addr.set_port(director.port.unwrap_or(0));
    }
    let forward = options.forward.unwrap_or(Forward::Dr);
    let real = RealConfig {
        addr: addr.to_string(),
        weight: Some(options.weight.unwrap_or(1)),
        forward: Some(forward),
        upper_threshold: options.upper.filter(|&x| x != 0),
        lower_threshold: options.lower.filter(|&y| y != 0),
        mac: None,
    };
    let edit = verb.starts_with("-e") || verb == "--edit-server";
    match director.real.iter_mut().find(|r| r.addr == real.addr) {
        Some(existing) if edit => *existing = real,
        Some(_) => {
            return Err(located(
                file,
                line,
                format!("real server {addr} added twice to {name}"),
            ));
        }
        None if edit => {
            return Err(located(
                file,
                line,
                format!("`-e`: real server {addr} is not in {name}"),
            ));
        }
        None => director.real.push(real),
    }
    normalise_forward(director);
    Ok(())
}

/// Hoist the common forwarding method to the service (`forward`), keep per-real overrides
/// only where they differ.
pub fn normalise_forward(director: &mut DirectorConfig) {
    let first = director
        .real
        .first()
        .and_then(|r| r.forward.or(director.forward));
    let Some(service) = director.forward.or(first) else {
        return;
    };
    for real in &mut director.real {
        let own = real.forward.unwrap_or(service);
        real.forward = (own != service).then_some(own);
    }
    director.forward = Some(service);
}

/// The seconds of a `persistence` duration, if it is a whole number of them.
pub fn persistence_seconds(text: &str) -> Option<u64> {
    let ns = parse_duration(text)?;
    (ns % 1_000_000_000 == 0).then_some(ns / 1_000_000_000)
}

/// `-t VIP:PORT` / `-u VIP:PORT` / `-f MARK` of a director.
pub fn service_option(director: &DirectorConfig) -> String {
    match (director.fwmark, director.vip) {
        (Some(mark), _) => {
            let v6 = director.real.iter().any(|r| r.addr.starts_with('['));
            format!("-f {mark}{}", if v6 { " -6" } else { "" })
        }
        (None, Some(vip)) => {
            let flag = if director.proto.as_deref() == Some("udp") {
                "-u"
            } else {
                "-t"
            };
            format!(
                "{flag} {}",
                SocketAddr::new(vip, director.port.unwrap_or(0))
            )
        }
        (None, None) => String::new(),
    }
}

/// `ipvsadm-restore` input for the appliance's directors; `notes` gets what is lost.
pub fn export(directors: &[DirectorConfig], notes: &mut Vec<String>) -> anyhow::Result<String> {
    let mut out = String::from("-C\n");
    for director in directors {
        let service = service_option(director);
        let sched = director.scheduler.map_or("wlc", |s| s.name());
        let mut line = format!("-A {service} -s {sched}");
        if !director.flags.is_empty() {
            line.push_str(&format!(" -b {}", director.flags.join(",")));
        }
        if let Some(p) = &director.persistence {
            let secs = persistence_seconds(p).ok_or_else(|| {
                anyhow::anyhow!(
                    "director {}: persistence {p:?} is not whole seconds",
                    director.name
                )
            })?;
            line.push_str(&format!(" -p {secs}"));
            if let Some(mask) = &director.persistence_netmask {
                line.push_str(&format!(" -M {}", dotted(mask)));
            }
        }
        out.push_str(&line);
        out.push('\n');
        for real in &director.real {
            out.push_str(&real_line(director, &service, real, notes)?);
        }
    }
    Ok(out)
}

fn real_line(
    director: &DirectorConfig,
    service: &str,
    real: &RealConfig,
    notes: &mut Vec<String>,
) -> anyhow::Result<String> {
    let addr = socket(&real.addr).ok_or_else(|| {
        anyhow::anyhow!(
            "director {}: bad real server {:?}",
            director.name,
            real.addr
        )
    })?;
    let forward = match real.forward.or(director.forward).unwrap_or(Forward::Nat) {
        Forward::Nat => "-m",
        Forward::Dr => "-g",
        Forward::Tun => "-i",
    };
    let mut line = format!(
        "-a {service} -r {addr} {forward} -w {}",
        real.weight.unwrap_or(1)
    );
    if let Some(x) = real.upper_threshold.filter(|&x| x != 0) {
        line.push_str(&format!(" -x {x}"));
    }
    if let Some(y) = real.lower_threshold.filter(|&y| y != 0) {
        line.push_str(&format!(" -y {y}"));
    }
    let service_port = director.port.unwrap_or(0);
    if forward != "-m" && director.fwmark.is_none() && addr.port() != service_port {
        notes.push(format!(
            "director {}: real server {addr}: the kernel gives a direct-routing or tunnelled real server the service's port {service_port}",
            director.name
        ));
    }
    if real.mac.is_some() {
        notes.push(format!(
            "director {}: real server {addr}: `mac` has no ipvsadm form (the kernel resolves it)",
            director.name
        ));
    }
    line.push('\n');
    Ok(line)
}

/// A netmask as ipvsadm writes it: dotted for a prefix length ≤ 32 given as a number.
pub fn dotted(mask: &str) -> String {
    match mask.parse::<u32>() {
        Ok(prefix) if prefix <= 32 => {
            let bits = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            std::net::Ipv4Addr::from(bits).to_string()
        }
        _ => mask.to_string(),
    }
}
