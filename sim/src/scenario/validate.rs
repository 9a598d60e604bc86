//! Cross-reference and range checks that serde cannot express: names that must exist,
//! values that must be positive. Each failure carries the byte span of the offending table
//! or value so the caller can print `file:line:col`.

use std::collections::BTreeSet;
use std::ops::Range;

use super::{Destinations, MAX_QUEUES, Scenario, TimedEvent, TrafficSpec};

type Failure = (Option<Range<usize>>, String);

/// Check a parsed scenario.
pub(super) fn validate(scenario: &Scenario) -> Result<(), Failure> {
    let fail = |message: String| Err((None, message));
    if scenario.duration.0 == 0 {
        return fail("duration must be positive".into());
    }
    if scenario.queues == 0 || scenario.queues > MAX_QUEUES {
        return fail(format!("queues must be between 1 and {MAX_QUEUES}"));
    }
    validate_topology(scenario)?;
    let networks: BTreeSet<&str> = scenario
        .topology
        .networks
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    for traffic in &scenario.traffic {
        let span = Some(traffic.span());
        let spec = traffic.get_ref();
        if !networks.contains(spec.network()) {
            let known = networks.iter().copied().collect::<Vec<_>>().join(", ");
            let message = format!(
                "traffic source ({}) sends from network {:?}, which is not defined (networks: {known})",
                spec.kind(),
                spec.network()
            );
            return Err((span, message));
        }
        validate_traffic(spec).map_err(|message| (span.clone(), message))?;
    }
    validate_events(scenario)?;
    validate_source_expects(scenario)
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
                TrafficSpec::TcpClients(_) | TrafficSpec::UdpClients(_)
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
                "expect.source names {:?}, which is not a tcp_clients or udp_clients source (sources: {known})",
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

fn validate_topology(scenario: &Scenario) -> Result<(), Failure> {
    let topology = &scenario.topology;
    if topology.interfaces.is_empty() {
        return Err((
            None,
            "topology.interfaces must name at least one interface".into(),
        ));
    }
    let mut names = BTreeSet::new();
    let hosts = topology
        .networks
        .iter()
        .map(|n| (&n.name, &n.iface))
        .chain(topology.backends.iter().map(|b| (&b.name, &b.iface)));
    for (name, iface) in hosts {
        if !topology.interfaces.contains(iface.get_ref()) {
            let message = format!(
                "interface {:?} is not among topology.interfaces {:?}",
                iface.get_ref(),
                topology.interfaces
            );
            return Err((Some(iface.span()), message));
        }
        if !names.insert(name.as_str()) {
            return Err((None, format!("host name {name:?} is used twice")));
        }
    }
    Ok(())
}

fn validate_traffic(spec: &TrafficSpec) -> Result<(), String> {
    match spec {
        TrafficSpec::Pcap(pcap) => {
            if pcap.speed.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
                return Err("speed must be a positive number".into());
            }
            let modes = [pcap.speed.is_some(), pcap.pps.is_some(), pcap.top_speed];
            if modes.iter().filter(|m| **m).count() > 1 {
                return Err("choose one of speed, pps and top_speed".into());
            }
            if pcap.pps.is_some_and(|r| r.0 == 0) {
                return Err("pps must be positive".into());
            }
        }
        TrafficSpec::SynFlood(flood)
        | TrafficSpec::AckFlood(flood)
        | TrafficSpec::UdpFlood(flood)
        | TrafficSpec::IcmpFlood(flood) => {
            if flood.rate.0 == 0 {
                return Err("rate must be positive".into());
            }
            let list = match &flood.dst {
                Destinations::One(one) => std::slice::from_ref(one),
                Destinations::Many(many) => many.as_slice(),
            };
            if list.is_empty() {
                return Err("dst must name at least one destination".into());
            }
            for dst in list {
                super::parse_destination(dst)?;
            }
            let too_big = |set: &Option<super::RangeSet>, max: u32| {
                set.as_ref().is_some_and(|s| s.max() > max)
            };
            if too_big(&flood.src_ports, 65535) || too_big(&flood.dst_ports, 65535) {
                return Err("ports must be at most 65535".into());
            }
            if too_big(&flood.ttl, 255) {
                return Err("ttl must be at most 255".into());
            }
            if flood.burst.is_some_and(|b| b.on.0 == 0) {
                return Err("burst.on must be positive".into());
            }
        }
        TrafficSpec::TcpClients(tcp) => {
            if tcp.rate.0 == 0 || tcp.clients == 0 {
                return Err("rate and clients must be positive".into());
            }
            if tcp.ports.contains(&0) {
                return Err("ports must be 1 to 65535".into());
            }
        }
        TrafficSpec::UdpClients(udp) => {
            if udp.rate.0 == 0 || udp.clients == 0 {
                return Err("rate and clients must be positive".into());
            }
            if udp.payload < 8 {
                return Err("payload must be at least 8 bytes (the request id)".into());
            }
        }
    }
    Ok(())
}

fn validate_events(scenario: &Scenario) -> Result<(), Failure> {
    let topology = &scenario.topology;
    for event in &scenario.events {
        if let TimedEvent::Link { host, .. } = event.get_ref() {
            let known = topology.networks.iter().any(|n| &n.name == host)
                || topology.backends.iter().any(|b| &b.name == host);
            if !known {
                let message = format!("link event names host {host:?}, which is not defined");
                return Err((Some(event.span()), message));
            }
        }
        if let TimedEvent::Mode { syn_cookies, .. } = event.get_ref()
            && !["on", "off", "auto"].contains(&syn_cookies.as_str())
        {
            let message = format!("syn_cookies must be on, off or auto, not {syn_cookies:?}");
            return Err((Some(event.span()), message));
        }
    }
    Ok(())
}
