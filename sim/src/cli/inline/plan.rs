//! The lab's addressing, derived from a scenario's `[topology]`: which scenario interface
//! faces the clients and which the backends, the client namespace's addresses (one per
//! client network) and their gateways, the backends' addresses and the backend-side
//! gateway, and the VIPs.
//!
//! A pure function of the scenario (no I/O), so it is unit-tested and printed before the
//! lab starts. Not here: creating namespaces (`netns`) or moving frames (`hop`, `io`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::bail;
use datapath::packet::IfaceId;
use ipnet::Ipv4Net;

use crate::scenario::Scenario;

/// One side of the lab: the client side or the backend side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// Faces the client namespace.
    Client,
    /// Faces the backend namespace.
    Backend,
}

impl Side {
    /// Both sides, client first (also the index order of per-side arrays).
    pub const BOTH: [Side; 2] = [Side::Client, Side::Backend];

    /// Index into per-side arrays.
    pub fn index(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Backend => 1,
        }
    }

    /// `client` / `backend`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
        }
    }
}

/// The client namespace's address in one client network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress {
    /// The scenario network it belongs to.
    pub network: String,
    /// The address, with the network's prefix length.
    pub address: Ipv4Net,
    /// The lab's gateway address in that network (answered by proxy ARP).
    pub gateway: Ipv4Addr,
}

/// One backend host (all live in the backend namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHost {
    /// Scenario name.
    pub name: String,
    /// Its address (configured as a /32).
    pub address: Ipv4Addr,
    /// Further addresses it answers on.
    pub also: Vec<Ipv4Addr>,
    /// TCP ports the lab's HTTP servers listen on.
    pub tcp_ports: Vec<u16>,
}

/// The whole lab addressing plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPlan {
    /// Scenario interface names in index order (the pipeline's interface names).
    pub interfaces: Vec<String>,
    /// Scenario interface index of the client side, then of the backend side.
    pub iface_ids: [IfaceId; 2],
    /// Client addresses, first network first (its gateway is the default route).
    pub clients: Vec<ClientAddress>,
    /// Backends in scenario order.
    pub backends: Vec<BackendHost>,
    /// The backend namespace's default gateway (answered by proxy ARP).
    pub backend_gateway: Ipv4Addr,
    /// The scenario's VIPs (answered by proxy ARP on the client side).
    pub vips: Vec<Ipv4Addr>,
}

fn ipv4(address: IpAddr, what: &str) -> anyhow::Result<Ipv4Addr> {
    match address {
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(_) => bail!("{what} {address}: the inline lab is IPv4 only"),
    }
}

fn iface_index(interfaces: &[String], name: &str) -> anyhow::Result<IfaceId> {
    let index = interfaces
        .iter()
        .position(|i| i == name)
        .ok_or_else(|| anyhow::anyhow!("interface {name:?} is not in topology.interfaces"))?;
    Ok(IfaceId::try_from(index)?)
}

/// The one interface every item names, or an error saying the lab needs one per side.
fn single_iface<'a>(names: impl Iterator<Item = &'a str>, what: &str) -> anyhow::Result<&'a str> {
    let names: BTreeSet<&str> = names.collect();
    match names.len() {
        1 => Ok(names.into_iter().next().unwrap_or_default()),
        0 => bail!("the inline lab needs at least one {what} in [topology]"),
        _ => bail!(
            "the inline lab has one client-side and one backend-side veth, but {what}s sit on \
             interfaces {names:?}"
        ),
    }
}

impl LabPlan {
    /// Derive the plan from a scenario's topology.
    pub fn from_scenario(scenario: &Scenario) -> anyhow::Result<Self> {
        let topology = &scenario.topology;
        let networks: Vec<_> = topology
            .networks
            .iter()
            .filter(|n| n.prefix.prefix_len() > 0)
            .collect();
        let client_iface = single_iface(
            networks.iter().map(|n| n.iface.get_ref().as_str()),
            "network",
        )?;
        let backend_iface = single_iface(
            topology.backends.iter().map(|b| b.iface.get_ref().as_str()),
            "backend",
        )?;
        if client_iface == backend_iface {
            bail!(
                "clients and backends both sit on interface {client_iface:?}: the inline lab needs two"
            );
        }
        let vips = (topology.vips.iter())
            .map(|v| ipv4(*v, "VIP"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut backends = Vec::new();
        for backend in &topology.backends {
            backends.push(BackendHost {
                name: backend.name.clone(),
                address: ipv4(backend.addr, "backend")?,
                also: (backend.also.iter())
                    .map(|a| ipv4(*a, "backend address"))
                    .collect::<anyhow::Result<_>>()?,
                tcp_ports: backend.tcp_ports.clone(),
            });
        }
        let mut taken: BTreeSet<Ipv4Addr> = vips.iter().copied().collect();
        for backend in &backends {
            taken.insert(backend.address);
            taken.extend(&backend.also);
        }
        let mut clients = Vec::new();
        for network in networks {
            let ipnet::IpNet::V4(prefix) = network.prefix else {
                bail!("network {}: the inline lab is IPv4 only", network.name);
            };
            let gateway = free_host(prefix, &mut taken, &network.name)?;
            let address = free_host(prefix, &mut taken, &network.name)?;
            clients.push(ClientAddress {
                network: network.name.clone(),
                address: Ipv4Net::new(address, prefix.prefix_len())?,
                gateway,
            });
        }
        let first = backends
            .first()
            .map_or(Ipv4Addr::new(10, 0, 0, 0), |b| b.address);
        let backend_net = Ipv4Net::new(first, 24)?.trunc();
        let backend_gateway = free_host(backend_net, &mut taken, "backends")?;
        Ok(Self {
            interfaces: topology.interfaces.clone(),
            iface_ids: [
                iface_index(&topology.interfaces, client_iface)?,
                iface_index(&topology.interfaces, backend_iface)?,
            ],
            clients,
            backends,
            backend_gateway,
            vips,
        })
    }

    /// The scenario interface index of a side.
    pub fn iface_id(&self, side: Side) -> IfaceId {
        self.iface_ids[side.index()]
    }

    /// Addresses the lab answers ARP for on a side: on the client side the client
    /// gateways, the VIPs and every backend address (so clients on the same prefix reach
    /// them through the lab); on the backend side the backend gateway.
    pub fn proxy_arp(&self, side: Side) -> BTreeSet<Ipv4Addr> {
        match side {
            Side::Client => {
                let mut owned: BTreeSet<Ipv4Addr> =
                    self.clients.iter().map(|c| c.gateway).collect();
                owned.extend(&self.vips);
                owned.extend(self.backend_addresses());
                owned
            }
            Side::Backend => BTreeSet::from([self.backend_gateway]),
        }
    }

    /// Every backend address (own and `also`).
    pub fn backend_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.backends
            .iter()
            .flat_map(|b| std::iter::once(b.address).chain(b.also.iter().copied()))
    }

    /// The side a destination lives on: backend addresses on the backend side, everything
    /// else (client networks, the rest of the world) on the client side.
    pub fn route(&self, destination: Ipv4Addr) -> Side {
        if self.backend_addresses().any(|a| a == destination) {
            Side::Backend
        } else {
            Side::Client
        }
    }

    /// Whether `address` is one the lab itself stands for (gateways): frames to it are
    /// not forwarded anywhere.
    pub fn is_gateway(&self, address: Ipv4Addr) -> bool {
        address == self.backend_gateway || self.clients.iter().any(|c| c.gateway == address)
    }

    /// The plan as text (printed when the lab starts).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let [client, backend] = self
            .iface_ids
            .map(|i| self.interfaces[usize::from(i)].clone());
        out.push_str(&format!("client side ({client}):\n"));
        for c in &self.clients {
            out.push_str(&format!(
                "  client {} (network {}), gateway {}\n",
                c.address, c.network, c.gateway
            ));
        }
        let vips: Vec<String> = self.vips.iter().map(Ipv4Addr::to_string).collect();
        out.push_str(&format!("  VIPs {}\n", vips.join(" ")));
        out.push_str(&format!(
            "backend side ({backend}), gateway {}:\n",
            self.backend_gateway
        ));
        for b in &self.backends {
            let ports: Vec<String> = b.tcp_ports.iter().map(u16::to_string).collect();
            out.push_str(&format!(
                "  backend {} {} (HTTP on tcp {})\n",
                b.name,
                b.address,
                ports.join(",")
            ));
        }
        out
    }
}

/// The first host address of `prefix` not in `taken` (and mark it taken).
fn free_host(
    prefix: Ipv4Net,
    taken: &mut BTreeSet<Ipv4Addr>,
    network: &str,
) -> anyhow::Result<Ipv4Addr> {
    let found = prefix.hosts().take(4096).find(|h| !taken.contains(h));
    let Some(host) = found else {
        bail!("network {network} ({prefix}) has no free address for the lab");
    };
    taken.insert(host);
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> anyhow::Result<LabPlan> {
        let loaded = crate::scenario::parse(std::path::Path::new("t.toml"), text)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        LabPlan::from_scenario(&loaded.scenario)
    }

    const BASE: &str = r#"
name = "t"
seed = 1
duration = "1s"
[topology]
interfaces = ["lan", "servers"]
vips = ["192.168.0.1", "192.168.0.2"]
[[topology.network]]
name = "lan"
prefix = "192.168.0.0/24"
iface = "lan"
[[topology.network]]
name = "internet"
prefix = "0.0.0.0/0"
iface = "lan"
[[topology.backend]]
name = "gw"
addr = "192.168.0.3"
iface = "servers"
[[topology.backend]]
name = "web"
addr = "10.0.2.1"
iface = "servers"
"#;

    #[test]
    fn addresses_avoid_vips_and_backends_and_skip_the_default_network() {
        let plan = plan(BASE).unwrap();
        assert_eq!(plan.iface_ids, [0, 1]);
        assert_eq!(plan.clients.len(), 1);
        assert_eq!(plan.clients[0].gateway, Ipv4Addr::new(192, 168, 0, 4));
        assert_eq!(plan.clients[0].address.to_string(), "192.168.0.5/24");
        assert_eq!(plan.backend_gateway, Ipv4Addr::new(192, 168, 0, 6));
        assert_eq!(plan.route(Ipv4Addr::new(10, 0, 2, 1)), Side::Backend);
        assert_eq!(plan.route(Ipv4Addr::new(192, 168, 0, 5)), Side::Client);
        assert_eq!(plan.route(Ipv4Addr::new(8, 8, 8, 8)), Side::Client);
        let client_arp = plan.proxy_arp(Side::Client);
        for owned in [
            "192.168.0.1",
            "192.168.0.2",
            "192.168.0.3",
            "192.168.0.4",
            "10.0.2.1",
        ] {
            assert!(client_arp.contains(&owned.parse().unwrap()), "{owned}");
        }
        assert_eq!(
            plan.proxy_arp(Side::Backend),
            BTreeSet::from([plan.backend_gateway])
        );
    }

    #[test]
    fn clients_and_backends_on_one_interface_are_refused() {
        let text = BASE.replace("iface = \"servers\"", "iface = \"lan\"");
        let error = plan(&text).unwrap_err().to_string();
        assert!(error.contains("both sit on interface \"lan\""), "{error}");
    }
}
