//! The open-loop traffic of a scenario as a list of packets both sides can run: `pcap`
//! sources (read once, `rewrite` applied, shifted to the source's `start`) and floods
//! (SYN / ACK / UDP / ICMP frames drawn from a seeded stream over the flood's `src`,
//! `dst`, ports and TTLs, at its rate from `start`), merged in time order and capped.
//!
//! Closed-loop sources (`tcp_clients`, `udp_clients`) are left out and listed: their packets
//! depend on the answers they get (a smoltcp stack reacts to SYN-ACKs, retransmits, picks
//! ISNs), so they cannot be replayed packet for packet into the kernel; the frames they
//! sent in a simulation would meet a kernel that never saw the handshake. The flood
//! generator here draws its own fields (same distributions, not the engine's exact stream):
//! both sides run the very same frames, which is what the diff needs.
//!
//! Not here: running anything (see `diff`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, parse};
use ipnet::IpNet;

use super::inject::{InputPacket, read_inputs};
use crate::scenario::units::RangeSet;
use crate::scenario::{FloodSpec, LoadedScenario, PcapSpec, TrafficSpec};

/// Default cap on the packets taken from a scenario (and per capture).
pub const DEFAULT_MAX_PACKETS: usize = 5_000;

/// A scenario's open-loop packets and what was left out.
#[derive(Debug, Default)]
pub struct ScenarioInput {
    /// Packets in time order.
    pub packets: Vec<InputPacket>,
    /// Sources left out or cut, with why.
    pub notes: Vec<String>,
}

/// SplitMix64: a small seeded stream (the flood fields only need to be reproducible).
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick(&mut self, set: &RangeSet) -> u32 {
        set.nth(self.next() % set.len().max(1))
    }
}

fn random_address(net: &IpNet, random: u64) -> IpAddr {
    match net {
        IpNet::V4(v4) => {
            let host_bits = 32 - u32::from(v4.prefix_len());
            let mask = u32::MAX.checked_shr(32 - host_bits).unwrap_or(0);
            let mask = if host_bits == 0 { 0 } else { mask };
            IpAddr::V4(Ipv4Addr::from(
                u32::from(v4.network()) | (random as u32 & mask),
            ))
        }
        IpNet::V6(v6) => {
            let host_bits = (128 - u32::from(v6.prefix_len())).min(64);
            let mask = if host_bits == 0 {
                0
            } else {
                u64::MAX >> (64 - host_bits)
            };
            IpAddr::V6(Ipv6Addr::from(
                u128::from(v6.network()) | u128::from(random & mask),
            ))
        }
    }
}

/// Collect a scenario's open-loop packets, at most `max_packets` of them.
pub fn collect(loaded: &LoadedScenario, max_packets: usize) -> anyhow::Result<ScenarioInput> {
    let scenario = &loaded.scenario;
    let iface_of = |network: &str| -> u32 {
        let iface = scenario
            .topology
            .networks
            .iter()
            .find(|n| n.name == network)
            .map(|n| n.iface.get_ref().clone());
        iface
            .and_then(|name| scenario.topology.interfaces.iter().position(|i| *i == name))
            .map_or(0, |index| index as u32)
    };
    let mut input = ScenarioInput::default();
    for (index, traffic) in scenario.traffic.iter().enumerate() {
        let traffic = traffic.get_ref();
        let iface = iface_of(traffic.network());
        let seed = scenario.seed ^ (index as u64).wrapping_mul(0x1000_0001);
        match traffic {
            TrafficSpec::Pcap(spec) => input.packets.extend(pcap_packets(loaded, spec, iface)?),
            TrafficSpec::SynFlood(spec)
            | TrafficSpec::AckFlood(spec)
            | TrafficSpec::UdpFlood(spec)
            | TrafficSpec::IcmpFlood(spec) => {
                let network = scenario
                    .topology
                    .networks
                    .iter()
                    .find(|n| n.name == spec.from)
                    .map(|n| n.prefix);
                let end = scenario.duration.0;
                let packets = flood_packets(traffic.kind(), spec, network, end, iface, seed, max_packets);
                input.packets.extend(packets);
            }
            TrafficSpec::TcpClients(_) | TrafficSpec::UdpClients(_) | TrafficSpec::FtpClients(_) => input.notes.push(format!(
                "[[traffic]] #{} ({}): closed loop (its packets answer the appliance's), not replayed",
                index + 1,
                traffic.kind()
            )),
        }
    }
    input.packets.sort_by_key(|p| p.ts_ns);
    if input.packets.len() > max_packets {
        input.notes.push(format!(
            "capped at the first {max_packets} of {} packets (--max-packets)",
            input.packets.len()
        ));
        input.packets.truncate(max_packets);
    }
    Ok(input)
}

fn pcap_packets(
    loaded: &LoadedScenario,
    spec: &PcapSpec,
    iface: u32,
) -> anyhow::Result<Vec<InputPacket>> {
    let path = loaded.base_dir.join(&spec.file);
    let mut packets = read_inputs(&[path])?;
    let first = packets.first().map_or(0, |p| p.ts_ns);
    let rewrite: &BTreeMap<IpAddr, IpAddr> = &spec.rewrite;
    for packet in &mut packets {
        let meta = parse(packet.link, &packet.data, packet.orig_len, 0);
        crate::actors::pcap::rewrite_addresses(&mut packet.data, &meta, rewrite);
        packet.ts_ns = spec.start.0 + packet.ts_ns.saturating_sub(first);
        packet.interface = iface;
    }
    Ok(packets)
}

fn flood_packets(
    kind: &str,
    spec: &FloodSpec,
    network: Option<IpNet>,
    end: u64,
    iface: u32,
    seed: u64,
    max_packets: usize,
) -> Vec<InputPacket> {
    let src = spec
        .src
        .or(network)
        .unwrap_or_else(|| "0.0.0.0/0".parse().expect("valid prefix"));
    let destinations = crate::actors::flood::destinations(&spec.dst);
    let stop = spec.stop.map_or(end, |s| s.0.min(end));
    let span = stop.saturating_sub(spec.start.0);
    let rate = spec.rate.0.max(1);
    let count = (u128::from(span) * u128::from(rate) / 1_000_000_000) as usize;
    let src_ports = spec
        .src_ports
        .clone()
        .unwrap_or(RangeSet::single(1024, 65535));
    let dst_ports = spec.dst_ports.clone().unwrap_or(RangeSet::single(80, 80));
    let ttls = spec.ttl.clone().unwrap_or(RangeSet::single(64, 64));
    let payload = vec![0x5a; usize::from(spec.payload)];
    let mut stream = Stream(seed);
    let mut packets = Vec::new();
    for index in 0..count.min(max_packets) {
        if destinations.is_empty() {
            break;
        }
        let source = random_address(&src, stream.next());
        let (dst, fixed_port) = destinations[(stream.next() % destinations.len() as u64) as usize];
        let sport = stream.pick(&src_ports) as u16;
        let dport = fixed_port.unwrap_or_else(|| stream.pick(&dst_ports) as u16);
        let ttl = stream.pick(&ttls) as u8;
        let words = stream.next();
        let base = PacketBuilder::eth().ip(source, dst).ttl(ttl);
        let builder = match kind {
            "syn_flood" => base
                .tcp(sport, dport)
                .syn()
                .seq_ack(words as u32, 0)
                .mss(1460),
            "ack_flood" => base
                .tcp(sport, dport)
                .seq_ack(words as u32, (words >> 32) as u32),
            "udp_flood" => base.udp(sport, dport).payload(&payload),
            _ => base.echo_request(sport, index as u16).payload(&payload),
        };
        let data = builder.build();
        let offset = (index as u128 * 1_000_000_000 / u128::from(rate)) as u64;
        packets.push(InputPacket {
            ts_ns: spec.start.0 + offset,
            link: LinkType::Ethernet,
            interface: iface,
            orig_len: data.len() as u32,
            data,
        });
    }
    packets
}
