//! The appliance's routing tables as `ip route` commands: the routes of `[[ip.table]]`
//! (`ip route add … table <id>`), the main table's routes beyond the connected networks
//! (the kernel adds those itself with the interfaces' addresses) and the `default_route`
//! interface's default routes. With the flowmgr compiler's `ip rule add fwmark … lookup
//! <id>` lines ([`datapath::flows::compile::ip_rules`]) they make the kernel route as the
//! simulator's IP layer does (see `datapath::ip::route`).
//!
//! Not here: creating the interfaces (the caller names them; see `sim/tests/kernel_routes.rs`).

use datapath::ip::IpConfig;
use datapath::ip::route::{MAIN_TABLE, Route};

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
