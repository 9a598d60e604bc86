//! Routing tables and the policy routing of the flow manager's `table <id>` policy, as
//! the kernel's FIB rules and `fib_table_lookup` decide a forwarded packet's route.
//!
//! The rules are those an appliance has (see `flows::compile::ip_rules`):
//! 1. `local` (pref 0): the appliance's own addresses — delivered, no route (the caller
//!    checks this first);
//! 2. `fwmark TABLE_MARK_BASE|id lookup id` (one per routing table a flow names): a packet
//!    carrying a table's mark is looked up in that table; a table without a route for the
//!    destination lets the lookup go on to the next rule, as `fib_rules_lookup` does when
//!    the table answers `-EAGAIN`;
//! 3. `main` (pref 32766): the connected networks of the interfaces (`proto kernel scope
//!    link`), the `[ip]` `default_route` interface, and the routes written for table 254.
//!
//! In a table the longest prefix holding the destination wins; two routes with one
//! destination in one table are refused (`ip route add`: "File exists"), so no tie is left
//! to metrics. A gateway must be on-link: inside a connected network of the route's
//! interface (`fib_check_nh`: "Nexthop has invalid gateway"); a route without interface
//! takes the interface of that network.
//!
//! Not here: multipath routes, metrics, route types other than unicast (`blackhole`,
//! `unreachable`, `prohibit`), rules other than the flow manager's fwmark rules, and
//! source-address selection.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::packet::IfaceId;

/// The main table's id (`ip route … table main`).
pub const MAIN_TABLE: u32 = 254;
/// Largest routing table id accepted by `table <id>`.
pub const TABLE_ID_MAX: u32 = 0xffff;
/// Routing tables are marked `TABLE_MARK_BASE | id` by the flows' `table <id>` policy;
/// director marks stay below it.
pub const TABLE_MARK_BASE: u32 = 0x1_0000;

/// One unicast route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination network (host bits cleared).
    pub destination: IpNet,
    /// Next hop; `None`: the destination is on-link.
    pub gateway: Option<IpAddr>,
    /// Egress interface.
    pub iface: IfaceId,
}

impl Route {
    /// As `ip route` lists it: `default via 10.0.9.1 dev dmz`, `203.0.113.53 dev wan`.
    pub fn describe(&self, iface_name: &str) -> String {
        let destination = match self.destination {
            d if d.prefix_len() == 0 => "default".to_owned(),
            d if d.prefix_len() == d.max_prefix_len() => d.addr().to_string(),
            d => d.to_string(),
        };
        match self.gateway {
            Some(gateway) => format!("{destination} via {gateway} dev {iface_name}"),
            None => format!("{destination} dev {iface_name}"),
        }
    }
}

/// A routing table: its id and routes, in the order written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingTable {
    /// Table id (`ip route … table <id>`).
    pub id: u32,
    /// Routes.
    pub routes: Vec<Route>,
}

impl RoutingTable {
    /// The longest-prefix route holding `dst` (same family), and its index.
    pub fn lookup(&self, dst: IpAddr) -> Option<(usize, &Route)> {
        let mut best: Option<(usize, &Route)> = None;
        for (index, route) in self.routes.iter().enumerate() {
            if route.destination.contains(&dst)
                && best.is_none_or(|(_, b)| {
                    route.destination.prefix_len() > b.destination.prefix_len()
                })
            {
                best = Some((index, route));
            }
        }
        best
    }
}

/// Which route a packet took: its table and the route's index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RouteRef {
    /// Table id (254: main).
    pub table: u32,
    /// Index of the route in the table (the main table lists its connected routes first).
    pub route: u16,
}

/// The routing tables of an appliance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// The main table.
    pub main: RoutingTable,
    /// The other tables, by id.
    pub tables: Vec<RoutingTable>,
}

/// A problem with a route, worded as `ip route` would report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// Table id 0, 253 (default), 255 (local) or above [`TABLE_ID_MAX`].
    TableId(u32),
    /// Two `[[ip.table]]` with one id.
    DuplicateTable(u32),
    /// Two routes with one destination in one table (route index).
    Exists(usize, IpNet),
    /// The gateway is not inside a connected network (of the route's interface).
    GatewayOffLink(usize, IpAddr),
    /// Destination and gateway of different families (route index).
    Family(usize),
    /// A route with neither gateway nor interface (route index).
    NoNextHop(usize),
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TableId(id) => write!(
                f,
                "table id {id} is not usable (1..={TABLE_ID_MAX}, not 253 `default` nor 255 `local`)"
            ),
            Self::DuplicateTable(id) => write!(f, "table {id} is declared twice"),
            Self::Exists(_, net) => {
                write!(f, "a route to {net} is already in this table (File exists)")
            }
            Self::GatewayOffLink(_, gateway) => write!(
                f,
                "gateway {gateway} is not in a connected network of the route's interface (Nexthop has invalid gateway)"
            ),
            Self::Family(_) => write!(
                f,
                "destination and gateway are of different address families"
            ),
            Self::NoNextHop(_) => {
                write!(f, "a route needs a gateway (`via`) or an interface (`dev`)")
            }
        }
    }
}

impl Routing {
    /// The table with this id (254: main).
    pub fn table(&self, id: u32) -> Option<&RoutingTable> {
        if id == MAIN_TABLE {
            return Some(&self.main);
        }
        self.tables.iter().find(|t| t.id == id)
    }

    /// Whether any table besides main is declared.
    pub fn has_tables(&self) -> bool {
        !self.tables.is_empty()
    }

    /// The route of a forwarded packet to `dst` carrying `fwmark` (see the module
    /// documentation for the rules' order).
    #[inline]
    pub fn lookup(&self, dst: IpAddr, fwmark: Option<u32>) -> Option<(RouteRef, &Route)> {
        if let Some(mark) = fwmark
            && !self.tables.is_empty()
            && mark & !TABLE_ID_MAX == TABLE_MARK_BASE
            && let Some(table) = self.table(mark & TABLE_ID_MAX)
            && let Some(found) = table.lookup(dst)
        {
            return Some(reference(table.id, found));
        }
        self.main
            .lookup(dst)
            .map(|found| reference(MAIN_TABLE, found))
    }
}

fn reference(table: u32, (index, route): (usize, &Route)) -> (RouteRef, &Route) {
    let route_index = u16::try_from(index).unwrap_or(u16::MAX);
    (
        RouteRef {
            table,
            route: route_index,
        },
        route,
    )
}

/// A route as written: destination, optional gateway and interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination network.
    pub destination: IpNet,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Interface.
    pub iface: Option<IfaceId>,
}

/// Resolve a table's written routes against the connected networks `(iface, network)`:
/// host bits cleared, gateways checked on-link, missing interfaces taken from the
/// gateway's network. Errors carry the route's index.
pub fn resolve_table(
    specs: &[RouteSpec],
    connected: &[(IfaceId, IpNet)],
    existing: &[Route],
) -> Result<Vec<Route>, RouteError> {
    let mut routes: Vec<Route> = existing.to_vec();
    for (index, spec) in specs.iter().enumerate() {
        let destination = spec.destination.trunc();
        if let Some(gateway) = spec.gateway
            && gateway.is_ipv4() != destination.addr().is_ipv4()
        {
            return Err(RouteError::Family(index));
        }
        let iface = match (spec.gateway, spec.iface) {
            (None, None) => return Err(RouteError::NoNextHop(index)),
            (None, Some(iface)) => iface,
            (Some(gateway), wanted) => connected
                .iter()
                .filter(|(i, net)| wanted.is_none_or(|w| w == *i) && net.contains(&gateway))
                .max_by_key(|(_, net)| net.prefix_len())
                .map(|(i, _)| *i)
                .ok_or(RouteError::GatewayOffLink(index, gateway))?,
        };
        if routes.iter().any(|r| r.destination == destination) {
            return Err(RouteError::Exists(index, destination));
        }
        routes.push(Route {
            destination,
            gateway: spec.gateway,
            iface,
        });
    }
    Ok(routes)
}

/// Check a table id for `[[ip.table]]`.
pub fn check_table_id(id: u32) -> Result<u32, RouteError> {
    if id == 0 || id == 253 || id == 255 || id > TABLE_ID_MAX {
        Err(RouteError::TableId(id))
    } else {
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn routing() -> Routing {
        let connected = [
            (0, net("198.51.100.0/24")),
            (1, net("10.0.2.0/24")),
            (2, net("10.0.9.0/24")),
        ];
        let main: Vec<Route> = connected
            .iter()
            .map(|&(iface, destination)| Route {
                destination,
                gateway: None,
                iface,
            })
            .collect();
        let main_extra = [RouteSpec {
            destination: net("0.0.0.0/0"),
            gateway: Some("198.51.100.1".parse().unwrap()),
            iface: None,
        }];
        let main = resolve_table(&main_extra, &connected, &main).unwrap();
        let table = [
            RouteSpec {
                destination: net("0.0.0.0/0"),
                gateway: Some("10.0.9.1".parse().unwrap()),
                iface: None,
            },
            RouteSpec {
                destination: net("192.0.2.0/25"),
                gateway: None,
                iface: Some(1),
            },
        ];
        let routes = resolve_table(&table, &connected, &[]).unwrap();
        Routing {
            main: RoutingTable {
                id: MAIN_TABLE,
                routes: main,
            },
            tables: vec![RoutingTable { id: 100, routes }],
        }
    }

    #[test]
    fn a_marked_packet_takes_its_table_and_falls_back_to_main_without_a_route() {
        let routing = routing();
        let mark = Some(TABLE_MARK_BASE | 100);
        let dst: IpAddr = "203.0.113.7".parse().unwrap();
        let (used, route) = routing.lookup(dst, mark).unwrap();
        assert_eq!(
            used,
            RouteRef {
                table: 100,
                route: 0
            }
        );
        assert_eq!(
            (route.iface, route.gateway),
            (2, Some("10.0.9.1".parse().unwrap()))
        );
        let (used, _) = routing.lookup("192.0.2.5".parse().unwrap(), mark).unwrap();
        assert_eq!(
            used,
            RouteRef {
                table: 100,
                route: 1
            }
        );
        // Unmarked, a director's mark, or a table without the route: main.
        for mark in [None, Some(1), Some(TABLE_MARK_BASE | 101)] {
            let (used, route) = routing.lookup(dst, mark).unwrap();
            assert_eq!((used.table, used.route, route.iface), (MAIN_TABLE, 3, 0));
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(routing.lookup(v6, mark), None);
        // The connected network is longer than the default: main, on-link.
        let (used, route) = routing.lookup("10.0.2.4".parse().unwrap(), None).unwrap();
        assert_eq!((used.route, route.gateway), (1, None));
    }

    #[test]
    fn bad_routes_are_refused_as_ip_route_would() {
        let connected = [(0, net("198.51.100.0/24")), (1, net("10.0.2.0/24"))];
        let spec = |dst: &str, via: Option<&str>, dev: Option<IfaceId>| RouteSpec {
            destination: net(dst),
            gateway: via.map(|v| v.parse().unwrap()),
            iface: dev,
        };
        let off_link = [spec("0.0.0.0/0", Some("10.0.9.1"), None)];
        assert!(matches!(
            resolve_table(&off_link, &connected, &[]),
            Err(RouteError::GatewayOffLink(0, _))
        ));
        let wrong_dev = [spec("0.0.0.0/0", Some("10.0.2.1"), Some(0))];
        assert!(matches!(
            resolve_table(&wrong_dev, &connected, &[]),
            Err(RouteError::GatewayOffLink(0, _))
        ));
        let twice = [
            spec("10.1.0.0/16", None, Some(0)),
            spec("10.1.2.3/16", None, Some(1)),
        ];
        assert_eq!(
            resolve_table(&twice, &connected, &[]),
            Err(RouteError::Exists(1, net("10.1.0.0/16")))
        );
        let family = [spec("::/0", Some("10.0.2.1"), None)];
        assert_eq!(
            resolve_table(&family, &connected, &[]),
            Err(RouteError::Family(0))
        );
        let nothing = [spec("::/0", None, None)];
        assert_eq!(
            resolve_table(&nothing, &connected, &[]),
            Err(RouteError::NoNextHop(0))
        );
        for id in [0, 253, 255, 65536] {
            assert_eq!(check_table_id(id), Err(RouteError::TableId(id)));
        }
        assert_eq!(check_table_id(100), Ok(100));
    }
}
