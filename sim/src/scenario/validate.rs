//! Cross-reference and range checks that serde cannot express: names that must exist
//! (networks, hosts, directors, real servers, shield contexts), values that must be positive,
//! prefixes that must not repeat. Each failure carries the byte span of the offending key's
//! value, found with [`TomlSpans`], and names the key (`traffic[1].dst: …`) so the caller can
//! print `file:line:col: message`.
//!
//! Not here: type and syntax errors (serde and `locate.rs`).

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

use super::{Destinations, MAX_QUEUES, Scenario, TrafficSpec};
use crate::diagnostics::{KeyPath, TomlSpans};

mod events;
pub(crate) mod health;

type Failure = (Option<Range<usize>>, String);

/// A failure at `path`, named in the message: `traffic[1].rate: must be positive`.
fn at(spans: &TomlSpans<'_>, path: &KeyPath, message: impl std::fmt::Display) -> Failure {
    (spans.span(path), format!("{path}: {message}"))
}

/// Check a parsed scenario; `base_dir` resolves a named appliance file (for the events'
/// director names).
pub(super) fn validate(
    scenario: &Scenario,
    base_dir: &Path,
    spans: &TomlSpans<'_>,
) -> Result<(), Failure> {
    let root = KeyPath::root();
    if scenario.duration.0 == 0 {
        let path = root.key("duration");
        return Err((spans.span(&path), "duration must be positive".into()));
    }
    if scenario.queues == 0 || scenario.queues > MAX_QUEUES {
        let path = root.key("queues");
        let message = format!("queues must be between 1 and {MAX_QUEUES}");
        return Err((spans.span(&path), message));
    }
    if scenario.appliance.appliance.is_none() {
        let names: Vec<&str> = scenario
            .topology
            .interfaces
            .iter()
            .map(String::as_str)
            .collect();
        crate::appliance::check(&scenario.appliance, &root.key("appliance"), Some(&names))
            .map_err(|(path, message)| (spans.span(&path), message))?;
    }
    validate_topology(scenario, spans)?;
    let networks: BTreeSet<&str> = scenario
        .topology
        .networks
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    for (index, traffic) in scenario.traffic.iter().enumerate() {
        let element = root.key("traffic").index(index);
        let spec = traffic.get_ref();
        if !networks.contains(spec.network()) {
            let known = networks.iter().copied().collect::<Vec<_>>().join(", ");
            let message = format!(
                "`{}`: no network of that name ({} source; networks: {known})",
                spec.network(),
                spec.kind(),
            );
            return Err(at(spans, &element.key("from"), message));
        }
        validate_traffic(spec).map_err(|(key, message)| at(spans, &element.key(key), message))?;
        validate_client_addresses(scenario, spec)
            .map_err(|message| at(spans, &element.key("clients"), message))?;
        validate_flood_family(scenario, spec)
            .map_err(|(key, message)| at(spans, &element.key(key), message))?;
    }
    events::validate_events(scenario, base_dir, spans)?;
    validate_cpu(scenario, base_dir, spans)?;
    validate_source_expects(scenario)
}

/// `[cpu]`: a ring size in range and a profile that loads.
fn validate_cpu(
    scenario: &Scenario,
    base_dir: &Path,
    spans: &TomlSpans<'_>,
) -> Result<(), Failure> {
    use super::cpu::{CostProfile, MAX_RX_RING};
    let Some(cpu) = &scenario.cpu else {
        return Ok(());
    };
    let table = KeyPath::root().key("cpu");
    if cpu.rx_ring == 0 || cpu.rx_ring > MAX_RX_RING {
        let message = format!("must be between 1 and {MAX_RX_RING} descriptors");
        return Err(at(spans, &table.key("rx_ring"), message));
    }
    if let Some((key, message)) = cpu.ns.as_ref().and_then(|ns| ns.invalid()) {
        let path = table.key("ns").key(key);
        let span = spans.span(&path).or_else(|| spans.span(&table));
        return Err((span, format!("cpu.{message}")));
    }
    CostProfile::of_spec(cpu, base_dir)
        .map(drop)
        .map_err(|message| {
            let key = table.key(if cpu.profile.is_some() {
                "profile"
            } else {
                "ns"
            });
            // A key that is missing: at the table.
            let span = spans.span(&key).or_else(|| spans.span(&table));
            (span, format!("{key}: {message}"))
        })
}

/// `[[expect.source]]` names a client source and sets a bound in 0..=1.
fn validate_source_expects(scenario: &Scenario) -> Result<(), Failure> {
    let clients: Vec<String> = scenario
        .traffic
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            matches!(
                t.get_ref(),
                TrafficSpec::TcpClients(_)
                    | TrafficSpec::UdpClients(_)
                    | TrafficSpec::FtpClients(_)
            )
        })
        .map(|(index, t)| t.get_ref().source_name(index))
        .collect();
    for check in &scenario.expect.source {
        let span = Some(check.span());
        let expect = check.get_ref();
        if !clients.contains(&expect.name) {
            let known = clients.join(", ");
            let message = format!(
                "expect.source names {:?}, which is not a tcp_clients, udp_clients or ftp_clients source (sources: {known})",
                expect.name
            );
            return Err((span, message));
        }
        let bounds = [expect.success_ratio_min, expect.success_ratio_max];
        if bounds.iter().all(Option::is_none) {
            let message = "expect.source needs success_ratio_min or success_ratio_max".into();
            return Err((span, message));
        }
        if bounds.iter().flatten().any(|b| !(0.0..=1.0).contains(b)) {
            return Err((span, "success ratios must be between 0 and 1".into()));
        }
    }
    Ok(())
}

fn validate_topology(scenario: &Scenario, spans: &TomlSpans<'_>) -> Result<(), Failure> {
    let topology = &scenario.topology;
    let root = KeyPath::root().key("topology");
    if topology.interfaces.is_empty() {
        return Err((
            spans.span(&root.key("interfaces")),
            "topology.interfaces must name at least one interface".into(),
        ));
    }
    let mut names = BTreeSet::new();
    let hosts = topology
        .networks
        .iter()
        .enumerate()
        .map(|(i, n)| (root.key("network").index(i), &n.name, &n.iface))
        .chain(
            topology
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| (root.key("backend").index(i), &b.name, &b.iface)),
        );
    for (path, name, iface) in hosts {
        if !topology.interfaces.contains(iface.get_ref()) {
            let message = format!(
                "interface {:?} is not among topology.interfaces {:?}",
                iface.get_ref(),
                topology.interfaces
            );
            return Err((Some(iface.span()), message));
        }
        if !names.insert(name.as_str()) {
            let message = format!("host name {name:?} is used twice");
            return Err(at(spans, &path.key("name"), message));
        }
    }
    for (index, backend) in topology.backends.iter().enumerate() {
        let path = root.key("backend").index(index);
        let addresses = std::iter::once(("addr", &backend.addr))
            .chain(backend.also.iter().map(|a| ("also", a)));
        for (key, addr) in addresses {
            if let Some(what) = not_a_host_address(*addr) {
                let message = format!("`{addr}` is {what}, not a host's address");
                return Err(at(spans, &path.key(key), message));
            }
        }
    }
    let mut prefixes = std::collections::BTreeMap::new();
    for (index, network) in topology.networks.iter().enumerate() {
        if let Some(first) = prefixes.insert(network.prefix.trunc(), &network.name) {
            let path = root.key("network").index(index).key("prefix");
            let message = format!(
                "`{}`: network {:?} has the same prefix (each address belongs to one network)",
                network.prefix, first
            );
            return Err(at(spans, &path, message));
        }
    }
    Ok(())
}

/// Why `addr` cannot be a host's own address (a smoltcp host, a client, a backend).
fn not_a_host_address(addr: std::net::IpAddr) -> Option<&'static str> {
    match addr {
        std::net::IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        addr if addr.is_multicast() => Some("a multicast address"),
        _ => None,
    }
}

/// The client sources' hosts take the addresses after their network's own (`.1`, `.2`, …,
/// see [`super::client_address`]): the prefix must hold one, and none
/// of those inside it may be a multicast or the broadcast address.
fn validate_client_addresses(scenario: &Scenario, spec: &TrafficSpec) -> Result<(), String> {
    let clients = match spec {
        TrafficSpec::TcpClients(s) => s.clients,
        TrafficSpec::UdpClients(s) => s.clients,
        TrafficSpec::FtpClients(s) => s.clients,
        _ => return Ok(()),
    };
    let Some(network) = scenario
        .topology
        .networks
        .iter()
        .find(|n| n.name == spec.network())
    else {
        return Ok(());
    };
    let first = super::client_address(&network.prefix, 0);
    let (start, last, bad): (u128, u128, &[(u128, u128)]) = match (first, network.prefix) {
        (std::net::IpAddr::V4(v4), ipnet::IpNet::V4(net)) => (
            u128::from(u32::from(v4)),
            u128::from(u32::from(net.broadcast())),
            &[(0xe000_0000, 0xefff_ffff), (0xffff_ffff, 0xffff_ffff)],
        ),
        (std::net::IpAddr::V6(v6), ipnet::IpNet::V6(net)) => (
            u128::from(v6),
            u128::from(net.broadcast()),
            &[(0xff << 120, u128::MAX)],
        ),
        _ => return Ok(()),
    };
    if !network.prefix.contains(&first) {
        return Err(format!(
            "network {:?} ({}) holds no address for a client: clients take the addresses after the network's own (.1, .2, …); give it a shorter prefix",
            network.name, network.prefix
        ));
    }
    let end = start.saturating_add(u128::from(clients) - 1).min(last);
    let hit = bad
        .iter()
        .find(|&&(low, high)| low <= end && high >= start)
        .map(|&(low, _)| low.max(start));
    let Some(address) = hit else {
        return Ok(());
    };
    let address = match first {
        std::net::IpAddr::V4(_) => std::net::IpAddr::V4((address as u32).into()),
        std::net::IpAddr::V6(_) => std::net::IpAddr::V6(address.into()),
    };
    Err(format!(
        "{clients} clients from network {:?} ({}) would include {address}, {}: a client's address must be unicast",
        network.name,
        network.prefix,
        not_a_host_address(address).unwrap_or("not a host's address"),
    ))
}

/// A flood's packets go from its `src` (or its network's prefix) to each destination: the
/// two must be of one family (an IPv6 source cannot send to an IPv4 VIP).
fn validate_flood_family(
    scenario: &Scenario,
    spec: &TrafficSpec,
) -> Result<(), (&'static str, String)> {
    let flood = match spec {
        TrafficSpec::SynFlood(f)
        | TrafficSpec::AckFlood(f)
        | TrafficSpec::UdpFlood(f)
        | TrafficSpec::IcmpFlood(f) => f,
        _ => return Ok(()),
    };
    let network = scenario
        .topology
        .networks
        .iter()
        .find(|n| n.name == spec.network());
    let (key, source) = match (flood.src, network) {
        (Some(src), _) => ("src", src),
        (None, Some(network)) => ("from", network.prefix),
        (None, None) => return Ok(()),
    };
    let list = match &flood.dst {
        Destinations::One(one) => std::slice::from_ref(one),
        Destinations::Many(many) => many.as_slice(),
    };
    for dst in list {
        let Ok((address, _)) = super::parse_destination(dst) else {
            continue;
        };
        if address.is_ipv4() != source.addr().is_ipv4() {
            return Err((
                key,
                format!("`{source}` and destination `{dst}` are of different address families"),
            ));
        }
    }
    Ok(())
}

/// Range checks of one source: the failing key and what is wrong with it.
fn validate_traffic(spec: &TrafficSpec) -> Result<(), (&'static str, String)> {
    let positive = |key: &'static str| Err((key, "must be positive".to_string()));
    match spec {
        TrafficSpec::Pcap(pcap) => {
            if pcap.speed.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
                return Err(("speed", "must be a positive number".into()));
            }
            let modes = [pcap.speed.is_some(), pcap.pps.is_some(), pcap.top_speed];
            if modes.iter().filter(|m| **m).count() > 1 {
                let key = if pcap.top_speed { "top_speed" } else { "pps" };
                return Err((key, "choose one of speed, pps and top_speed".into()));
            }
            if pcap.pps.is_some_and(|r| r.0 == 0) {
                return positive("pps");
            }
        }
        TrafficSpec::SynFlood(flood)
        | TrafficSpec::AckFlood(flood)
        | TrafficSpec::UdpFlood(flood)
        | TrafficSpec::IcmpFlood(flood) => {
            if flood.rate.0 == 0 {
                return positive("rate");
            }
            let list = match &flood.dst {
                Destinations::One(one) => std::slice::from_ref(one),
                Destinations::Many(many) => many.as_slice(),
            };
            if list.is_empty() {
                return Err(("dst", "must name at least one destination".into()));
            }
            for dst in list {
                super::parse_destination(dst).map_err(|why| ("dst", format!("`{dst}`: {why}")))?;
            }
            let too_big = |set: &Option<super::RangeSet>, max: u32| {
                set.as_ref().is_some_and(|s| s.max() > max)
            };
            for (key, set) in [
                ("src_ports", &flood.src_ports),
                ("dst_ports", &flood.dst_ports),
            ] {
                if too_big(set, 65535) {
                    return Err((key, "ports must be at most 65535".into()));
                }
            }
            if too_big(&flood.ttl, 255) {
                return Err(("ttl", "must be at most 255".into()));
            }
            if flood.burst.is_some_and(|b| b.on.0 == 0) {
                return Err(("burst", "burst.on must be positive".into()));
            }
        }
        TrafficSpec::TcpClients(tcp) => {
            if tcp.rate.0 == 0 {
                return positive("rate");
            }
            if tcp.clients == 0 {
                return positive("clients");
            }
            if tcp.ports.contains(&0) {
                return Err(("ports", "ports must be 1 to 65535".into()));
            }
        }
        TrafficSpec::FtpClients(ftp) => {
            if ftp.rate.0 == 0 {
                return positive("rate");
            }
            if ftp.clients == 0 {
                return positive("clients");
            }
            if ftp.files.is_empty() || ftp.files.len() > super::FTP_MAX_FILES {
                return Err((
                    "files",
                    format!("must list 1 to {} file sizes", super::FTP_MAX_FILES),
                ));
            }
            if ftp.modes.is_empty() {
                return Err(("modes", "must list at least one mode".into()));
            }
        }
        TrafficSpec::UdpClients(udp) => {
            if udp.rate.0 == 0 {
                return positive("rate");
            }
            if udp.clients == 0 {
                return positive("clients");
            }
            if udp.payload < 8 {
                return Err((
                    "payload",
                    "must be at least 8 bytes (the request id)".into(),
                ));
            }
        }
    }
    Ok(())
}
