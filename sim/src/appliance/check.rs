//! Check an appliance configuration when its file (or scenario) loads, so that a value the
//! stages reject (a shield capacity out of range, a director's bad real server, two
//! directors with one name) is reported at its key's `file:line:col`, like a syntax error,
//! rather than later without a place.
//!
//! Not here: building the pipeline (see [`super::build_pipeline`]), which runs the same
//! checks again.

use datapath::director::config::{ConfigError, DirectorConfig, build_all};
use datapath::shield::ShieldConfigError;

use super::ApplianceConfig;
use crate::diagnostics::KeyPath;

/// The first problem of `config` (under `base`: the root of an appliance file, `appliance`
/// in a scenario): the key path it is at and the message.
pub fn check(config: &ApplianceConfig, base: &KeyPath) -> Result<(), (KeyPath, String)> {
    if let Some(shield) = &config.shield
        && let Err(error) = datapath::shield::build(shield, 0, &[])
    {
        return Err((shield_path(&error, base), error.to_string()));
    }
    if let Err(error) = build_all(&config.director) {
        return Err((
            director_path(&error, &config.director, base),
            error.to_string(),
        ));
    }
    Ok(())
}

/// `shield.instance[0].context[1]` (the error's `at`) as a key path, with the key of a value
/// out of range.
fn shield_path(error: &ShieldConfigError, base: &KeyPath) -> KeyPath {
    use ShieldConfigError as E;
    let (at, key) = match error {
        E::OutOfRange { at, key, .. } => (at, Some(*key)),
        E::TooManyContexts { at, .. }
        | E::MissingDst { at }
        | E::DefaultWithSelector { at }
        | E::DuplicateContext { at, .. }
        | E::VlanOutOfRange { at, .. }
        | E::UnknownInterface { at, .. }
        | E::InterfaceTwice { at, .. }
        | E::NoInterfaces { at } => (at, None),
    };
    let mut path = base.clone();
    for segment in at.split('.') {
        match segment.split_once('[') {
            Some((name, index)) => {
                path = path.key(name);
                if let Ok(index) = index.trim_end_matches(']').parse() {
                    path = path.index(index);
                }
            }
            None => path = path.key(segment),
        }
    }
    match key {
        Some(key) => path.key(key),
        None => path,
    }
}

/// The director table (and its key) a director error is about.
fn director_path(error: &ConfigError, directors: &[DirectorConfig], base: &KeyPath) -> KeyPath {
    use ConfigError as E;
    let index = |name: &str| directors.iter().position(|d| d.name == name);
    let last = |name: &str| directors.iter().rposition(|d| d.name == name);
    let (position, key) = match error {
        E::Addressing(name) => (index(name), None),
        E::Protocol(name, _) => (index(name), Some("proto")),
        E::Flag(name, ..) => (index(name), Some("flags")),
        E::Duration(name, _) => (index(name), Some("persistence")),
        E::Netmask(name, _) => (index(name), Some("persistence_netmask")),
        E::RealAddress(name, _)
        | E::Weight(name, ..)
        | E::Thresholds(name, _)
        | E::Mac(name, ..)
        | E::DuplicateReal(name, _)
        | E::Family(name, _) => (index(name), Some("real")),
        E::DuplicateName(name) => (last(name), Some("name")),
        E::DuplicateService(_, second, _) => (last(second), None),
    };
    let table = base.key("director");
    match (position, key) {
        (Some(position), Some(key)) => table.index(position).key(key),
        (Some(position), None) => table.index(position),
        (None, _) => table,
    }
}
