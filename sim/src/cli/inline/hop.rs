//! What a real L2/L3 hop does and the datapath does not: proxy ARP for the lab's own
//! addresses (gateways, VIPs), a neighbour table per side learned from ARP, the choice of
//! the egress side by destination address, and the Ethernet rewrite for the next hop
//! (source = the lab's MAC on that side, destination = the neighbour's). Frames to a
//! neighbour not yet known wait in a bounded queue while an ARP request goes out.
//!
//! Pure: frames and `now` in, frames out; no sockets (see `io`). Not here: TTL decrement
//! (the lab is a transparent hop, like the simulator), VLANs, IPv6, DR/tunnel forwarding.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;

use datapath::verdict::TimeNs;

use super::plan::{LabPlan, Side};

/// Neighbours remembered per side (learning beyond is counted and refused).
pub const NEIGHBOUR_CAPACITY: usize = 4096;
/// Frames waiting for ARP resolution per side (beyond: dropped and counted).
pub const PENDING_CAPACITY: usize = 256;
/// A waiting frame is dropped after this long without an ARP answer.
pub const PENDING_TIMEOUT_NS: TimeNs = 1_000_000_000;
/// At most one ARP request per address in this interval.
pub const ARP_RETRY_NS: TimeNs = 200_000_000;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERNET_LEN: usize = 14;
const ARP_LEN: usize = 28;
const BROADCAST: [u8; 6] = [0xff; 6];

/// A frame to send on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The side's veth.
    pub side: Side,
    /// The Ethernet frame.
    pub frame: Vec<u8>,
}

/// What to do with a received frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// An IPv4 frame for the lab: run it through the pipeline.
    ToPipeline,
    /// Handled here (ARP); send these.
    Handled(Vec<Outgoing>),
    /// Not for the lab (counted).
    Ignored,
}

/// The hop's counters (per side arrays are client, backend).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HopCounters {
    /// Frames read per side (the lab's own echoes excluded).
    pub frames_in: [u64; 2],
    /// Frames written per side.
    pub frames_out: [u64; 2],
    /// ARP requests answered (proxy ARP).
    pub arp_answered: u64,
    /// ARP requests the lab sent to resolve neighbours.
    pub arp_requests: u64,
    /// Neighbours refused because the table was full.
    pub neighbour_overflow: u64,
    /// Frames for another MAC, or not IPv4 / ARP (IPv6, VLAN, …).
    pub ignored: u64,
    /// Frames to the lab's own addresses (gateways), which are not forwarded.
    pub to_lab_address: u64,
    /// Frames dropped because the waiting queue was full.
    pub pending_overflow: u64,
    /// Frames dropped because their neighbour never answered.
    pub pending_expired: u64,
}

#[derive(Debug)]
struct Pending {
    destination: Ipv4Addr,
    frame: Vec<u8>,
    since: TimeNs,
}

#[derive(Debug)]
struct SideState {
    mac: [u8; 6],
    owned: BTreeSet<Ipv4Addr>,
    /// Sender address of the lab's ARP requests on this side.
    arp_source: Ipv4Addr,
    neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
    pending: VecDeque<Pending>,
    last_request: BTreeMap<Ipv4Addr, TimeNs>,
}

/// The lab's L2/L3 hop between the two veths.
#[derive(Debug)]
pub struct Hop {
    plan: LabPlan,
    sides: [SideState; 2],
    counters: HopCounters,
}

fn ethertype(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]))
}

fn address_at(frame: &[u8], offset: usize) -> Option<Ipv4Addr> {
    let bytes: [u8; 4] = frame.get(offset..offset + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(bytes))
}

fn mac_at(frame: &[u8], offset: usize) -> Option<[u8; 6]> {
    frame.get(offset..offset + 6)?.try_into().ok()
}

/// An ARP frame (`operation` 1 request, 2 reply).
pub fn arp_frame(
    operation: u16,
    sender: ([u8; 6], Ipv4Addr),
    target: ([u8; 6], Ipv4Addr),
    ethernet_destination: [u8; 6],
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETHERNET_LEN + ARP_LEN);
    frame.extend_from_slice(&ethernet_destination);
    frame.extend_from_slice(&sender.0);
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    frame.extend_from_slice(&operation.to_be_bytes());
    frame.extend_from_slice(&sender.0);
    frame.extend_from_slice(&sender.1.octets());
    frame.extend_from_slice(&target.0);
    frame.extend_from_slice(&target.1.octets());
    frame
}

impl Hop {
    /// A hop for `plan`, with the lab's MAC on each side (client, backend).
    pub fn new(plan: &LabPlan, macs: [[u8; 6]; 2]) -> Self {
        let side = |side: Side| {
            let owned = plan.proxy_arp(side);
            let arp_source = match side {
                Side::Client => plan.clients.first().map(|c| c.gateway),
                Side::Backend => Some(plan.backend_gateway),
            };
            SideState {
                mac: macs[side.index()],
                arp_source: arp_source.unwrap_or(Ipv4Addr::UNSPECIFIED),
                owned,
                neighbours: BTreeMap::new(),
                pending: VecDeque::new(),
                last_request: BTreeMap::new(),
            }
        };
        Self {
            plan: plan.clone(),
            sides: [side(Side::Client), side(Side::Backend)],
            counters: HopCounters::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> &HopCounters {
        &self.counters
    }

    /// Neighbours learned on a side, by address.
    pub fn neighbours(&self, side: Side) -> &BTreeMap<Ipv4Addr, [u8; 6]> {
        &self.sides[side.index()].neighbours
    }

    /// Count frames written (by the I/O layer, once the socket took them).
    pub fn count_sent(&mut self, side: Side) {
        self.counters.frames_out[side.index()] += 1;
    }

    /// Look at a frame read on `side`: ARP is answered here, IPv4 frames to the lab's MAC
    /// go to the pipeline, the rest is ignored.
    pub fn receive(&mut self, side: Side, frame: &[u8], now: TimeNs) -> Received {
        let state = &self.sides[side.index()];
        if mac_at(frame, 6) == Some(state.mac) {
            // The lab's own frames, seen again by a socket on the same veth.
            return Received::Ignored;
        }
        self.counters.frames_in[side.index()] += 1;
        let to_us = mac_at(frame, 0) == Some(state.mac);
        match ethertype(frame) {
            Some(ETHERTYPE_ARP) => Received::Handled(self.arp(side, frame, now)),
            Some(ETHERTYPE_IPV4) if to_us => match address_at(frame, ETHERNET_LEN + 16) {
                Some(destination) if self.plan.is_gateway(destination) => {
                    self.counters.to_lab_address += 1;
                    Received::Ignored
                }
                _ => Received::ToPipeline,
            },
            _ => {
                self.counters.ignored += 1;
                Received::Ignored
            }
        }
    }

    fn arp(&mut self, side: Side, frame: &[u8], now: TimeNs) -> Vec<Outgoing> {
        let arp = &frame[ETHERNET_LEN.min(frame.len())..];
        let well_formed = arp.len() >= ARP_LEN && arp[0..6] == [0, 1, 0x08, 0x00, 6, 4];
        let (Some(sender_mac), Some(sender), Some(target)) =
            (mac_at(arp, 8), address_at(arp, 14), address_at(arp, 24))
        else {
            self.counters.ignored += 1;
            return Vec::new();
        };
        if !well_formed {
            self.counters.ignored += 1;
            return Vec::new();
        }
        let mut out = Vec::new();
        if !sender.is_unspecified() {
            out.extend(self.learn(side, sender, sender_mac, now));
        }
        let operation = u16::from_be_bytes([arp[6], arp[7]]);
        let state = &self.sides[side.index()];
        if operation == 1 && state.owned.contains(&target) {
            self.counters.arp_answered += 1;
            let reply = arp_frame(2, (state.mac, target), (sender_mac, sender), sender_mac);
            out.push(Outgoing { side, frame: reply });
        }
        out
    }

    /// Remember a neighbour and release the frames that waited for it.
    fn learn(&mut self, side: Side, address: Ipv4Addr, mac: [u8; 6], now: TimeNs) -> Vec<Outgoing> {
        let state = &mut self.sides[side.index()];
        if state.owned.contains(&address) {
            return Vec::new();
        }
        if state.neighbours.len() >= NEIGHBOUR_CAPACITY && !state.neighbours.contains_key(&address)
        {
            self.counters.neighbour_overflow += 1;
            return Vec::new();
        }
        state.neighbours.insert(address, mac);
        self.expire(side, now);
        let state = &mut self.sides[side.index()];
        let (ready, waiting): (Vec<Pending>, Vec<Pending>) = state
            .pending
            .drain(..)
            .partition(|p| p.destination == address);
        state.pending = waiting.into();
        let source = state.mac;
        ready
            .into_iter()
            .map(|p| Outgoing {
                side,
                frame: rewrite(p.frame, source, mac),
            })
            .collect()
    }

    fn expire(&mut self, side: Side, now: TimeNs) {
        let state = &mut self.sides[side.index()];
        while let Some(oldest) = state.pending.front() {
            if now.saturating_sub(oldest.since) < PENDING_TIMEOUT_NS {
                break;
            }
            state.pending.pop_front();
            self.counters.pending_expired += 1;
        }
    }

    /// Send a frame the pipeline emitted: pick the side by its IPv4 destination, rewrite
    /// its Ethernet addresses for the next hop, or hold it while ARP resolves.
    pub fn send(&mut self, frame: Vec<u8>, now: TimeNs) -> Vec<Outgoing> {
        let destination = match (ethertype(&frame), address_at(&frame, ETHERNET_LEN + 16)) {
            (Some(ETHERTYPE_IPV4), Some(destination)) => destination,
            _ => {
                self.counters.ignored += 1;
                return Vec::new();
            }
        };
        let side = self.plan.route(destination);
        let index = side.index();
        if self.plan.is_gateway(destination) || self.sides[index].owned.contains(&destination) {
            self.counters.to_lab_address += 1;
            return Vec::new();
        }
        self.expire(side, now);
        let state = &mut self.sides[index];
        if let Some(&mac) = state.neighbours.get(&destination) {
            let frame = rewrite(frame, state.mac, mac);
            return vec![Outgoing { side, frame }];
        }
        if state.pending.len() >= PENDING_CAPACITY {
            self.counters.pending_overflow += 1;
            return Vec::new();
        }
        state.pending.push_back(Pending {
            destination,
            frame,
            since: now,
        });
        self.request(side, destination, now).into_iter().collect()
    }

    /// An ARP request for `target` on `side`, unless one went out less than
    /// [`ARP_RETRY_NS`] ago.
    pub fn request(&mut self, side: Side, target: Ipv4Addr, now: TimeNs) -> Option<Outgoing> {
        let state = &mut self.sides[side.index()];
        let recent = state
            .last_request
            .get(&target)
            .is_some_and(|&at| now.saturating_sub(at) < ARP_RETRY_NS);
        if recent {
            return None;
        }
        if state.last_request.len() >= NEIGHBOUR_CAPACITY {
            state.last_request.clear();
        }
        state.last_request.insert(target, now);
        self.counters.arp_requests += 1;
        let frame = arp_frame(
            1,
            (state.mac, state.arp_source),
            ([0; 6], target),
            BROADCAST,
        );
        Some(Outgoing { side, frame })
    }

    /// The counters and neighbour tables as text (the end-of-run report).
    pub fn render(&self) -> String {
        let c = &self.counters;
        let mut out = String::from("Lab hop:\n");
        for side in Side::BOTH {
            let neighbours: Vec<String> = self.sides[side.index()]
                .neighbours
                .iter()
                .map(|(ip, mac)| format!("{ip}={}", crate::kernel::topology::mac_text(*mac)))
                .collect();
            out.push_str(&format!(
                "  {:<8} frames in {:>8}  out {:>8}  neighbours [{}]\n",
                side.name(),
                c.frames_in[side.index()],
                c.frames_out[side.index()],
                neighbours.join(" ")
            ));
        }
        out.push_str(&format!(
            "  arp answered {}, arp requests {}, ignored {}, to lab address {}, \
             waiting dropped {} (full) + {} (no answer), neighbour overflow {}\n",
            c.arp_answered,
            c.arp_requests,
            c.ignored,
            c.to_lab_address,
            c.pending_overflow,
            c.pending_expired,
            c.neighbour_overflow
        ));
        out
    }
}

/// Set a frame's Ethernet source and destination.
fn rewrite(mut frame: Vec<u8>, source: [u8; 6], destination: [u8; 6]) -> Vec<u8> {
    if frame.len() >= 12 {
        frame[0..6].copy_from_slice(&destination);
        frame[6..12].copy_from_slice(&source);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::packet::builder::PacketBuilder;

    const LAB_CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const LAB_BACKEND: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 3];
    const SERVER: [u8; 6] = [2, 0, 0, 0, 0, 4];

    fn plan() -> LabPlan {
        LabPlan {
            interfaces: vec!["outside".into(), "inside".into()],
            iface_ids: [0, 1],
            clients: vec![super::super::plan::ClientAddress {
                network: "clients".into(),
                address: "198.51.100.2/24".parse().unwrap(),
                gateway: "198.51.100.1".parse().unwrap(),
            }],
            backends: vec![super::super::plan::BackendHost {
                name: "web1".into(),
                address: "10.0.1.2".parse().unwrap(),
                also: vec![],
                tcp_ports: vec![80],
            }],
            backend_gateway: "10.0.1.1".parse().unwrap(),
            vips: vec!["192.0.2.10".parse().unwrap()],
        }
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn arp_for_the_vip_is_answered_with_the_lab_mac_and_the_asker_is_learned() {
        let mut hop = Hop::new(&plan(), [LAB_CLIENT, LAB_BACKEND]);
        let ask = arp_frame(
            1,
            (CLIENT, ip("198.51.100.2")),
            ([0; 6], ip("192.0.2.10")),
            BROADCAST,
        );
        let Received::Handled(out) = hop.receive(Side::Client, &ask, 0) else {
            panic!("ARP not handled");
        };
        let expected = arp_frame(
            2,
            (LAB_CLIENT, ip("192.0.2.10")),
            (CLIENT, ip("198.51.100.2")),
            CLIENT,
        );
        assert_eq!(
            out,
            vec![Outgoing {
                side: Side::Client,
                frame: expected
            }]
        );
        assert_eq!(
            hop.neighbours(Side::Client).get(&ip("198.51.100.2")),
            Some(&CLIENT)
        );
        let other = arp_frame(
            1,
            (CLIENT, ip("198.51.100.2")),
            ([0; 6], ip("198.51.100.77")),
            BROADCAST,
        );
        assert_eq!(
            hop.receive(Side::Client, &other, 0),
            Received::Handled(vec![])
        );
        assert_eq!(hop.counters().arp_answered, 1);
    }

    #[test]
    fn a_frame_to_an_unknown_backend_waits_for_arp_then_leaves_rewritten() {
        let mut hop = Hop::new(&plan(), [LAB_CLIENT, LAB_BACKEND]);
        let frame = PacketBuilder::eth()
            .ipv4(ip("198.51.100.2"), ip("10.0.1.2"))
            .tcp(40000, 80)
            .syn()
            .build();
        let out = hop.send(frame.clone(), 0);
        let request = arp_frame(
            1,
            (LAB_BACKEND, ip("10.0.1.1")),
            ([0; 6], ip("10.0.1.2")),
            BROADCAST,
        );
        assert_eq!(
            out,
            vec![Outgoing {
                side: Side::Backend,
                frame: request
            }]
        );
        assert!(
            hop.send(frame.clone(), 1).is_empty(),
            "no second request within the retry time"
        );
        let answer = arp_frame(
            2,
            (SERVER, ip("10.0.1.2")),
            (LAB_BACKEND, ip("10.0.1.1")),
            LAB_BACKEND,
        );
        let Received::Handled(released) = hop.receive(Side::Backend, &answer, 2) else {
            panic!("ARP not handled");
        };
        assert_eq!(released.len(), 2);
        assert_eq!(
            &released[0].frame[0..12],
            &[SERVER, LAB_BACKEND].concat()[..]
        );
        assert_eq!(released[0].frame[12..], frame[12..]);
        let again = hop.send(frame, 3);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].side, Side::Backend);
    }

    #[test]
    fn waiting_frames_expire_and_the_queue_is_bounded() {
        let mut hop = Hop::new(&plan(), [LAB_CLIENT, LAB_BACKEND]);
        let frame = PacketBuilder::eth()
            .ipv4(ip("10.0.1.2"), ip("198.51.100.9"))
            .udp(53, 5353)
            .build();
        for n in 0..=PENDING_CAPACITY as u64 {
            hop.send(frame.clone(), n);
        }
        assert_eq!(hop.counters().pending_overflow, 1);
        hop.send(frame, PENDING_TIMEOUT_NS + PENDING_CAPACITY as u64);
        assert_eq!(hop.counters().pending_expired, PENDING_CAPACITY as u64);
    }

    #[test]
    fn frames_for_other_macs_own_echoes_and_the_gateway_are_not_forwarded() {
        let mut hop = Hop::new(&plan(), [LAB_CLIENT, LAB_BACKEND]);
        let mut frame = PacketBuilder::eth()
            .ipv4(ip("198.51.100.2"), ip("10.0.1.2"))
            .echo_request(1, 1)
            .build();
        frame[6..12].copy_from_slice(&CLIENT);
        assert_eq!(hop.receive(Side::Client, &frame, 0), Received::Ignored);
        frame[0..6].copy_from_slice(&LAB_CLIENT);
        assert_eq!(hop.receive(Side::Client, &frame, 0), Received::ToPipeline);
        frame[6..12].copy_from_slice(&LAB_CLIENT);
        assert_eq!(hop.receive(Side::Client, &frame, 0), Received::Ignored);
        assert_eq!(hop.counters().frames_in[0], 2);
        let to_gateway = PacketBuilder::eth()
            .ipv4(ip("198.51.100.2"), ip("198.51.100.1"))
            .echo_request(1, 1)
            .build();
        assert!(hop.send(to_gateway, 0).is_empty());
        assert_eq!(hop.counters().to_lab_address, 1);
    }
}
