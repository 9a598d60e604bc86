//! Floods: `syn_flood`, `ack_flood`, `udp_flood`, `icmp_flood`. Packet `i` of a flood is a
//! pure function of (seed, source name, i): its send time comes from the rate and burst
//! pattern, its fields (spoofed source, ports, TTL, sequence numbers) are the `i`-th draw
//! from the source's ChaCha stream. Every receive queue draws every packet's fields (cheap)
//! but builds and sends only the packets whose flow hashes to it.
//!
//! Frames are built once per destination with [`PacketBuilder`] (a template) and then, per
//! packet, copied into a reused buffer and patched in place (addresses, ports, TTL, IP id,
//! sequence numbers, checksums): byte for byte what the builder would have produced.
//!
//! Not here: what happens to the packets (the pipeline decides).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datapath::TimeNs;
use datapath::packet::builder::PacketBuilder;
use datapath::packet::checksum;
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
    src_ports: Picker,
    dst_ports: Picker,
    ttl: Picker,
    payload: Vec<u8>,
    burst: Option<Burst>,
    start: TimeNs,
    stop: TimeNs,
    queue: u16,
    queues: u16,
    rng: ChaCha8Rng,
    next_index: u64,
    /// `next_index × 1 s / rate` as quotient and remainder, kept up to date by addition.
    active: (u64, u64),
    /// `1 s / rate` as quotient and remainder: what `active` grows by per packet.
    step: (u64, u64),
    /// Fields of packet `next_index`, already drawn (it belongs to this queue).
    pending: Option<Fields>,
    /// One template frame per destination (built on first use).
    templates: Vec<Option<Template>>,
    stats: ActorStats,
}

struct Fields {
    src: IpAddr,
    destination: usize,
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
            src_ports: Picker::new(
                spec.src_ports
                    .clone()
                    .unwrap_or(RangeSet::single(1024, 65535)),
            ),
            dst_ports: Picker::new(spec.dst_ports.clone().unwrap_or(RangeSet::single(80, 80))),
            ttl: Picker::new(spec.ttl.clone().unwrap_or(RangeSet::single(64, 64))),
            payload: vec![0x5a; usize::from(spec.payload)],
            burst: spec.burst,
            start: spec.start.0,
            stop: spec.stop.map_or(end, |s| s.0.min(end)),
            queue,
            queues,
            rng,
            next_index: 0,
            active: (0, 0),
            step: (NS_PER_SEC / spec.rate.0, NS_PER_SEC % spec.rate.0),
            pending: None,
            templates: Vec::new(),
            stats: ActorStats::new(name, kind_name),
        }
    }

    /// Send time of packet `index` (the reference [`Self::next_time`] is checked against).
    #[cfg(test)]
    fn time_of(&self, index: u64) -> TimeNs {
        let active = (u128::from(index) * u128::from(NS_PER_SEC) / u128::from(self.rate)) as TimeNs;
        self.send_time(active)
    }

    /// Send time of packet `next_index`: `time_of(next_index)` without a division.
    fn next_time(&self) -> TimeNs {
        self.send_time(self.active.0)
    }

    /// Move to the next packet.
    fn advance(&mut self) {
        self.next_index += 1;
        let (quotient, remainder) = &mut self.active;
        *quotient += self.step.0;
        *remainder += self.step.1;
        if *remainder >= self.rate {
            *remainder -= self.rate;
            *quotient += 1;
        }
    }

    /// Send time of the packet `active` ns into the flood's sending time.
    fn send_time(&self, active: TimeNs) -> TimeNs {
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
        let destination = below(self.rng.next_u64(), self.destinations.len() as u64) as usize;
        let (dst, fixed_port) = self.destinations[destination];
        let sport = self.src_ports.pick(self.rng.next_u64()) as u16;
        let dport = fixed_port.unwrap_or_else(|| self.dst_ports.pick(self.rng.next_u64()) as u16);
        let ttl = self.ttl.pick(self.rng.next_u64()) as u8;
        let words = self.rng.next_u64();
        Fields {
            src,
            destination,
            dst,
            sport,
            dport,
            ttl,
            seq: words as u32,
            ack: (words >> 32) as u32,
            ip_id: self.rng.next_u32() as u16,
        }
    }

    /// Write packet `index` with `fields` into `out` (cleared first): the destination's
    /// template, patched.
    fn write_frame(&mut self, fields: &Fields, index: u64, out: &mut Vec<u8>) {
        if self.templates.len() < self.destinations.len() {
            self.templates.resize_with(self.destinations.len(), || None);
        }
        let template = match &self.templates[fields.destination] {
            Some(template) => template,
            None => {
                let template = Template::new(self.frame(fields, index), fields.src.is_ipv6());
                self.templates[fields.destination].insert(template)
            }
        };
        template.write(self.kind, fields, index, out);
    }

    /// Packet `index` built from scratch (the reference the templates are checked against).
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

/// A uniform pick from a [`RangeSet`] with its size computed once: what
/// `set.nth(below(random, set.len()))` gives, without a division per pick.
struct Picker {
    ranges: RangeSet,
    len: u64,
}

impl Picker {
    fn new(ranges: RangeSet) -> Self {
        let len = ranges.len();
        Self { ranges, len }
    }

    fn pick(&self, random: u64) -> u32 {
        let mut index = below(random, self.len);
        for &(low, high) in &self.ranges.0 {
            let size = u64::from(high - low) + 1;
            if index < size {
                return low + index as u32;
            }
            index -= size;
        }
        self.ranges.0.first().map_or(0, |r| r.0)
    }
}

/// Offset of the IP header in a flood frame (Ethernet, no VLAN tags).
const IP_OFFSET: usize = 14;

/// A flood frame built once; packets are copies with their own fields patched in.
struct Template {
    frame: Vec<u8>,
    ipv6: bool,
}

impl Template {
    fn new(frame: Vec<u8>, ipv6: bool) -> Self {
        Self { frame, ipv6 }
    }

    /// The frame for `fields` and `index` into `out`.
    fn write(&self, kind: FloodKind, fields: &Fields, index: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.frame);
        let ip = IP_OFFSET;
        let l4 = match (self.ipv6, fields.src) {
            (false, IpAddr::V4(src)) => {
                out[ip + 4..ip + 6].copy_from_slice(&fields.ip_id.to_be_bytes());
                out[ip + 8] = fields.ttl;
                out[ip + 12..ip + 16].copy_from_slice(&src.octets());
                out[ip + 10..ip + 12].fill(0);
                let sum = checksum::partial(&out[ip..ip + 20]);
                out[ip + 10..ip + 12].copy_from_slice(&checksum::field_bytes(sum));
                ip + 20
            }
            (true, IpAddr::V6(src)) => {
                out[ip + 7] = fields.ttl;
                out[ip + 8..ip + 24].copy_from_slice(&src.octets());
                ip + 40
            }
            _ => unreachable!("a template's family is its source network's"),
        };
        let checksum_at = match kind {
            FloodKind::Syn | FloodKind::Ack => {
                out[l4..l4 + 2].copy_from_slice(&fields.sport.to_be_bytes());
                out[l4 + 2..l4 + 4].copy_from_slice(&fields.dport.to_be_bytes());
                out[l4 + 4..l4 + 8].copy_from_slice(&fields.seq.to_be_bytes());
                if kind == FloodKind::Ack {
                    out[l4 + 8..l4 + 12].copy_from_slice(&fields.ack.to_be_bytes());
                }
                l4 + 16
            }
            FloodKind::Udp => {
                out[l4..l4 + 2].copy_from_slice(&fields.sport.to_be_bytes());
                out[l4 + 2..l4 + 4].copy_from_slice(&fields.dport.to_be_bytes());
                l4 + 6
            }
            FloodKind::Icmp => {
                out[l4 + 4..l4 + 6].copy_from_slice(&fields.sport.to_be_bytes());
                out[l4 + 6..l4 + 8].copy_from_slice(&(index as u16).to_be_bytes());
                l4 + 2
            }
        };
        out[checksum_at..checksum_at + 2].fill(0);
        let sum = self.pseudo_header(kind, fields, out.len() - l4) + checksum::partial(&out[l4..]);
        let mut field = checksum::field_bytes(sum);
        if kind == FloodKind::Udp && field == [0, 0] {
            field = [0xff, 0xff]; // UDP transmits an all-zero checksum as all ones
        }
        out[checksum_at..checksum_at + 2].copy_from_slice(&field);
    }

    fn pseudo_header(&self, kind: FloodKind, fields: &Fields, length: usize) -> u64 {
        let proto = match (kind, self.ipv6) {
            (FloodKind::Syn | FloodKind::Ack, _) => 6,
            (FloodKind::Udp, _) => 17,
            (FloodKind::Icmp, false) => return 0,
            (FloodKind::Icmp, true) => 58,
        };
        match (fields.src, fields.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                checksum::pseudo_header_v4(src, dst, proto, length as u32)
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                checksum::pseudo_header_v6(src, dst, proto, length as u32)
            }
            _ => 0,
        }
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
            let time = self.next_time();
            if time >= self.stop {
                return None;
            }
            let fields = match self.pending.take() {
                Some(fields) => fields,
                None => self.fields(),
            };
            if queue_of(fields.src, fields.sport, self.queues) != self.queue {
                self.advance();
                continue;
            }
            if time > now {
                self.pending = Some(fields);
                return Some(time);
            }
            self.advance();
            let mut frame = out.buffer();
            self.write_frame(&fields, index, &mut frame);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{DurationNs, Rate};

    fn spec(src: &str, dst: &str) -> FloodSpec {
        FloodSpec {
            name: None,
            from: "net".into(),
            rate: Rate(1_000_000),
            src: Some(src.parse().unwrap()),
            dst: Destinations::Many(vec![dst.into(), dst.replace(":80", "")]),
            src_ports: None,
            dst_ports: Some(RangeSet::single(1, 65535)),
            ttl: Some(RangeSet::single(1, 255)),
            payload: 13,
            burst: None,
            start: DurationNs(0),
            stop: None,
        }
    }

    /// Patched templates are byte for byte the frames the builder makes, for every kind,
    /// both address families and odd payload lengths.
    #[test]
    fn templates_match_the_builder() {
        let kinds = [
            FloodKind::Syn,
            FloodKind::Ack,
            FloodKind::Udp,
            FloodKind::Icmp,
        ];
        let families = [
            ("0.0.0.0/0", "192.0.2.10:80"),
            ("2001:db8::/32", "[2001:db8:ffff::10]:80"),
        ];
        for kind in kinds {
            for (src, dst) in families {
                let spec = spec(src, dst);
                let network = spec.src.unwrap();
                let rng = crate::engine::rng::stream(5, "template-test");
                let mut source =
                    FloodSource::new("t".into(), kind, &spec, 0, network, 1, (0, 1), rng);
                let mut buffer = Vec::new();
                for index in 0..3000 {
                    let fields = source.fields();
                    source.write_frame(&fields, index, &mut buffer);
                    let built = source.frame(&fields, index);
                    assert_eq!(buffer, built, "{kind:?} {src} packet {index}");
                }
            }
        }
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;
    use crate::scenario::{DurationNs, Rate};

    /// Send times kept by addition equal the formula, with and without bursts; picks equal
    /// `RangeSet::nth`.
    #[test]
    fn incremental_send_times_and_picks_match_the_formulas() {
        for (rate, burst) in [
            (3, None),
            (7_000_003, None),
            (1_000_000_000, None),
            (999, Some((5_000_000, 3_000_000))),
        ] {
            let mut spec = tests_spec();
            spec.rate = Rate(rate);
            spec.burst = burst.map(|(on, off)| Burst {
                on: DurationNs(on),
                off: DurationNs(off),
            });
            let network = spec.src.unwrap();
            let rng = crate::engine::rng::stream(1, "clock");
            let mut source = FloodSource::new(
                "c".into(),
                FloodKind::Syn,
                &spec,
                0,
                network,
                u64::MAX,
                (0, 1),
                rng,
            );
            for index in 0..200_000 {
                assert_eq!(
                    source.next_time(),
                    source.time_of(index),
                    "rate {rate} index {index}"
                );
                source.advance();
            }
        }
        let set = RangeSet(vec![(1, 3), (10, 10), (20, 29)]);
        let picker = Picker::new(set.clone());
        for random in (0..1000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            assert_eq!(picker.pick(random), set.nth(below(random, set.len())));
        }
    }

    fn tests_spec() -> FloodSpec {
        FloodSpec {
            name: None,
            from: "net".into(),
            rate: Rate(1),
            src: Some("10.0.0.0/8".parse().unwrap()),
            dst: Destinations::One("192.0.2.1:80".into()),
            src_ports: None,
            dst_ports: None,
            ttl: None,
            payload: 0,
            burst: None,
            start: DurationNs(5),
            stop: None,
        }
    }
}
