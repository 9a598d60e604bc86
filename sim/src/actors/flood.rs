//! Floods: `syn_flood`, `ack_flood`, `udp_flood`, `icmp_flood`. Packet `i` of a flood is a
//! pure function of (seed, source name, i): its send time comes from the rate and burst
//! pattern, its fields (spoofed source, ports, TTL, sequence numbers) are the `i`-th draws
//! from the source's PCG stream (`Pcg64Mcg`, value-stable, seeded from the source's ChaCha
//! stream; a draw costs a 128-bit multiply where a ChaCha8 block costs ~3 instructions per
//! byte). A field with one possible value (one destination, one TTL) takes no draw. Every
//! receive queue draws every packet's fields (cheap) but builds and sends only the packets
//! whose flow hashes to it.
//!
//! Frames are built once per destination with [`PacketBuilder`] (a template) and then, per
//! packet, copied into a reused buffer and patched in place (addresses, ports, TTL, IP id,
//! sequence numbers); the checksums are the template's sums over its fixed bytes plus the
//! patched words: byte for byte what the builder would have produced.
//!
//! Not here: what happens to the packets (the pipeline decides).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use datapath::TimeNs;
use datapath::packet::builder::PacketBuilder;
use datapath::packet::checksum;
use datapath::verdict::NS_PER_SEC;
use ipnet::IpNet;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use super::{Actor, ActorStats, Outbox};
use crate::net::rng::below;
use crate::net::world::{HostId, queue_of};
use crate::scenario::{Burst, Destinations, FloodSpec, RangeSet, parse_destination};

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
    rng: Pcg64Mcg,
    next_index: u64,
    /// `next_index × 1 s / rate` as quotient and remainder, kept up to date by addition.
    active: (u64, u64),
    /// `1 s / rate` as quotient and remainder: what `active` grows by per packet.
    step: (u64, u64),
    /// Fields of packet `next_index` when `drawn` (kept in place: no move per packet).
    pending: Fields,
    /// Whether `pending` holds packet `next_index`'s fields.
    drawn: bool,
    /// One template frame per destination (built on first use).
    templates: Vec<Option<Template>>,
    stats: ActorStats,
}

#[derive(Clone, Copy)]
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

impl Default for Fields {
    fn default() -> Self {
        let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Self {
            src: unspecified,
            destination: 0,
            dst: unspecified,
            sport: 0,
            dport: 0,
            ttl: 0,
            seq: 0,
            ack: 0,
            ip_id: 0,
        }
    }
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
        mut rng: ChaCha8Rng,
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
            rng: Pcg64Mcg::from_rng(&mut rng),
            next_index: 0,
            active: (0, 0),
            step: (NS_PER_SEC / spec.rate.0, NS_PER_SEC % spec.rate.0),
            pending: Fields::default(),
            drawn: false,
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
    /// order from the same stream, so packet `i` is the same on every queue. A field with a
    /// single possible value takes no draw.
    fn fields(&mut self) -> Fields {
        let src = random_address(&self.src, self.rng.next_u64());
        let destination = match self.destinations.len() {
            1 => 0,
            n => below(self.rng.next_u64(), n as u64) as usize,
        };
        let (dst, fixed_port) = self.destinations[destination];
        let sport = self.src_ports.draw(&mut self.rng) as u16;
        let dport = fixed_port.unwrap_or_else(|| self.dst_ports.draw(&mut self.rng) as u16);
        let ttl = self.ttl.draw(&mut self.rng) as u8;
        let words = self.rng.next_u64();
        let ip_id = self.rng.next_u64() as u16;
        Fields {
            src,
            destination,
            dst,
            sport,
            dport,
            ttl,
            seq: words as u32,
            ack: (words >> 32) as u32,
            ip_id,
        }
    }

    /// Write packet `index` with `fields` into `out` (cleared first): the destination's
    /// template, patched.
    #[cfg(test)]
    fn write_frame(&mut self, fields: &Fields, index: u64, out: &mut Vec<u8>) {
        self.ensure_template(fields, index);
        let template = self.templates[fields.destination].as_ref();
        template.expect("just built").write(fields, index, out);
    }

    /// Build the template of `fields`' destination on its first use.
    fn ensure_template(&mut self, fields: &Fields, index: u64) {
        if self.templates.len() < self.destinations.len() {
            self.templates.resize_with(self.destinations.len(), || None);
        }
        if self.templates[fields.destination].is_none() {
            let template =
                Template::new(self.frame(fields, index), fields.src.is_ipv6(), self.kind);
            self.templates[fields.destination] = Some(template);
        }
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

    /// A pick with a fresh draw from `rng`, or the only value without one.
    fn draw(&self, rng: &mut Pcg64Mcg) -> u32 {
        if self.len == 1 {
            return self.pick(0);
        }
        self.pick(rng.next_u64())
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

/// A flood frame built once; packets are copies with their own fields patched in and their
/// checksums completed from sums of the template's fixed bytes.
struct Template {
    frame: Vec<u8>,
    ipv6: bool,
    kind: FloodKind,
    /// Offset of the transport header.
    l4: usize,
    /// Offset of the transport checksum.
    checksum_at: usize,
    /// Whether the transport checksum covers a pseudo-header (with the source address).
    pseudo: bool,
    /// IPv4 header sum without ID, TTL/protocol word, source and checksum.
    ip_base: u64,
    /// Transport sum (pseudo-header included) without the patched bytes, the source address
    /// and the checksum.
    l4_base: u64,
}

impl Template {
    fn new(mut frame: Vec<u8>, ipv6: bool, kind: FloodKind) -> Self {
        let ip = IP_OFFSET;
        let l4 = ip + if ipv6 { 40 } else { 20 };
        let (checksum_at, patched) = match kind {
            FloodKind::Syn => (l4 + 16, (0, 8)),
            FloodKind::Ack => (l4 + 16, (0, 12)),
            FloodKind::Udp => (l4 + 6, (0, 4)),
            FloodKind::Icmp => (l4 + 2, (4, 8)),
        };
        let pseudo = ipv6 || kind != FloodKind::Icmp;
        let mut fixed = frame.clone();
        fixed[checksum_at..checksum_at + 2].fill(0);
        fixed[l4 + patched.0..l4 + patched.1].fill(0);
        let mut l4_base = checksum::partial(&fixed[l4..]);
        let ip_base = if ipv6 {
            fixed[ip + 8..ip + 24].fill(0);
            0
        } else {
            // ID, TTL (the protocol stays), checksum, source.
            for range in [4..6, 8..9, 10..12, 12..16] {
                fixed[ip + range.start..ip + range.end].fill(0);
            }
            checksum::partial(&fixed[ip..l4])
        };
        if pseudo {
            l4_base += Self::pseudo_header_without_source(&fixed, ipv6, kind);
        }
        frame[checksum_at..checksum_at + 2].fill(0);
        Self {
            frame,
            ipv6,
            kind,
            l4,
            checksum_at,
            pseudo,
            ip_base,
            l4_base,
        }
    }

    /// The pseudo-header's sum with the source address left out (`fixed` has it zeroed).
    fn pseudo_header_without_source(fixed: &[u8], ipv6: bool, kind: FloodKind) -> u64 {
        let ip = IP_OFFSET;
        let proto = match kind {
            FloodKind::Syn | FloodKind::Ack => 6,
            FloodKind::Udp => 17,
            FloodKind::Icmp => 58,
        };
        if ipv6 {
            let length = (fixed.len() - ip - 40) as u32;
            let dst: [u8; 16] = fixed[ip + 24..ip + 40].try_into().expect("16 bytes");
            checksum::pseudo_header_v6(Ipv6Addr::UNSPECIFIED, dst.into(), proto, length)
        } else {
            let length = (fixed.len() - ip - 20) as u32;
            let dst: [u8; 4] = fixed[ip + 16..ip + 20].try_into().expect("4 bytes");
            checksum::pseudo_header_v4(Ipv4Addr::UNSPECIFIED, dst.into(), proto, length)
        }
    }

    /// The frame for `fields` and `index` into `out`. The sums are taken from the field
    /// values, not read back from the frame (a read straddling the bytes just stored would
    /// stall on store forwarding).
    fn write(&self, fields: &Fields, index: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.frame);
        let (ip, l4) = (IP_OFFSET, self.l4);
        let source_sum = match (self.ipv6, fields.src) {
            (false, IpAddr::V4(src)) => {
                let source = src.octets();
                let id = fields.ip_id.to_be_bytes();
                out[ip + 4..ip + 6].copy_from_slice(&id);
                out[ip + 8] = fields.ttl;
                out[ip + 12..ip + 16].copy_from_slice(&source);
                let source_sum = sum32(source);
                let ttl = u64::from(u16::from_ne_bytes([fields.ttl, 0]));
                let sum = self.ip_base + sum16(id) + ttl + source_sum;
                out[ip + 10..ip + 12].copy_from_slice(&checksum::field_bytes(sum));
                source_sum
            }
            (true, IpAddr::V6(src)) => {
                let source = src.octets();
                out[ip + 7] = fields.ttl;
                out[ip + 8..ip + 24].copy_from_slice(&source);
                checksum::partial(&source)
            }
            _ => unreachable!("a template's family is its source network's"),
        };
        let patched = match self.kind {
            FloodKind::Syn | FloodKind::Ack => {
                let ports = [fields.sport.to_be_bytes(), fields.dport.to_be_bytes()];
                let seq = fields.seq.to_be_bytes();
                out[l4..l4 + 2].copy_from_slice(&ports[0]);
                out[l4 + 2..l4 + 4].copy_from_slice(&ports[1]);
                out[l4 + 4..l4 + 8].copy_from_slice(&seq);
                let mut sum = sum16(ports[0]) + sum16(ports[1]) + sum32(seq);
                if self.kind == FloodKind::Ack {
                    let ack = fields.ack.to_be_bytes();
                    out[l4 + 8..l4 + 12].copy_from_slice(&ack);
                    sum += sum32(ack);
                }
                sum
            }
            FloodKind::Udp => {
                let ports = [fields.sport.to_be_bytes(), fields.dport.to_be_bytes()];
                out[l4..l4 + 2].copy_from_slice(&ports[0]);
                out[l4 + 2..l4 + 4].copy_from_slice(&ports[1]);
                sum16(ports[0]) + sum16(ports[1])
            }
            FloodKind::Icmp => {
                let (id, seq) = (fields.sport.to_be_bytes(), (index as u16).to_be_bytes());
                out[l4 + 4..l4 + 6].copy_from_slice(&id);
                out[l4 + 6..l4 + 8].copy_from_slice(&seq);
                sum16(id) + sum16(seq)
            }
        };
        let mut sum = self.l4_base + patched;
        if self.pseudo {
            sum += source_sum;
        }
        let mut field = checksum::field_bytes(sum);
        if self.kind == FloodKind::Udp && field == [0, 0] {
            field = [0xff, 0xff]; // UDP transmits an all-zero checksum as all ones
        }
        out[self.checksum_at..self.checksum_at + 2].copy_from_slice(&field);
    }
}

/// [`checksum::partial`] of one 16-bit word.
#[inline]
fn sum16(bytes: [u8; 2]) -> u64 {
    u64::from(u16::from_ne_bytes(bytes))
}

/// [`checksum::partial`] of two 16-bit words (one 32-bit native-endian addition).
#[inline]
fn sum32(bytes: [u8; 4]) -> u64 {
    u64::from(u32::from_ne_bytes(bytes))
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
            if !self.drawn {
                // Decide the queue on the fresh values, before they are stored (reading them
                // back at once from `pending` stalls on store forwarding).
                let fields = self.fields();
                let mine = self.queues <= 1
                    || queue_of(fields.src, fields.sport, self.queues) == self.queue;
                if !mine {
                    self.advance();
                    continue;
                }
                self.pending = fields;
                self.drawn = true;
            }
            if time > now {
                return Some(time);
            }
            self.drawn = false;
            self.advance();
            let destination = self.pending.destination;
            if self.templates.get(destination).is_none_or(Option::is_none) {
                let fields = self.pending;
                self.ensure_template(&fields, index);
            }
            let mut frame = out.buffer();
            if let Some(template) = &self.templates[destination] {
                template.write(&self.pending, index, &mut frame);
            }
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
    /// both address families, odd payload lengths, and fields with one possible value.
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
        for (kind, single) in kinds.into_iter().flat_map(|k| [(k, false), (k, true)]) {
            for (src, dst) in families {
                let mut spec = spec(src, dst);
                if single {
                    // One destination and one TTL: fields without draws.
                    spec.dst = Destinations::One(dst.into());
                    spec.ttl = Some(RangeSet::single(64, 64));
                }
                let network = spec.src.unwrap();
                let rng = crate::net::rng::stream(5, "template-test");
                let mut source =
                    FloodSource::new("t".into(), kind, &spec, 0, network, 1, (0, 1), rng);
                let mut buffer = Vec::new();
                for index in 0..3000 {
                    let fields = source.fields();
                    source.write_frame(&fields, index, &mut buffer);
                    let built = source.frame(&fields, index);
                    assert_eq!(buffer, built, "{kind:?} {src} {single} packet {index}");
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
            let rng = crate::net::rng::stream(1, "clock");
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
