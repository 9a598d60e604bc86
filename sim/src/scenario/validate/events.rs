//! Every name a timed event uses must exist when the scenario loads: the host of a `link`
//! event, the director and real server of `server_down` / `server_up` / `weight`, the shield
//! context of `mode`. An event naming nothing would otherwise do nothing, silently.
//!
//! Not here: applying events (see the engine).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use datapath::director::config::DirectorConfig;

use super::{Failure, at};
use crate::appliance::ApplianceConfig;
use crate::diagnostics::{KeyPath, TomlSpans};
use crate::scenario::{Scenario, TimedEvent};

/// Check the names every `[[events]]` element uses.
pub(super) fn validate_events(
    scenario: &Scenario,
    base_dir: &Path,
    spans: &TomlSpans<'_>,
) -> Result<(), Failure> {
    let appliance = effective_appliance(&scenario.appliance, base_dir);
    for (index, event) in scenario.events.iter().enumerate() {
        let element = KeyPath::root().key("events").index(index);
        match event.get_ref() {
            TimedEvent::Link { host, .. } => check_host(scenario, host)
                .map_err(|message| at(spans, &element.key("host"), message))?,
            TimedEvent::Mode {
                context,
                syn_cookies,
                ..
            } => {
                if !["on", "off", "auto"].contains(&syn_cookies.as_str()) {
                    let message = format!("`{syn_cookies}`: must be on, off or auto");
                    return Err(at(spans, &element.key("syn_cookies"), message));
                }
                if let Some(appliance) = &appliance {
                    check_context(appliance, *context)
                        .map_err(|(key, message)| at(spans, &element.key(key), message))?;
                }
            }
            TimedEvent::ServerDown {
                director, server, ..
            }
            | TimedEvent::CheckFail {
                director, server, ..
            }
            | TimedEvent::CheckOk {
                director, server, ..
            }
            | TimedEvent::ServerUp {
                director, server, ..
            }
            | TimedEvent::Weight {
                director, server, ..
            } => {
                if let Some(appliance) = &appliance {
                    check_server(&appliance.director, director.as_deref(), *server)
                        .map_err(|(key, message)| at(spans, &element.key(key), message))?;
                }
            }
        }
    }
    Ok(())
}

/// The appliance the run will build: the inline tables, or the named file (`None` when that
/// file does not load: building the pipeline reports why).
pub(super) fn effective_appliance(
    inline: &ApplianceConfig,
    base_dir: &Path,
) -> Option<ApplianceConfig> {
    match &inline.appliance {
        None => Some(inline.clone()),
        Some(file) => ApplianceConfig::load(&base_dir.join(file)).ok(),
    }
}

fn check_host(scenario: &Scenario, host: &str) -> Result<(), String> {
    let topology = &scenario.topology;
    let known = topology.networks.iter().any(|n| n.name == host)
        || topology.backends.iter().any(|b| b.name == host);
    if known {
        return Ok(());
    }
    let names: Vec<&str> = (topology.networks.iter().map(|n| n.name.as_str()))
        .chain(topology.backends.iter().map(|b| b.name.as_str()))
        .collect();
    let names = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    Err(format!(
        "`{host}`: no network or backend of that name (hosts: {names})"
    ))
}

/// A `mode` event needs a shield, and a context with that destination when it names one.
fn check_context(
    appliance: &ApplianceConfig,
    context: Option<IpAddr>,
) -> Result<(), (&'static str, String)> {
    let Some(shield) = &appliance.shield else {
        return Err((
            "kind",
            "a mode event needs a [shield] in the appliance".into(),
        ));
    };
    let Some(destination) = context else {
        return Ok(());
    };
    let contexts = shield
        .context
        .iter()
        .chain(shield.instance.iter().flat_map(|i| i.context.iter()));
    let known: Vec<IpAddr> = contexts.filter_map(|c| c.dst).collect();
    if known.contains(&destination) {
        return Ok(());
    }
    let list: Vec<String> = known.iter().map(ToString::to_string).collect();
    Err((
        "context",
        format!(
            "`{destination}`: no shield context has that destination (contexts: {})",
            if list.is_empty() {
                "none".into()
            } else {
                list.join(", ")
            }
        ),
    ))
}

/// A director event names an existing director (when it names one) that has the server; with
/// no director named, at least one director must have it.
fn check_server(
    directors: &[DirectorConfig],
    director: Option<&str>,
    server: SocketAddr,
) -> Result<(), (&'static str, String)> {
    let names = || {
        let names: Vec<&str> = directors.iter().map(|d| d.name.as_str()).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    };
    let candidates: Vec<&DirectorConfig> = match director {
        Some(name) => {
            let found: Vec<_> = directors.iter().filter(|d| d.name == name).collect();
            if found.is_empty() {
                let message = format!(
                    "`{name}`: no director of that name (directors: {})",
                    names()
                );
                return Err(("director", message));
            }
            found
        }
        None if directors.is_empty() => {
            return Err((
                "server",
                format!("`{server}`: the appliance has no director"),
            ));
        }
        None => directors.iter().collect(),
    };
    if candidates.iter().any(|d| {
        d.real
            .iter()
            .any(|real| is_server(&real.addr, d.port, server))
    }) {
        return Ok(());
    }
    let reals: Vec<&str> = candidates
        .iter()
        .flat_map(|d| d.real.iter().map(|r| r.addr.as_str()))
        .collect();
    let whose = director.map_or("any director".to_string(), |name| {
        format!("director {name:?}")
    });
    Err((
        "server",
        format!(
            "`{server}`: not a real server of {whose} (real servers: {})",
            reals.join(", ")
        ),
    ))
}

/// Whether a real server written `addr` (`address:port`, or a bare address that takes the
/// service's port) is `server`.
pub(super) fn is_server(addr: &str, service_port: Option<u16>, server: SocketAddr) -> bool {
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        return socket == server;
    }
    addr.parse::<IpAddr>()
        .is_ok_and(|ip| ip == server.ip() && service_port.is_none_or(|port| port == server.port()))
}
