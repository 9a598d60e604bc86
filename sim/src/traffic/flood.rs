//! Floods: `syn_flood`, `ack_flood`, `udp_flood`, `icmp_flood`. Packet `i` of a flood is a
//! pure function of (seed, source name, i): its send time comes from the rate and burst
//! pattern, its fields (spoofed source, ports, TTL, sequence numbers) are the `i`-th draw
//! from the source's ChaCha stream. Every receive queue draws every packet's fields (cheap)
//! but builds and sends only the packets whose flow hashes to it.
//!
//! Not here: what happens to the packets (the pipeline decides).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datapath::TimeNs;
use datapath::packet::builder::PacketBuilder;
use datapath::verdict::NS_PER_SEC;
use ipnet::IpNet;
use rand_chacha::ChaCha8Rng;
use rand_core::Rng;

use super::{Actor, ActorStats, Outbox};
use crate::engine::rng::below;
use crate::engine::world::{HostId, queue_of};
use crate::scenario::{Burst, Destinations, FloodSpec, RangeSet};

/// Parse `"192.0.2.10:80"`, `"[2001:db8::1]:80"` or a bare address.
pub fn parse_destination(text: &str) -> Result<(IpAddr, Option<u16>), String> {
    if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
        return Ok((socket.ip(), Some(socket.port())));
    }
    text.parse::<IpAddr>().map(|ip| (ip, None)).map_err(|_| {
        format!("invalid destination {text:?}: expected \"address\" or \"address:port\"")
    })
}

/// The destinations of a flood spec.
pub fn destinations(spec: &Destinations) -> Vec<(IpAddr, Option<u16>)> {
    let list = match spec {
        Destinations::One(one) => std::slice::from_ref(one),
        Destinations::Many(many) => many.as_slice(),
    };
    list.iter()
        .filter_map(|d| parse_destination(d).ok())
        .collect()
}

/// Which flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodKind {
    /// TCP SYN.
    Syn,
    /// TCP ACK.
    Ack,
    /// UDP.
    Udp,
    /// ICMP echo request.
    Icmp,
}

/// One flood, as seen by one receive queue.
pub struct FloodSource {
    kind: FloodKind,
    host: HostId,
    rate: u64,
    src: IpNet,
    destinations: Vec<(IpAddr, Option<u16>)>,
    src_ports: RangeSet,
    dst_ports: RangeSet,
    ttl: RangeSet,
    payload: Vec<u8>,
    burst: Option<Burst>,
    start: TimeNs,
    stop: TimeNs,
    queue: u16,
    queues: u16,
    rng: ChaCha8Rng,
    next_index: u64,
    /// Fields of packet `next_index`, already drawn (it belongs to this queue).
    pending: Option<Fields>,
    stats: ActorStats,
}

struct Fields {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    ttl: u8,
    seq: u32,
    ack: u32,
    ip_id: u16,
}

impl FloodSource {
    /// A flood from `host` (whose prefix is `network`), ending at `end` at the latest.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        kind: FloodKind,
        spec: &FloodSpec,
        host: HostId,
        network: IpNet,
        end: TimeNs,
        (queue, queues): (u16, u16),
        rng: ChaCha8Rng,
    ) -> Self {
        let kind_name = match kind {
            FloodKind::Syn => "syn_flood",
            FloodKind::Ack => "ack_flood",
            FloodKind::Udp => "udp_flood",
            FloodKind::Icmp => "icmp_flood",
        };
        Self {
            kind,
            host,
            rate: spec.rate.0,
            src: spec.src.unwrap_or(network),
            destinations: destinations(&spec.dst),
            src_ports: spec
                .src_ports
                .clone()
                .unwrap_or(RangeSet::single(1024, 65535)),
            dst_ports: spec.dst_ports.clone().unwrap_or(RangeSet::single(80, 80)),
            ttl: spec.ttl.clone().unwrap_or(RangeSet::single(64, 64)),
            payload: vec![0x5a; usize::from(spec.payload)],
            burst: spec.burst,
            start: spec.start.0,
            stop: spec.stop.map_or(end, |s| s.0.min(end)),
            queue,
            queues,
            rng,
            next_index: 0,
            pending: None,
            stats: ActorStats::new(name, kind_name),
        }
    }

    /// Send time of packet `index`.
    fn time_of(&self, index: u64) -> TimeNs {
        let active = (u128::from(index) * u128::from(NS_PER_SEC) / u128::from(self.rate)) as TimeNs;
        let offset = match self.burst {
            Some(Burst { on, off }) => (active / on.0) * (on.0 + off.0) + active % on.0,
            None => active,
        };
        self.start.saturating_add(offset)
    }

    /// Draw the fields of the next packet. Every queue draws every packet's fields in index
    /// order from the same stream, so packet `i` is the same on every queue.
    fn fields(&mut self) -> Fields {
        let src = random_address(&self.src, self.rng.next_u64());
        let (dst, fixed_port) =
            self.destinations[below(self.rng.next_u64(), self.destinations.len() as u64) as usize];
        let sport = self
            .src_ports
            .nth(below(self.rng.next_u64(), self.src_ports.len())) as u16;
        let dport = fixed_port.unwrap_or_else(|| {
            self.dst_ports
                .nth(below(self.rng.next_u64(), self.dst_ports.len())) as u16
        });
        let ttl = self.ttl.nth(below(self.rng.next_u64(), self.ttl.len())) as u8;
        let words = self.rng.next_u64();
        Fields {
            src,
            dst,
            sport,
            dport,
            ttl,
            seq: words as u32,
            ack: (words >> 32) as u32,
            ip_id: self.rng.next_u32() as u16,
        }
    }

    fn frame(&self, fields: &Fields, index: u64) -> Vec<u8> {
        let base = PacketBuilder::eth()
            .ip(fields.src, fields.dst)
            .ttl(fields.ttl)
            .ip_id(fields.ip_id);
        let builder = match self.kind {
            FloodKind::Syn => base
                .tcp(fields.sport, fields.dport)
                .syn()
                .seq_ack(fields.seq, 0)
                .mss(1460),
            FloodKind::Ack => base
                .tcp(fields.sport, fields.dport)
                .seq_ack(fields.seq, fields.ack),
            FloodKind::Udp => base.udp(fields.sport, fields.dport).payload(&self.payload),
            FloodKind::Icmp => base
                .echo_request(fields.sport, index as u16)
                .payload(&self.payload),
        };
        builder.build()
    }
}

/// A pseudo-random address inside `net` (its host bits from `random`; at most 64 of them).
fn random_address(net: &IpNet, random: u64) -> IpAddr {
    match net {
        IpNet::V4(v4) => {
            let host_bits = 32 - u32::from(v4.prefix_len());
            let mask = if host_bits == 0 {
                0
            } else {
                u32::MAX >> (32 - host_bits)
            };
            let base = u32::from(v4.network());
            IpAddr::V4(Ipv4Addr::from(base | (random as u32 & mask)))
        }
        IpNet::V6(v6) => {
            let host_bits = (128 - u32::from(v6.prefix_len())).min(64);
            let mask = if host_bits == 0 {
                0
            } else {
                u64::MAX >> (64 - host_bits)
            };
            let base = u128::from(v6.network());
            IpAddr::V6(Ipv6Addr::from(base | u128::from(random & mask)))
        }
    }
}

impl Actor for FloodSource {
    fn wake(&mut self, now: TimeNs, out: &mut Outbox) -> Option<TimeNs> {
        loop {
            let index = self.next_index;
            let time = self.time_of(index);
            if time >= self.stop {
                return None;
            }
            let fields = match self.pending.take() {
                Some(fields) => fields,
                None => self.fields(),
            };
            if queue_of(fields.src, fields.sport, self.queues) != self.queue {
                self.next_index += 1;
                continue;
            }
            if time > now {
                self.pending = Some(fields);
                return Some(time);
            }
            self.next_index += 1;
            let frame = self.frame(&fields, index);
            self.stats.packets_sent += 1;
            out.push((self.host, frame));
        }
    }

    fn deliver(&mut self, _now: TimeNs, _frame: &[u8], _out: &mut Outbox) -> Option<TimeNs> {
        None
    }

    fn stats(&self) -> ActorStats {
        self.stats.clone()
    }
}
