//! Check an appliance configuration when its file (or scenario) loads, so that a value the
//! stages reject (a shield capacity out of range, a director's bad real server, two
//! directors with one name, a NAT rule leaving by an interface without an address) is
//! reported at its key's `file:line:col`, like a syntax error, rather than later without a
//! place.
//!
//! Not here: building the pipeline (see [`super::build_pipeline`]), which runs the same
//! checks again.

use std::collections::BTreeSet;

use datapath::director::config::{ConfigError, DirectorConfig, build_all};
use datapath::shield::ShieldConfigError;

use super::ApplianceConfig;
use crate::diagnostics::KeyPath;

/// The first problem of `config` (under `base`: the root of an appliance file, `appliance`
/// in a scenario): the key path it is at and the message. `iface_names` are the appliance's
/// interfaces when known (a scenario's topology); otherwise every interface the shield names
/// is taken as existing (the pipeline build checks them against the real ones).
pub fn check(
    config: &ApplianceConfig,
    base: &KeyPath,
    iface_names: Option<&[&str]>,
) -> Result<(), (KeyPath, String)> {
    if let Some(shield) = &config.shield {
        let named: BTreeSet<&str> = shield
            .interfaces
            .iter()
            .chain(shield.instance.iter().flat_map(|i| i.interfaces.iter()))
            .map(String::as_str)
            .collect();
        let named: Vec<&str> = named.into_iter().collect();
        if let Err(error) = datapath::shield::build(shield, 0, iface_names.unwrap_or(&named)) {
            return Err((shield_path(&error, base), error.to_string()));
        }
    }
    for (index, rule) in config.nat.iter().enumerate() {
        if let Some(out) = rule
            .out
            .as_ref()
            .filter(|o| !config.interfaces.contains_key(*o))
        {
            let message = format!("`{out}`: this interface has no address in [interfaces]");
            return Err((base.key("nat").index(index).key("out"), message));
        }
    }
    check_ip(config, base, iface_names)?;
    if let Err(error) = build_all(&config.director) {
        return Err((
            director_path(&error, &config.director, base),
            error.to_string(),
        ));
    }
    Ok(())
}

/// `[ip]` and its routing tables (`[[ip.table]]`: ids, destinations, gateways on-link,
/// interfaces), built as the pipeline builds them. Without the appliance's interface list,
/// the names `[ip]` uses are taken as existing.
fn check_ip(
    config: &ApplianceConfig,
    base: &KeyPath,
    iface_names: Option<&[&str]>,
) -> Result<(), (KeyPath, String)> {
    let mut assumed: Vec<&str> = config.interfaces.keys().map(String::as_str).collect();
    let ip = &config.ip;
    let named = ip
        .table
        .iter()
        .flat_map(|t| t.route.iter().filter_map(|r| r.dev.as_deref()))
        .chain(ip.interface_mtu.keys().map(String::as_str))
        .chain(ip.default_route.as_deref());
    for name in named {
        if !assumed.contains(&name) {
            assumed.push(name);
        }
    }
    let names = iface_names.unwrap_or(&assumed);
    match datapath::ip::config::build(ip, &config.interfaces, names) {
        Ok(_) => Ok(()),
        Err(error) => Err((
            dotted_path(&error.at, &base.key("ip")),
            if error.at.is_empty() {
                format!("[ip]: {}", error.message)
            } else {
                format!("ip.{error}")
            },
        )),
    }
}

/// `table[0].route[1].via` under `base` as a key path (empty: `base`).
fn dotted_path(at: &str, base: &KeyPath) -> KeyPath {
    let mut path = base.clone();
    for segment in at.split('.').filter(|s| !s.is_empty()) {
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
    path
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
    let path = dotted_path(at, base);
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
        E::ZeroPort(name) => (index(name), Some("port")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn located(text: &str) -> (String, usize, usize) {
        let config: ApplianceConfig = toml::from_str(text).expect("parses");
        let (path, message) = check(&config, &KeyPath::root(), None).expect_err("rejected");
        let span = crate::diagnostics::TomlSpans::parse(text)
            .span(&path)
            .expect("located");
        let (line, column) = crate::diagnostics::line_column(text, span.start);
        (format!("{path}: {message}"), line, column)
    }

    #[test]
    fn director_errors_are_at_the_right_director() {
        let director = |name: &str, vip: &str| {
            format!(
                "[[director]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = 80\nproto = \"tcp\"\nreal = [{{ addr = \"10.0.1.2:80\" }}]\n\n"
            )
        };
        let text = format!(
            "{}{}",
            director("web", "192.0.2.10"),
            director("web", "192.0.2.11")
        );
        let (message, line, column) = located(&text);
        assert_eq!(message, "director[1].name: director \"web\" defined twice");
        assert_eq!((line, column), (9, 8));
    }

    #[test]
    fn routing_table_errors_are_at_their_route_key() {
        let table = |routes: &str| {
            format!(
                "[interfaces]\nlan = \"192.168.0.254/24\"\ndmz = \"10.0.9.254/24\"\n\n[[ip.table]]\nid = 100\nroute = [\n  {{ to = \"192.0.2.0/24\", dev = \"dmz\" }},\n  {routes},\n]\n"
            )
        };
        let (message, line, column) = located(&table("{ to = \"default\", via = \"10.0.8.1\" }"));
        assert_eq!(
            message,
            "ip.table[0].route[1].via: ip.table[0].route[1].via: gateway 10.0.8.1 is not in a connected network of the route's interface (Nexthop has invalid gateway)"
        );
        assert_eq!((line, column), (9, 27));
        // On-link, but not on the named interface.
        let (message, ..) = located(&table(
            "{ to = \"default\", via = \"10.0.9.1\", dev = \"lan\" }",
        ));
        assert!(message.contains("Nexthop has invalid gateway"), "{message}");
        let (message, line, column) = located(&table("{ to = \"192.0.2.9/24\", dev = \"lan\" }"));
        assert!(
            message.contains("192.0.2.0/24 is already in this table"),
            "{message}"
        );
        assert_eq!((line, column), (9, 10));
        let (message, ..) = located(&table("{ to = \"10.1.0.0/16\" }"));
        assert!(message.contains("needs a gateway"), "{message}");
        let (message, ..) = located(&table("{ to = \"default\", dev = \"lan\" }"));
        assert!(message.contains("`default` without a gateway"), "{message}");
        let reserved = "[[ip.table]]\nid = 255\n";
        let (message, line, column) = located(reserved);
        assert!(message.contains("table id 255 is not usable"), "{message}");
        assert_eq!((line, column), (2, 6));
        let twice = "[[ip.table]]\nid = 7\n[[ip.table]]\nid = 7\n";
        let (message, line, _) = located(twice);
        assert!(message.contains("table 7 is declared twice"), "{message}");
        assert_eq!(line, 4);
        // With the topology's interfaces, a `dev` outside them is refused.
        let config: ApplianceConfig = toml::from_str(
            "[[ip.table]]\nid = 1\nroute = [{ to = \"0.0.0.0/0\", dev = \"wan\" }]\n",
        )
        .unwrap();
        let (path, message) = check(&config, &KeyPath::root(), Some(&["lan"])).unwrap_err();
        assert_eq!(path.to_string(), "ip.table[0].route[0].dev");
        assert!(message.contains("`wan` is not one of"), "{message}");
    }

    #[test]
    fn shield_errors_are_at_their_key_and_named_interfaces_are_not_unknown() {
        let text = "[shield]\nsession_table_capacity = 3\n";
        let (message, line, column) = located(text);
        assert_eq!(
            message,
            "shield.session_table_capacity: shield: `session_table_capacity` = 3 is outside 8..=4194304"
        );
        assert_eq!((line, column), (2, 26));
        // Interfaces named by instances exist as far as a file alone can tell.
        let instances =
            "[shield]\ninterfaces = [\"eth0\"]\n[[shield.instance]]\ninterfaces = [\"eth1\"]\n";
        let config: ApplianceConfig = toml::from_str(instances).unwrap();
        assert_eq!(check(&config, &KeyPath::root(), None), Ok(()));
        let twice =
            "[shield]\ninterfaces = [\"eth0\"]\n[[shield.instance]]\ninterfaces = [\"eth0\"]\n";
        let (message, line, _) = located(twice);
        assert!(message.contains("already belongs"), "{message}");
        assert_eq!(line, 3);
    }
}
