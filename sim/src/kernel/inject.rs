//! Run captures through the kernel: prepare each packet for injection (tagged with its
//! ordinal in the IPv4 ID, Ethernet addresses set for the client veth), inject them into the
//! client-side veth with AF_PACKET, observe the server-side and client-side veths, and give
//! every packet a [`KernelFate`].
//!
//! A packet is *forwarded* when a frame with its tag (IPv4 ID and protocol) leaves the LB on
//! the server side (with the destination it was rewritten to), *answered* when the LB sends
//! an ICMP error quoting it toward the client, *dropped* otherwise. Packets that cannot be
//! injected faithfully (not Ethernet + IPv4, snapped, larger than the veth MTU) are *not
//! injected* and left out of comparisons. Tags are 16 bits: a run holds at most
//! [`MAX_PACKETS_PER_RUN`] packets.
//!
//! Not here: IPv6 (no ID field to tag; not injected), answers other than ICMP errors
//! (e.g. a RST from a local socket), per-rule attribution of kernel drops.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use datapath::packet::{LinkType, checksum};
use serde::Serialize;

use super::rules::KernelRules;
use super::topology::{
    CLIENT_IFACE, CLIENT_MAC, LB_CLIENT_MAC, LB_SERVER_MAC, SERVER_IFACE, Topology, VETH_MTU,
};
use super::wire::{Observed, Observer, inject};
use crate::capture::CaptureReader;

/// Packets per kernel run (tags are IPv4 IDs 1..=65535).
pub const MAX_PACKETS_PER_RUN: usize = 65_535;
/// How long to keep observing after the last packet was sent.
pub const SETTLE_TIME: Duration = Duration::from_millis(300);

const ETHERNET_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;

/// What the kernel did with one packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fate", rename_all = "snake_case")]
pub enum KernelFate {
    /// Left the LB on the server side, with this destination (after any DNAT).
    Forwarded {
        /// Destination address as it left.
        dst: IpAddr,
        /// Destination port as it left (TCP/UDP).
        dport: Option<u16>,
        /// Injection-to-egress time, ns (user-space timestamps on both ends).
        latency_ns: u64,
    },
    /// The LB answered with an ICMP error quoting the packet.
    Answered {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        icmp_code: u8,
    },
    /// Neither forwarded nor answered.
    Dropped,
    /// Not injected (why).
    NotInjected {
        /// The reason.
        why: String,
    },
}

/// One packet's kernel outcome, by its ordinal over all files (the order `sim replay`
/// reads them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelPacket {
    /// 0-based ordinal over all files.
    pub ordinal: usize,
    /// What the kernel did.
    pub fate: KernelFate,
}

/// A kernel run's per-packet outcomes plus what the observers saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KernelRun {
    /// One entry per packet read, in order.
    pub packets: Vec<KernelPacket>,
    /// Frames seen leaving the LB on the server side.
    pub server_frames: usize,
    /// Frames seen leaving the LB on the client side.
    pub client_frames: usize,
    /// Packets the kernel refused at send time (counted in `packets` as not injected).
    pub send_failures: usize,
    /// Wall-clock seconds spent injecting.
    pub inject_sec: f64,
}

/// A packet ready to send: its frame and what identifies it on the way out.
struct Prepared {
    frame: Vec<u8>,
    tag: u16,
    proto: u8,
}

/// Read every packet of `files`, in order: `Ok(frame)` to inject or `Err(why)` not.
pub fn read_packets(files: &[PathBuf]) -> anyhow::Result<Vec<Result<Vec<u8>, String>>> {
    let mut packets = Vec::new();
    for path in files {
        let mut reader = CaptureReader::open(path)?;
        while let Some(packet) = reader.next_packet()? {
            packets.push(if packet.link != LinkType::Ethernet {
                Err(format!("link type {}", packet.link.name()))
            } else if packet.data.len() < packet.orig_len as usize {
                Err("snapped by the capture".to_string())
            } else {
                Ok(packet.data.to_vec())
            });
        }
    }
    Ok(packets)
}

fn ipv4_header_len(frame: &[u8]) -> Option<usize> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let version_ihl = *frame.get(ETHERNET_HEADER_LEN)?;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let valid = ethertype == ETHERTYPE_IPV4 && version_ihl >> 4 == 4 && header_len >= 20;
    (valid && frame.len() >= ETHERNET_HEADER_LEN + header_len).then_some(header_len)
}

/// Tag a frame: Ethernet addresses of the client veth → LB, IPv4 ID = `tag`, header
/// checksum recomputed (kept wrong if it was wrong).
fn prepare(mut frame: Vec<u8>, tag: u16) -> Result<Prepared, String> {
    let Some(header_len) = ipv4_header_len(&frame) else {
        return Err("not Ethernet + IPv4 (VLAN, IPv6, ARP, …)".into());
    };
    if frame.len() > ETHERNET_HEADER_LEN + VETH_MTU as usize {
        return Err("larger than the veth MTU".into());
    }
    frame[0..6].copy_from_slice(&LB_CLIENT_MAC);
    frame[6..12].copy_from_slice(&CLIENT_MAC);
    let header = ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + header_len;
    let was_valid = checksum::is_valid(checksum::partial(&frame[header.clone()]));
    frame[ETHERNET_HEADER_LEN + 4..ETHERNET_HEADER_LEN + 6].copy_from_slice(&tag.to_be_bytes());
    frame[ETHERNET_HEADER_LEN + 10..ETHERNET_HEADER_LEN + 12].fill(0);
    let sum = checksum::field_bytes(checksum::partial(&frame[header]));
    let sum = if was_valid {
        sum
    } else {
        [sum[0], sum[1] ^ 0x01]
    };
    frame[ETHERNET_HEADER_LEN + 10..ETHERNET_HEADER_LEN + 12].copy_from_slice(&sum);
    let proto = frame[ETHERNET_HEADER_LEN + 9];
    Ok(Prepared { frame, tag, proto })
}

/// Inject `packets` (from [`read_packets`]) into a fresh topology with `rules` installed,
/// observe, and return each packet's fate. The topology is removed before returning.
pub fn run_kernel(
    packets: Vec<Result<Vec<u8>, String>>,
    rules: &KernelRules,
    gap: Duration,
) -> anyhow::Result<KernelRun> {
    if packets.len() > MAX_PACKETS_PER_RUN {
        anyhow::bail!(
            "{} packets: a kernel run holds at most {MAX_PACKETS_PER_RUN} (16-bit IPv4 ID tags)",
            packets.len()
        );
    }
    super::topology::install_signal_cleanup();
    let topology = Topology::create()?;
    rules.install(&topology)?;
    let prepared: Vec<Result<Prepared, String>> = packets
        .into_iter()
        .enumerate()
        .map(|(ordinal, packet)| packet.and_then(|frame| prepare(frame, tag_of(ordinal))))
        .collect();
    let server = Observer::start(&topology.server_ns(), SERVER_IFACE, LB_SERVER_MAC)?;
    let client = Observer::start(&topology.client_ns(), CLIENT_IFACE, LB_CLIENT_MAC)?;
    let frames: Vec<Vec<u8>> = prepared
        .iter()
        .filter_map(|p| p.as_ref().ok().map(|p| p.frame.clone()))
        .collect();
    let started = Instant::now();
    let sent_at = inject(&topology.client_ns(), CLIENT_IFACE, frames, gap)?;
    let inject_sec = started.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE_TIME);
    let (server, client) = (server.finish()?, client.finish()?);
    drop(topology);
    Ok(fates(&prepared, &sent_at, &server, &client, inject_sec))
}

fn tag_of(ordinal: usize) -> u16 {
    u16::try_from(ordinal + 1).unwrap_or(u16::MAX)
}

/// Seen on the server side: (tag, proto) → (destination, port, time), first frame wins.
type Egress = BTreeMap<(u16, u8), (IpAddr, Option<u16>, Instant)>;

fn server_egress(observed: &Observed) -> Egress {
    let mut egress = Egress::new();
    for seen in &observed.frames {
        let frame = &seen.frame;
        let Some(header_len) = ipv4_header_len(frame) else {
            continue;
        };
        let ip = &frame[ETHERNET_HEADER_LEN..];
        let tag = u16::from_be_bytes([ip[4], ip[5]]);
        let proto = ip[9];
        let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
        let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
        let dport = (first_fragment && matches!(proto, 6 | 17))
            .then(|| ip.get(header_len + 2..header_len + 4))
            .flatten()
            .map(|b| u16::from_be_bytes([b[0], b[1]]));
        egress.entry((tag, proto)).or_insert((dst, dport, seen.at));
    }
    egress
}

/// ICMP errors toward the client: quoted (tag, proto) → (type, code).
fn client_answers(observed: &Observed) -> BTreeMap<(u16, u8), (u8, u8)> {
    let mut answers = BTreeMap::new();
    for seen in &observed.frames {
        let frame = &seen.frame;
        let Some(header_len) = ipv4_header_len(frame) else {
            continue;
        };
        let ip = &frame[ETHERNET_HEADER_LEN..];
        if ip[9] != 1 {
            continue;
        }
        let Some(icmp) = ip.get(header_len..) else {
            continue;
        };
        let Some(quoted) = icmp.get(8..28) else {
            continue;
        };
        if matches!(icmp[0], 3 | 4 | 5 | 11 | 12) && quoted[0] >> 4 == 4 {
            let tag = u16::from_be_bytes([quoted[4], quoted[5]]);
            answers
                .entry((tag, quoted[9]))
                .or_insert((icmp[0], icmp[1]));
        }
    }
    answers
}

fn fates(
    prepared: &[Result<Prepared, String>],
    sent_at: &[Option<Instant>],
    server: &Observed,
    client: &Observed,
    inject_sec: f64,
) -> KernelRun {
    let egress = server_egress(server);
    let answers = client_answers(client);
    let mut run = KernelRun {
        server_frames: server.frames.len(),
        client_frames: client.frames.len(),
        inject_sec,
        ..KernelRun::default()
    };
    let mut sent = sent_at.iter();
    for (ordinal, packet) in prepared.iter().enumerate() {
        let fate = match packet {
            Err(why) => KernelFate::NotInjected { why: why.clone() },
            Ok(packet) => match sent.next().copied().flatten() {
                None => {
                    run.send_failures += 1;
                    KernelFate::NotInjected {
                        why: "refused by the AF_PACKET socket".into(),
                    }
                }
                Some(at) => fate_of(packet, at, &egress, &answers),
            },
        };
        run.packets.push(KernelPacket { ordinal, fate });
    }
    run
}

fn fate_of(
    packet: &Prepared,
    sent: Instant,
    egress: &Egress,
    answers: &BTreeMap<(u16, u8), (u8, u8)>,
) -> KernelFate {
    let key = (packet.tag, packet.proto);
    if let Some(&(dst, dport, at)) = egress.get(&key) {
        let latency_ns =
            u64::try_from(at.saturating_duration_since(sent).as_nanos()).unwrap_or(u64::MAX);
        return KernelFate::Forwarded {
            dst,
            dport,
            latency_ns,
        };
    }
    match answers.get(&key) {
        Some(&(icmp_type, icmp_code)) => KernelFate::Answered {
            icmp_type,
            icmp_code,
        },
        None => KernelFate::Dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::packet::builder::PacketBuilder;

    #[test]
    fn prepare_tags_the_ip_id_and_keeps_the_header_checksum_valid() {
        let frame = PacketBuilder::eth()
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .tcp(1234, 80)
            .syn()
            .build();
        let prepared = prepare(frame, 0x1234).expect("IPv4 over Ethernet");
        let ip = &prepared.frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + 20];
        assert_eq!(&ip[4..6], &[0x12, 0x34]);
        assert!(checksum::is_valid(checksum::partial(ip)));
        assert_eq!(&prepared.frame[0..6], &LB_CLIENT_MAC);
        assert_eq!(prepared.proto, 6);
    }

    #[test]
    fn prepare_keeps_a_bad_header_checksum_bad() {
        let mut frame = PacketBuilder::eth()
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .udp(1, 53)
            .build();
        frame[ETHERNET_HEADER_LEN + 10] ^= 0xff;
        let prepared = prepare(frame, 7).expect("IPv4 over Ethernet");
        let ip = &prepared.frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + 20];
        assert!(!checksum::is_valid(checksum::partial(ip)));
    }

    #[test]
    fn ipv6_and_vlan_frames_are_not_injected() {
        let v6 = PacketBuilder::eth()
            .ipv6(
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            )
            .udp(1, 53)
            .build();
        assert!(prepare(v6, 1).is_err());
        let vlan = PacketBuilder::eth()
            .vlan(42)
            .ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
            .udp(1, 53)
            .build();
        assert!(prepare(vlan, 1).is_err());
    }
}
