//! The appliance's routing tables as `ip route` commands: the routes of `[[ip.table]]`
//! (`ip route add … table <id>`), the main table's routes beyond the connected networks
//! (the kernel adds those itself with the interfaces' addresses) and the `default_route`
//! interface's default routes. With the flowmgr compiler's `ip rule add fwmark … lookup
//! <id>` lines ([`datapath::flows::compile::ip_rules`]) they make the kernel route as the
//! simulator's IP layer does (see `datapath::ip::route`).
//!
//! [`runner_routes`] is the kernel runner's form of the tables (the LB namespace has two
//! veths, not the appliance's interfaces): each route gets a next hop of its own, whose
//! MAC on the forwarded frame names the route the kernel chose.
//!
//! Not here: creating the interfaces (the caller names them; see `sim/tests/kernel_routes.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datapath::ip::IpConfig;
use datapath::ip::route::{MAIN_TABLE, Route, RouteRef};

use super::{KernelRules, row};
use crate::kernel::topology::{LB_SERVER_IFACE, mac_text};

/// The policy routing of the kernel runner's LB namespace (see [`runner_routes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerRoutes {
    /// `ip` argument vectors, run in the LB namespace in order: neighbours, routes, rules.
    pub commands: Vec<Vec<String>>,
    /// The next-hop MAC of each route of the appliance's tables → that route.
    pub next_hops: BTreeMap<[u8; 6], RouteRef>,
}

/// The next hop standing for route number `n` of the appliance's tables: an address
/// (IPv4 in the shared address space `100.126.0.0/16`, IPv6 in the runner's unique local
/// prefix) with a MAC of its own, so the frame the kernel sends names the route it chose.
fn stand_in(n: usize, ipv6: bool) -> (IpAddr, [u8; 6]) {
    let [hi, lo] = (n as u16).to_be_bytes();
    let address = if ipv6 {
        IpAddr::V6(Ipv6Addr::new(
            0xfd6c,
            0x6273,
            0x696d,
            3,
            0,
            0,
            0,
            n as u16 + 1,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(100, 126, hi, lo))
    };
    (address, [0x02, 0x6c, 0x72, 0x00, hi, lo])
}

/// The appliance's routing tables (`[[ip.table]]`) and the flows' `ip rule add fwmark …
/// lookup <id>` lines (`rules`, as the flowmgr compiler emits them) for the kernel
/// runner's LB namespace. Every route of a table keeps its destination and table, and
/// leaves by the server-side veth through a next hop of its own ([`stand_in`], a
/// permanent neighbour, `onlink`) instead of its interface and gateway: the topology has
/// two veths, and the frame's destination MAC then tells which route of which table the
/// kernel's lookup chose ([`RunnerRoutes::next_hops`]). The fwmark rules take precedence
/// over the runner's from-client table (they get the kernel's automatic preference, below
/// the runner's 100). The main table is not installed (client-side packets use the
/// runner's from-client table).
pub fn runner_routes(ip: &IpConfig, rules: &[String]) -> RunnerRoutes {
    let mut out = RunnerRoutes::default();
    let mut n = 0;
    for table in &ip.tables {
        for (index, route) in table.routes.iter().enumerate() {
            let ipv6 = route.destination.addr().is_ipv6();
            let (next_hop, mac) = stand_in(n, ipv6);
            n += 1;
            let family = if ipv6 { "-6" } else { "-4" };
            let strings = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect();
            let (next_hop, mac_text, destination, id) = (
                next_hop.to_string(),
                mac_text(mac),
                route.destination.to_string(),
                table.id.to_string(),
            );
            out.commands.push(strings(&[
                "ip",
                family,
                "neigh",
                "replace",
                &next_hop,
                "lladdr",
                &mac_text,
                "dev",
                LB_SERVER_IFACE,
                "nud",
                "permanent",
            ]));
            out.commands.push(strings(&[
                "ip",
                family,
                "route",
                "add",
                &destination,
                "via",
                &next_hop,
                "dev",
                LB_SERVER_IFACE,
                "onlink",
                "table",
                &id,
            ]));
            let reference = RouteRef {
                table: table.id,
                route: index as u16,
            };
            out.next_hops.insert(mac, reference);
        }
    }
    for rule in rules {
        out.commands
            .push(rule.split_whitespace().map(str::to_owned).collect());
    }
    out
}

impl KernelRules {
    /// Policy routing for the LB namespace (host backend): the appliance's tables and the
    /// flows' fwmark rules ([`runner_routes`]); nothing without `[[ip.table]]`.
    pub fn add_routes(&mut self, ip: &IpConfig, flows: Option<&datapath::flows::FlowTable>) {
        if ip.tables.is_empty() {
            return;
        }
        let rules = flows
            .map(datapath::flows::compile::ip_rules)
            .unwrap_or_default();
        self.routes = runner_routes(ip, &rules);
        for table in &ip.tables {
            self.features.push(row(
                format!("routing table {}", table.id),
                format!(
                    "ip route … table {} and ip rule fwmark … lookup {} (each route's next hop a MAC of its own on {LB_SERVER_IFACE}: the egress route is compared per packet)",
                    table.id, table.id
                ),
                true,
            ));
        }
    }
}

/// The `ip route add` commands (argument vectors) for `ip`, interfaces named by index
/// from `names`. Routes naming an interface outside `names` are left out.
pub fn route_commands(ip: &IpConfig, names: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    if let Some(name) = ip.default_route.and_then(|i| names.get(usize::from(i))) {
        for (family, everything) in [("-4", "0.0.0.0/0"), ("-6", "::/0")] {
            out.push(
                [
                    "ip", family, "route", "add", everything, "dev", name, "table", "main",
                ]
                .map(String::from)
                .to_vec(),
            );
        }
    }
    let tables = std::iter::once((MAIN_TABLE, &ip.routes))
        .chain(ip.tables.iter().map(|t| (t.id, &t.routes)));
    for (id, routes) in tables {
        for route in routes {
            if let Some(command) = command(route, id, names) {
                out.push(command);
            }
        }
    }
    out
}

fn command(route: &Route, table: u32, names: &[&str]) -> Option<Vec<String>> {
    let dev = names.get(usize::from(route.iface))?;
    let family = if route.destination.addr().is_ipv4() {
        "-4"
    } else {
        "-6"
    };
    let mut command: Vec<String> = ["ip", family, "route", "add"].map(String::from).to_vec();
    command.push(route.destination.to_string());
    if let Some(gateway) = route.gateway {
        command.extend(["via".to_owned(), gateway.to_string()]);
    }
    command.extend([
        "dev".to_owned(),
        (*dev).to_owned(),
        "table".to_owned(),
        table.to_string(),
    ]);
    Some(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::ip::route::RoutingTable;

    #[test]
    fn the_runner_gives_every_table_route_a_next_hop_of_its_own() {
        let route = |dst: &str, via: Option<&str>, iface| Route {
            destination: dst.parse().unwrap(),
            gateway: via.map(|v| v.parse().unwrap()),
            iface,
        };
        let ip = IpConfig {
            tables: vec![RoutingTable {
                id: 100,
                routes: vec![
                    route("0.0.0.0/0", Some("10.0.9.1"), 2),
                    route("203.0.113.53/32", None, 1),
                ],
            }],
            ..IpConfig::default()
        };
        let routes = runner_routes(&ip, &["ip rule add fwmark 0x10064 lookup 100".into()]);
        let lines: Vec<String> = routes.commands.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            lines,
            [
                "ip -4 neigh replace 100.126.0.0 lladdr 02:6c:72:00:00:00 dev lbs nud permanent",
                "ip -4 route add 0.0.0.0/0 via 100.126.0.0 dev lbs onlink table 100",
                "ip -4 neigh replace 100.126.0.1 lladdr 02:6c:72:00:00:01 dev lbs nud permanent",
                "ip -4 route add 203.0.113.53/32 via 100.126.0.1 dev lbs onlink table 100",
                "ip rule add fwmark 0x10064 lookup 100",
            ]
        );
        assert_eq!(
            routes.next_hops.get(&[0x02, 0x6c, 0x72, 0, 0, 1]),
            Some(&RouteRef {
                table: 100,
                route: 1
            })
        );
    }

    #[test]
    fn tables_become_ip_route_commands() {
        let route = |dst: &str, via: Option<&str>, iface| Route {
            destination: dst.parse().unwrap(),
            gateway: via.map(|v| v.parse().unwrap()),
            iface,
        };
        let ip = IpConfig {
            default_route: Some(1),
            routes: vec![route("10.1.0.0/16", Some("10.0.9.1"), 2)],
            tables: vec![RoutingTable {
                id: 100,
                routes: vec![
                    route("0.0.0.0/0", Some("10.0.9.1"), 2),
                    route("2001:db8::/32", None, 1),
                    route("192.0.2.0/24", None, 7),
                ],
            }],
            ..IpConfig::default()
        };
        let lines: Vec<String> = route_commands(&ip, &["lan", "wan", "dmz"])
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "ip -4 route add 0.0.0.0/0 dev wan table main",
                "ip -6 route add ::/0 dev wan table main",
                "ip -4 route add 10.1.0.0/16 via 10.0.9.1 dev dmz table 254",
                "ip -4 route add 0.0.0.0/0 via 10.0.9.1 dev dmz table 100",
                "ip -6 route add 2001:db8::/32 dev wan table 100",
            ]
        );
    }
}
