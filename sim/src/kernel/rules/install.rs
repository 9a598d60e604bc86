//! Installing compiled rules in a topology's LB namespace: flows first (marks are set in
//! mangle before the nat hook's DNAT reads them), the appliance's server-side interface
//! addresses, the nft tables, then the routes toward the server side and the appliance's
//! routing tables with their fwmark rules (see `routes::runner_routes`).
//!
//! Not here: compiling them (the other modules of `rules`).

use std::net::IpAddr;

use ipnet::IpNet;

use super::KernelRules;
use crate::kernel::topology::{
    FROM_CLIENT_TABLE, LB_CLIENT_IFACE, LB_SERVER_IFACE, SERVER_ADDR, SERVER_ADDR6, SERVER_MAC,
    Topology, mac_text,
};

impl KernelRules {
    /// Install the rules in the topology's LB namespace (flows first: marks are set in
    /// mangle before the nat hook's DNAT reads them).
    pub fn install(&self, topology: &Topology) -> anyhow::Result<()> {
        let lb = topology.lb_ns();
        if !self.flows_iptables.is_empty() {
            let program = self.backend.iptables_restore(false);
            topology.exec(&lb, &[program], Some(&self.flows_iptables))?;
        }
        self.install_server_interface(topology)?;
        for text in [
            &self.shield_nft,
            &self.director_nft,
            &self.synproxy_nft,
            &self.nat_nft,
        ] {
            if !text.is_empty() {
                topology.exec(&lb, &["nft", "-f", "-"], Some(text))?;
            }
        }
        if !self.synproxy_nft.is_empty() {
            let loose = "net.netfilter.nf_conntrack_tcp_loose=0";
            topology.exec(&lb, &["sysctl", "-qw", loose], None)?;
        }
        for address in &self.server_addresses {
            topology.route_to_server(&address.to_string())?;
        }
        for setting in &self.ip_sysctls {
            topology.exec(&lb, &["sysctl", "-qw", setting], None)?;
        }
        if let Some(mtu) = self.server_mtu {
            let mtu = mtu.to_string();
            let args = ["ip", "link", "set", LB_SERVER_IFACE, "mtu", &mtu];
            topology.exec(&lb, &args, None)?;
        }
        for command in &self.routes.commands {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            topology.exec(&lb, &args, None)?;
        }
        if let Some(destinations) = &self.routed_destinations {
            install_routed_only(topology, destinations)?;
        }
        self.ipvs.install(topology)
    }

    /// The IP layer's settings, for [`KernelRules::install`]: forwarding, `rp_filter` (all
    /// and both veths: the kernel uses the larger), ICMP rate limits, defragmentation
    /// limits, the server side's MTU.
    pub fn add_ip(&mut self, ip: &datapath::ip::IpConfig) {
        let rp = ip.rp_filter.sysctl();
        let flag = |on: bool| u8::from(on);
        self.ip_sysctls = vec![
            format!("net.ipv4.ip_forward={}", flag(ip.forwarding)),
            format!("net.ipv6.conf.all.forwarding={}", flag(ip.forwarding_v6)),
            format!("net.ipv4.conf.all.rp_filter={rp}"),
            format!("net.ipv4.conf.{LB_CLIENT_IFACE}.rp_filter={rp}"),
            format!("net.ipv4.conf.{LB_SERVER_IFACE}.rp_filter={rp}"),
            format!("net.ipv4.icmp_ratelimit={}", ip.icmp.ratelimit_ms),
            format!("net.ipv4.icmp_ratemask={}", ip.icmp.ratemask),
            format!("net.ipv6.icmp.ratelimit={}", ip.icmp.ratelimit_v6_ms),
            format!("net.ipv4.icmp_msgs_per_sec={}", ip.icmp.msgs_per_sec),
            format!("net.ipv4.icmp_msgs_burst={}", ip.icmp.msgs_burst),
            format!("net.ipv4.ipfrag_high_thresh={}", ip.defrag.high_thresh),
            format!("net.ipv4.ipfrag_low_thresh={}", ip.defrag.low_thresh),
            format!("net.ipv4.ipfrag_time={}", ip.defrag.time_ns / 1_000_000_000),
        ];
        self.server_mtu = Some(ip.mtu);
        self.routed_destinations = ip.unreachable_without_route.then(|| {
            let layer = datapath::ip::IpLayer::new(ip.clone());
            let main = &layer.routing().main.routes;
            main.iter().map(|route| route.destination).collect()
        });
    }

    /// The IPv6 rules: the flows' `ip6tables-restore` output (the shield's IPv6 sets are
    /// in its nft table). Separate from [`KernelRules::install`] so that a refusal leaves
    /// IPv4 runs possible (IPv6 packets are then not injected).
    pub fn install_ipv6(&self, topology: &Topology) -> anyhow::Result<()> {
        let lb = topology.lb_ns();
        if !self.flows_ip6tables.is_empty() {
            let program = self.backend.iptables_restore(true);
            topology.exec(&lb, &[program], Some(&self.flows_ip6tables))?;
        }
        if !self.synproxy_ip6tables.is_empty() {
            let args = ["ip6tables-restore", "--noflush"];
            topology.exec(&lb, &args, Some(&self.synproxy_ip6tables))?;
            let loose = "net.netfilter.nf_conntrack_tcp_loose=0";
            topology.exec(&lb, &["sysctl", "-qw", loose], None)?;
        }
        Ok(())
    }

    fn install_server_interface(&self, topology: &Topology) -> anyhow::Result<()> {
        for (_, address) in &self.server_interfaces {
            install_interface_address(topology, address)?;
        }
        Ok(())
    }
}

/// A gateway address inside `address`'s network other than `address` itself (the last
/// host address, or the one before): only its neighbour entry (the server veth's MAC)
/// matters, so routes to the network have a next hop the interface address matches.
fn gateway_in(address: &IpNet) -> IpAddr {
    let last = address.broadcast();
    let step_back = |ip: IpAddr, by: u128| match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4).wrapping_sub(by as u32)).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6).wrapping_sub(by)).into()),
    };
    let candidate = if address.prefix_len() + 1 >= address.max_prefix_len() {
        last
    } else {
        step_back(last, 1)
    };
    if candidate == address.addr() {
        step_back(candidate, 1)
    } else {
        candidate
    }
}

/// Add an appliance interface's address to the LB's server-side veth (IPv6 without
/// duplicate address detection: a tentative address is never a source), and route its
/// network there through a gateway inside it, in the main and the from-client tables.
fn install_interface_address(topology: &Topology, address: &IpNet) -> anyhow::Result<()> {
    let lb = topology.lb_ns();
    let gateway = gateway_in(address).to_string();
    let cidr = address.to_string();
    let mut add = vec!["ip", "addr", "add", &cidr, "dev", LB_SERVER_IFACE];
    if address.addr().is_ipv6() {
        add.push("nodad");
    }
    topology.exec(&lb, &add, None)?;
    let server_mac = mac_text(SERVER_MAC);
    let neighbour = [
        "ip",
        "neigh",
        "replace",
        &gateway,
        "lladdr",
        &server_mac,
        "dev",
        LB_SERVER_IFACE,
        "nud",
        "permanent",
    ];
    topology.exec(&lb, &neighbour, None)?;
    let network = address.trunc().to_string();
    for table in ["main".to_string(), FROM_CLIENT_TABLE.to_string()] {
        let route = [
            "ip",
            "route",
            "replace",
            &network,
            "via",
            &gateway,
            "dev",
            LB_SERVER_IFACE,
            "onlink",
            "table",
            &table,
        ];
        topology.exec(&lb, &route, None)?;
    }
    Ok(())
}

/// The from-client table holds only `destinations` (through the server-side peer), and a
/// rule after it makes every other destination unreachable (`ip rule … unreachable`:
/// `fib_lookup` fails with `-ENETUNREACH`, so `ip_error` sends net unreachable and IPv6
/// `ip6_pkt_discard` no route), as a router without a route to them.
fn install_routed_only(topology: &Topology, destinations: &[IpNet]) -> anyhow::Result<()> {
    let lb = topology.lb_ns();
    let table = FROM_CLIENT_TABLE.to_string();
    for family in ["-4", "-6"] {
        let flush = ["ip", family, "route", "flush", "table", &table];
        topology.exec(&lb, &flush, None)?;
        let rule = [
            "ip",
            family,
            "rule",
            "add",
            "iif",
            LB_CLIENT_IFACE,
            "unreachable",
            "pref",
            "101",
        ];
        topology.exec(&lb, &rule, None)?;
    }
    for destination in destinations {
        let gateway = if destination.addr().is_ipv6() {
            SERVER_ADDR6
        } else {
            SERVER_ADDR
        };
        let to = destination.to_string();
        let args = [
            "ip",
            "route",
            "replace",
            &to,
            "via",
            gateway,
            "dev",
            LB_SERVER_IFACE,
            "table",
            &table,
        ];
        topology.exec(&lb, &args, None)?;
    }
    Ok(())
}
