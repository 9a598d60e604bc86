//! Directors on the host backend: nft `dnat to numgen inc mod N map {…}` for rr (IPVS
//! order), `jhash` maps emulating sh / dh / mh, numgen stand-ins for the other schedulers
//! (backend not compared), plain forwarding for direct routing.
//!
//! Not here: the guest backend's real IPVS services (see `crate::kernel::guest`).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use datapath::director::config::{DirectorConfig, RealSpec, ServiceKey, ServiceSpec};
use datapath::director::dest::Forward;
use datapath::director::scheduler::SchedulerKind;
use datapath::packet::ip_proto;

use super::{BackendMatch, BackendRule, DIRECTOR_TABLE, DIRECTOR6_TABLE, KernelRules, row};

fn service_match(key: ServiceKey) -> Option<String> {
    match key {
        ServiceKey::Fwmark(mark) => {
            Some(format!("meta mark {mark:#x} meta l4proto {{ tcp, udp }}"))
        }
        ServiceKey::Tuple { vip, proto, port } => {
            let ip = if vip.is_ipv6() { "ip6" } else { "ip" };
            let name = if proto == ip_proto::UDP { "udp" } else { "tcp" };
            Some(match port {
                0 => format!("{ip} daddr {vip} meta l4proto {name}"),
                port => format!("{ip} daddr {vip} {name} dport {port}"),
            })
        }
    }
}

/// The selector expression and the comparability of a scheduler.
fn scheduler_selector(
    scheduler: SchedulerKind,
    slots: usize,
    ip: &str,
) -> (String, BackendMatch, String) {
    match scheduler {
        SchedulerKind::Rr => (
            format!("numgen inc mod {slots}"),
            BackendMatch::Exact,
            "nft nat prerouting+output: dnat to numgen inc mod N map (rr, IPVS order)".into(),
        ),
        SchedulerKind::Sh | SchedulerKind::Mh => (
            format!("jhash {ip} saddr mod {slots} seed 0x0"),
            BackendMatch::Jhash,
            format!(
                "nft dnat to jhash {ip} saddr mod N map (weights as repeated slots) emulates {}",
                scheduler.name()
            ),
        ),
        SchedulerKind::Dh => (
            format!("jhash {ip} daddr mod {slots} seed 0x0"),
            BackendMatch::Jhash,
            format!(
                "nft dnat to jhash {ip} daddr mod N map (weights as repeated slots) emulates dh"
            ),
        ),
        other => (
            format!("numgen inc mod {slots}"),
            BackendMatch::StandIn,
            format!(
                "nft numgen rr stands in for {} (no kernel counterpart without IPVS: verdict and source compared, backend not)",
                other.name()
            ),
        ),
    }
}

/// The kernel mechanism of direct-routing directors.
pub(super) const DIRECT_ROUTING: &str = "kernel routing: direct routing leaves the IP packet as it is (the real server's MAC, hence the backend choice, is not compared)";

/// Whether a director is of IPv6: its VIP's family or, for a fwmark service, its real
/// servers' (IPVS: `ipvsadm -A -f N -6`).
pub(super) fn director_is_ipv6(key: ServiceKey, reals: &[&RealSpec]) -> bool {
    match key {
        ServiceKey::Tuple { vip, .. } => vip.is_ipv6(),
        ServiceKey::Fwmark(_) => reals.first().is_some_and(|r| r.address.is_ipv6()),
    }
}

pub(super) fn director_nft(
    directors: &[DirectorConfig],
    rules: &mut KernelRules,
) -> anyhow::Result<String> {
    // DNAT lines per family: IPv4 services (and fwmark ones of IPv4 reals) in `table ip`,
    // IPv6 VIPs (and fwmark ones of IPv6 reals) in `table ip6`.
    let (mut lines, mut lines6) = (String::new(), String::new());
    let (mut chains, mut chains6) = (String::new(), String::new());
    for config in directors {
        let spec = config
            .build()
            .map_err(|e| anyhow::anyhow!("[[director]] {}: {e}", config.name))?;
        let feature = format!(
            "director {} ({}, {})",
            spec.name,
            spec.scheduler.name(),
            spec.key
        );
        let reals: Vec<_> = spec.reals.iter().filter(|r| r.weight > 0).collect();
        let v6 = director_is_ipv6(spec.key, &reals);
        let (Some(matcher), false) = (service_match(spec.key), reals.is_empty()) else {
            rules
                .features
                .push(row(feature, "none (no usable real)", false));
            continue;
        };
        let direct = |r: &&RealSpec| r.forward == Forward::Dr && r.address.is_ipv6() == v6;
        if reals.iter().all(direct) {
            rules.features.push(row(feature, DIRECT_ROUTING, true));
            continue;
        }
        if reals
            .iter()
            .any(|r| r.forward != Forward::Nat || r.address.is_ipv6() != v6)
        {
            rules.features.push(row(
                feature,
                "none (tun forwarding, mixed forwarding methods, or reals of another family than the VIP)",
                false,
            ));
            if v6 || matches!(spec.key, ServiceKey::Fwmark(_)) {
                rules.refuse_ipv6("an IPv6 or fwmark director with no kernel counterpart");
            }
            continue;
        }
        let slots = slots(spec.scheduler, &reals);
        let ip = if v6 { "ip6" } else { "ip" };
        let (selector, mut matching, mut mechanism) =
            scheduler_selector(spec.scheduler, slots.len(), ip);
        if spec.persistence.is_some() {
            matching = BackendMatch::StandIn;
            mechanism = format!(
                "{mechanism}; persistence has no kernel counterpart (backend not compared)"
            );
        }
        let (lines, chains) = match v6 {
            false => (&mut lines, &mut chains),
            true => (&mut lines6, &mut chains6),
        };
        let statement = dnat_statement(&spec.name, ip, &selector, &slots, chains);
        let _ = writeln!(lines, "\t\t{matcher} counter {statement}");
        record_director(rules, &spec, &reals, &mechanism, matching);
        rules.features.push(row(feature, mechanism, true));
    }
    let mut out = nat_table("ip", DIRECTOR_TABLE, &lines, &chains);
    if !lines6.is_empty() {
        out.push_str(&nat_table("ip6", DIRECTOR6_TABLE, &lines6, &chains6));
    }
    Ok(out)
}

/// Remember how the kernel reproduces a director: its comparability, its virtual service
/// and its real servers (routed to the server side).
pub(super) fn record_director(
    rules: &mut KernelRules,
    spec: &ServiceSpec,
    reals: &[&RealSpec],
    mechanism: &str,
    matching: BackendMatch,
) {
    let rule = || BackendRule {
        director: spec.name.clone(),
        mechanism: mechanism.to_string(),
        matching,
    };
    if matching == BackendMatch::Exact {
        rules.comparable_directors.push(spec.name.clone());
    }
    if let ServiceKey::Tuple { vip, port, .. } = spec.key {
        rules.services.insert(SocketAddr::new(vip, port), rule());
    }
    for real in reals {
        rules.server_addresses.insert(real.address.ip());
        rules.backends.insert(real.address, rule());
    }
}

/// The DNAT map's slots, in order. IPVS keeps real servers in a list it adds to at the
/// head (`list_add_rcu`), and rr starts from the head: the last real added is chosen
/// first. numgen counts from 0, so the map lists the reals in that (reverse
/// configuration) order. Hash emulations repeat a real once per unit of weight.
fn slots<'r>(scheduler: SchedulerKind, reals: &[&'r RealSpec]) -> Vec<&'r RealSpec> {
    let hashed = matches!(
        scheduler,
        SchedulerKind::Sh | SchedulerKind::Dh | SchedulerKind::Mh
    );
    reals
        .iter()
        .rev()
        .flat_map(|real| {
            let copies = if hashed {
                real.weight.max(1) as usize
            } else {
                1
            };
            std::iter::repeat_n(*real, copies)
        })
        .collect()
}

/// A director's DNAT statement over its slots. A real without a port (`:0`) keeps the
/// virtual port, as in IPVS, but nft's `dnat to … map` sets the port it maps to (0
/// included), so: every real with a port, a map to `address . port`
/// (`0 : 10.0.2.3 . 25`); none with a port, a map to addresses; a mix, a verdict map to
/// one chain per slot (appended to `chains`) whose `dnat` has a port or not.
fn dnat_statement(
    director: &str,
    ip: &str,
    selector: &str,
    slots: &[&RealSpec],
    chains: &mut String,
) -> String {
    let ports = || slots.iter().map(|real| real.address.port());
    let entries = |entry: &dyn Fn(usize, &RealSpec) -> String| {
        let entries: Vec<String> = (0..slots.len()).map(|i| entry(i, slots[i])).collect();
        entries.join(", ")
    };
    if ports().all(|port| port != 0) {
        let map =
            entries(&|i, real| format!("{i} : {} . {}", real.address.ip(), real.address.port()));
        return format!("dnat {ip} to {selector} map {{ {map} }}");
    }
    if ports().all(|port| port == 0) {
        let map = entries(&|i, real| format!("{i} : {}", real.address.ip()));
        return format!("dnat {ip} to {selector} map {{ {map} }}");
    }
    let identifier: String = director
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let map = entries(&|i, _| format!("{i} : goto real_{identifier}_{i}"));
    for (index, real) in slots.iter().enumerate() {
        let target = match (real.address.port(), real.address.ip()) {
            (0, address) => address.to_string(),
            (port, IpAddr::V6(address)) => format!("[{address}]:{port}"),
            (port, IpAddr::V4(address)) => format!("{address}:{port}"),
        };
        let _ = writeln!(
            chains,
            "\tchain real_{identifier}_{index} {{\n\t\tmeta l4proto {{ tcp, udp }} dnat {ip} to {target}\n\t}}"
        );
    }
    format!("{selector} vmap {{ {map} }}")
}

/// A director table: the DNAT lines in prerouting, and the same in output (synproxy's
/// SYN toward the server is made locally), plus the per-real chains of verdict maps.
fn nat_table(family: &str, name: &str, lines: &str, chains: &str) -> String {
    format!(
        "table {family} {name}\ndelete table {family} {name}\ntable {family} {name} {{\n{chains}\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n{lines}\t}}\n\tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n{lines}\t}}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::director::dest::Forward;

    fn real(address: &str) -> RealSpec {
        RealSpec {
            address: address.parse().expect("socket address"),
            weight: 1,
            forward: Forward::Nat,
            upper_threshold: 0,
            lower_threshold: 0,
            mac: None,
        }
    }

    #[test]
    fn dnat_statements_keep_the_virtual_port_of_port_less_reals() {
        let (with_port, without_port) = (real("10.0.2.1:25"), real("10.0.2.2:0"));
        let mut chains = String::new();
        let both = [&with_port, &with_port];
        assert_eq!(
            dnat_statement("a", "ip", "numgen inc mod 2", &both, &mut chains),
            "dnat ip to numgen inc mod 2 map { 0 : 10.0.2.1 . 25, 1 : 10.0.2.1 . 25 }"
        );
        let neither = [&without_port];
        assert_eq!(
            dnat_statement("a", "ip", "numgen inc mod 1", &neither, &mut chains),
            "dnat ip to numgen inc mod 1 map { 0 : 10.0.2.2 }"
        );
        assert!(chains.is_empty());
        let v6 = real("[2001:db8::3]:8080");
        let mixed = [&without_port, &v6];
        assert_eq!(
            dnat_statement("web-1", "ip6", "numgen inc mod 2", &mixed, &mut chains),
            "numgen inc mod 2 vmap { 0 : goto real_web_1_0, 1 : goto real_web_1_1 }"
        );
        assert!(chains.contains(
            "chain real_web_1_0 {\n\t\tmeta l4proto { tcp, udp } dnat ip6 to 10.0.2.2\n"
        ));
        assert!(chains.contains("dnat ip6 to [2001:db8::3]:8080"));
    }
}
