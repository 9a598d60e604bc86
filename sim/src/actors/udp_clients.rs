//! `udp_clients`: request/response over UDP (DNS-like). Request `j` leaves at
//! `start + j / rate` from client host `j % clients`, source port `1024 + j / clients`,
//! carrying its id in the first 8 payload bytes; the backend echoes the payload back. A
//! request without an answer after `timeout` fails.
//!
//! Not here: the responder (see [`crate::actors::backend`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use datapath::TimeNs;
use datapath::packet::builder::PacketBuilder;
use datapath::packet::{LinkType, ParseOptions, ip_proto, parse_with};
use datapath::verdict::NS_PER_SEC;

use super::{Actor, ActorStats, Outbox, UdpStats};
use crate::net::world::{HostId, queue_of};
use crate::scenario::UdpClientsSpec;

/// First source port.
const FIRST_PORT: u16 = 1024;

/// One `udp_clients` source, as seen by one receive queue.
pub struct UdpClients {
    spec: UdpClientsSpec,
    host: HostId,
    addresses: Vec<IpAddr>,
    total: u64,
    next_request: u64,
    queue: u16,
    queues: u16,
    /// Outstanding requests: id → sent time.
    outstanding: BTreeMap<u64, TimeNs>,
    deadlines: BTreeSet<(TimeNs, u64)>,
    udp: UdpStats,
    stats: ActorStats,
}

impl UdpClients {
    /// The source `name` from `host` (prefix `network`); the run ends at `end`.
    pub fn new(
        name: String,
        spec: &UdpClientsSpec,
        host: HostId,
        addresses: Vec<IpAddr>,
        end: TimeNs,
        (queue, queues): (u16, u16),
    ) -> Self {
        let window = end.saturating_sub(spec.start.0);
        let total = spec.requests.unwrap_or_else(|| {
            (u128::from(spec.rate.0) * u128::from(window) / u128::from(NS_PER_SEC)) as u64
        });
        Self {
            spec: spec.clone(),
            host,
            addresses,
            total,
            next_request: 0,
            queue,
            queues,
            outstanding: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            udp: UdpStats::default(),
            stats: ActorStats::new(name, "udp_clients"),
        }
    }

    /// Addresses of the client hosts.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.addresses.clone()
    }

    fn send_time(&self, id: u64) -> TimeNs {
        self.spec.start.0
            + (u128::from(id) * u128::from(NS_PER_SEC) / u128::from(self.spec.rate.0)) as TimeNs
    }

    fn endpoint(&self, id: u64) -> (IpAddr, u16) {
        let clients = self.addresses.len().max(1) as u64;
        let address = self.addresses[(id % clients) as usize];
        (address, FIRST_PORT + ((id / clients) % 64_000) as u16)
    }

    fn send_due(&mut self, now: TimeNs, out: &mut Outbox) {
        while self.next_request < self.total && self.send_time(self.next_request) <= now {
            let id = self.next_request;
            self.next_request += 1;
            let (address, port) = self.endpoint(id);
            if queue_of(address, port, self.queues) != self.queue
                || address.is_ipv4() != self.spec.dst.is_ipv4()
            {
                continue;
            }
            let mut payload = vec![0u8; usize::from(self.spec.payload)];
            payload[..8].copy_from_slice(&id.to_be_bytes());
            let frame = PacketBuilder::eth()
                .ip(address, self.spec.dst.ip())
                .udp(port, self.spec.dst.port())
                .payload(&payload)
                .build();
            self.udp.sent += 1;
            self.stats.packets_sent += 1;
            self.outstanding.insert(id, now);
            self.deadlines.insert((now + self.spec.timeout.0, id));
            out.push((self.host, frame));
        }
    }

    fn expire(&mut self, now: TimeNs) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if self.outstanding.remove(&id).is_some() {
                self.udp.failed_timeout += 1;
            }
        }
    }
}

impl Actor for UdpClients {
    fn wake(&mut self, now: TimeNs, out: &mut Outbox) -> Option<TimeNs> {
        self.send_due(now, out);
        self.expire(now);
        let next_send = (self.next_request < self.total).then(|| self.send_time(self.next_request));
        next_send
            .into_iter()
            .chain(self.deadlines.first().map(|d| d.0))
            .min()
    }

    fn deliver(&mut self, now: TimeNs, frame: &[u8], out: &mut Outbox) -> Option<TimeNs> {
        self.stats.packets_received += 1;
        let meta = parse_with(
            &ParseOptions::default(),
            LinkType::Ethernet,
            frame,
            frame.len() as u32,
            0,
        );
        let payload_at = usize::from(meta.payload_offset);
        if meta.invalid.is_none()
            && meta.proto == Some(ip_proto::UDP)
            && let Some(bytes) = frame.get(payload_at..payload_at + 8)
        {
            let id = u64::from_be_bytes(bytes.try_into().unwrap_or_default());
            if let Some(sent) = self.outstanding.remove(&id) {
                self.udp.answered += 1;
                let _ = self.udp.rtt_ns.record((now - sent).max(1));
            }
        }
        self.wake(now, out)
    }

    fn stats(&self) -> ActorStats {
        let mut stats = self.stats.clone();
        stats.udp = Some(self.udp.clone());
        stats
    }

    fn finish(&mut self, _end: TimeNs) {
        self.udp.unfinished += self.outstanding.len() as u64;
    }
}
