//! `check_fail` / `check_ok` events become what the appliance's health checker does: each
//! is replaced, once the scenario loads, by the `server_down` / `weight = 0` (failure) or
//! `server_up` / `weight = N` (recovery) it causes, at its time plus the check's `detect` /
//! `recover` delay (see [`crate::appliance::confio::health`]). A check event for a server
//! without a `[[health_check]]` is a located error.
//!
//! Not here: applying events (see the engine).

use std::path::Path;

use super::{Failure, at};
use crate::appliance::confio::health::{HealthCheckConfig, Reaction};
use crate::diagnostics::{KeyPath, TomlSpans};
use crate::scenario::units::DurationNs;
use crate::scenario::{Scenario, TimedEvent};

/// Replace every check event by the director event it causes.
pub(crate) fn expand(
    scenario: &mut Scenario,
    base_dir: &Path,
    spans: &TomlSpans<'_>,
) -> Result<(), Failure> {
    let has_checks = scenario.events.iter().any(|e| {
        matches!(
            e.get_ref(),
            TimedEvent::CheckFail { .. } | TimedEvent::CheckOk { .. }
        )
    });
    if !has_checks {
        return Ok(());
    }
    let Some(appliance) = super::events::effective_appliance(&scenario.appliance, base_dir) else {
        return Ok(()); // building the pipeline reports why the file does not load
    };
    let mut checks = appliance.health_check.clone();
    if scenario.appliance.appliance.is_some() {
        checks.extend(scenario.appliance.health_check.iter().cloned());
    }
    for (index, event) in scenario.events.iter_mut().enumerate() {
        let element = KeyPath::root().key("events").index(index);
        let (failed, at_ns, director, server) = match event.get_ref() {
            TimedEvent::CheckFail {
                at,
                director,
                server,
            } => (true, at.0, director.clone(), *server),
            TimedEvent::CheckOk {
                at,
                director,
                server,
            } => (false, at.0, director.clone(), *server),
            _ => continue,
        };
        let Some(check) = checks
            .iter()
            .find(|c| c.covers(director.as_deref(), server))
        else {
            let message = format!(
                "`{server}`: no [[health_check]] in the appliance for this server (import a keepalived.conf or ldirectord.cf with its checks, or add one)"
            );
            return Err(at(spans, &element.key("server"), message));
        };
        let weight = configured_weight(&appliance.director, check, director.as_deref(), server);
        let (delay, reaction) = check
            .reaction(failed, weight)
            .map_err(|m| at(spans, &element.key("server"), m))?;
        let when = DurationNs(at_ns.saturating_add(delay));
        let director = director.or_else(|| check.director.clone());
        *event.get_mut() = match reaction {
            Reaction::Remove => TimedEvent::ServerDown {
                at: when,
                director,
                server,
            },
            Reaction::Restore => TimedEvent::ServerUp {
                at: when,
                director,
                server,
            },
            Reaction::Quiesce => TimedEvent::Weight {
                at: when,
                director,
                server,
                weight: 0,
            },
            Reaction::Reweight(weight) => TimedEvent::Weight {
                at: when,
                director,
                server,
                weight,
            },
        };
    }
    Ok(())
}

/// The weight the director's configuration gives `server` (1 when it says nothing).
fn configured_weight(
    directors: &[datapath::director::config::DirectorConfig],
    check: &HealthCheckConfig,
    director: Option<&str>,
    server: std::net::SocketAddr,
) -> u32 {
    let name = director.or(check.director.as_deref());
    directors
        .iter()
        .filter(|d| name.is_none_or(|n| n == d.name))
        .flat_map(|d| d.real.iter().map(move |r| (d, r)))
        .find(|(d, r)| super::events::is_server(&r.addr, d.port, server))
        .and_then(|(_, r)| r.weight)
        .map_or(1, |w| u32::try_from(w).unwrap_or(0))
}
