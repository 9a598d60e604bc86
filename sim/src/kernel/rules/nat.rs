//! The appliance's `[[nat]]` rules as nft `nat` tables: `ip` for IPv4 rules and `ip6` for
//! IPv6 ones (prerouting `dnat`, postrouting `snat` / `masquerade`), and the appliance
//! interface they name placed on the LB's server-side veth.
//!
//! Not here: directors (see `director`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use datapath::nat::NatAction;
use datapath::nat::config::{InterfaceAddress, NatRuleConfig};
use datapath::packet::ip_proto;

use super::{IpFamily, KernelRules, NAT_TABLE, NAT6_TABLE, row};
use crate::kernel::topology::LB_SERVER_IFACE;

impl KernelRules {
    /// Compile the appliance's `[[nat]]` rules as nft `nat` prerouting `dnat` and
    /// postrouting `snat` / `masquerade`, IPv4 rules in an `ip` table and IPv6 rules in an
    /// `ip6` one (per family, the first `out` interface of the source NAT rules becomes an
    /// address on the LB's server-side veth; rules naming another one are not reproduced).
    pub fn add_nat(
        &mut self,
        rules: &[NatRuleConfig],
        interfaces: &BTreeMap<String, InterfaceAddress>,
    ) {
        if rules.is_empty() {
            return;
        }
        for family in [IpFamily::V4, IpFamily::V6] {
            let server = rules
                .iter()
                .filter(|rule| nat_rule_family(rule, interfaces) == Some(family))
                .find_map(|rule| rule.out.as_ref());
            let Some((name, address)) = server.and_then(|n| interfaces.get_key_value(n)) else {
                continue;
            };
            self.server_interfaces.push((name.clone(), address.0));
            self.server_networks.push(address.0.trunc());
            self.features.push(row(
                format!("interface {name} ({})", address.0),
                format!(
                    "address on the LB's server veth {LB_SERVER_IFACE}, its network routed there (MASQUERADE's source)"
                ),
                true,
            ));
        }
        self.nat_nft = nat_nft(rules, interfaces, self);
    }
}

/// The address family of a `[[nat]]` rule: that of every address it names (`src`, `dst`,
/// `to`, the `out` interface's address), which is the only family of packets the
/// simulator's rule translates. `None` when they mix families (the simulator matches
/// packets of one family and cannot rewrite them to the other).
fn nat_rule_family(
    rule: &NatRuleConfig,
    interfaces: &BTreeMap<String, InterfaceAddress>,
) -> Option<IpFamily> {
    let out = rule.out.as_ref().and_then(|name| interfaces.get(name));
    let to = match rule.action {
        NatAction::Dnat { address, .. } | NatAction::Snat { address, .. } => Some(address),
        NatAction::Masquerade { .. } => None,
    };
    let addresses = [
        rule.src.map(|n| n.addr()),
        rule.dst.map(|d| d.network.addr()),
        to,
        out.map(|a| a.0.addr()),
    ];
    let mut families = addresses.into_iter().flatten().map(|a| a.is_ipv6());
    let v6 = families.next()?;
    families
        .all(|f| f == v6)
        .then_some(if v6 { IpFamily::V6 } else { IpFamily::V4 })
}

fn nat_selector(rule: &NatRuleConfig, family: IpFamily) -> String {
    let ip = family.keyword();
    let mut parts = Vec::new();
    match rule.proto {
        Some(ip_proto::UDP) => parts.push("meta l4proto udp".to_string()),
        Some(_) => parts.push("meta l4proto tcp".to_string()),
        None => parts.push("meta l4proto { tcp, udp }".to_string()),
    }
    if let Some(src) = rule.src {
        parts.push(format!("{ip} saddr {src}"));
    }
    if let Some(dst) = rule.dst {
        let network = if dst.network.prefix_len() == dst.network.max_prefix_len() {
            dst.network.addr().to_string()
        } else {
            dst.network.to_string()
        };
        parts.push(format!("{ip} daddr {network}"));
        if let Some(port) = dst.port {
            let name = if rule.proto == Some(ip_proto::UDP) {
                "udp"
            } else {
                "tcp"
            };
            parts.push(format!("{name} dport {port}"));
        }
    }
    parts.join(" ")
}

/// The nft statement of an action (`dnat ip to 10.0.3.4:8080`, `snat ip6 to
/// [2001:db8:3::1]:20000-20099`, `masquerade to :1024-2047`).
fn nat_statement(action: &NatAction) -> String {
    let range = |ports: &Option<(u16, u16)>| match ports {
        Some((min, max)) if min == max => format!(":{min}"),
        Some((min, max)) => format!(":{min}-{max}"),
        None => String::new(),
    };
    // An IPv6 address followed by a port is written in brackets.
    let target = |address: &IpAddr, ports: String| match (address, ports.is_empty()) {
        (IpAddr::V6(v6), false) => format!("ip6 to [{v6}]{ports}"),
        (IpAddr::V6(v6), true) => format!("ip6 to {v6}"),
        (IpAddr::V4(v4), _) => format!("ip to {v4}{ports}"),
    };
    match action {
        NatAction::Dnat { address, port } => {
            let port = port.map_or(String::new(), |p| format!(":{p}"));
            format!("dnat {}", target(address, port))
        }
        NatAction::Snat { address, ports } => format!("snat {}", target(address, range(ports))),
        NatAction::Masquerade { ports: None } => "masquerade".into(),
        NatAction::Masquerade { ports } => format!("masquerade to {}", range(ports)),
    }
}

/// The prerouting and postrouting lines of one family's `nat` table.
#[derive(Default)]
struct NatLines {
    prerouting: String,
    postrouting: String,
}

impl NatLines {
    fn table(&self, family: IpFamily, name: &str) -> String {
        let ip = family.keyword();
        format!(
            "table {ip} {name}\ndelete table {ip} {name}\ntable {ip} {name} {{\n\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n{}\t}}\n\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n{}\t}}\n}}\n",
            self.prerouting, self.postrouting
        )
    }
}

/// nft `nat` tables for `[[nat]]` rules, `ip` for IPv4 rules and `ip6` for IPv6 ones
/// (see [`nat_rule_family`]): DNAT in prerouting (dstnat), SNAT / MASQUERADE in
/// postrouting (srcnat) with `oifname` the server veth for rules whose `out` is the
/// family's server-side interface. Rules mixing families and rules on another output
/// interface are skipped.
fn nat_nft(
    rules: &[NatRuleConfig],
    interfaces: &BTreeMap<String, InterfaceAddress>,
    kernel: &mut KernelRules,
) -> String {
    let (mut lines, mut lines6) = (NatLines::default(), NatLines::default());
    for (index, rule) in rules.iter().enumerate() {
        let statement = nat_statement(&rule.action);
        let feature = format!("nat rule {} ({statement})", index + 1);
        let family = nat_rule_family(rule, interfaces);
        let server = family.and_then(|family| {
            let mut servers = kernel.server_interfaces.iter();
            servers.find(|(_, address)| family.has(address.addr()))
        });
        let other_out = rule.out.is_some() && rule.out.as_ref() != server.map(|s| &s.0);
        let Some(family) = family.filter(|_| !other_out) else {
            let why = "none (addresses of both families, or a second output interface)";
            kernel.features.push(row(feature, why, false));
            continue;
        };
        let selector = nat_selector(rule, family);
        let lines = match family {
            IpFamily::V4 => &mut lines,
            IpFamily::V6 => &mut lines6,
        };
        match (&rule.action, &rule.out) {
            (NatAction::Dnat { address, .. }, _) => {
                kernel.server_addresses.insert(*address);
                let _ = writeln!(lines.prerouting, "\t\t{selector} counter {statement}");
            }
            (_, out) => {
                kernel.source_nat = true;
                let device = match out {
                    Some(_) => format!("oifname \"{LB_SERVER_IFACE}\" "),
                    None => String::new(),
                };
                let _ = writeln!(
                    lines.postrouting,
                    "\t\t{device}{selector} counter {statement}"
                );
            }
        }
        let hook = if rule.action.is_source() {
            "postrouting"
        } else {
            "prerouting"
        };
        let table = match family {
            IpFamily::V4 => "nft nat",
            IpFamily::V6 => "nft ip6 nat",
        };
        let mechanism = format!("{table} {hook}: {statement}");
        kernel.features.push(row(feature, mechanism, true));
    }
    let mut text = lines.table(IpFamily::V4, NAT_TABLE);
    if !(lines6.prerouting.is_empty() && lines6.postrouting.is_empty()) {
        text.push_str(&lines6.table(IpFamily::V6, NAT6_TABLE));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nat_rule_is_of_the_family_of_every_address_it_names() {
        let interfaces: BTreeMap<String, InterfaceAddress> =
            [("inside", "10.0.3.1/24"), ("inside6", "2001:db8:3::1/64")]
                .into_iter()
                .map(|(name, net)| (name.to_string(), InterfaceAddress(net.parse().unwrap())))
                .collect();
        #[derive(serde::Deserialize)]
        struct File {
            nat: Vec<NatRuleConfig>,
        }
        let rules = toml::from_str::<File>(
            r#"nat = [
            { kind = "masquerade", out = "inside6" },
            { kind = "masquerade", out = "inside", src = "198.51.100.0/24" },
            { kind = "dnat", proto = "tcp", dst = "[2001:db8::1]:80", to = "[2001:db8:3::4]:8080" },
            { kind = "snat", out = "inside", src = "2001:db8:c::/48", to = "10.0.3.1" },
        ]"#,
        )
        .expect("rules")
        .nat;
        let families: Vec<_> = rules
            .iter()
            .map(|rule| nat_rule_family(rule, &interfaces))
            .collect();
        assert_eq!(
            families,
            [
                Some(IpFamily::V6),
                Some(IpFamily::V4),
                Some(IpFamily::V6),
                None
            ]
        );
        assert_eq!(
            nat_statement(&rules[2].action),
            "dnat ip6 to [2001:db8:3::4]:8080"
        );
        assert_eq!(
            nat_selector(&rules[2], IpFamily::V6),
            "meta l4proto tcp ip6 daddr 2001:db8::1 tcp dport 80"
        );
    }
}
