//! The resolved topology every shard shares read-only: hosts (client networks and
//! backends) with their interface and link, the routing table that maps a destination
//! address to the host owning it, and the flow hash that spreads traffic over receive queues.
//!
//! Not here: per-shard state (links' queues, stacks), which lives in the engine.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::net::IpAddr;

use datapath::hash::siphash::siphash13;
use datapath::packet::IfaceId;
use ipnet::IpNet;
use siphasher::sip::SipHasher13;

use crate::scenario::{LinkSpec, Scenario};

/// Index of a host in [`World::hosts`].
pub type HostId = u16;

/// Keys of the receive-side-scaling hash (fixed: queue assignment is part of the model).
const RSS_KEYS: (u64, u64) = (0x6d5a_56da_255b_0ec2, 0x4167_253d_43a3_8fb0);

/// What a host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    /// A client network owning a prefix.
    Network(IpNet),
    /// A backend owning its addresses (index into the scenario's backends).
    Backend(usize),
}

/// One host attached to the appliance.
#[derive(Debug, Clone)]
pub struct Host {
    /// Name from the scenario.
    pub name: String,
    /// Appliance interface it is attached to.
    pub iface: IfaceId,
    /// Its link.
    pub link: LinkSpec,
    /// What it is.
    pub kind: HostKind,
}

/// The resolved topology.
#[derive(Debug, Clone)]
pub struct World {
    /// Networks first (scenario order), then backends.
    pub hosts: Vec<Host>,
    exact: BTreeMap<IpAddr, HostId>,
    /// IPv4 network prefixes as (network, mask, host), longest first.
    prefixes_v4: Vec<(u32, u32, HostId)>,
    /// IPv6 network prefixes as (network, mask, host), longest first.
    prefixes_v6: Vec<(u128, u128, HostId)>,
}

impl World {
    /// Resolve a validated scenario's topology.
    pub fn new(scenario: &Scenario) -> Self {
        let topology = &scenario.topology;
        let iface_of = |name: &str| {
            topology
                .interfaces
                .iter()
                .position(|i| i == name)
                .unwrap_or(0) as IfaceId
        };
        let mut hosts = Vec::new();
        let mut prefixes = Vec::new();
        for network in &topology.networks {
            prefixes.push((network.prefix, hosts.len() as HostId));
            hosts.push(Host {
                name: network.name.clone(),
                iface: iface_of(network.iface.get_ref()),
                link: network.link.clone(),
                kind: HostKind::Network(network.prefix),
            });
        }
        let mut exact = BTreeMap::new();
        for (index, backend) in topology.backends.iter().enumerate() {
            let id = hosts.len() as HostId;
            for addr in std::iter::once(&backend.addr).chain(&backend.also) {
                exact.entry(*addr).or_insert(id);
            }
            hosts.push(Host {
                name: backend.name.clone(),
                iface: iface_of(backend.iface.get_ref()),
                link: backend.link.clone(),
                kind: HostKind::Backend(index),
            });
        }
        prefixes.sort_by_key(|(prefix, id)| (std::cmp::Reverse(prefix.prefix_len()), *id));
        let (mut prefixes_v4, mut prefixes_v6) = (Vec::new(), Vec::new());
        for (prefix, id) in prefixes {
            match prefix {
                IpNet::V4(v4) => {
                    prefixes_v4.push((u32::from(v4.network()), u32::from(v4.netmask()), id));
                }
                IpNet::V6(v6) => {
                    prefixes_v6.push((u128::from(v6.network()), u128::from(v6.netmask()), id));
                }
            }
        }
        Self {
            hosts,
            exact,
            prefixes_v4,
            prefixes_v6,
        }
    }

    /// The host owning `addr`: a backend address first, then the longest network prefix.
    pub fn route(&self, addr: IpAddr) -> Option<HostId> {
        if !self.exact.is_empty()
            && let Some(id) = self.exact.get(&addr)
        {
            return Some(*id);
        }
        match addr {
            IpAddr::V4(v4) => {
                let addr = u32::from(v4);
                self.prefixes_v4
                    .iter()
                    .find(|(network, mask, _)| addr & mask == *network)
                    .map(|(_, _, id)| *id)
            }
            IpAddr::V6(v6) => {
                let addr = u128::from(v6);
                self.prefixes_v6
                    .iter()
                    .find(|(network, mask, _)| addr & mask == *network)
                    .map(|(_, _, id)| *id)
            }
        }
    }

    /// The network host called `name`.
    pub fn network(&self, name: &str) -> Option<HostId> {
        self.hosts
            .iter()
            .position(|h| h.name == name && matches!(h.kind, HostKind::Network(_)))
            .map(|i| i as HostId)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> Option<HostId> {
        self.hosts
            .iter()
            .position(|h| h.name == name)
            .map(|i| i as HostId)
    }
}

/// Receive queue of a flow, hashed on its client endpoint (address, port) — both
/// directions of a client's connection therefore land on the same queue, whatever address
/// the server side has (VIP or real server).
pub fn queue_of(client: IpAddr, port: u16, queues: u16) -> u16 {
    if queues <= 1 {
        return 0;
    }
    let hash = match client {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let [p0, p1] = port.to_le_bytes();
            siphash13(RSS_KEYS, &[a, b, c, d, p0, p1])
        }
        IpAddr::V6(v6) => {
            let mut hasher = SipHasher13::new_with_keys(RSS_KEYS.0, RSS_KEYS.1);
            hasher.write(&v6.octets());
            hasher.write_u16(port);
            hasher.finish()
        }
    };
    reduce(hash, queues)
}

/// `hash % queues`, with a mask for powers of two (this machine's 64-bit division costs
/// as much as the hash itself).
fn reduce(hash: u64, queues: u16) -> u16 {
    let queues = u64::from(queues);
    if queues.is_power_of_two() {
        (hash & (queues - 1)) as u16
    } else {
        (hash % queues) as u16
    }
}

/// Receive queue of a packet seen without knowing which side is the client (captures):
/// a symmetric hash over both endpoints.
pub fn queue_of_symmetric(a: (IpAddr, u16), b: (IpAddr, u16), proto: u8, queues: u16) -> u16 {
    if queues <= 1 {
        return 0;
    }
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut hasher = SipHasher13::new_with_keys(RSS_KEYS.0, RSS_KEYS.1);
    for (addr, port) in [low, high] {
        match addr {
            IpAddr::V4(v4) => hasher.write(&v4.octets()),
            IpAddr::V6(v6) => hasher.write(&v6.octets()),
        }
        hasher.write_u16(port);
    }
    hasher.write_u8(proto);
    (hasher.finish() % u64::from(queues)) as u16
}

/// Offset of the IP header in an Ethernet frame (skipping 802.1Q/802.1ad tags) and whether
/// it is IPv6; `None` for non-IP frames.
pub fn ip_offset(frame: &[u8]) -> Option<(usize, bool)> {
    let mut offset = 12;
    loop {
        let ethertype = u16::from_be_bytes([*frame.get(offset)?, *frame.get(offset + 1)?]);
        match ethertype {
            0x8100 | 0x88a8 | 0x9100 => offset += 4,
            0x0800 => return Some((offset + 2, false)),
            0x86dd => return Some((offset + 2, true)),
            _ => return None,
        }
    }
}

/// Destination IP address of an Ethernet frame.
pub fn frame_destination(frame: &[u8]) -> Option<IpAddr> {
    let (offset, ipv6) = ip_offset(frame)?;
    if ipv6 {
        let bytes: [u8; 16] = frame.get(offset + 24..offset + 40)?.try_into().ok()?;
        Some(IpAddr::from(bytes))
    } else {
        let bytes: [u8; 4] = frame.get(offset + 16..offset + 20)?.try_into().ok()?;
        Some(IpAddr::from(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{Rng, SeedableRng};

    /// The queue hash (one-pass SipHash-1-3) is the streaming hasher's result, byte for byte.
    #[test]
    fn queue_hash_matches_the_streaming_hasher() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..100_000 {
            let address = std::net::Ipv4Addr::from(rng.next_u32());
            let port = rng.next_u32() as u16;
            let mut hasher = SipHasher13::new_with_keys(RSS_KEYS.0, RSS_KEYS.1);
            hasher.write(&address.octets());
            hasher.write_u16(port);
            for queues in [2, 3, 7] {
                let expected = (hasher.finish() % queues) as u16;
                assert_eq!(queue_of(IpAddr::V4(address), port, queues as u16), expected);
            }
        }
    }
}
