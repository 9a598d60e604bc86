//! The `[ip]` table of an appliance file: the IP layer's sysctls, with the kernel's
//! defaults (forwarding on, as on the appliance).
//!
//! ```toml
//! [ip]
//! forwarding = true            # net.ipv4.ip_forward
//! forwarding_v6 = true         # net.ipv6.conf.all.forwarding
//! rp_filter = "off"            # net.ipv4.conf.*.rp_filter: off / strict / loose
//! icmp_ratelimit = 1000        # net.ipv4.icmp_ratelimit (ms)
//! icmp_ratemask = 6168         # net.ipv4.icmp_ratemask
//! icmpv6_ratelimit = 100       # net.ipv6.icmp.ratelimit (ms)
//! icmp_msgs_per_sec = 1000     # net.ipv4.icmp_msgs_per_sec
//! icmp_msgs_burst = 50         # net.ipv4.icmp_msgs_burst
//! mtu = 1500                   # egress MTU of every interface …
//! interface_mtu = { inside = 9000 }   # … unless named here
//! default_route = "outside"    # the default route's interface (rp_filter, MTU)
//! ipfrag_high_thresh = 4194304 # net.ipv4.ipfrag_high_thresh (bytes)
//! ipfrag_low_thresh = 3145728  # net.ipv4.ipfrag_low_thresh
//! ipfrag_time = 30             # net.ipv4.ipfrag_time (s; IPv6: nf_conntrack_frag6_timeout, 60)
//!
//! [[ip.table]]                 # a routing table for the flows' `table 100` policy
//! id = 100                     # 1..=65535, not 253 / 255; 254 adds routes to main
//! route = [
//!   { to = "default", via = "10.0.9.1" },          # ip route add default via … table 100
//!   { to = "192.0.2.0/25", dev = "servers" },      # on-link
//!   { to = "2001:db8::/32", via = "2001:db8:9::1", dev = "dmz" },
//! ]
//! ```
//!
//! The main table holds the connected networks of `[interfaces]`, the `default_route`
//! interface's default routes and the routes of `[[ip.table]] id = 254`. Writing
//! `id = 254` declares the main table complete: a destination no table routes then gets
//! ICMP net unreachable (ICMPv6 no route), as from a router without a route; without it,
//! such a packet is forwarded as received. `to = "default"`
//! is the default route of the gateway's family (without a gateway write `0.0.0.0/0` or
//! `::/0`). A gateway must be inside a connected network (of `dev` when given), as the
//! kernel requires ("Nexthop has invalid gateway"); see [`super::route`].
//!
//! Whether connection tracking runs (and so reassembly) follows from the other tables
//! (NAT, directors, SYN-protected ports), not from a key here. Interfaces are those of
//! `[interfaces]` (their addresses are the appliance's own: local
//! delivery, connected routes, ICMP sources).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::defrag::DefragLimits;
use super::icmp::IcmpLimits;
use super::route::{self, RouteSpec, RoutingTable};
use super::{IpConfig, IpInterface, RpFilter};
use crate::nat::config::InterfaceAddress;
use crate::packet::IfaceId;
use crate::verdict::NS_PER_SEC;

/// `[ip]` as written; absent keys take the kernel's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpSettings {
    /// `net.ipv4.ip_forward`.
    pub forwarding: Option<bool>,
    /// `net.ipv6.conf.all.forwarding`.
    pub forwarding_v6: Option<bool>,
    /// `rp_filter`.
    pub rp_filter: Option<RpFilter>,
    /// `net.ipv4.icmp_ratelimit`, ms.
    pub icmp_ratelimit: Option<u64>,
    /// `net.ipv4.icmp_ratemask`.
    pub icmp_ratemask: Option<u32>,
    /// `net.ipv6.icmp.ratelimit`, ms.
    pub icmpv6_ratelimit: Option<u64>,
    /// `net.ipv4.icmp_msgs_per_sec`.
    pub icmp_msgs_per_sec: Option<u64>,
    /// `net.ipv4.icmp_msgs_burst`.
    pub icmp_msgs_burst: Option<u64>,
    /// Egress MTU of interfaces not in `interface_mtu`.
    pub mtu: Option<u32>,
    /// MTU per interface name.
    #[serde(default)]
    pub interface_mtu: BTreeMap<String, u32>,
    /// Interface of the default route.
    pub default_route: Option<String>,
    /// `ipfrag_high_thresh`, bytes.
    pub ipfrag_high_thresh: Option<u64>,
    /// `ipfrag_low_thresh`, bytes.
    pub ipfrag_low_thresh: Option<u64>,
    /// `ipfrag_time`, seconds.
    pub ipfrag_time: Option<u64>,
    /// `[[ip.table]]`: routing tables.
    #[serde(default)]
    pub table: Vec<TableSettings>,
}

/// `[[ip.table]]` as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSettings {
    /// Table id.
    pub id: u32,
    /// Routes, in order.
    #[serde(default)]
    pub route: Vec<RouteSettings>,
}

/// One route of `[[ip.table]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Destination: `address/prefix`, an address (a host route) or `default`.
    pub to: String,
    /// Gateway.
    pub via: Option<std::net::IpAddr>,
    /// Egress interface name.
    pub dev: Option<String>,
}

/// A problem in `[ip]`: where (`table[0].route[1].via`, empty for `[ip]` as a whole) and
/// what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfigError {
    /// Key path under `[ip]`.
    pub at: String,
    /// The message.
    pub message: String,
}

impl std::fmt::Display for IpConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.at.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.at, self.message)
        }
    }
}

impl From<String> for IpConfigError {
    fn from(message: String) -> Self {
        Self {
            at: String::new(),
            message,
        }
    }
}

/// Build the IP layer's settings. `interfaces` are the appliance's `[interfaces]`;
/// `iface_names` its interfaces in index order (empty when unknown: then `[interfaces]`
/// are numbered in name order).
pub fn build(
    settings: &IpSettings,
    interfaces: &BTreeMap<String, InterfaceAddress>,
    iface_names: &[&str],
) -> Result<IpConfig, IpConfigError> {
    let index = |name: &str| -> Result<IfaceId, String> {
        let position = if iface_names.is_empty() {
            interfaces.keys().position(|n| n == name)
        } else {
            iface_names.iter().position(|n| *n == name)
        };
        position
            .and_then(|p| IfaceId::try_from(p).ok())
            .ok_or_else(|| format!("`{name}` is not one of the appliance's interfaces"))
    };
    let defaults = IpConfig::default();
    let mtu = settings.mtu.unwrap_or(defaults.mtu);
    let mut interface_mtu = Vec::new();
    for (name, &value) in &settings.interface_mtu {
        interface_mtu.push((index(name)?, check_mtu(value)?));
    }
    let mut addresses = Vec::new();
    for (name, address) in interfaces {
        addresses.push(IpInterface {
            iface: index(name)?,
            address: address.0.addr(),
            prefix: address.0.prefix_len(),
        });
    }
    let limits = DefragLimits::default();
    let defrag = DefragLimits {
        high_thresh: settings.ipfrag_high_thresh.unwrap_or(limits.high_thresh),
        low_thresh: settings.ipfrag_low_thresh.unwrap_or(limits.low_thresh),
        time_ns: settings
            .ipfrag_time
            .map_or(limits.time_ns, |s| s.saturating_mul(NS_PER_SEC)),
        time_v6_ns: limits.time_v6_ns,
    };
    if defrag.low_thresh > defrag.high_thresh {
        return Err(String::from("ipfrag_low_thresh is above ipfrag_high_thresh").into());
    }
    let (routes, tables) = tables(settings, &addresses, &index)?;
    let icmp = IcmpLimits::default();
    Ok(IpConfig {
        forwarding: settings.forwarding.unwrap_or(defaults.forwarding),
        forwarding_v6: settings.forwarding_v6.unwrap_or(defaults.forwarding_v6),
        rp_filter: settings.rp_filter.unwrap_or_default(),
        icmp: IcmpLimits {
            ratelimit_ms: settings.icmp_ratelimit.unwrap_or(icmp.ratelimit_ms),
            ratemask: settings.icmp_ratemask.unwrap_or(icmp.ratemask),
            ratelimit_v6_ms: settings.icmpv6_ratelimit.unwrap_or(icmp.ratelimit_v6_ms),
            msgs_per_sec: settings.icmp_msgs_per_sec.unwrap_or(icmp.msgs_per_sec),
            msgs_burst: settings.icmp_msgs_burst.unwrap_or(icmp.msgs_burst),
        },
        mtu: check_mtu(mtu)?,
        interface_mtu,
        interfaces: addresses,
        default_route: settings.default_route.as_deref().map(index).transpose()?,
        routes,
        tables,
        unreachable_without_route: settings.table.iter().any(|t| t.id == route::MAIN_TABLE),
        defrag,
        conntrack: false,
    })
}

/// The routes `[[ip.table]]` add to main (id 254), and the other tables by id.
fn tables(
    settings: &IpSettings,
    addresses: &[IpInterface],
    index: &dyn Fn(&str) -> Result<IfaceId, String>,
) -> Result<(Vec<route::Route>, Vec<RoutingTable>), IpConfigError> {
    let connected: Vec<(IfaceId, ipnet::IpNet)> = addresses
        .iter()
        .filter_map(|i| {
            Some((
                i.iface,
                ipnet::IpNet::new(i.address, i.prefix).ok()?.trunc(),
            ))
        })
        .collect();
    let mut main = Vec::new();
    let mut tables: Vec<RoutingTable> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (position, table) in settings.table.iter().enumerate() {
        let at = |key: &str| IpConfigError {
            at: format!("table[{position}]{key}"),
            message: String::new(),
        };
        let located = |key: &str, message: String| IpConfigError { message, ..at(key) };
        let id = route::check_table_id(table.id).map_err(|e| located(".id", e.to_string()))?;
        if !seen.insert(id) {
            let error = route::RouteError::DuplicateTable(id);
            return Err(located(".id", error.to_string()));
        }
        let mut specs = Vec::new();
        for (n, written) in table.route.iter().enumerate() {
            let spec = route_spec(written, index)
                .map_err(|(key, message)| located(&format!(".route[{n}]{key}"), message))?;
            specs.push(spec);
        }
        let connected_main: Vec<route::Route> = if id == route::MAIN_TABLE {
            connected
                .iter()
                .map(|&(iface, destination)| route::Route {
                    destination,
                    gateway: None,
                    iface,
                })
                .collect()
        } else {
            Vec::new()
        };
        let routes = route::resolve_table(&specs, &connected, &connected_main).map_err(|e| {
            let key = match &e {
                route::RouteError::GatewayOffLink(n, _) => format!(".route[{n}].via"),
                route::RouteError::Exists(n, _) | route::RouteError::Family(n) => {
                    format!(".route[{n}].to")
                }
                route::RouteError::NoNextHop(n) => format!(".route[{n}]"),
                _ => String::new(),
            };
            located(&key, e.to_string())
        })?;
        if id == route::MAIN_TABLE {
            main.extend(routes.into_iter().skip(connected_main.len()));
        } else {
            tables.push(RoutingTable { id, routes });
        }
    }
    tables.sort_by_key(|t| t.id);
    Ok((main, tables))
}

/// A written route: its destination (`default` takes the gateway's family), gateway and
/// interface; errors name the key (`.to`, `.dev`).
fn route_spec(
    written: &RouteSettings,
    index: &dyn Fn(&str) -> Result<IfaceId, String>,
) -> Result<RouteSpec, (&'static str, String)> {
    let destination = match (written.to.as_str(), written.via) {
        ("default", Some(std::net::IpAddr::V4(_))) => "0.0.0.0/0".parse().ok(),
        ("default", Some(std::net::IpAddr::V6(_))) => "::/0".parse().ok(),
        ("default", None) => {
            return Err((
                ".to",
                "`default` without a gateway: write `0.0.0.0/0` or `::/0`".into(),
            ));
        }
        (text, _) => text.parse::<ipnet::IpNet>().ok().or_else(|| {
            text.parse::<std::net::IpAddr>()
                .ok()
                .map(ipnet::IpNet::from)
        }),
    };
    let destination = destination.ok_or_else(|| {
        (
            ".to",
            format!(
                "`{}` is not a destination (`address/prefix`, an address or `default`)",
                written.to
            ),
        )
    })?;
    let iface = match &written.dev {
        Some(name) => Some(index(name).map_err(|e| (".dev", e))?),
        None => None,
    };
    Ok(RouteSpec {
        destination,
        gateway: written.via,
        iface,
    })
}

fn check_mtu(mtu: u32) -> Result<u32, String> {
    if (68..=65535).contains(&mtu) {
        Ok(mtu)
    } else {
        Err(format!("MTU {mtu} is outside 68..=65535"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_take_the_kernel_defaults_and_names_resolve() {
        let settings: IpSettings = toml::from_str(
            "rp_filter = \"strict\"\ninterface_mtu = { inside = 9000 }\ndefault_route = \"outside\"",
        )
        .unwrap();
        let mut interfaces = BTreeMap::new();
        interfaces.insert(
            "inside".to_string(),
            InterfaceAddress("10.0.3.1/24".parse().unwrap()),
        );
        let config = build(&settings, &interfaces, &["outside", "inside"]).unwrap();
        assert_eq!(config.rp_filter, RpFilter::Strict);
        assert_eq!(
            (config.mtu, config.interface_mtu.clone()),
            (1500, vec![(1, 9000)])
        );
        assert_eq!(config.default_route, Some(0));
        assert_eq!(config.icmp, IcmpLimits::default());
        assert!(config.forwarding && config.forwarding_v6);
        let unknown = build(&settings, &interfaces, &["a", "b"]).unwrap_err();
        assert!(unknown.message.contains("`inside`"), "{unknown}");
        assert!(toml::from_str::<IpSettings>("rp_filte = \"off\"").is_err());
    }
}
