//! The per-packet record: one JSON object per packet, the common currency of `sim replay`,
//! `sim run` and verdict diffs.
//!
//! Keys (stable, documented in the README): `index` (0-based within the file), `ts_ns`,
//! `vlan` (outermost first), `src`, `dst`, `proto` (`"tcp"`, `"udp"`, `"icmp"`, `"icmpv6"`
//! or the number), `sport`, `dport`, `tcp_flags` (FIN = 1 … CWR = 128), `icmp_type`, `ttl`,
//! `invalid` (reason or null), plus `file` when several captures are replayed, `iface` and
//! `len`. Later pipeline stages add `stage`, `verdict`, `reason`, `flow`, `backend`, and
//! `route` (`{"table": 100, "route": 0, "via": "10.0.9.1", "dev": 2}`: the routing table,
//! the route's index in it, its gateway and egress interface index) when the appliance
//! declares routing tables besides main.

use std::io::{self, Write};
use std::net::IpAddr;

use datapath::packet::{InvalidReason, PacketMeta, ip_proto};
use serde::Serialize;

/// `proto` as the records spell it: a name for the common protocols, else the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ProtoField {
    /// `tcp`, `udp`, `icmp`, `icmpv6`.
    Name(&'static str),
    /// Any other IP protocol number.
    Number(u8),
}

impl ProtoField {
    /// From an IP protocol number.
    pub fn from_number(proto: u8) -> Self {
        match proto {
            ip_proto::TCP => Self::Name("tcp"),
            ip_proto::UDP => Self::Name("udp"),
            ip_proto::ICMP => Self::Name("icmp"),
            ip_proto::ICMPV6 => Self::Name("icmpv6"),
            other => Self::Number(other),
        }
    }
}

/// One packet's record, borrowing what it can.
#[derive(Debug, Serialize)]
pub struct PacketRecord<'a> {
    /// Capture file, when several are replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<&'a str>,
    /// 0-based index within the file.
    pub index: u64,
    /// Capture timestamp, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Ingress interface index.
    pub iface: u16,
    /// Wire length.
    pub len: u32,
    /// VLAN ids, outermost first.
    pub vlan: &'a [u16],
    /// Outermost IP source.
    pub src: Option<IpAddr>,
    /// Outermost IP destination.
    pub dst: Option<IpAddr>,
    /// Transport protocol.
    pub proto: Option<ProtoField>,
    /// Source port.
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// TCP flags byte.
    pub tcp_flags: Option<u8>,
    /// ICMP type.
    pub icmp_type: Option<u8>,
    /// TTL / hop limit.
    pub ttl: Option<u8>,
    /// Invalid reason.
    pub invalid: Option<InvalidReason>,
}

impl<'a> PacketRecord<'a> {
    /// Build the record of a parsed packet.
    pub fn new(file: Option<&'a str>, index: u64, ts_ns: u64, meta: &'a PacketMeta) -> Self {
        let has_ip = meta.src.is_some();
        Self {
            file,
            index,
            ts_ns,
            iface: meta.iface,
            len: meta.wire_len,
            vlan: meta.vlans(),
            src: meta.src,
            dst: meta.dst,
            proto: meta.proto.map(ProtoField::from_number),
            sport: meta.sport,
            dport: meta.dport,
            tcp_flags: (meta.proto == Some(ip_proto::TCP) && meta.sport.is_some())
                .then_some(meta.tcp_flags),
            icmp_type: meta.icmp_type,
            ttl: has_ip.then_some(meta.ttl),
            invalid: meta.invalid,
        }
    }

    /// Write the record as one JSON line.
    pub fn write_jsonl<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")
    }
}

/// The route a forwarded packet took (`route` in the records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RouteRecord {
    /// Routing table id (254: main).
    pub table: u32,
    /// Index of the route in that table.
    pub route: u16,
    /// Gateway, if the route has one.
    pub via: Option<IpAddr>,
    /// Egress interface index.
    pub dev: u16,
}

impl RouteRecord {
    /// From a pipeline outcome (`None` when it names no route).
    pub fn of(outcome: &datapath::pipeline::PacketOutcome) -> Option<Self> {
        let used = outcome.route?;
        let (dev, via) = outcome.next_hop?;
        Some(Self {
            table: used.table,
            route: used.route,
            via,
            dev,
        })
    }
}
